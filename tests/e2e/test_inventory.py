"""The SSH inventory provider through the real flows: a host the operator already has is
adopted, deployed to (the runner's Python venv with Playwright installed on the host itself),
and checked Good by the health flow."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from gradientlab.config import parse_fleet
from gradientlab.providers.local import LocalProvider
from gradientlab.remote.executor import POOL, fingerprint
from gradientlab.remote.keys import operator_public_key
from tests.conftest import fleet_yaml

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def homebox(base_address: str) -> Iterator[Any]:
    """An sshd host made beforehand, with no runtime: the deploy installs one over SSH."""
    maker = LocalProvider(
        name="preexisting",
        base_address=base_address.rsplit(".", 1)[0] + ".240",
        python="/nonexistent/python",
    )
    spec = parse_fleet(
        "account: {email: a@b.c, password: {env: X}}\n"
        "providers: {preexisting: {kind: local}}\n"
        "hosts: [{name: pi, provider: preexisting}]\n"
    ).hosts[0]
    record = maker.create(spec, operator_public_key())
    yield record
    POOL.close_all()
    maker.terminate("pi")


def test_inventory_host_is_adopted_deployed_and_good(
    prefect_server: None, engine: Engine, sandbox: Any, homebox: Any, tmp_path: Path
) -> None:
    from flows.deploy import deploy
    from flows.health import health
    from flows.provision import provision
    from gradientlab.cli.main import main as cli

    base = fleet_yaml(sandbox, [], "127.0.0.1")
    inventory = base.replace(
        "providers:\n  local: {kind: local, base_address: 127.0.0.1, ssh_port: 2222}",
        "providers:\n  home: {kind: ssh}",
    ).replace(
        "hosts:\n",
        "hosts:\n"
        f"  - {{name: pi, provider: home, address: {homebox.address}, port: {homebox.ssh_port},"
        f" user: {homebox.ssh_user}}}\n",
    )
    path = tmp_path / "fleet.yaml"
    path.write_text(inventory)

    # pin the key once, explicitly, checking the fingerprint out of band
    assert (
        cli(
            [
                "hosts",
                "trust",
                "pi",
                "--fleet",
                str(path),
                "--fingerprint",
                fingerprint(homebox.host_key),
            ]
        )
        == 0
    )

    plan = provision(fleet_path=str(path))
    assert [r["action"] for r in plan["plan"]] == ["adopt"]
    provision(fleet_path=str(path), approve=True)
    with engine.connect() as conn:
        row = conn.execute(text("SELECT provider, host_key FROM hosts WHERE name = 'pi'")).one()
    assert row.provider == "home" and row.host_key == homebox.host_key

    results = deploy(fleet_path=str(path))
    assert "installed playwright" in " ".join(results[0]["changes"])
    assert deploy(fleet_path=str(path))[0]["changes"] == []

    deadline_runs = 40
    outcomes = health(fleet_path=str(path))
    while outcomes[0].status != "Good" and deadline_runs:
        deadline_runs -= 1
        outcomes = health(fleet_path=str(path))
    assert outcomes[0].status == "Good"
