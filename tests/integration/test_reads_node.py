"""gradientlab.store.reads.node on a real Postgres: one node's days. Rows and clocks derive from
the app tests' fixed reference time (test_analysis_app.py), and so do their fleets."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from gradientlab.store import reads
from tests.integration.test_analysis_app import DAYS, RAW_POINTS, seed_fleet


@pytest.fixture()
def seeded(engine: Engine) -> Engine:
    seed_fleet(engine)
    return engine


def test_node_days_divide_raw_points_for_display(seeded: Engine) -> None:
    days = reads.node_days(seeded, "gcp-west-1", DAYS[0], DAYS[-1])

    assert days["day"].tolist() == list(DAYS)
    assert days["points_raw"].tolist() == RAW_POINTS["node-gcp"]
    assert days["points"].tolist() == [12.34567, 25.0, 0.75]
