"""`gradientlab doctor` against the sandbox and a real local host: what works is said, what does
not is said with what to fix, and nothing is changed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from gradientlab.cli import main as cli
from gradientlab.config import load_fleet
from gradientlab.inventory import provider_for
from gradientlab.providers.base import HostRecord
from gradientlab.remote.keys import operator_public_key
from gradientlab.store.fleet import upsert_host
from tests.conftest import SANDBOX_PASSWORD_ENV, fleet_yaml


@pytest.fixture(scope="module")
def doctor_host(
    sandbox: Any, base_address: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, HostRecord]]:
    path = tmp_path_factory.mktemp("doctor") / "fleet.yaml"
    path.write_text(fleet_yaml(sandbox, ["doc-1"], base_address))
    fleet = load_fleet(path)
    provider = provider_for(fleet, "local")
    record = provider.create(fleet.hosts[0], operator_public_key())
    yield path, record
    provider.terminate(record.name)


def doctor(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = cli.main(["doctor", *args])
    return code, capsys.readouterr().out


def test_doctor_says_what_works(
    doctor_host: tuple[Path, HostRecord],
    engine: Engine,
    sandbox: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, record = doctor_host
    upsert_host(engine, record)
    with engine.connect() as conn:
        before = conn.execute(text("SELECT count(*) FROM hosts")).scalar()
    code, out = doctor(capsys, "--fleet", str(path), "--host", "doc-1")
    assert code == 0, out
    assert "[ok  ] fleet file:" in out and "1 hosts, providers local" in out
    assert "[ok  ] account sign-in: operator@gradientlab.test signed in (Firebase)" in out
    assert f"publishes {sandbox.extension_id} version 0.1.0" in out
    assert f"[ok  ] STUN server: {sandbox.stun.address} answers over UDP" in out
    assert f"[ok  ] host doc-1 SSH: {record.ssh_user}@{record.address}:" in out
    assert "pinned host key SHA256:" in out
    assert "[ok  ] host doc-1 Chromium: the chromium package on Debian" in out
    assert "[skip] host doc-1 node: no node id recorded yet" in out
    assert out.rstrip().endswith("all checks passed")
    with engine.connect() as conn:  # it changed nothing
        assert conn.execute(text("SELECT count(*) FROM hosts")).scalar() == before


def test_doctor_says_what_to_fix(
    doctor_host: tuple[Path, HostRecord],
    engine: Engine,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path, record = doctor_host
    # a host key that is not the one the host offers
    other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    upsert_host(engine, HostRecord(**{**record.__dict__, "host_key": other}))
    monkeypatch.setenv(SANDBOX_PASSWORD_ENV, "not-the-password")
    code, out = doctor(capsys, "--fleet", str(path), "--host", "doc-1")
    assert code == 1
    assert "[FAIL] account sign-in: operator@gradientlab.test:" in out
    assert "fix: check account.email and the password" in out
    assert "[FAIL] host doc-1 SSH:" in out and "`gradientlab hosts trust`" in out
    assert "2 check(s) failed" in out

    code, out = doctor(capsys, "--fleet", str(path), "--host", "nope")
    assert code == 1 and "[FAIL] host nope:" in out

    broken = path.with_name("broken.yaml")
    broken.write_text("account: {email: x}\n")
    code, out = doctor(capsys, "--fleet", str(broken))
    assert code == 1 and "[FAIL] fleet file:" in out and "fix: correct the fleet file" in out
