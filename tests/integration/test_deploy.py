"""Deploy against a real local sshd host: idempotent, host key pinned."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from gradientlab import health
from gradientlab.config import parse_fleet
from gradientlab.inventory import executor_for, node_settings, provider_for
from gradientlab.node.deploy import deploy_node
from gradientlab.providers.base import HostRecord
from gradientlab.remote.executor import HostKeyMismatch, SshExecutor, SshTarget
from gradientlab.remote.keys import load_operator_key, operator_public_key
from tests.conftest import fleet_yaml


@pytest.fixture(scope="module")
def one_host(sandbox: Any, base_address: str) -> Iterator[tuple[Any, HostRecord]]:
    address = base_address.rsplit(".", 1)[0] + ".200"
    fleet = parse_fleet(fleet_yaml(sandbox, ["deploy-a"], address), "test-fleet.yaml")
    provider = provider_for(fleet, "local")
    record = provider.create(fleet.hosts[0], operator_public_key())
    yield fleet, record
    provider.terminate(record.name)


def test_deploy_twice_changes_nothing_the_second_time(one_host: tuple[Any, HostRecord]) -> None:
    fleet, record = one_host
    ex = executor_for(record)
    first = deploy_node(ex, node_settings(fleet), record.meta["python"])
    assert first.changed
    assert "wrote .gradientlab/node/config.json" in first.changes
    assert first.extension_version == "0.1.0"
    second = deploy_node(ex, node_settings(fleet), record.meta["python"])
    assert second.changes == []
    assert second.runner_pid == first.runner_pid

    mode = ex.run("stat -c %a .gradientlab/node/config.json").stdout.strip()
    assert mode == "600"  # the password lives only in a file its user alone can read

    report = health.wait_until(
        lambda: health.assess(record.name, health.probe(ex), None),
        lambda r: r.status == "Good",
        timeout=90,
    )
    assert report.status == "Good", report
    assert report.client_id


def test_a_changed_host_key_is_refused(one_host: tuple[Any, HostRecord]) -> None:
    _, record = one_host
    other_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    impostor = replace(record, host_key=other_key)
    ex = SshExecutor(
        SshTarget(
            impostor.name, impostor.address, impostor.ssh_port, impostor.ssh_user, impostor.host_key
        ),
        load_operator_key(),
    )
    with pytest.raises(HostKeyMismatch, match="refusing to connect"):
        ex.run("true")
    assert not ex.connected


def test_a_revoked_session_is_logged_in_again(
    one_host: tuple[Any, HostRecord], sandbox: Any
) -> None:
    """The network logs the extension out (a password change does): the node comes back."""
    import httpx

    fleet, record = one_host
    ex = executor_for(record)
    before = health.probe(ex)
    assert health.assess(record.name, before, None).status == "Good"
    cursor = max(int(e["id"]) for e in before["events"])
    assert httpx.post(f"{sandbox.url}/__sandbox/revoke-sessions").json()["revoked"] >= 1

    def logged_in_again() -> bool:
        events = health.probe(ex, since=cursor)["events"]
        return any(e["kind"] == "logged_in" for e in events)

    deadline = time.monotonic() + 120
    while not logged_in_again() and time.monotonic() < deadline:
        time.sleep(1)
    assert logged_in_again(), "the runner did not log in again"
    report = health.wait_until(
        lambda: health.assess(record.name, health.probe(ex), None),
        lambda r: r.status == "Good",
        timeout=60,
    )
    assert report.status == "Good"


def test_a_network_at_a_new_address_is_picked_up_by_a_redeploy(
    one_host: tuple[Any, HostRecord],
) -> None:
    """The network's addresses change (a new sandbox here): redeploying points the extension at
    the new address, although the extension's version is the same, and the node is Good there."""
    import os

    from gradientlab.sandbox.network import SandboxAccount, SandboxConfig
    from gradientlab.sandbox.server import SandboxServer
    from tests.conftest import SANDBOX_PASSWORD_ENV

    _, record = one_host
    other = SandboxServer(
        SandboxConfig(
            accounts=[
                SandboxAccount(
                    email="operator@gradientlab.test", password=os.environ[SANDBOX_PASSWORD_ENV]
                )
            ],
            extension_heartbeat_seconds=3,
        ),
        port=0,
    )
    other.start()
    try:
        address = record.address.rsplit(".", 1)[0] + ".200"
        fleet = parse_fleet(fleet_yaml(other, ["deploy-a"], address), "moved.yaml")
        ex = executor_for(record)
        result = deploy_node(ex, node_settings(fleet), record.meta["python"])
        assert "installed extension 0.1.0" in result.changes
        report = health.wait_until(
            lambda: health.assess(record.name, health.probe(ex), None),
            lambda r: r.status == "Good",
            timeout=120,
        )
        assert report.status == "Good", report
        assert report.client_id in {n["clientid"] for n in other.network.state()["nodes"]}
    finally:
        other.stop()
