"""What the health flow stores, on a real Postgres: samples, incidents, actions, alerts once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, text

from gradientlab.health import ActionResult, HealthReport, record
from gradientlab.providers.base import HostRecord
from gradientlab.store.fleet import upsert_host

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def host(engine: Engine, name: str = "n1") -> None:
    upsert_host(
        engine,
        HostRecord(
            name=name,
            provider="local",
            address="127.0.0.9",
            ssh_port=2222,
            ssh_user="u",
            host_key="ssh-ed25519 AAAA",
            state="running",
            provider_ref="x",
        ),
    )


def report(status: str, at: datetime, **kw: object) -> HealthReport:
    return HealthReport(
        host="n1", status=status, reachable=status != "Unreachable", checked_at=at, **kw
    )  # type: ignore[arg-type]


def failed(step: str, at: datetime) -> ActionResult:
    return ActionResult(step, at, at + timedelta(seconds=5), False, "no luck")


def rows(engine: Engine, sql: str) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql))]


def test_a_host_that_stays_down_alerts_once_then_recovers(engine: Engine) -> None:
    host(engine)
    down = report("Unreachable", T0)
    first = record(engine, down, down, [failed("reboot_host", T0)])
    assert first.incident_status == "failed"  # the flow alerts a person
    later = report("Unreachable", T0 + timedelta(minutes=5))
    second = record(engine, later, later, [failed("reboot_host", later.checked_at)])
    assert second.incident_status == "still-failing"  # no second alert
    assert second.incident_id == first.incident_id
    back = report("Good", T0 + timedelta(minutes=10))
    third = record(engine, back, back, [])
    assert third.incident_status == "recovered"
    assert third.recovery_seconds == 600
    assert rows(engine, "SELECT kind, status, alerted_at IS NOT NULL FROM incidents") == [
        ("Unreachable", "recovered", True)
    ]
    assert rows(engine, "SELECT step, ok FROM recovery_actions ORDER BY id") == [
        ("reboot_host", False),
        ("reboot_host", False),
    ]
    assert rows(engine, "SELECT status FROM node_status_samples ORDER BY id") == [
        ("Unreachable",),
        ("Unreachable",),
        ("Good",),
    ]


def test_unsupported_is_recorded_once_a_day_without_recovery(engine: Engine) -> None:
    host(engine)
    banned = report("Unsupported", T0, banned=True, banned_reason="Data center IP")
    out = record(engine, banned, banned, [])
    record(engine, banned, banned, [])
    assert out.incident_status is None  # nothing to recover, nobody paged
    assert rows(engine, "SELECT kind, status, detail FROM incidents") == [
        ("Unsupported", "failed", "Data center IP")
    ]
    assert rows(engine, "SELECT banned_reason FROM node_status_samples LIMIT 1") == [
        ("Data center IP",)
    ]


def test_a_browser_death_the_runner_repaired_is_one_incident(engine: Engine) -> None:
    host(engine)
    events = [
        {
            "id": 7,
            "at": (T0 - timedelta(seconds=9)).isoformat(),
            "kind": "browser_exited",
            "detail": "exit code -9",
        },
        {"id": 8, "at": (T0 - timedelta(seconds=7)).isoformat(), "kind": "browser_started"},
    ]
    good = report(
        "Good", T0, events=events, client_id="abc", status_updated_at=T0 - timedelta(seconds=4)
    )
    out = record(engine, good, good, [])
    assert out.incident_status == "recovered"
    assert out.recovery_seconds == 5
    assert rows(engine, "SELECT event_cursor, client_id FROM nodes") == [(8, "abc")]
    assert rows(engine, "SELECT step, ok FROM recovery_actions") == [
        ("runner_restarted_browser", True)
    ]
