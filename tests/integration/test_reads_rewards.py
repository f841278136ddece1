"""gradientlab.store.reads.rewards on a real Postgres: nodes' totals over the selection, and the
pages' reads on an empty database. Rows and clocks derive from the app tests' fixed reference
time (test_analysis_app.py), and so do their fleets."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import Engine

from gradientlab.store import reads
from gradientlab.store.reads import FleetFilter
from tests.integration.test_analysis_app import DAYS, RAW_POINTS, TODAY, seed_fleet, whole_range


@pytest.fixture()
def seeded(engine: Engine) -> Engine:
    seed_fleet(engine)
    return engine


def test_node_totals_label_nodes_no_host_owns(seeded: Engine) -> None:
    nodes = reads.node_totals(seeded, whole_range(), "host", 50, 0).set_index("host")

    assert nodes.loc["laptop-node", "client_id"] == "laptop-node"
    assert nodes.loc["laptop-node", "provider"] == reads.UNMANAGED_PROVIDER
    assert nodes.loc["laptop-node", "region"] == reads.UNKNOWN_REGION
    assert nodes.loc["gcp-west-1", "points_raw"] == sum(RAW_POINTS["node-gcp"])


def test_node_totals_filter_by_provider_region_host_and_days(seeded: Engine) -> None:
    def hosts(selection: FleetFilter) -> set[str]:
        return set(reads.node_totals(seeded, selection, "host", 50, 0)["host"])

    assert hosts(FleetFilter(DAYS[0], DAYS[-1], providers=("gcp", "static"))) == {
        "gcp-west-1",
        "home-pi",
    }
    assert hosts(FleetFilter(DAYS[0], DAYS[-1], regions=("unknown",))) == {
        "home-pi",
        "laptop-node",
    }

    one_day = reads.node_totals(seeded, FleetFilter(TODAY, TODAY, hosts=("home-pi",)))
    assert one_day[["host", "days", "points_raw"]].values.tolist() == [["home-pi", 1, 1_200_000]]

    nothing = reads.node_totals(seeded, FleetFilter(DAYS[0], DAYS[-1], hosts=("no-such",)))
    assert nothing.empty
    assert "points" in nothing.columns


def test_node_totals_with_uptime_and_taps(seeded: Engine) -> None:
    stats = reads.node_totals(
        seeded, FleetFilter(TODAY, TODAY, providers=("gcp",)), "host", 50, 0, with_stats=True
    )

    assert stats[["host", "uptime_hours", "taps"]].values.tolist() == [["gcp-west-1", 12.0, 12]]


def test_page_queries_on_an_empty_database(engine: Engine) -> None:
    selection = FleetFilter(date(2025, 1, 1), date(2025, 1, 31))

    assert reads.node_totals(engine, selection).empty
    assert reads.fleet_now(engine).empty
    assert reads.selection_totals(engine, selection)["nodes"] == 0
    assert reads.points_by_group(engine, selection, "provider").empty
    assert reads.top_nodes_per_day(engine, selection, 10, "taps").empty
    assert reads.incidents(engine, selection).empty
    assert reads.filter_choices(engine).empty
