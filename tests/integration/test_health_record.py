"""What the health flow stores, on a real Postgres: samples, incidents confirmed before anyone is
paged, each alert once, quarantine and release, the network's own incident, database blips.

Every time here comes from one reference clock the test picks: the store decides on the
reports' own clocks, so the date the suite runs on does not matter."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, text

from gradientlab.config import HealthSettings
from gradientlab.health import (
    ActionResult,
    Decision,
    HealthReport,
    NetworkState,
    Verdict,
    record_sweep,
)
from gradientlab.health.record import host_histories
from gradientlab.store.fleet import host_records, release_host
from tests.conftest import add_host

# any date: a year back and at an odd minute, so nothing can line up with the wall clock
T0 = (datetime.now(UTC) - timedelta(days=365)).replace(hour=3, minute=7, second=0, microsecond=0)
POLICY = HealthSettings()
UP = NetworkState(False, "")


def host(engine: Engine, name: str = "n1") -> None:
    add_host(engine, name)


def report(status: Verdict, at: datetime, host: str = "n1", **kw: object) -> HealthReport:
    return HealthReport(
        host=host,
        status=status,
        reachable=status != Verdict.UNREACHABLE,
        checked_at=at,
        reason=f"{status} for the test",
        **kw,  # type: ignore[arg-type]
    )


def failed(step: str, at: datetime) -> ActionResult:
    return ActionResult(step, at, at + timedelta(seconds=5), False, "no luck")


def sweep(
    engine: Engine,
    *reports: HealthReport,
    actions: list[ActionResult] | None = None,
    decision: Decision | None = None,
    network: NetworkState = UP,
) -> tuple[list, list, list]:  # type: ignore[type-arg]
    at = max(r.checked_at for r in reports)
    results = [(r, r, actions or [], decision or Decision((), "test")) for r in reports]
    return record_sweep(engine, results, POLICY, network, at, "fleet-t")


def rows(engine: Engine, sql: str) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql))]


def events(outcomes: list) -> list[str]:  # type: ignore[type-arg]
    return [a.event for o in outcomes for a in o.alerts]


def test_a_fault_is_paged_once_confirmed_and_once_resolved(engine: Engine) -> None:
    host(engine)
    first, _, _ = sweep(engine, report(Verdict.UNREACHABLE, T0), actions=[])
    assert events(first) == []  # one sweep is not enough to page anyone
    assert first[0].incident_status == "open"
    later = T0 + timedelta(minutes=5)
    second, _, _ = sweep(
        engine, report(Verdict.UNREACHABLE, later), actions=[failed("reboot_host", later)]
    )
    assert events(second) == ["gradientlab.incident.opened"]
    assert second[0].alerts[0].payload["kind"] == "Unreachable"
    third, _, _ = sweep(engine, report(Verdict.UNREACHABLE, T0 + timedelta(minutes=10)))
    assert events(third) == []  # not again
    back = T0 + timedelta(minutes=15)
    fourth, _, _ = sweep(engine, report(Verdict.GOOD, back))
    assert fourth[0].incident_status == "recovered"
    assert fourth[0].recovery_seconds == 900
    assert events(fourth) == ["gradientlab.incident.resolved"]
    assert rows(
        engine, "SELECT kind, status, sweeps, confirmed_at IS NOT NULL, alerts FROM incidents"
    ) == [("Unreachable", "recovered", 3, True, ["opened", "resolved"])]
    assert rows(engine, "SELECT step, ok FROM recovery_actions") == [("reboot_host", False)]
    assert rows(engine, "SELECT status, decision FROM node_status_samples ORDER BY id") == [
        ("Unreachable", "no action: test"),
    ] * 3 + [("Good", "no action: test")]


def test_a_fault_fixed_within_a_sweep_pages_nobody(engine: Engine) -> None:
    host(engine)
    out, _, _ = sweep(engine, report(Verdict.BROWSER_DOWN, T0))
    assert events(out) == []
    out, _, _ = sweep(engine, report(Verdict.GOOD, T0 + timedelta(minutes=1)))
    assert out[0].incident_status == "recovered"
    assert events(out) == []  # nobody was paged, so nobody is told it is over


def test_unsupported_is_recorded_and_alerted_once_without_recovery(engine: Engine) -> None:
    host(engine)
    for minutes in (0, 5, 10):
        banned = report(
            Verdict.UNSUPPORTED,
            T0 + timedelta(minutes=minutes),
            banned=True,
            banned_reason="Data center IP",
        )
        out, _, _ = sweep(engine, banned)
        assert events(out) == (["gradientlab.node.unsupported"] if minutes == 0 else [])
    assert out[0].alerts == () and out[0].actions == ()
    assert rows(engine, "SELECT kind, status, alerts FROM incidents") == [
        ("Unsupported", "open", ["unsupported"])
    ]
    assert rows(engine, "SELECT DISTINCT banned_reason FROM node_status_samples") == [
        ("Data center IP",)
    ]


def test_a_changed_host_key_is_a_security_alert_at_once(engine: Engine) -> None:
    host(engine)
    changed = report(
        Verdict.HOST_KEY_CHANGED,
        T0,
        facts={"pinned_fingerprint": "SHA256:old", "offered_fingerprint": "SHA256:new"},
    )
    out, _, _ = sweep(engine, changed)
    assert events(out) == ["gradientlab.security.host-key-changed"]
    assert out[0].alerts[0].payload["offered_fingerprint"] == "SHA256:new"
    out, _, _ = sweep(engine, report(Verdict.HOST_KEY_CHANGED, T0 + timedelta(minutes=5)))
    assert events(out) == []  # once per incident; not also an "opened" page


def test_a_browser_death_the_runner_repaired_is_one_incident(engine: Engine) -> None:
    host(engine)
    died = [
        {"id": 7, "at": (T0 - timedelta(seconds=9)).isoformat(), "kind": "browser_exited",
         "detail": "exit code -9"},
        {"id": 8, "at": (T0 - timedelta(seconds=7)).isoformat(), "kind": "browser_started"},
    ]  # fmt: skip
    good = report(
        Verdict.GOOD,
        T0,
        events=died,
        events_id="log-a",
        client_id="abc",
        status_updated_at=T0 - timedelta(seconds=4),
    )
    out, _, _ = sweep(engine, good)
    assert out[0].incident_status == "recovered"
    assert out[0].recovery_seconds == 5
    assert rows(engine, "SELECT event_cursor, event_log_id, client_id FROM nodes") == [
        (8, "log-a", "abc")
    ]
    assert rows(engine, "SELECT step, ok FROM recovery_actions") == [
        ("runner_restarted_browser", True)
    ]
    # a reinstalled runner starts its log again: the cursor starts again with it
    again = [
        {"id": 1, "at": T0.isoformat(), "kind": "runner_started"},
        {"id": 2, "at": (T0 + timedelta(seconds=60)).isoformat(), "kind": "browser_exited",
         "detail": "exit code -9"},
        {"id": 3, "at": (T0 + timedelta(seconds=62)).isoformat(), "kind": "browser_started"},
    ]  # fmt: skip
    later = T0 + timedelta(seconds=70)
    sweep(engine, report(Verdict.GOOD, later, events=again, events_id="log-b"))
    assert rows(engine, "SELECT event_cursor, event_log_id FROM nodes") == [(3, "log-b")]
    assert rows(engine, "SELECT count(*) FROM incidents WHERE status = 'recovered'") == [(2,)]


def test_the_network_down_is_one_fleet_incident_and_hosts_are_not_paged(engine: Engine) -> None:
    for name in ("n1", "n2", "n3"):
        host(engine, name)
    down = NetworkState(True, "3 of 3 checked nodes are Disconnected at once", 3, 3)
    for minutes in (0, 5, 10):
        at = T0 + timedelta(minutes=minutes)
        out, fleet_alerts, _ = sweep(
            engine,
            *[report(Verdict.DISCONNECTED, at, h) for h in ("n1", "n2", "n3")],
            network=down,
        )
        assert events(out) == []
        assert [a.event for a in fleet_alerts] == (
            ["gradientlab.network.down"] if minutes == 5 else []
        )
    assert rows(engine, "SELECT count(*) FROM incidents WHERE host_id IS NOT NULL") == [(0,)]
    at = T0 + timedelta(minutes=15)
    _, fleet_alerts, _ = sweep(engine, *[report(Verdict.GOOD, at, h) for h in ("n1", "n2", "n3")])
    assert [a.event for a in fleet_alerts] == ["gradientlab.network.restored"]
    assert fleet_alerts[0].payload["down_seconds"] == 900
    assert rows(engine, "SELECT kind, status, host_id FROM incidents") == [
        ("NetworkDown", "recovered", None)
    ]
    samples = rows(engine, "SELECT reason FROM node_status_samples WHERE status = 'Disconnected'")
    assert len(samples) == 9 and all("network is down" in str(r[0]) for r in samples)


def test_quarantine_is_alerted_once_and_lasts_until_released(engine: Engine) -> None:
    host(engine)
    spent = Decision((), "every recovery step's budget is spent", quarantine=True)
    sweep(engine, report(Verdict.RUNNER_DOWN, T0))
    out, _, _ = sweep(
        engine, report(Verdict.RUNNER_DOWN, T0 + timedelta(minutes=5)), decision=spent
    )
    assert out[0].incident_status == "quarantined"
    assert "gradientlab.host.quarantined" in events(out)
    out, _, _ = sweep(
        engine, report(Verdict.RUNNER_DOWN, T0 + timedelta(minutes=10)), decision=spent
    )
    assert events(out) == [] and out[0].incident_status == "quarantined"
    assert rows(engine, "SELECT count(*), min(status) FROM incidents") == [(1, "failed")]
    records = host_records(engine)
    history = host_histories(engine, records, T0 + timedelta(minutes=11))["n1"]
    assert history.quarantined_at is not None and history.fault == "RunnerDown"

    released = T0 + timedelta(minutes=12)
    release_host(engine, "n1", released)
    history = host_histories(engine, records, released)["n1"]
    assert history.quarantined_at is None
    assert rows(engine, "SELECT status FROM incidents") == [("open",)]
    out, _, _ = sweep(engine, report(Verdict.GOOD, T0 + timedelta(minutes=15)))
    assert out[0].incident_status == "recovered"
    assert rows(engine, "SELECT count(*) FROM incidents") == [(1,)]


def test_histories_count_actions_of_the_last_hour_since_release(engine: Engine) -> None:
    host(engine)
    sweep(
        engine,
        report(Verdict.UNREACHABLE, T0),
        actions=[failed("reboot_host", T0 - timedelta(minutes=90)), failed("reboot_host", T0)],
    )
    records = host_records(engine)
    history = host_histories(engine, records, T0 + timedelta(minutes=1))["n1"]
    assert [a.step for a in history.actions] == ["reboot_host"]  # the one 90 min ago is out
    release_host(engine, "n1", T0 + timedelta(minutes=2))
    assert host_histories(engine, records, T0 + timedelta(minutes=3))["n1"].actions == ()


def test_a_database_blip_while_recording_loses_no_host(engine: Engine) -> None:
    for name in ("n1", "n2"):
        host(engine, name)
    locked = threading.Event()

    def hold_the_table() -> None:
        with engine.begin() as conn:
            conn.execute(text("LOCK TABLE node_status_samples IN ACCESS EXCLUSIVE MODE"))
            locked.set()
            time.sleep(7)  # longer than the writer's lock_timeout: its first try fails

    holder = threading.Thread(target=hold_the_table)
    holder.start()
    assert locked.wait(30)
    out, _, errors = sweep(
        engine,
        report(Verdict.GOOD, T0, "n1"),
        report(Verdict.GOOD, T0, "n2"),
        report(Verdict.GOOD, T0, "gone"),  # a host not in the database: its own error only
    )
    holder.join()
    assert [o.host for o in out] == ["n1", "n2"]
    assert len(errors) == 1 and errors[0].startswith("gone:")
    assert rows(engine, "SELECT count(*) FROM node_status_samples") == [(2,)]


def test_a_browser_death_seen_by_a_sweep_and_then_by_the_runner_log_is_one_incident(
    engine: Engine,
) -> None:
    host(engine)
    exited = {"id": 4, "at": T0.isoformat(), "kind": "browser_exited", "detail": "exit code -9"}
    started = {"id": 5, "at": (T0 + timedelta(seconds=2)).isoformat(), "kind": "browser_started"}
    down = report(Verdict.BROWSER_DOWN, T0 + timedelta(seconds=1), events=[exited])
    back = report(Verdict.GOOD, T0 + timedelta(seconds=4), events=[exited, started])
    restart = ActionResult("restart_browser", down.checked_at, back.checked_at, True, "ok")
    record_sweep(
        engine, [(down, back, [restart], Decision(("restart_browser",), "test"))],  # type: ignore[arg-type]
        POLICY, UP, back.checked_at, "fleet-t",
    )  # fmt: skip
    # the cursor is past both events: the next sweep's judge reads neither again
    assert rows(engine, "SELECT event_cursor FROM nodes") == [(5,)]
    sweep(engine, report(Verdict.GOOD, T0 + timedelta(minutes=1)))
    assert rows(engine, "SELECT kind, status FROM incidents") == [("BrowserDown", "recovered")]
    assert rows(engine, "SELECT step FROM recovery_actions ORDER BY id") == [
        ("runner_restarted_browser",),
        ("restart_browser",),
    ]
    assert rows(engine, "SELECT event_cursor FROM nodes") == [(5,)]


def test_a_check_records_the_health_period_it_ran_under(engine: Engine) -> None:
    host(engine)
    record_sweep(
        engine,
        [(r, r, [], Decision((), "test")) for r in [report(Verdict.GOOD, T0)]],
        POLICY,
        UP,
        T0,
        "fleet-t",
        health_period_s=30,
    )
    assert rows(engine, "SELECT status, health_period_s FROM v_fleet_status") == [("Good", 30.0)]


# ---------------------------------------------------------------- the control plane's own faults


def cut_off(hosts: int = 2) -> NetworkState:
    return NetworkState(
        False,
        "",
        cut_off=True,
        cut_off_reason="GradientLab cannot reach the fleet from w1: 2 of 2 checked hosts fail",
        cut_off_hosts=hosts,
    )


def test_being_cut_off_is_one_fleet_incident_alerted_once_and_no_host_incident(
    engine: Engine,
) -> None:
    host(engine, "n1")
    host(engine, "n2")
    sweeps = []
    for i in range(3):
        at = T0 + timedelta(minutes=5 * i)
        sweeps.append(
            sweep(
                engine,
                report(Verdict.UNREACHABLE, at, "n1"),
                report(Verdict.AUTH_REFUSED, at, "n2"),
                network=cut_off(),
            )
        )
    fleet_events = [[a.event for a in s[1]] for s in sweeps]
    assert fleet_events == [[], ["gradientlab.fleet.unreachable"], []]  # once, confirmed
    assert all(events(s[0]) == [] for s in sweeps)  # no host is paged
    assert rows(engine, "SELECT count(*) FROM incidents WHERE host_id IS NOT NULL") == [(0,)]
    assert rows(engine, "SELECT kind, status FROM incidents") == [("FleetUnreachable", "open")]
    reasons = [o.reason for o in sweeps[-1][0]]
    assert all("cannot reach the fleet from w1" in r for r in reasons), reasons
    back = T0 + timedelta(minutes=20)
    _, alerts, _ = sweep(engine, report(Verdict.GOOD, back, "n1"), report(Verdict.GOOD, back, "n2"))
    assert [a.event for a in alerts] == ["gradientlab.fleet.reachable"]
    assert rows(engine, "SELECT kind, status FROM incidents") == [("FleetUnreachable", "recovered")]


def test_hosts_not_checked_or_failed_by_the_keeper_open_no_incident(engine: Engine) -> None:
    host(engine, "n1")
    host(engine, "n2")
    for i in range(3):
        at = T0 + timedelta(minutes=5 * i)
        outcomes, _, _ = sweep(
            engine, report(Verdict.NOT_CHECKED, at, "n1"), report(Verdict.KEEPER_FAILED, at, "n2")
        )
        assert [o.incident_id for o in outcomes] == [None, None]
    assert rows(engine, "SELECT count(*) FROM incidents") == [(0,)]
    assert rows(
        engine, "SELECT status, count(*) FROM node_status_samples GROUP BY 1 ORDER BY 1"
    ) == [
        ("KeeperFailed", 3),
        ("NotChecked", 3),
    ]


def test_a_started_reboot_counts_whatever_happens_after_it(engine: Engine) -> None:
    from gradientlab.store.recovery import fleet_usage, start_action

    host(engine, "n1")
    sweep(engine, report(Verdict.UNREACHABLE, T0))  # the incident a reboot belongs to
    at = T0 + timedelta(minutes=5)
    row = start_action(engine, "n1", "reboot_host", at, "Unreachable", "no answer")
    # the worker dies here: the reboot's end is never written; the budget and the fleet's
    # hourly cap still see it
    later = at + timedelta(minutes=1)
    [history] = host_histories(engine, host_records(engine), later).values()
    assert [(a.step, a.ok) for a in history.actions] == [("reboot_host", None)]
    assert fleet_usage(engine, later)["host_actions"] == 1
    # a later record of the same step completes its row, it does not add one
    done = ActionResult("reboot_host", at, later, True, "host rebooted; then Good", row)
    sweep(engine, report(Verdict.GOOD, later), actions=[done])
    assert rows(engine, "SELECT step, ok, detail FROM recovery_actions") == [
        ("reboot_host", True, "host rebooted; then Good")
    ]
    # a step withheld by the provider is recorded, but is no host action for the fleet's cap
    sweep(engine, report(Verdict.UNREACHABLE, later + timedelta(minutes=5)),
          actions=[ActionResult("reboot_host", later, later, False, "withheld: gone")])  # fmt: skip
    assert fleet_usage(engine, later + timedelta(minutes=6))["host_actions"] == 1


def test_a_refused_password_is_one_account_wide_alert_until_a_login_works(
    engine: Engine,
) -> None:
    from gradientlab.store.recovery import fleet_usage

    for name in ("n1", "n2", "n3"):
        host(engine, name)
    refused = "login (login) failed: dashboard login failed: Sign-in failed: INVALID_PASSWORD"
    fleet_alerts = []
    for i in range(2):
        at = T0 + timedelta(minutes=5 * i)
        results = [
            (r, r, [ActionResult("login", at, at, False, refused)], Decision((), "t"))
            for r in (report(Verdict.LOGGED_OUT, at, n) for n in ("n1", "n2", "n3"))
        ]
        _, alerts, _ = record_sweep(engine, results, POLICY, UP, at, "fleet-t")
        fleet_alerts += [a.event for a in alerts]
    assert fleet_alerts == ["gradientlab.account.login-refused"]
    assert "INVALID_PASSWORD" in str(
        fleet_usage(engine, T0 + timedelta(minutes=6))["login_refused"]
    )
    at = T0 + timedelta(minutes=10)
    r = report(Verdict.LOGGED_OUT, at, "n1")
    record_sweep(engine, [(r, report(Verdict.GOOD, at, "n1"),
                           [ActionResult("login", at, at, True, "logged in")], Decision((), "t"))],
                 POLICY, UP, at, "fleet-t")  # fmt: skip
    assert fleet_usage(engine, at)["login_refused"] is None
