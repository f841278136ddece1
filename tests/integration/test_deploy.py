"""Deploy against a real local sshd host: idempotent, host key pinned, one runner whose state the
health probe reads (host metrics, the event log's id); a killed browser is read as Good again
within seconds. And deploy's choice of supervisor (systemd or the runner's own `start`), with a
scripted executor, since these machines have no systemd."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from gradientlab import health
from gradientlab.agent import home as agent_home
from gradientlab.config import Fleet, NetworkSettings, RunnerSettings, parse_fleet
from gradientlab.health import HealthReport, Verdict
from gradientlab.health.report import utcnow
from gradientlab.inventory import executor_for, node_settings, provider_for
from gradientlab.node.deploy import NODE_DIR, UNIT_NAME, NodeSettings, deploy_node
from gradientlab.providers.base import HostRecord
from gradientlab.remote.executor import (
    CommandResult,
    Executor,
    HostKeyMismatch,
    SshExecutor,
    SshTarget,
)
from gradientlab.remote.keys import load_operator_key, operator_public_key
from tests.conftest import fleet_yaml


def check(fleet: Fleet, record: HostRecord, ex: Executor, cursor: int = 0) -> HealthReport:
    """One health check of the host, as the health flow makes it (no network view)."""
    obs = health.observe(record.name, lambda: ex, utcnow())
    return health.judge(obs, None, fleet.health, cursor=cursor)


def wait_good(fleet: Fleet, record: HostRecord, ex: Executor, timeout: float) -> HealthReport:
    return health.wait_until(
        lambda: check(fleet, record, ex), lambda r: r.status == Verdict.GOOD, timeout, poll=0.5
    )


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
    # a plan on a fresh host lists everything and changes nothing
    plan = deploy_node(ex, node_settings(fleet), record.meta["python"], plan=True)
    assert plan.plan and "would create .gradientlab/node" in plan.changes
    assert "would write .gradientlab/node/runner.py" in plan.changes
    assert "would install extension 0.1.0 (now none)" in plan.changes
    assert plan.changes[-1] == "would have started the runner"
    assert not ex.run("test -e .gradientlab/node").ok
    first = deploy_node(ex, node_settings(fleet), record.meta["python"])
    assert first.changed
    assert "wrote .gradientlab/node/config.json" in first.changes
    assert first.extension_version == "0.1.0"
    assert first.supervisor == "runner"  # no systemd on these machines
    config = json.loads(ex.read_file(f"{NODE_DIR}/config.json") or b"{}")
    assert config["supervisor"] == "runner"
    # the browser is a fact read from the host: this one is Debian with the chromium package
    assert (first.browser, first.browser_source) == ("/usr/bin/chromium", "package")
    assert first.host_os and "Debian" in first.host_os
    assert config["chromium"] == "/usr/bin/chromium"
    second = deploy_node(ex, node_settings(fleet), record.meta["python"])
    assert second.changes == []
    assert second.runner_pid == first.runner_pid
    assert deploy_node(ex, node_settings(fleet), record.meta["python"], plan=True).changes == []
    # a changed setting: the plan names the file and the restart, and leaves both alone
    slower = replace(node_settings(fleet), runner=RunnerSettings(status_interval_seconds=77))
    config_before = ex.read_file(f"{NODE_DIR}/config.json")
    plan = deploy_node(ex, slower, record.meta["python"], plan=True)
    assert plan.changes == [
        "would write .gradientlab/node/config.json",
        "would have restarted the runner to apply the changes",
    ]
    assert ex.read_file(f"{NODE_DIR}/config.json") == config_before

    mode = ex.run("stat -c %a .gradientlab/node/config.json").stdout.strip()
    assert mode == "600"  # the password lives only in a file its user alone can read

    report = wait_good(fleet, record, ex, timeout=90)
    assert report.status == Verdict.GOOD, report
    assert report.client_id
    # the probe's additions: the event log's id and the host's own figures
    assert report.events_id == (ex.read_file(f"{NODE_DIR}/events.id") or b"").decode().strip()
    assert report.events_id and len(report.events_id) == 32
    m = report.metrics
    assert m.load1 is not None and m.mem_total_kib and m.mem_available_kib
    assert m.disk_total_kib and m.disk_free_kib and m.clock_offset_s is not None
    assert abs(m.clock_offset_s) < 5
    assert m.runner_pss_kib and m.browser_pss_kib
    assert report.pss_kib == m.runner_pss_kib + m.browser_pss_kib

    # one runner per host: a second `run` refuses, naming the running one
    python = record.meta["python"]
    second_run = ex.run(f"{python} {NODE_DIR}/runner.py run", timeout=30)
    assert second_run.exit_code == agent_home.EXIT_LOCKED
    refusal = json.loads(second_run.stdout.strip().splitlines()[-1])
    assert refusal["pid"] == first.runner_pid
    assert check(fleet, record, ex).status == Verdict.GOOD


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
    before = check(fleet, record, ex)
    assert before.status == Verdict.GOOD
    cursor = max(int(e["id"]) for e in before.events)
    assert httpx.post(f"{sandbox.url}/__sandbox/revoke-sessions").json()["revoked"] >= 1

    def logged_in_again() -> bool:
        events = check(fleet, record, ex, cursor=cursor).events
        return any(e["kind"] == "logged_in" for e in events)

    deadline = time.monotonic() + 120
    while not logged_in_again() and time.monotonic() < deadline:
        time.sleep(1)
    assert logged_in_again(), "the runner did not log in again"
    report = wait_good(fleet, record, ex, timeout=60)
    assert report.status == Verdict.GOOD


def test_a_killed_browser_is_read_as_good_again_within_seconds(
    one_host: tuple[Any, HostRecord],
) -> None:
    """With the popup read only once a minute, a new browser is still read every couple of
    seconds until it settles: the node shows Good again soon after its browser is killed."""
    fleet, record = one_host
    slow = fleet.model_copy(
        update={"runner": fleet.runner.model_copy(update={"status_interval_seconds": 60})}
    )
    ex = executor_for(record)
    deployed = deploy_node(ex, node_settings(slow), record.meta["python"])
    assert "stopped the runner to apply changes" in deployed.changes
    report = wait_good(fleet, record, ex, timeout=90)
    assert report.status == Verdict.GOOD, report
    cursor = max(int(e["id"]) for e in report.events)
    browser = ex.read_file(f"{NODE_DIR}/browser.pid")
    assert browser is not None
    killed_at = time.monotonic()
    assert ex.run(f"kill -9 {int(browser)}").ok
    report = health.wait_until(
        lambda: check(fleet, record, ex, cursor=cursor),
        lambda r: (
            r.status == Verdict.GOOD
            and r.browser_alive is True
            and any(e["kind"] == "browser_started" for e in r.events)
        ),
        timeout=60,
        poll=0.25,
    )
    took = time.monotonic() - killed_at
    print(f"killed browser read as Good again after {took:.1f}s")
    assert report.status == Verdict.GOOD, report
    kinds = [e["kind"] for e in report.events]
    assert kinds[0] == "browser_exited" and "browser_started" in kinds, kinds
    assert took < 30, f"{took:.1f}s: the new browser was not re-read until the status interval"


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
        report = wait_good(fleet, record, ex, timeout=120)
        assert report.status == Verdict.GOOD, report
        assert report.client_id in {n["clientid"] for n in other.network.state()["nodes"]}
    finally:
        other.stop()


# ---------------------------------------------------------------- the supervisor deploy chooses


class ScriptedHost:
    """An executor that answers deploy's commands as a fresh host would, and records them."""

    def __init__(self, systemd: bool) -> None:
        self.name = "scripted"
        self.systemd = systemd
        self.files: dict[str, bytes] = {}
        self.log: list[str] = []  # commands run and files written, in order

    def run(self, command: str, timeout: float = 60) -> CommandResult:
        self.log.append(command)
        ok = CommandResult(command, 0, "", "")
        if "/etc/os-release" in command:
            facts = (
                'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n--- gradientlab\n'
                '{"path": "/usr/bin/chromium", "resolved": "/usr/lib/chromium/chromium",'
                ' "snap": false}\n'
            )
            return CommandResult(command, 0, facts, "")
        if "--version" in command:
            return CommandResult(command, 0, "Chromium 137.0.7151.55 built on Debian\n", "")
        if "/run/systemd/system" in command:
            return ok if self.systemd else CommandResult(command, 1, "", "")
        if "is-active" in command:
            return CommandResult(command, 3, "", "")
        if "--property=Linger" in command:  # cloud-init turned lingering on, as root
            return CommandResult(command, 0, "yes\n", "")
        if "install-extension" in command:
            answer = {"version": "0.1.0", "changed": True, "extension_id": "a" * 32}
            return CommandResult(command, 0, json.dumps(answer) + "\n", "")
        if command.endswith("runner.py stop"):
            return CommandResult(command, 0, '{"stopped": false}\n', "")
        if command.endswith("runner.py start"):
            return CommandResult(command, 0, '{"started": true, "pid": 4242}\n', "")
        return ok

    def read_file(self, path: str) -> bytes | None:
        return self.files.get(path)

    def write_file(self, path: str, data: bytes, mode: int) -> None:
        self.log.append(f"write {path}")
        self.files[path] = data

    def ensure_dir(self, path: str, mode: int = 0o700) -> bool:
        return False


def scripted_settings() -> NodeSettings:
    net = NetworkSettings()
    return NodeSettings(
        email="operator@example.test",
        password="not-a-real-password",
        network=net,
        runner=RunnerSettings(),
        dashboard_url=net.dashboard_url,
        extension_source=net.extension_source,
        extension_id=net.extension_id,
    )


@pytest.mark.parametrize("systemd", [True, False], ids=["systemd", "no-systemd"])
def test_deploy_writes_the_supervisor_and_starts_the_runner_through_it(systemd: bool) -> None:
    host = ScriptedHost(systemd)
    result = deploy_node(host, scripted_settings(), "/usr/bin/python3")
    config = json.loads(host.files[f"{NODE_DIR}/config.json"])
    detect = next(i for i, c in enumerate(host.log) if "/run/systemd/system" in c)
    assert detect < host.log.index(f"write {NODE_DIR}/config.json")  # decided first
    starts = [c for c in host.log if c.endswith("runner.py start")]
    if systemd:
        assert result.supervisor == config["supervisor"] == "systemd"
        assert starts == []  # never an unmanaged daemon beside the unit
        enable = host.log.index(f"systemctl --user enable --now {UNIT_NAME}")
        stop = next(i for i, c in enumerate(host.log) if c.endswith("runner.py stop"))
        assert stop < enable  # a runner started by hand would keep the unit's from running
        assert f".config/systemd/user/{UNIT_NAME}" in host.files
    else:
        assert result.supervisor == config["supervisor"] == "runner"
        assert len(starts) == 1 and result.runner_pid == 4242
        assert not any("systemctl --user" in c for c in host.log)
    assert UNIT_NAME == agent_home.UNIT_NAME


def test_a_second_host_on_the_same_machine_is_refused_before_anything_is_installed(
    one_host: tuple[Any, HostRecord], engine: Any
) -> None:
    """Two fleet entries that reach one sshd (one host key) are one device: the second is
    refused with Gradient's rule, nothing is installed or stored for it."""
    from sqlalchemy import text

    from gradientlab.rules import SecondNodeRefused
    from gradientlab.store.fleet import record_deploy, upsert_host
    from tasks.hosts import deploy_host

    fleet, record = one_host
    upsert_host(engine, record)
    record_deploy(engine, record.name, None, "0.1.0", agent_home.RUNNER_VERSION)
    twin = replace(record, name="same-box", address=record.address)
    upsert_host(engine, twin)
    with pytest.raises(SecondNodeRefused, match=f"same-box is the same machine as {record.name}"):
        deploy_host.fn(fleet, twin)
    with engine.connect() as conn:
        nodes = (
            conn.execute(
                text("SELECT h.name FROM nodes n JOIN hosts h ON h.id = n.host_id ORDER BY 1")
            )
            .scalars()
            .all()
        )
    assert nodes == [record.name]


def test_deploy_reads_the_web_api_key_from_the_deployed_extension_s_bundle(
    one_host: tuple[Any, HostRecord], sandbox: Any, engine: Any
) -> None:
    from gradientlab.lifecycle import deploy_host, read_bundle_web_key
    from gradientlab.store.fleet import upsert_host
    from gradientlab.store.webkeys import bundle_web_key

    fleet, record = one_host
    upsert_host(engine, record)
    deploy_host(engine, fleet, record, None)  # idempotent: installs only what is missing
    assert read_bundle_web_key(executor_for(record)) == sandbox.config.api_key
    assert bundle_web_key(engine, fleet.network.extension_id) == sandbox.config.api_key
