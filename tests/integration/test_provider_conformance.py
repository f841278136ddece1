"""Every provider that reaches real hosts passes the same checks, against real sshd hosts.

`local` creates its hosts; `ssh` adopts hosts the operator already has (here: sshd hosts made on
loopback beforehand, described in an inventory fleet file with their keys pinned by `trust`)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gradientlab.config import Fleet, parse_fleet
from gradientlab.inventory import executor_for, provider_for
from gradientlab.providers.base import Provider, ProviderError
from gradientlab.providers.local import LocalProvider
from gradientlab.providers.ssh import KnownHosts, trust
from gradientlab.remote.executor import POOL, fingerprint
from gradientlab.remote.keys import operator_public_key

ACCOUNT = "account: {email: a@b.c, password: {env: UNUSED}}\n"


@dataclass
class Case:
    fleet: Fleet
    provider: Provider
    host: str
    creates_machines: bool


def _prefix(base_address: str, last: int) -> str:
    return base_address.rsplit(".", 1)[0] + f".{last}"


@pytest.fixture(scope="module")
def existing_host(base_address: str) -> Iterator[Any]:
    """A machine the operator already has: an sshd on loopback GradientLab did not adopt yet."""
    maker = LocalProvider(name="preexisting", base_address=_prefix(base_address, 230))
    spec = parse_fleet(
        ACCOUNT + "providers: {preexisting: {kind: local}}\n"
        "hosts: [{name: homebox, provider: preexisting}]\n"
    ).hosts[0]
    record = maker.create(spec, operator_public_key())
    yield record
    maker.terminate("homebox")


def inventory_fleet(record: Any, tmp: Path) -> tuple[Fleet, Path]:
    text = (
        ACCOUNT
        + "providers: {home: {kind: ssh}}\n"
        + "hosts:\n"
        + f"  - {{name: homebox, provider: home, address: {record.address},"
        + f" port: {record.ssh_port}, user: {record.ssh_user}}}\n"
    )
    path = tmp / "inventory.yaml"
    path.write_text(text)
    return parse_fleet(text, str(path)), path


@pytest.fixture(scope="module", params=["local", "ssh"])
def case(
    request: pytest.FixtureRequest, base_address: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Case]:
    if request.param == "local":
        fleet = parse_fleet(
            ACCOUNT + f"providers: {{local: {{kind: local, base_address: "
            f"{_prefix(base_address, 220)}}}}}\nhosts: [{{name: conform, provider: local}}]\n"
        )
        yield Case(fleet, provider_for(fleet, "local"), "conform", creates_machines=True)
        provider_for(fleet, "local").terminate("conform")
    else:
        record = request.getfixturevalue("existing_host")
        fleet, _ = inventory_fleet(record, tmp_path_factory.mktemp("inv"))
        # pinned once, explicitly, after comparing the fingerprint with the host's own
        trust(fleet.hosts[0], fingerprint(record.host_key))
        yield Case(fleet, provider_for(fleet, "home"), "homebox", creates_machines=False)
    POOL.close_all()


def test_create_pins_the_host_key_and_is_idempotent(case: Case) -> None:
    spec = case.fleet.host(case.host)
    first = case.provider.create(spec, operator_public_key())
    second = case.provider.create(spec, operator_public_key())
    assert first.host_key.startswith("ssh-ed25519 ")
    assert (second.address, second.ssh_port, second.host_key) == (
        first.address,
        first.ssh_port,
        first.host_key,
    )
    assert first.state == "running"


def test_get_list_and_public_ip_agree(case: Case) -> None:
    record = case.provider.get(case.host)
    assert record is not None
    assert case.host in [r.name for r in case.provider.list()]
    assert case.provider.public_ip(case.host) == record.address
    assert case.provider.get("no-such-host") is None


def test_the_host_runs_commands_over_the_pinned_connection(case: Case) -> None:
    record = case.provider.get(case.host)
    assert record is not None
    result = executor_for(record).run("echo ok; id -un")
    assert result.ok
    assert result.stdout.split() == ["ok", record.ssh_user]


def test_reboot_comes_back_with_the_same_key_or_says_what_is_needed(case: Case) -> None:
    before = case.provider.get(case.host)
    assert before is not None
    try:
        after = case.provider.reboot(case.host)
    except ProviderError as exc:
        # an inventory host's user may not reboot it: the error says how to allow it
        assert not case.creates_machines
        assert "sudo" in str(exc)
        return
    assert after.host_key == before.host_key
    POOL.close_all()
    assert executor_for(after).run("true").ok


def test_terminate_removes_only_what_gradientlab_created(case: Case) -> None:
    if not case.creates_machines:
        with pytest.raises(ProviderError, match="does not delete hosts you already have"):
            case.provider.terminate(case.host)
        assert case.provider.get(case.host) is not None
        return
    case.provider.terminate(case.host)
    assert case.provider.get(case.host) is None
    assert case.host not in [r.name for r in case.provider.list()]
    case.provider.terminate(case.host)  # terminating twice is not an error


def test_ssh_inventory_refuses_a_host_without_a_pinned_key(
    existing_host: Any, tmp_path: Path
) -> None:
    fleet, _ = inventory_fleet(existing_host, tmp_path)
    provider = provider_for(fleet, "home")
    provider.known_hosts = KnownHosts(tmp_path / "empty_known_hosts")  # type: ignore[attr-defined]
    with pytest.raises(ProviderError, match="gradientlab hosts trust homebox"):
        provider.create(fleet.hosts[0], operator_public_key())
    with pytest.raises(ProviderError, match="cannot create machines you do not have"):
        provider.create(
            parse_fleet(
                ACCOUNT + "providers: {home: {kind: ssh}}\nhosts: [{name: other,"
                " provider: home, address: 127.0.0.1, user: x}]\n"
            ).hosts[0],
            operator_public_key(),
        )


def test_hosts_trust_refuses_a_wrong_fingerprint(existing_host: Any, tmp_path: Path) -> None:
    _, path = inventory_fleet(existing_host, tmp_path)
    wrong = "SHA256:" + "A" * 43
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "gradientlab.cli",
            "hosts",
            "trust",
            "homebox",
            "--fleet",
            str(path),
            "--fingerprint",
            wrong,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert fingerprint(existing_host.host_key) in proc.stdout  # it shows what the host offers
    assert "nothing recorded" in proc.stderr
