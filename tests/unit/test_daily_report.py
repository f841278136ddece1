"""The daily report built from frames shaped like the app pages' queries: no database needed."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd
import pytest

from gradientlab.daily_report import (
    NEVER_CHECKED,
    STALE,
    build_report,
    check_state,
    usd_text,
)
from gradientlab.health.events import ALERTS_AUTOMATION_PREFIX

AS_OF = datetime(2025, 3, 14, 10, 30, tzinfo=UTC)
DAY = date(2025, 3, 13)


EMPTY_TOTALS = {  # `selection_totals` of days without a node listed
    "nodes": 0, "node_days": 0, "points_raw": 0, "points": 0.0, "zero_days": 0,
    "days_all_zero": 0, "taps": 0, "uptime_hours": 0.0, "stat_node_days": 0, "stat_nodes": 0,
    "untapped_nodes": 0,
}  # fmt: skip
NODE_COLUMNS = ["host", "client_id", "provider", "region", "days", "points_raw", "points",
                "zero_days", "taps", "uptime_hours"]  # fmt: skip


def frames(**overrides: Any) -> dict[str, Any]:
    """Empty frames shaped like the pages' queries, with `overrides`."""
    empty = {
        "fleet_now": pd.DataFrame(
            columns=["host", "provider", "region", "client_id", "status", "last_check",
                     "today_points_raw", "quarantined_at", "quarantine_reason",
                     "health_period_s"]
        ),
        "totals": EMPTY_TOTALS,
        "by_provider": pd.DataFrame(
            columns=["day", "provider", "nodes", "earning_nodes", "points_raw", "points", "taps",
                     "uptime_hours"]
        ),
        "best": pd.DataFrame(columns=NODE_COLUMNS),
        "worst": pd.DataFrame(columns=NODE_COLUMNS),
        "causes": pd.DataFrame(
            columns=["kind", "incidents", "recovered", "failed", "open", "mean_recovery_s"]
        ),
        "steps": pd.DataFrame(
            columns=["step", "tries", "ok", "failed", "success_rate", "mean_seconds"]
        ),
        "unresolved": pd.DataFrame(columns=["host", "kind", "status", "actions"]),
        "host_costs": pd.DataFrame(columns=["host", "provider", "cost_usd", "points_raw"]),
        "provider_costs": pd.DataFrame(
            columns=["provider", "hosts", "hours", "cost_usd", "points", "usd_per_point",
                     "per_point_note"]
        ),
        "unsupported": pd.DataFrame(
            columns=["host", "provider", "region", "cost_usd", "unsupported_share",
                     "wasted_usd", "points"]
        ),
    }  # fmt: skip
    return {**empty, **overrides}


def test_an_empty_fleet_reports_that_there_is_nothing_yet() -> None:
    report = build_report("lab", DAY, DAY, AS_OF, **frames())
    assert report.headlines == {
        "Fleet": "No live hosts.",
        "Earnings": "The network listed no points for these days.",
        "Incidents": "No incidents.",
        "Cost": "No host cost anything.",
    }
    assert report.tables == {}
    assert report.markdown().startswith("# GradientLab report for fleet lab, 2025-03-13\n")


def test_a_check_older_than_two_periods_is_stale_not_the_state_now() -> None:
    assert check_state("Good", AS_OF - timedelta(seconds=599), 300.0, AS_OF) == "Good"
    assert check_state("Good", AS_OF - timedelta(seconds=601), 300.0, AS_OF) == STALE
    assert check_state("Good", AS_OF - timedelta(seconds=601), None, AS_OF) == STALE
    assert check_state(None, None, None, AS_OF) == NEVER_CHECKED


def test_verdicts_earners_best_worst_and_hosts_paid_for_nothing_are_named() -> None:
    fleet_now = pd.DataFrame(
        {
            "host": ["a", "b", "c"],
            "provider": ["oci", "oci", "gcp"],
            "region": ["r1", "r1", "r2"],
            "client_id": ["node-a", "node-b", None],
            "status": ["Good", "Disconnected", None],
            "last_check": [AS_OF - timedelta(minutes=1)] * 2 + [None],
            "today_points_raw": pd.array([250_000, 0, None], dtype="Int64"),
            "quarantined_at": [None, AS_OF - timedelta(hours=2), None],
            "quarantine_reason": [None, "reboot budget spent", None],
            "health_period_s": [300.0, 300.0, None],
        }
    )
    totals = {**EMPTY_TOTALS, "nodes": 2, "node_days": 2, "points_raw": 250_000, "zero_days": 1}
    by_provider = pd.DataFrame(
        {"day": [DAY], "provider": ["oci"], "nodes": [2], "earning_nodes": [1],
         "points_raw": [250_000], "points": [2.5], "taps": [3], "uptime_hours": [20.0]}
    )  # fmt: skip
    nodes = pd.DataFrame({"host": ["a", "b"], "points_raw": [250_000, 0]})
    costs = pd.DataFrame(
        {"host": ["a", "b"], "provider": ["oci", "oci"], "cost_usd": [0.24, 0.24],
         "points_raw": [250_000, 0]}
    )  # fmt: skip
    unsupported = pd.DataFrame({"host": ["b"], "wasted_usd": [0.12]})
    report = build_report(
        "lab",
        DAY,
        DAY,
        AS_OF,
        **frames(
            fleet_now=fleet_now,
            totals=totals,
            by_provider=by_provider,
            best=nodes,
            worst=nodes.iloc[::-1],
            host_costs=costs,
            unsupported=unsupported,
        ),
    )
    assert report.headlines["Fleet"] == (
        "3 hosts: 1 Disconnected, 1 Good, 1 never checked; 1 of 3 earning (points on their "
        "latest listed day); 1 quarantined."
    )
    assert report.notes["Fleet"][0] == (
        "quarantined: b for 2h 0m (reboot budget spent); release it once fixed"
    )
    assert report.headlines["Earnings"] == (
        "2.50 points from 2 nodes over 2 node-days; 1 node-days without a point; "
        "0 days no node earned."
    )
    assert report.tables["Earnings"] == [
        {"provider": "oci", "node-days": 2, "earning node-days": 1, "points": 2.5,
         "points_raw": 250_000, "taps": 3}
    ]  # fmt: skip
    assert report.notes["Earnings"] == ["best: a 2.50", "worst: b 0.00, a 2.50"]
    assert report.headlines["Cost"] == "$0.48 for 2.50 points ($0.192 per point)."
    assert report.notes["Cost"] == [
        "paid for no points: b $0.24",
        "spent while Unsupported: $0.12 (b $0.12)",
    ]
    assert {r["provider"]: r["not good"] for r in report.tables["Fleet"]} == {
        "gcp": "c (never checked)",
        "oci": "b (Disconnected)",
    }


def test_incidents_by_cause_and_recovery_steps() -> None:
    causes = pd.DataFrame(
        {"kind": ["BrowserDown", "LoggedOut"], "incidents": [3, 1], "recovered": [2, 0],
         "failed": [1, 0], "open": [0, 1], "mean_recovery_s": [45.0, float("nan")]}
    )  # fmt: skip
    steps = pd.DataFrame(
        {"step": ["restart_browser", "login"], "tries": [3, 1], "ok": [2, 0], "failed": [1, 0],
         "success_rate": [2 / 3, float("nan")], "mean_seconds": [10.0, float("nan")]}
    )  # fmt: skip
    unresolved = pd.DataFrame(  # as the query gives them, newest first, one page
        {"host": ["pi"], "kind": ["LoggedOut"], "status": ["open"], "actions": [""]}
    )
    report = build_report(
        "lab", DAY, DAY, AS_OF, **frames(causes=causes, steps=steps, unresolved=unresolved)
    )
    assert report.headlines["Incidents"] == (
        "4 incidents (2 recovered, 1 open, 1 failed); mean recovery 45s."
    )
    assert report.tables["Incidents"][1] == {
        "kind": "LoggedOut", "incidents": 1, "recovered": 0, "open": 1, "failed": 0,
        "mean recovery s": None,
    }  # fmt: skip
    assert report.notes["Incidents"] == [
        "pi: LoggedOut, still open",
        "and 1 more open or failed (the Incidents page lists them)",
        "restart_browser: worked 2 of 3 tries (67% of those that ended)",
        "login: worked 0 of 1 tries",
    ]


def test_table_cells_cannot_break_the_markdown_table() -> None:
    causes = pd.DataFrame(
        {"kind": ["Odd|kind"], "incidents": [1], "recovered": [0], "failed": [0], "open": [1],
         "mean_recovery_s": [float("nan")]}
    )  # fmt: skip
    steps = pd.DataFrame(
        {"step": ["log|in"], "tries": [1], "ok": [0], "failed": [0],
         "success_rate": [float("nan")], "mean_seconds": [float("nan")]}
    )  # fmt: skip
    built = build_report("lab", DAY, DAY, AS_OF, **frames(causes=causes, steps=steps))
    markdown = built.markdown()
    assert "| Odd\\|kind | 1 | 0 | 1 | 0 |  |" in markdown
    assert "- log|in: worked 0 of 1 tries" in markdown


def test_a_bad_period_or_a_naive_clock_is_refused() -> None:
    with pytest.raises(ValueError, match="ends .2025-03-12. before it starts .2025-03-13."):
        build_report("lab", DAY, DAY - timedelta(days=1), AS_OF, **frames())
    with pytest.raises(ValueError, match="as_of must carry its timezone"):
        build_report("lab", DAY, DAY, AS_OF.replace(tzinfo=None), **frames())


def test_prices_read_like_money() -> None:
    assert (usd_text(0), usd_text(0.0947321), usd_text(1234.5)) == ("$0.00", "$0.0947", "$1,234.50")


def test_the_report_finds_the_alert_automations_by_their_names_prefix() -> None:
    from deployments.alerts import ALERT_EVENTS, DEAD_MAN_NAME

    names = [name for name, _, _ in ALERT_EVENTS.values()] + [DEAD_MAN_NAME]
    assert all(name.startswith(ALERTS_AUTOMATION_PREFIX) for name in names)


def test_between_seasons_the_earnings_section_says_the_network_pays_nothing() -> None:
    said = "The network pays no points now: our nodes were online 40.0 node-hours ..."
    totals = {**EMPTY_TOTALS, "nodes": 2, "node_days": 6, "zero_days": 6, "days_all_zero": 3}
    report = build_report("lab", DAY, DAY, AS_OF, **frames(totals=totals), season=said)
    # the network's state leads, instead of "6 node-days without a point" read as a fault
    assert report.headlines["Earnings"] == said
    assert report.notes["Earnings"] == ["2 nodes listed over 6 node-days"]
    assert "Earnings" not in report.tables
    assert said in report.markdown()
