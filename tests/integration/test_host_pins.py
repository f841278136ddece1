"""Host-key pins live in the database every worker reads: `hosts trust` on one machine, the
provision of an SSH inventory host on another finds the pin. Pins of the old per-machine
known_hosts file move in. A real sshd host on loopback, the session's Postgres."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from gradientlab.config import parse_fleet
from gradientlab.inventory import provider_for
from gradientlab.providers.local import LocalProvider
from gradientlab.remote.executor import fingerprint
from gradientlab.remote.keys import operator_public_key
from gradientlab.store.pins import DbKnownHosts, migrate_file_pins
from tests.conftest import rows

ACCOUNT = "account: {email: a@b.c, password: {env: UNUSED}}\n"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def machine(base_address: str) -> Iterator[Any]:
    """A machine the operator already has: an sshd on loopback, not adopted yet."""
    maker = LocalProvider(name="owned", base_address=base_address.rsplit(".", 1)[0] + ".240")
    spec = parse_fleet(
        ACCOUNT + "providers: {owned: {kind: local}}\nhosts: [{name: pinbox, provider: owned}]\n"
    ).hosts[0]
    record = maker.create(spec, operator_public_key())
    yield record
    maker.terminate("pinbox")


@pytest.fixture()
def pins(engine: Engine) -> Iterator[None]:
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE host_key_pins"))
    yield
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE host_key_pins"))


def inventory(record: Any, tmp: Path) -> Path:
    path = tmp / "inventory.yaml"
    path.write_text(
        ACCOUNT
        + "providers: {home: {kind: ssh}}\nhosts:\n"
        + f"  - {{name: pinbox, provider: home, address: {record.address},"
        + f" port: {record.ssh_port}, user: {record.ssh_user}}}\n"
    )
    return path


def test_a_pin_from_hosts_trust_is_read_by_any_worker(
    machine: Any, engine: Engine, pins: None, tmp_path: Path
) -> None:
    path = inventory(machine, tmp_path)
    operator_home = tmp_path / "operator-laptop"  # the machine `hosts trust` runs on
    proc = subprocess.run(
        [sys.executable, "-m", "gradientlab.cli.main", "hosts", "trust", "pinbox",
         "--fleet", str(path), "--fingerprint", fingerprint(machine.host_key)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={**os.environ, "GRADIENTLAB_HOME": str(operator_home)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "in the database every worker reads" in proc.stdout
    assert rows(engine, "SELECT name, host_key, pinned_by FROM host_key_pins") == [
        ("pinbox", machine.host_key, "hosts trust")
    ]
    assert not list(operator_home.rglob("known_hosts"))  # no file on the operator's machine

    # a worker (this process, another data folder) provisions the host with that pin
    fleet = parse_fleet(path.read_text(), str(path))
    record = provider_for(fleet, "home").create(fleet.hosts[0], operator_public_key())
    assert record.host_key == machine.host_key


def test_without_a_pin_provision_says_how_to_pin(
    machine: Any, engine: Engine, pins: None, tmp_path: Path
) -> None:
    fleet = parse_fleet(inventory(machine, tmp_path).read_text())
    with pytest.raises(Exception, match="gradientlab hosts trust pinbox"):
        provider_for(fleet, "home").create(fleet.hosts[0], operator_public_key())


def test_pins_of_the_old_known_hosts_file_move_into_the_database(
    engine: Engine, pins: None, tmp_path: Path
) -> None:
    db = DbKnownHosts(engine)
    db.set("same", "192.0.2.1", 22, "ssh-ed25519 AAAAsame")
    db.set("older-file", "192.0.2.2", 22, "ssh-ed25519 AAAAdb")
    file = tmp_path / "known_hosts"
    file.write_text(
        "new 192.0.2.3:2200 ssh-ed25519 AAAAnew\n"
        "same 192.0.2.1:22 ssh-ed25519 AAAAsame\n"
        "older-file 192.0.2.2:22 ssh-ed25519 AAAAfile\n"
        "not a pin line\n"
    )
    old = time.time() - 3600  # written an hour before the database's pins
    os.utime(file, (old, old))

    moved = migrate_file_pins(engine, file)

    assert (moved.moved, moved.kept) == (["new"], ["same"])
    assert len(moved.conflicts) == 1 and "older-file" in moved.conflicts[0]
    assert "the database's pin stands" in moved.conflicts[0]
    assert db.get("new", "192.0.2.3", 2200) == "ssh-ed25519 AAAAnew"
    assert db.get("older-file", "192.0.2.2", 22) == "ssh-ed25519 AAAAdb"
    assert not file.exists() and file.with_name("known_hosts.migrated").exists()
    assert migrate_file_pins(engine, file).moved == []  # once only

    # a file written after the database's pin (a later explicit trust) replaces it
    file.write_text("older-file 192.0.2.9:22 ssh-ed25519 AAAAlater\n")
    assert migrate_file_pins(engine, file).moved == ["older-file"]
    assert db.get("older-file", "192.0.2.9", 22) == "ssh-ed25519 AAAAlater"
