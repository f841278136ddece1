"""Running a decided recovery on one host: each rung in turn until the node is Good, every rung
recorded with whether it worked. A fake executor, scripted re-probes and a fake clock: no SSH,
no sleeping."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from gradientlab.health import HealthReport, Recovery, Rung, Verdict, wait_until
from gradientlab.health import act as act_module
from gradientlab.remote.executor import CommandResult, CommandTimeout, HostUnreachable, RemoteError

R = Rung
RUNNER = ".gradientlab/venv/bin/python .gradientlab/node/runner.py"


class FakeExecutor:
    """Records commands; answers each from `script` (first matching substring wins)."""

    def __init__(
        self, script: dict[str, CommandResult | Exception] | None = None, name: str = "node-1"
    ) -> None:
        self.name = name
        self.script = script or {}
        self.commands: list[str] = []
        self.timeouts: list[float] = []

    def run(self, command: str, timeout: float = 60) -> CommandResult:
        self.commands.append(command)
        self.timeouts.append(timeout)
        for needle, answer in self.script.items():
            if needle in command:
                if isinstance(answer, Exception):
                    raise answer
                return answer
        return CommandResult(command, 0, '{"ok": true}\n', "")

    def read_file(self, path: str) -> bytes | None:
        return None

    def write_file(self, path: str, data: bytes, mode: int) -> None:
        raise AssertionError("recovery writes no files")

    def ensure_dir(self, path: str, mode: int = 0o700) -> bool:
        raise AssertionError("recovery makes no folders")


def result(exit_code: int = 0, stdout: str = "", stderr: str = "") -> CommandResult:
    return CommandResult("cmd", exit_code, stdout, stderr)


def report_of(status: Verdict) -> HealthReport:
    return HealthReport(host="node-1", status=status, reachable=status != Verdict.UNREACHABLE)


class Reprobe:
    """Answers scripted verdicts in turn, then repeats the last one."""

    def __init__(self, statuses: Iterable[Verdict]) -> None:
        self.statuses = list(statuses)
        self.calls = 0

    def __call__(self) -> HealthReport:
        status = self.statuses[min(self.calls, len(self.statuses) - 1)]
        self.calls += 1
        return report_of(status)


class Call:
    """A provider or deploy action: counts its calls, may raise."""

    def __init__(self, error: Exception | None = None) -> None:
        self.calls = 0
        self.error = error

    def __call__(self) -> None:
        self.calls += 1
        if self.error is not None:
            raise self.error


class FakeClock:
    """Stands in for the `time` module inside act.py: sleeping moves the clock, instantly."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(act_module, "time", fake)
    return fake


def recovery(
    ex: FakeExecutor | None,
    reprobe: Reprobe,
    *,
    python: str | None = None,
    reboot: Call | None = None,
    deploy: Call | None = None,
    reprovision: Call | None = None,
    wait_seconds: float = 0,
    poll_seconds: float = 0,
) -> Recovery:
    def connect() -> FakeExecutor:
        if ex is None:
            raise HostUnreachable("node-1: no TCP connection to 192.0.2.7:22 within 5s")
        return ex

    return Recovery(
        connect=connect,
        python=python,
        reprobe=reprobe,
        reboot_host=reboot or Call(),
        deploy=deploy,
        reprovision=reprovision,
        wait_seconds=wait_seconds,
        poll_seconds=poll_seconds,
        command_timeout=45,
    )


D, G = Verdict.DISCONNECTED, Verdict.GOOD


# ---------------------------------------------------------------- one rung after another


def test_it_stops_at_the_first_rung_that_makes_the_node_good() -> None:
    ex, reprobe = FakeExecutor(), Reprobe([D, G])
    final, actions = recovery(ex, reprobe).recover(
        report_of(D), (R.RESTART_BROWSER, R.LOGIN, R.RESTART_RUNNER, R.REBOOT_HOST)
    )
    assert final.status == G
    assert [(a.step, a.ok) for a in actions] == [("restart_browser", False), ("login", True)]
    assert ex.commands == [f"{RUNNER} restart-browser", f"{RUNNER} login"]
    assert ex.timeouts == [45, 45]
    assert actions[0].detail == '{"ok": true}; then Disconnected'
    assert actions[1].detail == '{"ok": true}; then Good'
    assert all(a.started_at <= a.finished_at for a in actions)


def test_every_rung_runs_in_order_while_the_node_stays_bad() -> None:
    ex, reboot = FakeExecutor(), Call()
    steps = (R.RESTART_BROWSER, R.LOGIN, R.RESTART_RUNNER, R.REBOOT_HOST)
    final, actions = recovery(ex, Reprobe([D]), reboot=reboot).recover(report_of(D), steps)
    assert [a.step for a in actions] == list(steps)
    assert not any(a.ok for a in actions)
    assert final.status == D
    assert ex.commands == [
        f"{RUNNER} restart-browser",
        f"{RUNNER} login",
        f"{RUNNER} stop",
        f"{RUNNER} start",
    ]
    assert reboot.calls == 1


def test_no_steps_do_nothing() -> None:
    ex, reprobe, reboot = FakeExecutor(), Reprobe([G]), Call()
    before = report_of(Verdict.DISK_FULL)
    final, actions = recovery(ex, reprobe, reboot=reboot).recover(before, ())
    assert final is before
    assert actions == []
    assert ex.commands == [] and reprobe.calls == 0 and reboot.calls == 0


def test_a_failing_rung_is_recorded_and_the_next_one_runs() -> None:
    ex = FakeExecutor({"login": result(1, '{"error": "RuntimeError: dashboard login failed"}')})
    reprobe = Reprobe([G])
    final, actions = recovery(ex, reprobe).recover(
        report_of(Verdict.LOGGED_OUT), (R.LOGIN, R.RESTART_BROWSER)
    )
    assert [(a.step, a.ok) for a in actions] == [("login", False), ("restart_browser", True)]
    assert actions[0].detail.startswith("node-1: login (login) failed: ")
    assert "dashboard login failed" in actions[0].detail
    assert reprobe.calls == 1  # no waiting after a rung that failed
    assert final.status == G


def test_a_failing_rung_without_stdout_reports_its_stderr() -> None:
    ex = FakeExecutor({"restart-browser": result(2, "", "Traceback: no browser.pid\n")})
    _, actions = recovery(ex, Reprobe([D])).recover(report_of(D), (R.RESTART_BROWSER,))
    assert actions[0].ok is False
    assert "no browser.pid" in actions[0].detail


@pytest.mark.parametrize(
    "error",
    [
        HostUnreachable("node-1: connection refused"),
        CommandTimeout("node-1: running `runner.py restart-browser` did not finish within 45s"),
        OSError("Broken pipe"),
    ],
    ids=["unreachable", "timeout", "oserror"],
)
def test_a_raising_executor_is_a_failed_step(error: Exception) -> None:
    ex = FakeExecutor({"restart-browser": error})
    final, actions = recovery(ex, Reprobe([G])).recover(report_of(D), (R.RESTART_BROWSER, R.LOGIN))
    assert [(a.step, a.ok) for a in actions] == [("restart_browser", False), ("login", True)]
    assert actions[0].detail == str(error)
    assert final.status == G


def test_a_connect_that_raises_is_a_failed_step_and_the_reboot_still_runs() -> None:
    reboot, reprobe = Call(), Reprobe([G])
    before = report_of(Verdict.RUNNER_DOWN)
    final, actions = recovery(None, reprobe, reboot=reboot).recover(
        before, (R.RESTART_RUNNER, R.REBOOT_HOST)
    )
    assert [(a.step, a.ok) for a in actions] == [("restart_runner", False), ("reboot_host", True)]
    assert "no TCP connection" in actions[0].detail
    assert actions[1].detail == "host rebooted; then Good"
    assert reboot.calls == 1
    assert final.status == G


def test_a_long_error_is_cut_to_a_readable_length() -> None:
    ex = FakeExecutor({"login": OSError("x" * 2000)})
    _, actions = recovery(ex, Reprobe([D])).recover(report_of(D), (R.LOGIN,))
    assert len(actions[0].detail) == 500


# ---------------------------------------------------------------- what each rung runs


def test_restart_runner_stops_then_starts_the_runner() -> None:
    ex = FakeExecutor()
    _, actions = recovery(ex, Reprobe([G])).recover(
        report_of(Verdict.RUNNER_DOWN), (R.RESTART_RUNNER,)
    )
    assert ex.commands == [f"{RUNNER} stop", f"{RUNNER} start"]
    assert actions[0].detail == '{"ok": true}; {"ok": true}; then Good'


def test_restart_runner_does_not_start_when_stop_fails() -> None:
    ex = FakeExecutor({"runner.py stop": result(1, '{"error": "permission denied"}')})
    _, actions = recovery(ex, Reprobe([D])).recover(
        report_of(Verdict.RUNNER_DOWN), (R.RESTART_RUNNER,)
    )
    assert ex.commands == [f"{RUNNER} stop"]
    assert actions[0].ok is False
    assert "restart_runner (stop) failed" in actions[0].detail


def test_the_configured_python_runs_the_runner() -> None:
    ex = FakeExecutor()
    recovery(ex, Reprobe([G]), python="/usr/bin/python3").recover(
        report_of(Verdict.LOGGED_OUT), (R.LOGIN,)
    )
    assert ex.commands == ["/usr/bin/python3 .gradientlab/node/runner.py login"]


def test_a_python_path_with_a_space_is_quoted() -> None:
    ex = FakeExecutor()
    recovery(ex, Reprobe([G]), python="/opt/my python/bin/python").recover(
        report_of(Verdict.LOGGED_OUT), (R.LOGIN,)
    )
    assert ex.commands == ["'/opt/my python/bin/python' .gradientlab/node/runner.py login"]


def test_reboot_deploy_and_reprovision_call_their_callables() -> None:
    reboot, deploy, reprovision = Call(), Call(), Call()
    ex = FakeExecutor()
    rec = recovery(ex, Reprobe([D]), reboot=reboot, deploy=deploy, reprovision=reprovision)
    _, actions = rec.recover(
        report_of(Verdict.UNREACHABLE), (R.DEPLOY, R.REBOOT_HOST, R.REPROVISION)
    )
    assert [(a.step, a.detail) for a in actions] == [
        ("deploy", "deployed; then Disconnected"),
        ("reboot_host", "host rebooted; then Disconnected"),
        ("reprovision", "re-provisioned; then Disconnected"),
    ]
    assert (reboot.calls, deploy.calls, reprovision.calls) == (1, 1, 1)
    assert ex.commands == []  # none of them goes through the runner


def test_a_raising_reboot_is_a_failed_step_and_the_report_is_unchanged() -> None:
    before = report_of(Verdict.UNREACHABLE)
    reprobe = Reprobe([G])
    final, actions = recovery(None, reprobe, reboot=Call(RuntimeError("oci: 429"))).recover(
        before, (R.REBOOT_HOST,)
    )
    assert [(a.step, a.ok, a.detail) for a in actions] == [("reboot_host", False, "oci: 429")]
    assert final is before
    assert reprobe.calls == 0


@pytest.mark.parametrize(
    ("step", "message"),
    [
        (R.DEPLOY, "deploy is not available here"),
        (R.REPROVISION, "re-provisioning is not enabled for this host"),
    ],
)
def test_a_rung_without_its_callable_is_a_failed_step(step: Rung, message: str) -> None:
    reprobe = Reprobe([G])
    _, actions = recovery(FakeExecutor(), reprobe).recover(report_of(Verdict.UNREACHABLE), (step,))
    assert [(a.step, a.ok, a.detail) for a in actions] == [(step, False, message)]
    assert reprobe.calls == 0


def test_run_step_raises_a_remote_error_for_a_failed_command() -> None:
    ex = FakeExecutor({"login": result(1, "nope")})
    with pytest.raises(RemoteError, match=r"node-1: login \(login\) failed: nope"):
        recovery(ex, Reprobe([G])).run_step(R.LOGIN)


# ---------------------------------------------------------------- waiting for the node


def test_after_a_rung_it_polls_until_good_within_the_wait(clock: FakeClock) -> None:
    reprobe = Reprobe([Verdict.STARTING, Verdict.STARTING, D, G])
    rec = recovery(FakeExecutor(), reprobe, wait_seconds=60, poll_seconds=2)
    final, actions = rec.recover(report_of(D), (R.RESTART_BROWSER, R.LOGIN))
    assert final.status == G
    assert reprobe.calls == 4
    assert clock.slept == [2, 2, 2]
    assert [(a.step, a.ok) for a in actions] == [("restart_browser", True)]


def test_it_gives_up_waiting_after_wait_seconds(clock: FakeClock) -> None:
    reprobe = Reprobe([D])
    rec = recovery(FakeExecutor(), reprobe, wait_seconds=60, poll_seconds=1)
    final, actions = rec.recover(report_of(D), (R.RESTART_BROWSER,))
    assert final.status == D
    assert reprobe.calls == 61  # at 0, 1, ..., 60 s
    assert sum(clock.slept) == 60
    assert actions[0].ok is False


@pytest.mark.parametrize("step", [R.REBOOT_HOST, R.DEPLOY, R.REPROVISION])
def test_a_rung_that_rebuilds_the_node_is_given_three_times_as_long(
    clock: FakeClock, step: Rung
) -> None:
    reprobe = Reprobe([Verdict.UNREACHABLE])
    rec = recovery(
        FakeExecutor(), reprobe, deploy=Call(), reprovision=Call(), wait_seconds=60, poll_seconds=1
    )
    rec.recover(report_of(Verdict.UNREACHABLE), (step,))
    assert reprobe.calls == 181
    assert sum(clock.slept) == 180


def test_a_good_first_reprobe_does_not_sleep(clock: FakeClock) -> None:
    reprobe = Reprobe([G])
    recovery(FakeExecutor(), reprobe, wait_seconds=60, poll_seconds=1).recover(
        report_of(D), (R.RESTART_BROWSER,)
    )
    assert reprobe.calls == 1
    assert clock.slept == []


def test_wait_until_reads_until_done_or_the_timeout(clock: FakeClock) -> None:
    reprobe = Reprobe([Verdict.STARTING, Verdict.STARTING, D])
    got = wait_until(reprobe, lambda r: r.status != Verdict.STARTING, timeout=30, poll=5)
    assert got.status == D
    assert reprobe.calls == 3
    stuck = Reprobe([Verdict.STARTING])
    got = wait_until(stuck, lambda r: r.status != Verdict.STARTING, timeout=30, poll=5)
    assert got.status == Verdict.STARTING
    assert stuck.calls == 7  # at 0, 5, ..., 30 s
