"""The host side on the Pythons real hosts have: 3.9 (Debian 11, Raspberry Pi OS bullseye) to
3.13 (Debian 13). The agent as deploy ships it, run by each interpreter this machine has (pyenv's
or the system's): every module imports, the extension installs from a CRX, and the tap-readiness
test classifies a real STUN server's answers. An interpreter this machine lacks is skipped, with
its version named."""

from __future__ import annotations

import glob
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gradientlab.node.deploy import agent_files
from gradientlab.sandbox.crx import build_crx
from gradientlab.sandbox.extension_id import SANDBOX_EXTENSION_ID
from gradientlab.sandbox.stun import StunServer

VERSIONS = ("3.9", "3.10", "3.11", "3.12", "3.13")


def interpreter(version: str) -> str | None:
    """A real interpreter of `version`: the system's, else pyenv's (never pyenv's shim, which
    answers for versions it does not have)."""
    for found in (f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"):
        if Path(found).exists():
            return found
    pyenv = sorted(glob.glob(f"/root/.pyenv/versions/{version}.*/bin/python{version}"))
    return pyenv[-1] if pyenv else None


def python_or_skip(version: str) -> str:
    python = interpreter(version)
    if python is None:
        pytest.skip(f"no Python {version} on this machine (python{version} or pyenv's)")
    return python


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """runner.py and agent/ as deploy writes them into a host's node folder."""
    folder = tmp_path_factory.mktemp("node")
    (folder / "agent").mkdir()
    for name, data in agent_files().items():
        (folder / name).write_bytes(data)
    return folder


@pytest.fixture(scope="module")
def stun_server() -> Iterator[StunServer]:
    with StunServer() as s:
        yield s


def run(python: str, *args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [python, "-I", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, (done.stdout, done.stderr)
    return done.stdout


@pytest.mark.parametrize("version", VERSIONS)
def test_every_module_of_the_agent_imports(version: str, shipped: Path) -> None:
    python = python_or_skip(version)
    modules = sorted(p.stem for p in (shipped / "agent").glob("*.py") if p.stem != "__init__")
    code = "import importlib, sys; sys.path.insert(0, '.'); " + "; ".join(
        f"importlib.import_module('agent.{m}')" for m in modules
    )
    run(python, "-c", code, cwd=shipped)


@pytest.mark.parametrize("version", VERSIONS)
def test_the_runner_installs_the_extension(version: str, shipped: Path, tmp_path: Path) -> None:
    python = python_or_skip(version)
    home = tmp_path / "home"
    home.mkdir()
    crx = tmp_path / "sentry.crx"
    crx.write_bytes(build_crx("http://127.0.0.1:9"))
    chromium = tmp_path / "chromium"
    chromium.write_text('#!/bin/sh\necho "Chromium 156.0.1.2 built for tests"\n')
    chromium.chmod(0o755)
    (home / "config.json").write_text(
        json.dumps(
            {
                "extension_id": SANDBOX_EXTENSION_ID,
                "extension_source": f"file://{crx}",
                "chromium": str(chromium),
            }
        )
    )
    env = {"GRADIENTLAB_NODE_HOME": str(home), "PATH": "/usr/bin:/bin"}
    answer = json.loads(run(python, "runner.py", "install-extension", cwd=shipped, env=env))
    assert answer["extension_id"] == SANDBOX_EXTENSION_ID
    assert answer["changed"] is True
    assert (home / "extension" / "current" / "manifest.json").exists()


@pytest.mark.parametrize("version", VERSIONS)
def test_the_tap_readiness_test_classifies_a_real_server(
    version: str, shipped: Path, stun_server: StunServer
) -> None:
    python = python_or_skip(version)
    out = run(python, "agent/stun.py", stun_server.address, cwd=shipped)
    result = json.loads(out.splitlines()[-1])
    assert result["udp_reachable"] is True
    assert result["nat_type"] == "open"  # loopback: the host's own address, nothing filtered
