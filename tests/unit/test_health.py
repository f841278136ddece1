"""Judging a node from the runner's probe, and recovering it step by step (no SSH, no database)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gradientlab.gradient.models import NodeListItem
from gradientlab.health import (
    BAD_STATES,
    GOOD,
    RECOVERY_PLAN,
    HealthReport,
    Recovery,
    assess,
    probe,
    runner_recoveries,
)
from gradientlab.node import runner
from gradientlab.node.deploy import PROBE_SH
from gradientlab.remote.executor import CommandResult, HostUnreachable, LocalExecutor, RemoteError

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds")  # as the runner's now_iso() writes it


def popup(status: str = "Good", **fields: Any) -> dict[str, Any]:
    """The popup as `runner.read_popup` returns it: every field is the element's text."""
    out: dict[str, Any] = {
        "status": status,
        "node_id": "client-7f3a",
        "ip": "203.0.113.7",
        "version": "1.0.14",
        "taps_today": "12",
        "uptime_today": "345",
        "points_today": "1.2",
        "first_run_dismissed": False,
    }
    out.update(fields)
    return out


def probe_data(
    *,
    runner_alive: bool = True,
    browser_alive: bool = True,
    installed: bool = True,
    popup_fields: dict[str, Any] | None = None,
    browser_started_at: datetime | None = T0,
    popup_read_at: datetime | None = T0 + timedelta(seconds=20),
    events: list[dict[str, Any]] | None = None,
    **status: Any,
) -> dict[str, Any]:
    """A probe shaped like `PROBE_SH`'s answer, around a status file like `Runner`'s."""
    status_file: dict[str, Any] = {
        "runner_pid": 4100,
        "runner_version": "1",
        "browser_pid": 4200 if browser_alive else None,
        "browser_started_at": iso(browser_started_at) if browser_started_at else None,
        "browser_restarts": 0,
        "updated_at": iso(T0 + timedelta(seconds=21)),
        "browser_alive": browser_alive,
    }
    if popup_fields is not None:
        status_file.update(
            extension_id="jjooflmniolkefagchmonjfeegcipghp",
            extension_version=popup_fields.get("version"),
            logged_in=popup_fields.get("status") not in (None, "Logged out"),
            popup=popup_fields,
            popup_read_at=iso(popup_read_at) if popup_read_at else None,
            last_error=None,
        )
    status_file.update(status)
    return {
        "probe_version": "1",
        "now": iso(T0 + timedelta(seconds=30)),
        "hostname": "node-1",
        "runner_alive": runner_alive,
        "runner_pid": 4100 if runner_alive else None,
        "browser_alive": runner_alive and browser_alive,
        "browser_pid": 4200 if runner_alive and browser_alive else None,
        "installed": installed,
        "status": status_file,
        "pss_kib": 181_000,
        "events": events or [],
    }


def item(
    *, connect: bool = True, banned: bool | None = None, ip: str | None = None
) -> NodeListItem:
    return NodeListItem(
        name="client-7f3a",
        connect=connect,
        point=0,
        today=0,
        taps=3,
        country=None,
        place=None,
        ip=ip,
        banned=banned,
    )


# ---------------------------------------------------------------- assess


def test_no_probe_is_unreachable_with_the_error() -> None:
    report = assess("node-1", None, item(), error="ssh: timed out")
    assert report.status == "Unreachable"
    assert report.reachable is False
    assert report.error == "ssh: timed out"
    assert report.healthy is False
    assert report.runner_alive is None
    assert report.network_connect is None  # the network's view is not consulted


def test_a_good_node_carries_what_the_popup_and_probe_said() -> None:
    events = [{"id": 5, "at": iso(T0), "kind": "runner_started", "detail": "pid 4100"}]
    report = assess(
        "node-1",
        probe_data(popup_fields=popup(taps_today="1,234", uptime_today="3456 s"), events=events),
        item(),
    )
    assert report.status == GOOD
    assert report.healthy is True
    assert report.reachable is True
    assert report.runner_alive is True
    assert report.browser_alive is True
    assert report.logged_in is True
    assert report.popup_status == "Good"
    assert report.client_id == "client-7f3a"
    assert report.ip == "203.0.113.7"
    assert report.taps_today == 1234
    assert report.uptime_today == 3456
    assert report.pss_kib == 181_000
    assert report.status_updated_at == T0 + timedelta(seconds=20)
    assert report.events == events
    assert report.network_connect is True
    assert report.error is None


def test_excellent_is_good_too() -> None:
    assert assess("n", probe_data(popup_fields=popup("Excellent")), None).status == GOOD


def test_good_without_the_networks_view() -> None:
    report = assess("n", probe_data(popup_fields=popup()), None)
    assert report.status == GOOD
    assert report.network_connect is None
    assert report.banned is None


def test_unparseable_counters_become_none() -> None:
    report = assess("n", probe_data(popup_fields=popup(taps_today="", uptime_today="--")), None)
    assert report.taps_today is None
    assert report.uptime_today is None


def test_the_networks_ip_wins_over_the_popups() -> None:
    report = assess("n", probe_data(popup_fields=popup()), item(ip="198.51.100.9"))
    assert report.ip == "198.51.100.9"


def test_a_dead_runner_is_runner_down() -> None:
    data = probe_data(runner_alive=False, popup_fields=popup())
    report = assess("n", data, item())
    assert report.status == "RunnerDown"
    assert report.runner_alive is False
    assert report.healthy is False


def test_a_host_without_the_node_is_runner_down_and_says_so() -> None:
    data = probe_data(installed=False, popup_fields=popup())
    report = assess("n", data, item())
    assert report.status == "RunnerDown"
    assert report.error == "the node is not deployed on this host"


def test_a_dead_browser_is_browser_down_and_keeps_the_runners_last_error() -> None:
    data = probe_data(
        browser_alive=False, popup_fields=popup(), last_error="chromium exited with 1 at start"
    )
    report = assess("n", data, item())
    assert report.status == "BrowserDown"
    assert report.error == "chromium exited with 1 at start"


def test_no_popup_yet_is_starting() -> None:
    report = assess("n", probe_data(popup_fields=None), item())
    assert report.status == "Starting"
    assert report.healthy is True
    assert report.popup_status is None


def test_a_popup_read_from_the_previous_browser_is_starting() -> None:
    data = probe_data(
        popup_fields=popup("Good"),
        browser_started_at=T0 + timedelta(minutes=5),
        popup_read_at=T0 + timedelta(minutes=4),
    )
    assert assess("n", data, item()).status == "Starting"


def test_a_popup_without_a_read_time_after_a_browser_start_is_starting() -> None:
    data = probe_data(popup_fields=popup("Logged out"), popup_read_at=None)
    assert assess("n", data, item()).status == "Starting"


def test_a_popup_read_after_the_browser_started_counts() -> None:
    data = probe_data(
        popup_fields=popup("Logged out"),
        browser_started_at=T0,
        popup_read_at=T0 + timedelta(milliseconds=1),
    )
    assert assess("n", data, item()).status == "LoggedOut"


def test_logged_out() -> None:
    report = assess("n", probe_data(popup_fields=popup("Logged out")), item())
    assert report.status == "LoggedOut"
    assert report.logged_in is False
    assert report.healthy is False


def test_unsupported_from_the_popup_carries_the_banned_reason() -> None:
    data = probe_data(popup_fields=popup("Unsupported", banned_reason="datacenter IP"))
    report = assess("n", data, item())
    assert report.status == "Unsupported"
    assert report.banned_reason == "datacenter IP"
    assert report.healthy is False


def test_unsupported_from_a_banned_network_item() -> None:
    data = probe_data(popup_fields=popup("Good", banned_reason="IPv6 address"))
    report = assess("n", data, item(banned=True, connect=False))
    assert report.status == "Unsupported"  # not Disconnected: no restart fixes it
    assert report.banned is True
    assert report.banned_reason == "IPv6 address"


def test_an_empty_banned_reason_is_none() -> None:
    report = assess("n", probe_data(popup_fields=popup("Unsupported", banned_reason="")), None)
    assert report.banned_reason is None


def test_a_network_item_that_is_not_banned_does_not_make_it_unsupported() -> None:
    assert assess("n", probe_data(popup_fields=popup()), item(banned=False)).status == GOOD


def test_disconnected_from_the_popup() -> None:
    assert assess("n", probe_data(popup_fields=popup("Disconnected")), item()).status == (
        "Disconnected"
    )


def test_disconnected_when_the_network_says_not_connected() -> None:
    report = assess("n", probe_data(popup_fields=popup("Good")), item(connect=False))
    assert report.status == "Disconnected"
    assert report.network_connect is False


def test_an_unknown_popup_status_is_not_good() -> None:
    assert assess("n", probe_data(popup_fields=popup("Reconnecting")), item()).status == (
        "Disconnected"
    )


def test_the_sample_row_carries_the_status_and_detail() -> None:
    report = assess("node-1", probe_data(popup_fields=popup()), item())
    row = report.sample()
    assert row["status"] == GOOD
    assert row["sampled_at"] == report.checked_at
    assert row["taps_today"] == 12
    assert row["detail"] == {"error": None, "client_id": "client-7f3a"}


# ---------------------------------------------------------------- against the real probe


def test_the_real_probe_of_an_empty_home_is_runner_down(tmp_path: Path) -> None:
    data = probe(LocalExecutor("n", tmp_path))  # the real shell probe, run by /bin/sh
    report = assess("n", data, None)
    assert report.status == "RunnerDown"
    assert report.error == "the node is not deployed on this host"


def test_the_real_probe_of_a_running_node_is_good(tmp_path: Path) -> None:
    paths = runner.Paths(tmp_path / ".gradientlab" / "node")
    paths.home.mkdir(parents=True)
    paths.config.write_text("{}")
    paths.runner_pid.write_text(str(os.getpid()))  # any live pid will do
    paths.browser_pid.write_text(str(os.getpid()))
    status = probe_data(popup_fields=popup())["status"]
    status["pss_kib"] = 250_000
    runner.write_json_atomic(paths.status, status)
    log = runner.EventLog(paths.events)
    log.add("browser_started", "pid 4200")
    log.add("popup_status", "Good")
    data = probe(LocalExecutor("n", tmp_path), since=1)
    report = assess("n", data, item())
    assert report.status == GOOD
    assert [e["kind"] for e in report.events] == ["popup_status"]
    assert report.pss_kib == 250_000


def test_the_real_probe_survives_an_event_line_cut_short(tmp_path: Path) -> None:
    home = tmp_path / ".gradientlab" / "node"
    home.mkdir(parents=True)
    (home / "events.jsonl").write_text('{"id": 1, "kind": "runner_started"}\n{"id": 2, "ki')
    data = probe(LocalExecutor("n", tmp_path))
    assert [e["id"] for e in data["events"]] == [1]
    assert data["runner_alive"] is False


# ---------------------------------------------------------------- runner_recoveries


def event(i: int, kind: str, at: datetime, detail: str = "") -> dict[str, Any]:
    return {"id": i, "at": iso(at), "kind": kind, "detail": detail}


def test_runner_recoveries_pairs_exits_with_the_next_start() -> None:
    t = [T0 + timedelta(seconds=s) for s in range(10)]
    events = [
        event(1, "runner_started", t[0], "pid 1"),
        event(2, "browser_started", t[0], "pid 2"),  # the first start repairs nothing
        event(3, "popup_status", t[1], "Good"),
        event(4, "browser_exited", t[2], "exit code -9"),
        event(5, "stale_lock_cleared", t[3]),
        event(6, "browser_started", t[4], "pid 3"),
        event(7, "browser_started", t[5], "pid 4"),  # no exit before it
        event(8, "browser_exited", t[6], "exit code 1"),
        event(9, "browser_started", t[8], "pid 5"),
        event(10, "browser_exited", t[9], "exit code 2"),  # not restarted yet
    ]
    assert runner_recoveries(events) == [
        (t[2], t[4], "exit code -9"),
        (t[6], t[8], "exit code 1"),
    ]


def test_runner_recoveries_of_nothing() -> None:
    assert runner_recoveries([]) == []
    assert runner_recoveries([event(1, "browser_exited", T0)]) == []


def test_runner_recoveries_skips_a_pair_with_an_unreadable_time() -> None:
    events = [
        {"id": 1, "at": "yesterday", "kind": "browser_exited", "detail": "x"},
        event(2, "browser_started", T0),
        event(3, "browser_exited", T0 + timedelta(seconds=1), "y"),
        event(4, "browser_started", T0 + timedelta(seconds=2)),
    ]
    assert runner_recoveries(events) == [
        (T0 + timedelta(seconds=1), T0 + timedelta(seconds=2), "y")
    ]


def test_runner_recoveries_dates_the_outage_from_the_first_exit() -> None:
    # Runner.run: exited -> start_browser fails (browser_start_failed) -> on the next loop the
    # failed process is seen as another exit -> start_browser succeeds.
    events = [
        event(1, "browser_exited", T0, "exit code -9"),
        event(2, "browser_start_failed", T0 + timedelta(seconds=1), "chromium exited with 1"),
        event(3, "browser_exited", T0 + timedelta(seconds=6), "exit code 1"),
        event(4, "browser_started", T0 + timedelta(seconds=7), "pid 9"),
    ]
    assert [(a, b) for a, b, _ in runner_recoveries(events)] == [(T0, T0 + timedelta(seconds=7))]


# ---------------------------------------------------------------- probe over a fake executor


class FakeExecutor:
    """Records commands; answers each from `script` (first matching substring wins)."""

    def __init__(
        self,
        script: dict[str, CommandResult | Exception] | None = None,
        name: str = "node-1",
    ) -> None:
        self.name = name
        self.script = script or {}
        self.commands: list[str] = []

    def run(self, command: str, timeout: float = 60) -> CommandResult:
        self.commands.append(command)
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


def result(exit_code: int = 0, stdout: str = "", stderr: str = "") -> CommandResult:
    return CommandResult("cmd", exit_code, stdout, stderr)


def test_probe_parses_the_document_and_applies_the_cursor() -> None:
    data = probe_data(popup_fields=popup(), events=[{"id": 7, "kind": "a"}, {"id": 8, "kind": "b"}])
    ex = FakeExecutor({"probe_version": result(0, json.dumps(data) + "\n")})
    got = probe(ex, since=7)
    assert [e["id"] for e in got["events"]] == [8]
    assert ex.commands == [PROBE_SH]  # shell builtins only: no interpreter per probe


def test_probe_without_json_says_so() -> None:
    ex = FakeExecutor({"probe": result(127, "", "python: not found\n")})
    with pytest.raises(RemoteError, match=r"node-1: the probe printed no JSON \(exit 127\)"):
        probe(ex)


# ---------------------------------------------------------------- Recovery


def report_of(status: str) -> HealthReport:
    return HealthReport(host="node-1", status=status, reachable=status != "Unreachable")


class Reprobe:
    """Answers scripted statuses in turn, then repeats the last one."""

    def __init__(self, statuses: Iterable[str]) -> None:
        self.statuses = list(statuses)
        self.calls = 0

    def __call__(self) -> HealthReport:
        status = self.statuses[min(self.calls, len(self.statuses) - 1)]
        self.calls += 1
        return report_of(status)


class Reboot:
    def __init__(self, error: Exception | None = None) -> None:
        self.calls = 0
        self.error = error

    def __call__(self) -> None:
        self.calls += 1
        if self.error is not None:
            raise self.error


STEP_COMMAND = {
    "restart_browser": "runner.py restart-browser",
    "start_runner": "runner.py start",
    "login": "runner.py login",
}


def recovery(
    ex: FakeExecutor | None,
    reprobe: Callable[[], HealthReport],
    reboot: Callable[[], None] | None = None,
    wait_seconds: float = 0,
) -> Recovery:
    return Recovery(
        ex=ex,
        python=None,
        reboot_host=reboot or Reboot(),
        reprobe=reprobe,
        wait_seconds=wait_seconds,
        poll_seconds=0,
    )


@pytest.mark.parametrize("status", BAD_STATES)
def test_every_step_of_the_plan_runs_in_order_while_the_node_stays_bad(status: str) -> None:
    ex, reboot = FakeExecutor(), Reboot()
    final, actions = recovery(ex, Reprobe([status]), reboot).recover(report_of(status))
    plan = RECOVERY_PLAN[status]
    assert [a.step for a in actions] == list(plan)
    assert not any(a.ok for a in actions)
    assert final.status == status
    ssh_steps = [s for s in plan if s != "reboot_host"]
    assert len(ex.commands) == len(ssh_steps)
    for command, step in zip(ex.commands, ssh_steps, strict=True):
        assert command.endswith(STEP_COMMAND[step])
    assert reboot.calls == plan.count("reboot_host")


def test_browser_down_stops_at_the_first_step_that_makes_it_good() -> None:
    ex, reboot = FakeExecutor(), Reboot()
    reprobe = Reprobe(["BrowserDown", GOOD])
    final, actions = recovery(ex, reprobe, reboot).recover(report_of("BrowserDown"))
    assert final.status == GOOD
    assert [(a.step, a.ok) for a in actions] == [("restart_browser", False), ("start_runner", True)]
    assert ex.commands == [
        ".gradientlab/venv/bin/python .gradientlab/node/runner.py restart-browser",
        ".gradientlab/venv/bin/python .gradientlab/node/runner.py start",
    ]
    assert reboot.calls == 0
    assert actions[0].detail.endswith("then BrowserDown")
    assert actions[1].detail.endswith("then Good")
    assert all(a.started_at <= a.finished_at for a in actions)


def test_logged_out_is_fixed_by_login_alone() -> None:
    ex = FakeExecutor({"login": result(0, 'log line\n{"logged_in": true}\n')})
    final, actions = recovery(ex, Reprobe([GOOD])).recover(report_of("LoggedOut"))
    assert final.status == GOOD
    assert [(a.step, a.ok) for a in actions] == [("login", True)]
    assert actions[0].detail == 'log line\n{"logged_in": true}; then Good'
    assert len(ex.commands) == 1 and "runner.py login" in ex.commands[0]


def test_a_failing_step_is_recorded_and_the_next_step_runs() -> None:
    ex = FakeExecutor({"login": result(1, '{"error": "RuntimeError: dashboard login failed"}')})
    reprobe = Reprobe([GOOD])
    final, actions = recovery(ex, reprobe).recover(report_of("LoggedOut"))
    assert [(a.step, a.ok) for a in actions] == [("login", False), ("restart_browser", True)]
    assert "login failed" in actions[0].detail
    assert "dashboard login failed" in actions[0].detail
    assert reprobe.calls == 1  # no wait after a step that failed
    assert final.status == GOOD
    assert [c.rsplit(" ", 1)[1] for c in ex.commands] == ["login", "restart-browser"]


def test_a_raising_executor_is_a_failed_step_too() -> None:
    ex = FakeExecutor({"restart-browser": HostUnreachable("node-1: connection refused")})
    reboot = Reboot()
    final, actions = recovery(ex, Reprobe([GOOD]), reboot).recover(report_of("Disconnected"))
    assert [(a.step, a.ok) for a in actions] == [("restart_browser", False), ("login", True)]
    assert actions[0].detail == "node-1: connection refused"
    assert reboot.calls == 0
    assert final.status == GOOD


def test_a_raising_reboot_is_a_failed_step_and_the_report_is_unchanged() -> None:
    before = report_of("Unreachable")
    reprobe = Reprobe([GOOD])
    final, actions = recovery(None, reprobe, Reboot(RuntimeError("oci: 429"))).recover(before)
    assert [(a.step, a.ok, a.detail) for a in actions] == [("reboot_host", False, "oci: 429")]
    assert final is before
    assert reprobe.calls == 0


def test_without_ssh_only_the_reboot_can_run() -> None:
    reboot = Reboot()
    final, actions = recovery(None, Reprobe([GOOD]), reboot).recover(report_of("RunnerDown"))
    assert [(a.step, a.ok) for a in actions] == [("start_runner", False), ("reboot_host", True)]
    assert "no SSH connection" in actions[0].detail
    assert actions[1].detail == "host rebooted; then Good"
    assert reboot.calls == 1
    assert final.status == GOOD


@pytest.mark.parametrize("status", [GOOD, "Starting", "Unsupported"])
def test_states_without_a_plan_do_nothing(status: str) -> None:
    ex, reprobe, reboot = FakeExecutor(), Reprobe([GOOD]), Reboot()
    before = report_of(status)
    final, actions = recovery(ex, reprobe, reboot).recover(before)
    assert final is before
    assert actions == []
    assert ex.commands == [] and reprobe.calls == 0 and reboot.calls == 0


def test_after_a_step_it_polls_until_good_within_the_wait() -> None:
    ex = FakeExecutor()
    reprobe = Reprobe(["Starting", "Starting", "Disconnected", GOOD])
    final, actions = recovery(ex, reprobe, wait_seconds=5).recover(report_of("Disconnected"))
    assert final.status == GOOD
    assert reprobe.calls == 4
    assert [(a.step, a.ok) for a in actions] == [("restart_browser", True)]


def test_the_python_given_is_the_one_that_runs_the_runner() -> None:
    ex = FakeExecutor()
    rec = Recovery(
        ex=ex,
        python="/usr/bin/python3",
        reboot_host=Reboot(),
        reprobe=Reprobe([GOOD]),
        wait_seconds=0,
        poll_seconds=0,
    )
    rec.recover(report_of("LoggedOut"))
    assert ex.commands == ["/usr/bin/python3 .gradientlab/node/runner.py login"]
