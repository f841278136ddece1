"""gradientlab.store.reads.fleet_status on a real Postgres: the fleet now. Rows and clocks derive
from the app tests' fixed reference time (test_analysis_app.py), and so do their
fleets."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text

from gradientlab.store import reads
from tests.integration.test_analysis_app import BANNED_REASON, seed_fleet


@pytest.fixture()
def seeded(engine: Engine) -> Engine:
    seed_fleet(engine)
    return engine


def test_fleet_now_reads_each_hosts_latest_check(seeded: Engine) -> None:
    status = reads.fleet_now(seeded).set_index("host")

    assert list(status.index) == ["gcp-west-1", "home-pi", "oci-ashburn-1"]  # terminated: gone
    assert status.loc["oci-ashburn-1", "status"] == "Unsupported"
    assert status.loc["oci-ashburn-1", "banned_reason"] == BANNED_REASON
    assert status.loc["gcp-west-1", "today_points_raw"] == 75_000
    assert status.loc["gcp-west-1", "today_points"] == 0.75
    assert status.loc["home-pi", "region"] == reads.UNKNOWN_REGION


def test_fleet_now_of_hosts_never_checked(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO hosts (name, provider) VALUES ('fresh', 'local')"))

    status = reads.fleet_now(engine)

    assert status["host"].tolist() == ["fresh"]
    assert status["status"].isna().all()
    assert status["today_points"].isna().all()
