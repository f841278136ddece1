"""gradientlab.store.reads.recovery on a real Postgres: incidents and the steps tried. Rows and
clocks derive from the app tests' fixed reference time (test_analysis_app.py), and so
do their fleets."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest
from sqlalchemy import Engine

from gradientlab.store import reads
from gradientlab.store.reads import FleetFilter
from tests.integration.test_analysis_app import DAYS, seed_fleet, whole_range


@pytest.fixture()
def seeded(engine: Engine) -> Engine:
    seed_fleet(engine)
    return engine


def test_incidents_with_recovery_time_and_ordered_actions(seeded: Engine) -> None:
    found = reads.incidents(seeded, whole_range()).set_index("id")

    assert found.loc[1, "recovery_seconds"] == pytest.approx(42.0)
    assert found.loc[1, "actions"] == "restart_browser ✗ → login ✓"
    assert found.loc[1, "failed_actions"] == 1
    assert pd.isna(found.loc[2, "recovery_seconds"])
    assert found.loc[2, "actions"] == "login …"

    pi_only = reads.incidents(seeded, FleetFilter(DAYS[0], DAYS[-1], hosts=("home-pi",)))
    assert pi_only["id"].tolist() == [1]
    before = reads.incidents(seeded, FleetFilter(DAYS[0], DAYS[0] - timedelta(days=1)))
    assert before.empty


def test_recovery_actions(seeded: Engine) -> None:
    steps = reads.recovery_actions(seeded, [1])

    assert steps["step"].tolist() == ["restart_browser", "login"]
    assert steps["seconds"].tolist() == pytest.approx([10.0, 28.0])
    assert reads.recovery_actions(seeded, []).empty
