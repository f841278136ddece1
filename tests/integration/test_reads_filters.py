"""gradientlab.store.reads.filters on a real Postgres: what an analyst can select and the days each
source has rows for. Rows and clocks derive from the app tests' fixed reference time
(test_analysis_app.py), and so do their fleets."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine, text

from gradientlab.store import reads
from gradientlab.store.reads import FleetFilter
from gradientlab.store.rollups import refresh_rollups
from tests.integration.test_analysis_app import DAYS, TODAY, seed_costs, seed_fleet


@pytest.fixture()
def seeded(engine: Engine) -> Engine:
    seed_fleet(engine)
    return engine


@pytest.fixture()
def priced(engine: Engine) -> Engine:
    seed_costs(engine)
    return engine


def test_day_bounds(seeded: Engine, engine: Engine) -> None:
    assert reads.day_bounds(seeded, "points") == (DAYS[0], DAYS[-1])
    assert reads.day_bounds(seeded, "stats") == (DAYS[0], DAYS[-1])
    assert reads.day_bounds(seeded, "incidents") == (TODAY, TODAY)  # 2 h and 10 min ago
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE node_daily_points"))
    assert reads.day_bounds(engine, "points") is None


def test_filter_choices_lists_live_hosts_and_unmanaged_nodes(seeded: Engine) -> None:
    choices = reads.filter_choices(seeded)

    assert choices.values.tolist() == [
        ["gcp-west-1", "gcp", "us-west1"],
        ["home-pi", "static", "unknown"],
        ["laptop-node", "not managed", "unknown"],
        ["oci-ashburn-1", "oci", "us-ashburn-1"],
    ]


def test_filter_choices_keep_terminated_hosts_that_earned(seeded: Engine) -> None:
    with seeded.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO node_daily_points (client_id, day, points)"
                " VALUES ('node-old', :day, 100000)"
            ),
            {"day": DAYS[0]},
        )
    refresh_rollups(seeded)  # as the rewards flow does after it writes points

    assert "old-vm" in set(reads.filter_choices(seeded)["host"])
    old = reads.node_totals(seeded, FleetFilter(DAYS[0], DAYS[0], hosts=("old-vm",)))
    assert old[["provider", "points"]].values.tolist() == [["azure", 1.0]]


def test_day_bounds_of_hosts_run_from_the_first_creation_to_today(priced: Engine) -> None:
    first = DAYS[0] - timedelta(days=5)  # azure-gone's creation
    assert reads.host_day_bounds(priced, TODAY) == (first, TODAY)
    later = TODAY + timedelta(days=3)  # no points listed since: the caller's today still ends it
    assert reads.host_day_bounds(priced, later) == (first, later)
    # a caller whose day is behind the network's still sees the latest listed points
    assert reads.host_day_bounds(priced, DAYS[0]) == (first, TODAY)
