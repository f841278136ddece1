"""The daily report built from frames shaped like the app's queries: no database needed."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pytest

from gradientlab.report import NEVER_CHECKED, STALE, build_report, check_state, usd_text

AS_OF = datetime(2025, 3, 14, 10, 30, tzinfo=UTC)
DAY = date(2025, 3, 13)


def frames(**overrides: pd.DataFrame) -> dict[str, pd.DataFrame]:
    empty = {
        "status": pd.DataFrame(
            columns=["host", "provider", "region", "client_id", "status", "last_check",
                     "health_period_s"]
        ),
        "quarantined": pd.DataFrame(
            columns=["host", "provider", "region", "quarantined_at", "quarantine_reason"]
        ),
        "points": pd.DataFrame(
            columns=["day", "host", "client_id", "provider", "region", "points_raw", "points"]
        ),
        "incidents": pd.DataFrame(
            columns=["id", "host", "kind", "status", "recovery_seconds", "actions"]
        ),
        "host_costs": pd.DataFrame(columns=["host", "provider", "cost_usd", "points_raw"]),
        "provider_costs": pd.DataFrame(
            columns=["provider", "hosts", "hours", "cost_usd", "points", "usd_per_point",
                     "per_point_note"]
        ),
    }  # fmt: skip
    return {**empty, **overrides}


def test_an_empty_fleet_reports_that_there_is_nothing_yet() -> None:
    report = build_report("lab", DAY, DAY, AS_OF, **frames())
    assert report.headlines == {
        "Fleet": "No live hosts.",
        "Earnings": "0.00 points from 0 nodes over 0 days with points.",
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


def test_nodes_without_points_and_hosts_paid_for_nothing_are_named() -> None:
    status = pd.DataFrame(
        {
            "host": ["a", "b", "c"],
            "provider": ["oci", "oci", "gcp"],
            "region": ["r1", "r1", "r2"],
            "client_id": ["node-a", "node-b", None],
            "status": ["Good", "Disconnected", None],
            "last_check": [AS_OF - timedelta(minutes=1)] * 2 + [None],
            "health_period_s": [300.0, 300.0, None],
        }
    )
    points = pd.DataFrame(
        {
            "day": [DAY, DAY],
            "host": ["a", "b"],
            "client_id": ["node-a", "node-b"],
            "provider": ["oci", "oci"],
            "region": ["r1", "r1"],
            "points_raw": [250_000, 0],
        }
    )
    costs = pd.DataFrame(
        {"host": ["a", "b"], "provider": ["oci", "oci"], "cost_usd": [0.24, 0.24],
         "points_raw": [250_000, 0]}
    )  # fmt: skip
    report = build_report(
        "lab", DAY, DAY, AS_OF, **frames(status=status, points=points, host_costs=costs)
    )
    assert report.headlines["Fleet"] == (
        "3 hosts: 1 Disconnected, 1 Good, 1 never checked; 1 of 2 nodes earned points; "
        "0 quarantined."
    )
    assert report.notes["Earnings"] == ["best: a 2.50", "no points: b"]
    assert report.headlines["Cost"] == "$0.48 for 2.50 points ($0.192 per point)."
    assert report.notes["Cost"] == ["paid for no points: b $0.24"]
    assert {r["provider"]: r["not good"] for r in report.tables["Fleet"]} == {
        "gcp": "c (never checked)",
        "oci": "b (Disconnected)",
    }


def test_table_cells_cannot_break_the_markdown_table() -> None:
    incidents = pd.DataFrame(
        {"id": [1], "host": ["a"], "kind": ["Odd|kind"], "status": ["open"],
         "recovery_seconds": [float("nan")], "actions": ["login ✗"]}
    )  # fmt: skip
    markdown = build_report("lab", DAY, DAY, AS_OF, **frames(incidents=incidents)).markdown()
    assert "| Odd\\|kind | 1 | 0 | 1 | 0 |  |  |" in markdown
    assert "- a: Odd|kind, still open after login ✗" in markdown


def test_a_bad_period_or_a_naive_clock_is_refused() -> None:
    with pytest.raises(ValueError, match="ends .2025-03-12. before it starts .2025-03-13."):
        build_report("lab", DAY, DAY - timedelta(days=1), AS_OF, **frames())
    with pytest.raises(ValueError, match="as_of must carry its timezone"):
        build_report("lab", DAY, DAY, AS_OF.replace(tzinfo=None), **frames())


def test_prices_read_like_money() -> None:
    assert (usd_text(0), usd_text(0.0947321), usd_text(1234.5)) == ("$0.00", "$0.0947", "$1,234.50")
