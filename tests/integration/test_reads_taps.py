"""gradientlab.store.reads.taps on a real Postgres: each host's latest test in the selected days,
following the sidebar filters, a page at a time, with a summary per NAT type and the CSV. The
fleet and its tests are the Uptime & taps page tests' (test_app_tap_readiness.py)."""

from __future__ import annotations

import pandas as pd
import pytest
from sqlalchemy import Engine

from gradientlab.store import reads
from gradientlab.store.reads import FleetFilter
from tests.integration.test_analysis_app import DAYS
from tests.integration.test_app_tap_readiness import seed_tap_tests


@pytest.fixture()
def tested(engine: Engine) -> Engine:
    seed_tap_tests(engine)
    return engine


def test_latest_test_per_host_in_the_selected_days(tested: Engine) -> None:
    frame = reads.tap_readiness(tested, FleetFilter(DAYS[0], DAYS[-1]))
    assert frame["host"].tolist() == ["gcp-west-1", "oci-ashburn-1"]  # home-pi: out of range
    gcp, oci = frame.to_dict("records")
    assert (gcp["nat_type"], gcp["mapped_address"]) == ("port-restricted-cone", "198.51.100.7")
    assert pd.isna(gcp["error"])
    assert (gcp["tests"], gcp["blocked_tests"], gcp["failed_tests"]) == (3, 2, 0)
    assert pd.isna(oci["nat_type"]) and oci["error"] == "oci-ashburn-1: no TCP connection"
    assert (oci["tests"], oci["blocked_tests"], oci["failed_tests"]) == (3, 0, 1)
    assert oci["client_id"] == "node-oci" and oci["provider"] == "oci"


def test_readiness_follows_the_sidebar_filters_and_days(tested: Engine) -> None:
    only_gcp = reads.tap_readiness(tested, FleetFilter(DAYS[0], DAYS[-1], providers=("gcp",)))
    assert only_gcp["host"].tolist() == ["gcp-west-1"]
    first_day = reads.tap_readiness(tested, FleetFilter(DAYS[0], DAYS[0]))
    assert first_day.set_index("host")["nat_type"].to_dict() == {
        "gcp-west-1": "udp-blocked",
        "oci-ashburn-1": "symmetric",
    }
    assert reads.tap_readiness(tested, FleetFilter(DAYS[0], DAYS[-1], hosts=("x",))).empty


def test_each_host_carries_its_nodes_taps_and_pages_come_fewest_taps_first(
    tested: Engine,
) -> None:
    days = FleetFilter(DAYS[0], DAYS[-1])
    every = reads.tap_readiness(tested, days).set_index("host")
    assert every.loc["gcp-west-1", ["taps", "node_days"]].tolist() == [36, 3]  # 12 a day
    assert every.loc["oci-ashburn-1", ["taps", "node_days"]].tolist() == [0, 3]
    first = reads.tap_readiness(tested, days, limit=1, offset=0, order="fewest_taps")
    second = reads.tap_readiness(tested, days, limit=1, offset=1, order="fewest_taps")
    assert (first["host"].tolist(), second["host"].tolist()) == (["oci-ashburn-1"], ["gcp-west-1"])
    assert reads.tap_readiness(tested, days, limit=1, offset=1)["host"].tolist() == [
        "oci-ashburn-1"  # by host unless asked otherwise
    ]
    assert reads.tap_readiness(tested, days, limit=5, offset=2).empty
    with pytest.raises(ValueError, match="not 'taps'"):
        reads.tap_readiness(tested, days, order="taps")


def test_the_summary_counts_every_selected_host_per_nat_type(tested: Engine) -> None:
    summary = reads.tap_readiness_summary(tested, FleetFilter(DAYS[0], DAYS[-1]))
    rows = {r["nat_type"] if isinstance(r["nat_type"], str) else None: r for r in
            summary.to_dict("records")}  # fmt: skip
    assert set(rows) == {"port-restricted-cone", None}
    assert (rows[None]["hosts"], rows[None]["not_run"], rows[None]["taps"]) == (1, 1, 0)
    assert rows["port-restricted-cone"]["taps"] == 36
    assert rows["port-restricted-cone"]["node_days"] == 3
    first_day = reads.tap_readiness_summary(tested, FleetFilter(DAYS[0], DAYS[0]))
    assert first_day.set_index("nat_type")["udp_blocked"].to_dict() == {
        "symmetric": 0,
        "udp-blocked": 1,
    }
    assert first_day["hosts"].sum() == len(
        reads.tap_readiness(tested, FleetFilter(DAYS[0], DAYS[0]))
    )
    only_gcp = FleetFilter(DAYS[0], DAYS[-1], providers=("gcp",))
    assert reads.tap_readiness_summary(tested, only_gcp)["hosts"].tolist() == [1]


def test_the_full_selection_downloads_as_csv(tested: Engine) -> None:
    csv = reads.tap_readiness_csv(tested, FleetFilter(DAYS[0], DAYS[-1])).decode()
    header, *lines = csv.splitlines()
    assert header.split(",") == list(
        reads.tap_readiness(tested, FleetFilter(DAYS[0], DAYS[0])).columns
    )
    assert [line.split(",")[0] for line in lines] == ["gcp-west-1", "oci-ashburn-1"]
    assert lines[0].endswith(",3,2,0,36,3")  # tests, blocked, failed, taps, node-days
