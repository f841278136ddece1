"""Judging a host: from what its probe saw (or why it saw nothing) to a verdict with its reason.

Pure: no SSH, no database. Every check is judged on a fixed clock (T0), never the wall clock.
Also: the fleet's network state, the event cursor, and the runner's own recoveries."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gradientlab.config import HealthSettings
from gradientlab.gradient.models import NodeInfo, NodeListItem
from gradientlab.health import (
    HealthReport,
    Observation,
    Verdict,
    judge,
    network_state,
    observe,
    runner_recoveries,
    settled_cursor,
)
from gradientlab.health.judge import PROBE_MAX_BYTES, NetworkNode, probe_command
from gradientlab.health.report import HostMetrics
from gradientlab.node.deploy import PROBE_SH
from gradientlab.remote.executor import (
    AuthRefused,
    CommandResult,
    CommandTimeout,
    HostKeyInvalid,
    HostKeyMismatch,
    HostUnreachable,
)

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
CHECKED = T0 + timedelta(seconds=30)  # when the control plane ran the probe
POLICY = HealthSettings()
MIB = 1024  # KiB


def iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds")  # as the runner's now_iso() writes it


def popup(status: str = "Good", **fields: Any) -> dict[str, Any]:
    """The popup as `agent_popup.read_popup` returns it: every field is the element's text."""
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


def status_file(
    *,
    browser_alive: bool = True,
    popup_fields: dict[str, Any] | None = None,
    browser_started_at: datetime | None = T0,
    popup_read_at: datetime | None = T0 + timedelta(seconds=20),
    **extra: Any,
) -> dict[str, Any]:
    """status.json as the runner writes it."""
    out: dict[str, Any] = {
        "runner_pid": 4100,
        "runner_version": "1",
        "browser_pid": 4200 if browser_alive else None,
        "browser_started_at": iso(browser_started_at) if browser_started_at else None,
        "browser_restarts": 0,
        "updated_at": iso(T0 + timedelta(seconds=21)),
        "browser_alive": browser_alive,
        "pss_kib": 181_000,
    }
    if popup_fields is not None:
        out.update(
            extension_id="jjooflmniolkefagchmonjfeegcipghp",
            extension_version=popup_fields.get("version"),
            logged_in=popup_fields.get("status") not in (None, "Logged out"),
            popup=popup_fields,
            popup_read_at=iso(popup_read_at) if popup_read_at else None,
            last_error=None,
        )
    out.update(extra)
    return out


def probe_data(
    *,
    runner_alive: bool = True,
    browser_alive: bool = True,
    installed: bool = True,
    popup_fields: dict[str, Any] | None = None,
    events: list[dict[str, Any]] | None = None,
    events_id: str | None = None,
    host: dict[str, Any] | None = None,
    **status: Any,
) -> dict[str, Any]:
    """A probe answer shaped like `PROBE_SH`'s, around a status file like the runner's."""
    data: dict[str, Any] = {
        "probe_version": "sh1",
        "runner_alive": runner_alive,
        "runner_pid": 4100 if runner_alive else None,
        "browser_alive": runner_alive and browser_alive,
        "browser_pid": 4200 if runner_alive and browser_alive else None,
        "installed": installed,
        "status": status_file(browser_alive=browser_alive, popup_fields=popup_fields, **status),
        "events": events or [],
    }
    if events_id is not None:
        data["events_id"] = events_id
    if host is not None:
        data["host"] = host
    return data


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


def judged(
    data: dict[str, Any] | None,
    network: NetworkNode | None = None,
    policy: HealthSettings = POLICY,
    cursor: int = 0,
    events_id: str | None = None,
) -> HealthReport:
    return judge(Observation("node-1", CHECKED, data), network, policy, cursor, events_id)


def event(i: int, kind: str, at: datetime, detail: str = "") -> dict[str, Any]:
    return {"id": i, "at": iso(at), "kind": kind, "detail": detail}


# ---------------------------------------------------------------- a node the probe could read


def test_a_good_node_carries_what_the_popup_and_probe_said() -> None:
    events = [event(5, "runner_started", T0, "pid 4100")]
    report = judged(
        probe_data(popup_fields=popup(taps_today="1,234", uptime_today="3456 s"), events=events),
        item(),
    )
    assert report.status == Verdict.GOOD
    assert report.reason == "the popup reads Good"
    assert report.healthy is True
    assert report.recoverable is False
    assert report.reachable is True
    assert report.checked_at == CHECKED
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
    assert report.banned is None
    assert report.error is None


def test_excellent_is_good_too() -> None:
    report = judged(probe_data(popup_fields=popup("Excellent")), item())
    assert report.status == Verdict.GOOD
    assert report.reason == "the popup reads Excellent"


def test_good_without_the_networks_view() -> None:
    report = judged(probe_data(popup_fields=popup()), None)
    assert report.status == Verdict.GOOD
    assert report.network_connect is None
    assert report.banned is None


def test_unparseable_counters_become_none() -> None:
    report = judged(probe_data(popup_fields=popup(taps_today="", uptime_today="--")))
    assert report.taps_today is None
    assert report.uptime_today is None


def test_the_networks_ip_wins_over_the_popups() -> None:
    report = judged(probe_data(popup_fields=popup()), item(ip="198.51.100.9"))
    assert report.ip == "198.51.100.9"


def test_the_popups_ip_stays_when_the_network_has_none() -> None:
    assert judged(probe_data(popup_fields=popup()), item(ip=None)).ip == "203.0.113.7"


def test_a_dead_runner_is_runner_down_with_its_last_error() -> None:
    data = probe_data(
        runner_alive=False, popup_fields=popup(), last_error="RuntimeError: profile locked"
    )
    report = judged(data, item())
    assert report.status == Verdict.RUNNER_DOWN
    assert report.runner_alive is False
    assert report.pss_kib is None  # a dead runner's PSS is stale
    assert report.healthy is False
    assert "last error: RuntimeError: profile locked" in report.reason


def test_a_host_without_the_node_is_not_deployed() -> None:
    report = judged({"installed": False}, item())
    assert report.status == Verdict.NOT_DEPLOYED
    assert report.reachable is True
    assert report.reason == "the host answers but the node is not installed"


def test_a_host_still_running_cloud_init_is_provisioning() -> None:
    report = judged({"installed": False, "host": {"cloud_init": "running"}})
    assert report.status == Verdict.PROVISIONING


def test_a_host_whose_cloud_init_finished_is_not_deployed() -> None:
    report = judged({"installed": False, "host": {"cloud_init": "done"}})
    assert report.status == Verdict.NOT_DEPLOYED


def test_a_dead_browser_is_browser_down_and_keeps_the_runners_last_error() -> None:
    data = probe_data(
        browser_alive=False, popup_fields=popup(), last_error="chromium exited with 1 at start"
    )
    report = judged(data, item())
    assert report.status == Verdict.BROWSER_DOWN
    assert report.error == "chromium exited with 1 at start"
    assert "chromium exited with 1 at start" in report.reason


def host_clock(at: datetime) -> dict[str, Any]:
    """The probe's host object with only the host's clock (`date +%s.%N`) at `at`."""
    return {"clock": at.timestamp()}


def test_a_browser_the_runner_is_launching_is_starting_not_browser_down() -> None:
    data = probe_data(
        browser_alive=False,
        popup_fields=None,
        browser_launching_at=iso(CHECKED - timedelta(seconds=3)),
        host=host_clock(CHECKED),
    )
    report = judged(data, item())
    assert report.status == Verdict.STARTING
    assert "starting the browser (3 s ago)" in report.reason


def test_a_launch_that_has_lasted_past_its_grace_is_browser_down() -> None:
    data = probe_data(
        browser_alive=False,
        popup_fields=None,
        browser_launching_at=iso(CHECKED - timedelta(seconds=61)),
        host=host_clock(CHECKED),
    )
    assert judged(data, item()).status == Verdict.BROWSER_DOWN


def test_a_launch_mark_without_the_hosts_clock_is_browser_down() -> None:
    data = probe_data(browser_alive=False, popup_fields=None, browser_launching_at=iso(CHECKED))
    assert judged(data, item()).status == Verdict.BROWSER_DOWN


def test_disconnected_while_the_new_browser_settles_is_starting() -> None:
    data = probe_data(
        popup_fields=popup("Disconnected"),
        settling_until=iso(CHECKED + timedelta(seconds=40)),
        host=host_clock(CHECKED),
    )
    report = judged(data, item(connect=False))
    assert report.status == Verdict.STARTING
    assert "still connecting" in report.reason


def test_disconnected_after_the_settling_minute_is_disconnected() -> None:
    data = probe_data(
        popup_fields=popup("Disconnected"),
        settling_until=iso(CHECKED - timedelta(seconds=1)),
        host=host_clock(CHECKED),
    )
    assert judged(data, item()).status == Verdict.DISCONNECTED


def test_a_ban_while_settling_is_unsupported() -> None:
    data = probe_data(
        popup_fields=popup("Disconnected"),
        settling_until=iso(CHECKED + timedelta(seconds=40)),
        host=host_clock(CHECKED),
    )
    assert judged(data, item(banned=True)).status == Verdict.UNSUPPORTED


def test_no_popup_yet_is_starting() -> None:
    report = judged(probe_data(popup_fields=None), item())
    assert report.status == Verdict.STARTING
    assert report.healthy is True
    assert report.popup_status is None


def test_a_popup_read_from_the_previous_browser_is_starting() -> None:
    data = probe_data(
        popup_fields=popup("Good"),
        browser_started_at=T0 + timedelta(minutes=5),
        popup_read_at=T0 + timedelta(minutes=4),
    )
    assert judged(data, item()).status == Verdict.STARTING


def test_a_popup_without_a_read_time_after_a_browser_start_is_starting() -> None:
    data = probe_data(popup_fields=popup("Logged out"), popup_read_at=None)
    assert judged(data, item()).status == Verdict.STARTING


def test_a_popup_read_after_the_browser_started_counts() -> None:
    data = probe_data(
        popup_fields=popup("Logged out"),
        browser_started_at=T0,
        popup_read_at=T0 + timedelta(milliseconds=1),
    )
    assert judged(data, item()).status == Verdict.LOGGED_OUT


def test_logged_out() -> None:
    report = judged(probe_data(popup_fields=popup("Logged out")), item())
    assert report.status == Verdict.LOGGED_OUT
    assert report.logged_in is False
    assert report.healthy is False
    assert report.recoverable is True


def test_suspended_is_the_networks_verdict() -> None:
    report = judged(probe_data(popup_fields=popup("Suspended")), item())
    assert report.status == Verdict.SUSPENDED
    assert report.recoverable is False


def test_unsupported_from_the_popup_carries_the_banned_reason() -> None:
    data = probe_data(popup_fields=popup("Unsupported", banned_reason="datacenter IP"))
    report = judged(data, item())
    assert report.status == Verdict.UNSUPPORTED
    assert report.banned_reason == "datacenter IP"
    assert report.reason == "the network marks this node Unsupported: datacenter IP"
    assert report.healthy is False
    assert report.recoverable is False  # no restart fixes the network's verdict


def test_unsupported_from_a_banned_network_item() -> None:
    data = probe_data(popup_fields=popup("Good", banned_reason="IPv6 address"))
    report = judged(data, item(banned=True, connect=False))
    assert report.status == Verdict.UNSUPPORTED  # not Disconnected: no restart fixes it
    assert report.banned is True
    assert report.banned_reason == "IPv6 address"


def test_an_empty_banned_reason_is_none() -> None:
    report = judged(probe_data(popup_fields=popup("Unsupported", banned_reason="")))
    assert report.banned_reason is None
    assert report.reason.endswith("no reason given")


def test_a_network_item_that_is_not_banned_does_not_make_it_unsupported() -> None:
    assert judged(probe_data(popup_fields=popup()), item(banned=False)).status == Verdict.GOOD


def test_disconnected_from_the_popup() -> None:
    report = judged(probe_data(popup_fields=popup("Disconnected")), item())
    assert report.status == Verdict.DISCONNECTED
    assert "(per the popup)" in report.reason


def test_disconnected_when_the_network_says_not_connected() -> None:
    report = judged(probe_data(popup_fields=popup("Good")), item(connect=False))
    assert report.status == Verdict.DISCONNECTED
    assert report.network_connect is False
    assert "(per the network)" in report.reason
    assert (
        report.disagreement == "the popup reads Good but the network shows the node not connected"
    )
    assert report.reason.endswith(report.disagreement)
    assert report.sample()["detail"]["disagreement"] == report.disagreement


def test_the_popup_and_the_network_agreeing_is_no_disagreement() -> None:
    report = judged(probe_data(popup_fields=popup("Good", source="api")), item())
    assert report.disagreement is None
    assert report.popup_source == "api"
    assert report.sample()["detail"]["popup_source"] == "api"


@pytest.mark.parametrize(
    ("shown", "network", "verdict", "said"),
    [
        (
            "Disconnected",
            item(connect=True),
            Verdict.DISCONNECTED,
            "network shows the node connected",
        ),
        ("Good", item(banned=True), Verdict.UNSUPPORTED, "network marks the node banned"),
        ("Unsupported", item(banned=False), Verdict.UNSUPPORTED, "does not mark the node banned"),
    ],
)
def test_each_disagreement_between_the_popup_and_the_network_is_reported(
    shown: str, network: NodeListItem, verdict: Verdict, said: str
) -> None:
    report = judged(probe_data(popup_fields=popup(shown)), network)
    assert report.status == verdict
    assert report.disagreement is not None and said in report.disagreement
    assert said in report.reason


def test_the_networks_own_node_answer_serves_as_its_view() -> None:
    answer = {"active": True, "connect": False, "banned": False, "bannedReason": "", "today": 0}
    info = NodeInfo.model_validate({**answer, "ip": "198.51.100.4"})
    report = judged(probe_data(popup_fields=popup("Good")), info)
    assert report.status == Verdict.DISCONNECTED
    assert report.ip == "198.51.100.4"


def test_a_page_that_changed_is_its_own_verdict_and_no_ladder() -> None:
    from gradientlab.health.status import Kind, about

    why = "the extension's popup changed: no `GET …/sentrynode/get/<id>` answer found"
    report = judged(probe_data(popup_fields=popup("Good"), page_changed=why))
    assert report.status == Verdict.PAGE_CHANGED
    assert report.reason == why
    assert about(Verdict.PAGE_CHANGED).ladder == ()
    assert about(Verdict.PAGE_CHANGED).kind == Kind.EXTENSION
    # never read at all (a fresh deploy on a changed extension): still the page, not Starting
    assert judged(probe_data(page_changed=why)).status == Verdict.PAGE_CHANGED


def test_an_unknown_popup_status_is_not_good() -> None:
    report = judged(probe_data(popup_fields=popup("Reconnecting")), item())
    assert report.status == Verdict.DISCONNECTED
    assert "'Reconnecting'" in report.reason


def test_the_sample_row_carries_the_status_metrics_and_detail() -> None:
    host = {"load1": 0.42, "mem_total_kib": 2_000_000, "mem_available_kib": 900_000}
    report = judged(probe_data(popup_fields=popup(), host=host), item())
    row = report.sample()
    assert row["status"] == "Good"
    assert row["sampled_at"] == CHECKED
    assert row["taps_today"] == 12
    assert row["load1"] == 0.42
    assert row["mem_available_kib"] == 900_000
    assert row["disk_free_kib"] is None  # the probe did not say
    assert row["detail"] == {
        "error": None,
        "client_id": "client-7f3a",
        "popup_source": None,
        "disagreement": None,
    }


# ---------------------------------------------------------------- the host's own resources


def test_a_full_disk_is_disk_full_with_the_figure() -> None:
    host = {"disk_free_kib": 100 * MIB, "disk_total_kib": 10_240 * MIB}
    report = judged(probe_data(popup_fields=popup("Good"), host=host), item())
    assert report.status == Verdict.DISK_FULL
    assert "100 MiB free of 10240 MiB" in report.reason
    assert f"under {POLICY.disk_free_min_mib} MiB" in report.reason


def test_a_full_disk_outranks_a_dead_runner() -> None:
    data = probe_data(runner_alive=False, host={"disk_free_kib": 0})
    assert judged(data).status == Verdict.DISK_FULL


def test_disk_space_at_the_threshold_is_enough() -> None:
    host = {"disk_free_kib": POLICY.disk_free_min_mib * MIB}
    assert judged(probe_data(popup_fields=popup(), host=host)).status == Verdict.GOOD


def test_the_disk_threshold_is_the_policys() -> None:
    host = {"disk_free_kib": 100 * MIB}
    data = probe_data(popup_fields=popup(), host=host)
    assert judged(data, policy=HealthSettings(disk_free_min_mib=50)).status == Verdict.GOOD
    assert judged(data, policy=HealthSettings(disk_free_min_mib=101)).status == Verdict.DISK_FULL


def test_low_memory_on_a_node_that_is_not_good_is_memory_low_with_the_figure() -> None:
    host = {"mem_available_kib": 30 * MIB, "mem_total_kib": 1024 * MIB}
    report = judged(probe_data(popup_fields=popup("Disconnected"), host=host), item())
    assert report.status == Verdict.MEMORY_LOW
    assert "30 MiB of 1024 MiB memory available" in report.reason
    assert f"under {POLICY.memory_available_min_mib} MiB" in report.reason


def test_low_memory_while_the_browser_starts_is_memory_low() -> None:
    host = {"mem_available_kib": 10 * MIB, "mem_total_kib": 512 * MIB}
    assert judged(probe_data(popup_fields=None, host=host)).status == Verdict.MEMORY_LOW


def test_low_memory_on_a_good_node_is_still_good() -> None:
    host = {"mem_available_kib": 30 * MIB, "mem_total_kib": 1024 * MIB}
    report = judged(probe_data(popup_fields=popup("Good"), host=host), item())
    assert report.status == Verdict.GOOD
    assert report.metrics.mem_available_kib == 30 * MIB


def test_a_dead_browser_is_browser_down_even_with_low_memory() -> None:
    host = {"mem_available_kib": 1 * MIB}
    data = probe_data(browser_alive=False, popup_fields=popup(), host=host)
    assert judged(data).status == Verdict.BROWSER_DOWN


def test_host_metrics_from_the_probes_host_object_and_the_pss_split() -> None:
    data = probe_data(
        popup_fields=popup(),
        host={
            "load1": "0.75",
            "mem_total_kib": 4_000_000,
            "mem_available_kib": 2_500_000,
            "disk_total_kib": 30_000_000,
            "disk_free_kib": 12_000_000,
            "clock": CHECKED.timestamp() + 2.25,
        },
        runner_pss_kib=41_000,
        browser_pss_kib=140_000,
    )
    assert judged(data).metrics == HostMetrics(
        load1=0.75,
        mem_total_kib=4_000_000,
        mem_available_kib=2_500_000,
        disk_total_kib=30_000_000,
        disk_free_kib=12_000_000,
        runner_pss_kib=41_000,
        browser_pss_kib=140_000,
        clock_offset_s=2.25,
    )


def test_clock_offset_is_the_hosts_clock_minus_the_check_time() -> None:
    behind = judged(probe_data(host={"clock": CHECKED.timestamp() - 90}))
    assert behind.metrics.clock_offset_s == -90.0


def test_no_host_object_means_no_metrics() -> None:
    assert judged(probe_data(popup_fields=popup())).metrics == HostMetrics()


# ---------------------------------------------------------------- the runner crash-looping


def crash_runs(
    count: int, every: timedelta, start: datetime = T0, first_id: int = 1
) -> list[dict[str, Any]]:
    """`count` runner starts, each followed 5 s later by a crash (detail "boom N")."""
    out = []
    for n in range(count):
        at = start + n * every
        out.append(event(first_id + 2 * n, "runner_started", at, f"pid {5000 + n}"))
        out.append(
            event(first_id + 2 * n + 1, "runner_crashed", at + timedelta(seconds=5), f"boom {n}")
        )
    return out


def test_three_quick_crashes_in_a_row_are_a_crash_loop_with_the_last_error() -> None:
    data = probe_data(runner_alive=False, events=crash_runs(3, timedelta(minutes=2)))
    report = judged(data)
    assert report.status == Verdict.RUNNER_CRASH_LOOP
    assert "last 3 starts" in report.reason
    assert report.reason.endswith("last error: boom 2")


def test_two_crashes_are_only_runner_down() -> None:
    data = probe_data(runner_alive=False, events=crash_runs(2, timedelta(minutes=2)))
    assert judged(data).status == Verdict.RUNNER_DOWN


def test_crashes_spread_over_more_than_the_window_are_runner_down() -> None:
    data = probe_data(runner_alive=False, events=crash_runs(3, timedelta(minutes=6)))
    assert judged(data).status == Verdict.RUNNER_DOWN  # 12 minutes from first to last start


def test_the_crash_loop_window_and_count_are_the_policys() -> None:
    events = crash_runs(3, timedelta(minutes=6))
    data = probe_data(runner_alive=False, events=events)
    wide = HealthSettings(crash_loop_seconds=13 * 60)
    assert judged(data, policy=wide).status == Verdict.RUNNER_CRASH_LOOP
    assert judged(data, policy=HealthSettings(crash_loop_starts=4)).status == Verdict.RUNNER_DOWN


def test_a_run_that_worked_breaks_the_loop() -> None:
    events = crash_runs(1, timedelta(minutes=1)) + [
        event(3, "runner_started", T0 + timedelta(minutes=1)),
        event(4, "popup_status", T0 + timedelta(minutes=1, seconds=30), "Good"),
        event(5, "runner_crashed", T0 + timedelta(minutes=2), "boom late"),
    ]
    events += crash_runs(1, timedelta(0), start=T0 + timedelta(minutes=3), first_id=6)
    assert judged(probe_data(runner_alive=False, events=events)).status == Verdict.RUNNER_DOWN


def test_the_three_latest_starts_count_after_an_earlier_good_run() -> None:
    events = [
        event(1, "runner_started", T0),
        event(2, "popup_status", T0 + timedelta(seconds=30), "Good"),
    ]
    events += crash_runs(3, timedelta(minutes=1), start=T0 + timedelta(hours=1), first_id=3)
    assert judged(probe_data(runner_alive=False, events=events)).status == (
        Verdict.RUNNER_CRASH_LOOP
    )


def test_a_runner_that_is_alive_now_is_no_crash_loop() -> None:
    data = probe_data(popup_fields=popup(), events=crash_runs(3, timedelta(minutes=1)))
    assert judged(data).status == Verdict.GOOD


def test_the_crash_loop_reads_events_before_the_cursor_too() -> None:
    data = probe_data(runner_alive=False, events=crash_runs(3, timedelta(minutes=1)))
    report = judged(data, cursor=6)
    assert report.status == Verdict.RUNNER_CRASH_LOOP
    assert report.events == []  # nothing new to record, but the loop is still a loop


# ---------------------------------------------------------------- the event cursor


EVENTS = [event(i, "popup_status", T0 + timedelta(seconds=i), "Good") for i in range(1, 6)]


def test_only_events_after_the_cursor_are_new() -> None:
    report = judged(probe_data(popup_fields=popup(), events=EVENTS), cursor=3)
    assert [e["id"] for e in report.events] == [4, 5]


def test_the_same_log_keeps_the_cursor() -> None:
    data = probe_data(popup_fields=popup(), events=EVENTS, events_id="log-a")
    report = judged(data, cursor=3, events_id="log-a")
    assert [e["id"] for e in report.events] == [4, 5]
    assert report.events_id == "log-a"


def test_a_new_event_log_resets_the_cursor() -> None:
    data = probe_data(popup_fields=popup(), events=EVENTS, events_id="log-b")
    report = judged(data, cursor=3, events_id="log-a")
    assert [e["id"] for e in report.events] == [1, 2, 3, 4, 5]
    assert report.events_id == "log-b"  # stored with the next cursor


def test_a_probe_without_a_log_id_keeps_the_cursor() -> None:
    report = judged(probe_data(popup_fields=popup(), events=EVENTS), cursor=3, events_id="log-a")
    assert [e["id"] for e in report.events] == [4, 5]
    assert report.events_id is None


# ---------------------------------------------------------------- observe: SSH and the probe


class FakeExecutor:
    """Answers every command with `answer` (or raises it); records the commands."""

    def __init__(self, answer: CommandResult | BaseException, name: str = "node-1") -> None:
        self.name = name
        self.answer = answer
        self.commands: list[tuple[str, float]] = []

    def run(self, command: str, timeout: float = 60) -> CommandResult:
        self.commands.append((command, timeout))
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer


def answering(stdout: str, exit_code: int = 0, stderr: str = "") -> FakeExecutor:
    return FakeExecutor(CommandResult(PROBE_SH, exit_code, stdout, stderr))


def observed(ex: FakeExecutor, network: NodeListItem | None = None) -> HealthReport:
    return judge(observe("node-1", lambda: ex, CHECKED), network, POLICY)


def test_observe_runs_the_shell_probe_once_with_the_timeout() -> None:
    ex = answering(json.dumps(probe_data(popup_fields=popup())) + "\n")
    obs = observe("node-1", lambda: ex, CHECKED, timeout=7)
    # shell builtins only (no interpreter per probe), its output capped on the host
    assert ex.commands == [(probe_command(), 7)]
    assert PROBE_SH in probe_command() and f"head -c {PROBE_MAX_BYTES}" in probe_command()
    assert obs.failure is None and obs.error is None
    assert obs.data is not None and obs.data["runner_alive"] is True
    assert judge(obs, item(), POLICY).status == Verdict.GOOD


def fp(label: str) -> str:
    """A fingerprint-shaped string (SHA256 of a label, not of a key)."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(label.encode()).digest()).decode().rstrip(
        "="
    )


SSH_FAILURES = [
    pytest.param(
        HostUnreachable(
            "node-1: no TCP connection to 192.0.2.7:22 within 5s", host="node-1", cause="no-tcp"
        ),
        Verdict.UNREACHABLE,
        id="no-tcp",
    ),
    pytest.param(
        HostUnreachable("node-1: the connection dropped while running the probe", cause="dropped"),
        Verdict.UNREACHABLE,
        id="dropped",
    ),
    pytest.param(
        AuthRefused("node-1: SSH refused GradientLab's key for user gl", host="node-1"),
        Verdict.AUTH_REFUSED,
        id="auth",
    ),
    pytest.param(
        HostKeyInvalid("node-1: no host key is pinned; run `gradientlab hosts trust node-1`"),
        Verdict.HOST_KEY_INVALID,
        id="key-invalid",
    ),
    pytest.param(
        CommandTimeout("node-1: running `cd .gradientlab/node` did not finish within 20s"),
        Verdict.UNREACHABLE,
        id="timeout",
    ),
    pytest.param(OSError("Network is unreachable"), Verdict.UNREACHABLE, id="oserror"),
    pytest.param(ValueError("paramiko had a bad day"), Verdict.UNREACHABLE, id="other"),
]


@pytest.mark.parametrize(("error", "verdict"), SSH_FAILURES)
@pytest.mark.parametrize("where", ["connect", "run"])
def test_each_ssh_failure_becomes_its_verdict(
    error: BaseException, verdict: Verdict, where: str
) -> None:
    if where == "connect":

        def connect() -> FakeExecutor:
            raise error

        obs = observe("node-1", connect, CHECKED)
    else:
        obs = observe("node-1", lambda: FakeExecutor(error), CHECKED)
    assert obs.data is None
    assert obs.failure == verdict
    assert str(error) in (obs.error or "")
    report = judge(obs, item(), POLICY)
    assert report.status == verdict
    assert report.reachable is (verdict != Verdict.UNREACHABLE)
    assert report.error == obs.error
    assert str(error) in report.reason
    assert report.checked_at == CHECKED
    assert report.runner_alive is None
    assert report.network_connect is None  # the network's view is not consulted
    assert report.healthy is False


def test_an_unexpected_exception_names_its_type() -> None:
    obs = observe("node-1", lambda: FakeExecutor(KeyError("transport")), CHECKED)
    assert obs.failure == Verdict.UNREACHABLE
    assert obs.error == "KeyError: 'transport'"


def test_a_changed_host_key_is_host_key_changed_with_both_fingerprints() -> None:
    pinned, offered = fp("the key pinned at creation"), fp("the key offered now")
    error = HostKeyMismatch(
        f"node-1: host key of 192.0.2.7:22 is {offered}, but {pinned} is pinned; refusing to "
        "connect.",
        host="node-1",
        step="check host key",
        offered_fingerprint=offered,
        pinned_fingerprint=pinned,
    )

    def connect() -> FakeExecutor:
        raise error

    report = judge(observe("node-1", connect, CHECKED), None, POLICY)
    assert report.status == Verdict.HOST_KEY_CHANGED
    assert report.facts == {
        "pinned_fingerprint": pinned,
        "offered_fingerprint": offered,
        "ssh_stage": "key-changed",
    }
    assert "refusing to connect" in report.reason and offered in report.reason


def test_a_host_key_of_the_wrong_type_is_host_key_changed_without_an_offered_print() -> None:
    pinned = fp("pinned")
    error = HostKeyMismatch(
        "node-1: offers no ssh-ed25519 host key", host="node-1", pinned_fingerprint=pinned
    )
    report = judge(observe("node-1", lambda: FakeExecutor(error), CHECKED), None, POLICY)
    assert report.status == Verdict.HOST_KEY_CHANGED
    assert report.facts == {
        "pinned_fingerprint": pinned,
        "offered_fingerprint": None,
        "ssh_stage": "key-changed",
    }


# ---------------------------------------------------------------- malformed probe answers


@pytest.mark.parametrize(
    "stdout",
    [
        "",
        "sh: 1: cd: can't cd to .gradientlab/node\n",
        "[1, 2, 3]\n",
        '"just a string"\n',
        '{"runner_alive": tr',  # cut short before any event
        "{not json at all}",
        '{"status": {"popup": ',
    ],
    ids=["empty", "text", "list", "string", "cut-short", "braces", "cut-in-status"],
)
def test_an_unreadable_probe_answer_is_probe_invalid(stdout: str) -> None:
    report = observed(answering(stdout, exit_code=2, stderr="tail: error reading"), item())
    assert report.status == Verdict.PROBE_INVALID
    assert report.reachable is True
    assert "exit 2" in (report.error or "")
    assert "tail: error reading" in report.reason  # stderr is the clue when there is one


def test_probe_invalid_quotes_stdout_when_stderr_is_empty() -> None:
    report = observed(answering("Segmentation fault\n", exit_code=139))
    assert report.status == Verdict.PROBE_INVALID
    assert "Segmentation fault" in (report.error or "")


def test_an_event_line_cut_short_drops_only_that_event() -> None:
    head = json.dumps(probe_data(popup_fields=popup()))[: -len(', "events": []}')]
    stdout = (
        head + ', "events": [\n'
        '{"id": 1, "at": "2025-03-01T12:00:00.000+00:00", "kind": "runner_started"},\n'
        '{"id": 2, "at": "2025-03-01T12:00:01.000+00:00", "kind": "popup_status"},\n'
        '{"id": 3, "ki'
    )
    report = observed(answering(stdout))
    assert report.status == Verdict.GOOD
    assert [e["id"] for e in report.events] == [1, 2]


ODD_ANSWERS = [
    pytest.param({"runner_alive": "yes", "browser_alive": "yes"}, id="strings-for-bools"),
    pytest.param({"host": "x", "status": "x"}, id="strings-for-objects"),
    pytest.param({"status": [1, 2], "host": [3]}, id="lists-for-objects"),
    pytest.param({"events": "not a list"}, id="string-events"),
    pytest.param({"events": [1, "two", None, {"id": "x", "kind": "runner_started"}]}, id="junk"),
    pytest.param({"events": {"id": 1}}, id="dict-events"),
    pytest.param({"events_id": 42, "probe_version": None}, id="odd-id"),
    pytest.param(
        {"host": {"disk_free_kib": -5, "disk_total_kib": "big", "mem_available_kib": -1}},
        id="negative-disk",
    ),
    pytest.param({"host": {"load1": "NaN", "clock": "noon", "cloud_init": 7}}, id="odd-host"),
    pytest.param({"host": {"clock": 1e308, "load1": float("inf")}}, id="huge"),
    pytest.param(
        {"status": {"popup": "Good", "pss_kib": "lots", "popup_read_at": 17}}, id="odd-status"
    ),
    pytest.param(
        {"status": {"popup": {"status": 5, "taps_today": [1], "uptime_today": 1e300}}},
        id="odd-popup",
    ),
    pytest.param({"installed": False, "host": "x"}, id="not-installed-odd-host"),
]


@pytest.mark.parametrize("changes", ODD_ANSWERS)
def test_odd_values_give_a_sane_report_never_an_exception(changes: dict[str, Any]) -> None:
    data = probe_data(popup_fields=popup())
    data.update(changes)
    report = observed(answering(json.dumps(data)), item())
    assert isinstance(report.status, Verdict)
    assert report.reason
    assert isinstance(report.runner_alive, bool)
    assert isinstance(report.browser_alive, bool)
    assert report.taps_today is None or isinstance(report.taps_today, int)
    assert all(isinstance(e, dict) for e in report.events)
    m = report.metrics
    for figure in (m.disk_free_kib, m.disk_total_kib, m.mem_available_kib, m.mem_total_kib):
        assert figure is None or (isinstance(figure, int) and figure >= 0)
    assert m.load1 is None or m.load1 == m.load1  # never NaN
    report.sample()  # and it can be written


def test_a_negative_free_disk_is_unknown_not_full() -> None:
    data = probe_data(popup_fields=popup(), host={"disk_free_kib": -5})
    report = judged(data)
    assert report.metrics.disk_free_kib is None
    assert report.status == Verdict.GOOD


@pytest.mark.parametrize("events", [5, True], ids=["int", "bool"])
def test_a_scalar_events_value_is_not_an_exception(events: Any) -> None:
    data = probe_data(popup_fields=popup())
    data["events"] = events
    report = observed(answering(json.dumps(data)), item())
    assert report.status in (Verdict.GOOD, Verdict.PROBE_INVALID)


def test_a_non_bool_logged_in_is_not_passed_through() -> None:
    data = probe_data(popup_fields=popup(), logged_in="maybe")
    report = observed(answering(json.dumps(data)), item())
    assert report.logged_in is None or isinstance(report.logged_in, bool)


# ---------------------------------------------------------------- the fleet's network state


def fleet(*verdicts: Verdict) -> list[HealthReport]:
    return [
        HealthReport(host=f"node-{i}", status=v, reachable=True, checked_at=CHECKED)
        for i, v in enumerate(verdicts)
    ]


D, G = Verdict.DISCONNECTED, Verdict.GOOD


def test_an_api_error_means_the_network_is_down() -> None:
    state = network_state(fleet(G, G), "503 Service Unavailable", POLICY)
    assert state.down is True
    assert "503 Service Unavailable" in state.reason


def test_an_api_error_with_no_nodes_checked_is_down_too() -> None:
    assert network_state([], "connection refused", POLICY).down is True


def test_most_nodes_disconnected_at_once_is_the_network_down_with_counts() -> None:
    state = network_state(fleet(D, D, G, Verdict.UNREACHABLE), None, POLICY)
    assert state.down is True
    assert (state.disconnected, state.checked) == (2, 3)  # the unreachable host is not counted
    assert state.reason == "2 of 3 checked nodes are Disconnected at once"


def test_all_nodes_disconnected_is_down() -> None:
    state = network_state(fleet(D, D, D), None, POLICY)
    assert state.down is True
    assert (state.disconnected, state.checked) == (3, 3)


def test_one_disconnected_of_three_is_that_nodes_problem() -> None:
    state = network_state(fleet(D, G, G), None, POLICY)
    assert state.down is False
    assert (state.disconnected, state.checked) == (1, 3)


def test_a_single_node_fleet_disconnected_is_not_the_network() -> None:
    assert network_state(fleet(D), None, POLICY).down is False  # network_down_min_nodes is 2


def test_nodes_the_probe_could_not_judge_do_not_count() -> None:
    state = network_state(
        fleet(D, Verdict.STARTING, Verdict.BROWSER_DOWN, Verdict.UNREACHABLE), None, POLICY
    )
    assert state.checked == 1
    assert state.down is False


def test_the_share_and_minimum_are_the_policys() -> None:
    strict = HealthSettings(network_down_share=0.9, network_down_min_nodes=4)
    assert network_state(fleet(D, D, D, G), None, strict).down is False  # 3 of 4 < 90%
    assert network_state(fleet(D, D, D), None, strict).down is False  # only 3 checked
    assert network_state(fleet(D, D, D, D), None, strict).down is True


# ---------------------------------------------------------------- the runner's own recoveries


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


def test_settled_cursor_of_nothing_is_zero() -> None:
    assert settled_cursor([]) == 0


def test_settled_cursor_consumes_every_settled_event() -> None:
    events = [
        event(1, "runner_started", T0),
        event(2, "browser_exited", T0),
        event(3, "browser_started", T0),
        event(4, "popup_status", T0, "Good"),
    ]
    assert settled_cursor(events) == 4


def test_settled_cursor_leaves_an_exit_without_its_restart_unread() -> None:
    events = [
        event(7, "popup_status", T0, "Good"),
        event(8, "browser_exited", T0, "exit code -9"),
        event(9, "browser_start_failed", T0),
        event(10, "browser_exited", T0),
    ]
    assert settled_cursor(events) == 7  # the next probe pairs 8 with its restart
    assert runner_recoveries(events) == []


def test_settled_cursor_skips_an_unreadable_id() -> None:
    events = [event(3, "popup_status", T0), {"id": "x", "kind": "popup_status"}]
    assert settled_cursor(events) == 3


# ---------------------------------------------------------------- a hung browser


def test_a_popup_not_read_for_too_long_on_the_hosts_clock_is_a_hung_browser() -> None:
    read_at = T0 + timedelta(seconds=20)
    host_now = read_at + timedelta(seconds=POLICY.popup_stale_seconds + 30)
    data = probe_data(
        popup_fields=popup(),
        host={"clock": host_now.timestamp()},
        last_error="attach: Timeout 15000ms exceeded",
    )
    report = judge(Observation("node-1", CHECKED, data), item(), POLICY)
    assert report.status == Verdict.BROWSER_HUNG
    assert f"{POLICY.popup_stale_seconds + 30:.0f} s" in report.reason
    assert "Timeout 15000ms" in report.reason


def test_a_recent_read_on_the_hosts_clock_is_good_whatever_the_control_planes_clock() -> None:
    # the host's clock is what counts: a control plane a day off changes nothing
    data = probe_data(
        popup_fields=popup(), host={"clock": (T0 + timedelta(seconds=30)).timestamp()}
    )
    skewed = Observation("node-1", T0 + timedelta(days=1), data)
    assert judge(skewed, item(), POLICY).status == Verdict.GOOD


def test_without_the_hosts_clock_the_runners_last_status_write_dates_the_read() -> None:
    stale = probe_data(
        popup_fields=popup(),
        updated_at=iso(T0 + timedelta(seconds=20 + POLICY.popup_stale_seconds + 1)),
    )
    assert judge(Observation("node-1", CHECKED, stale), item(), POLICY).status == (
        Verdict.BROWSER_HUNG
    )
