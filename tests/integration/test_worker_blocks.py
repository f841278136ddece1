"""What a worker reads from Prefect instead of its own disk: the fleet file from a FleetFile
block, GradientLab's SSH key from a Secret block (on the session's real Prefect test server)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gradientlab.config import FleetFileError
from gradientlab.remote import keys

FLEET = """
account: {email: a@b.c, password: {env: GRADIENT_PASSWORD}}
providers: {home: {kind: ssh}}
hosts:
  - {name: pi, provider: home, address: 192.0.2.7, user: pi}
"""


@pytest.fixture()
def _file_key_after(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    yield
    keys.read_operator_key_with(None)


def test_the_fleet_file_comes_from_its_block(prefect_server: None, tmp_path: Path) -> None:
    from deployments.fleet_block import main
    from tasks.common import fleet_from

    name = f"fleet-{uuid.uuid4().hex[:6]}"
    path = tmp_path / "fleet.yaml"
    path.write_text(FLEET)
    assert main([str(path), "--block", name]) == 0
    fleet = fleet_from(f"block:{name}")
    assert [h.name for h in fleet.hosts] == ["pi"]

    # a mistake is reported with the block's name and the line, and nothing is saved
    path.write_text(FLEET.replace("provider: home", "provider: nowhere"))
    assert main([str(path), "--block", name]) == 1
    assert [h.name for h in fleet_from(f"block:{name}").hosts] == ["pi"]

    with pytest.raises(FleetFileError, match="no FleetFile block named 'missing-fleet'"):
        fleet_from("block:missing-fleet")


@pytest.mark.usefixtures("_file_key_after")
def test_the_ssh_key_comes_from_its_secret_block(
    prefect_server: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from deployments.ssh_key import main
    from tasks.common import use_operator_key_block

    name = f"key-{uuid.uuid4().hex[:6]}"
    assert main(["--block", name, "--generate"]) == 0
    out = capsys.readouterr().out
    public = out.strip().splitlines()[-1]
    assert public.startswith("ssh-ed25519 ") and "PRIVATE" not in out
    # a second key would lock the hosts out: refused without --overwrite
    assert main(["--block", name, "--generate"]) == 1
    assert "--overwrite" in capsys.readouterr().err

    monkeypatch.setenv("GRADIENTLAB_HOME", str(tmp_path))
    monkeypatch.setenv(keys.KEY_BLOCK_ENV, name)
    assert use_operator_key_block() == name
    assert keys.operator_public_key() == public
    assert keys.load_operator_key().get_base64() == public.split()[1]
    assert not (tmp_path / "keys").exists(), "the worker wrote a key file"
