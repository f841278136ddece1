"""gradientlab.store.reads.economics on a real Postgres: what each host and provider cost in the
selected days, on the caller's clock. Rows and clocks derive from the app tests' fixed reference
time (test_analysis_app.py), and so do their fleets."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest
from sqlalchemy import Engine

from gradientlab.store import reads
from gradientlab.store.reads import FleetFilter
from tests.integration.test_analysis_app import DAYS, NOW, TODAY, at_hour, seed_costs, whole_range


@pytest.fixture()
def priced(engine: Engine) -> Engine:
    seed_costs(engine)
    return engine


def test_host_costs_multiply_price_by_hours_in_the_days(priced: Engine) -> None:
    # Two whole past days: the window ends at today's midnight, before as_of.
    costs = reads.host_costs(priced, FleetFilter(DAYS[0], DAYS[1]), NOW).set_index("host")

    assert sorted(costs.index) == ["azure-gone", "gcp-idle", "gcp-paid", "local-1", "oci-idle"]
    hours = {"local-1": 48, "gcp-paid": 42, "gcp-idle": 24, "oci-idle": 36, "azure-gone": 27}
    assert costs["hours"].to_dict() == pytest.approx(hours)
    assert costs["cost_usd"].to_dict() == pytest.approx(
        {"local-1": 0.0, "gcp-paid": 2.1, "gcp-idle": 0.24, "oci-idle": 0.72, "azure-gone": 2.7}
    )
    assert costs["points_raw"].to_dict() == {
        "local-1": 300_000,
        "gcp-paid": 3_000_000,
        "gcp-idle": 0,
        "oci-idle": 0,
        "azure-gone": 400_000,
    }
    assert costs.loc["gcp-paid", "points"] == 30.0
    assert costs.loc["gcp-paid", "counted_from"] == at_hour(DAYS[0], 6)
    assert costs.loc["azure-gone", "counted_from"] == at_hour(DAYS[0], 0)
    assert costs.loc["azure-gone", "counted_to"] == at_hour(DAYS[1], 3)
    assert costs.loc["local-1", "region"] == reads.UNKNOWN_REGION


def test_host_costs_price_a_point_without_dividing_by_zero(priced: Engine) -> None:
    costs = reads.host_costs(priced, FleetFilter(DAYS[0], DAYS[1]), NOW).set_index("host")

    assert costs.loc["gcp-paid", "usd_per_point"] == pytest.approx(2.1 / 30)
    assert costs.loc["azure-gone", "usd_per_point"] == pytest.approx(2.7 / 4)
    assert costs.loc["local-1", "usd_per_point"] == 0.0
    assert costs.loc["gcp-paid", "per_point_note"] == ""
    assert costs.loc["local-1", "per_point_note"] == "free"
    assert costs.loc["oci-idle", "per_point_note"] == "no points"
    assert costs.loc["gcp-idle", "per_point_note"] == "no points"
    assert costs.loc[["oci-idle", "gcp-idle"], "usd_per_point"].isna().all()


def test_host_costs_count_live_hosts_up_to_now(priced: Engine) -> None:
    as_of = at_hour(TODAY, 10)

    costs = reads.host_costs(priced, whole_range(), as_of=as_of).set_index("host")

    assert costs.loc["gcp-paid", "hours"] == pytest.approx(24 + 24 + 10 - 6)
    assert costs.loc["gcp-paid", "counted_to"] == as_of
    assert costs.loc["gcp-paid", "points_raw"] == 3_500_000
    assert costs.loc["azure-gone", "hours"] == pytest.approx(27)  # terminated: stops there
    assert costs.loc["new-vm", "hours"] == pytest.approx(9)
    assert costs.loc["new-vm", "cost_usd"] == pytest.approx(4.5)
    assert "planned-1" not in costs.index  # not created yet, so it costs nothing
    assert "laptop-node" not in costs.index


def test_host_costs_stop_at_as_of_inside_the_days(priced: Engine) -> None:
    as_of = at_hour(DAYS[1], 3)

    costs = reads.host_costs(priced, whole_range(), as_of=as_of).set_index("host")

    assert costs.loc["gcp-paid", "hours"] == pytest.approx(24 - 6 + 3)
    assert costs.loc["gcp-paid", "counted_to"] == as_of
    assert costs.loc["gcp-idle", "hours"] == pytest.approx(3)
    assert costs.loc["new-vm", "hours"] == 0  # created after as_of: listed for its points only
    assert costs.loc["new-vm", "cost_usd"] == 0


def test_host_costs_need_a_clock_with_its_timezone(priced: Engine) -> None:
    with pytest.raises(ValueError, match="timezone"):
        reads.host_costs(priced, whole_range(), as_of=NOW.replace(tzinfo=None))


def test_host_costs_follow_the_sidebar_filters(priced: Engine) -> None:
    gcp = reads.host_costs(priced, FleetFilter(DAYS[0], DAYS[1], providers=("gcp",)), NOW)
    assert gcp["host"].tolist() == ["gcp-idle", "gcp-paid"]

    unknown = reads.host_costs(priced, FleetFilter(DAYS[0], DAYS[1], regions=("unknown",)), NOW)
    assert unknown["host"].tolist() == ["local-1"]

    one = reads.host_costs(priced, FleetFilter(DAYS[1], DAYS[1], hosts=("gcp-paid",)), NOW)
    assert one[["host", "hours", "points_raw"]].values.tolist() == [["gcp-paid", 24.0, 2_000_000]]

    before = reads.host_costs(priced, FleetFilter(DAYS[0], DAYS[0], hosts=("gcp-idle",)), NOW)
    assert before.empty


def test_provider_costs_roll_hosts_up(priced: Engine) -> None:
    costs = reads.host_costs(priced, FleetFilter(DAYS[0], DAYS[1]), NOW)

    providers = reads.provider_costs(costs).set_index("provider")

    assert providers.loc["gcp", "hosts"] == 2
    assert providers.loc["gcp", "cost_usd"] == pytest.approx(2.34)
    assert providers.loc["gcp", "points"] == 30.0
    assert providers.loc["gcp", "usd_per_point"] == pytest.approx(2.34 / 30)
    assert providers.loc["local", "per_point_note"] == "free"
    assert providers.loc["oci", "per_point_note"] == "no points"
    assert pd.isna(providers.loc["oci", "usd_per_point"])


def test_host_costs_on_an_empty_database(engine: Engine) -> None:
    costs = reads.host_costs(engine, FleetFilter(date(2025, 1, 1), date(2025, 1, 31)), NOW)

    assert costs.empty
    assert {"cost_usd", "points", "usd_per_point", "per_point_note"} <= set(costs.columns)
    assert reads.provider_costs(costs).empty
    assert reads.host_day_bounds(engine, TODAY) is None
