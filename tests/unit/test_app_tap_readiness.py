"""Tap readiness in the analysis app on a real Postgres: the query picks each host's latest test
in the selected days and follows the sidebar filters; the Uptime & taps page shows it beside
each node's taps. Rows and clocks derive from the app tests' fixed reference time."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pandas as pd
import pytest
import streamlit as st
from sqlalchemy import Engine

from analysis_app import components, queries
from analysis_app.queries import FleetFilter
from gradientlab.node.readiness import TapCheck
from gradientlab.node.stun import Behaviour, NatType, TapReadiness
from gradientlab.store.taps import record_tap_readiness
from tests.unit.test_analysis_app import DAYS, NOW, chart_rows, run_app, seed_fleet

SERVER = "stun.example:3478"


@pytest.fixture(autouse=True)
def fresh_cache_and_page_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    st.cache_data.clear()
    monkeypatch.setattr(components, "utc_now", lambda: NOW)
    yield
    st.cache_data.clear()


def nat(kind: NatType, mapped: str = "198.51.100.7") -> TapReadiness:
    behind = kind not in (NatType.OPEN, NatType.FIREWALL)
    return TapReadiness(
        server=SERVER,
        udp_reachable=kind != NatType.UDP_BLOCKED,
        mapped_address=None if kind == NatType.UDP_BLOCKED else mapped,
        mapped_port=None if kind == NatType.UDP_BLOCKED else 40000,
        behind_nat=behind,
        rfc5780=True,
        mapping=Behaviour.ADDRESS_AND_PORT_DEPENDENT
        if kind == NatType.SYMMETRIC
        else Behaviour.ENDPOINT_INDEPENDENT,
        nat_type=kind,
        error="no answer from 192.0.2.10:3478 over UDP" if kind == NatType.UDP_BLOCKED else None,
    )


@pytest.fixture()
def tested(engine: Engine) -> Engine:
    """The app tests' fleet, and three runs of tap-readiness tests on the selected days."""
    seed_fleet(engine)
    runs = [NOW - timedelta(days=2), NOW - timedelta(hours=3), NOW - timedelta(minutes=20)]
    checks = [
        # oci-ashburn-1: was symmetric, latest run could not reach it over SSH
        TapCheck("oci-ashburn-1", runs[0], SERVER, result=nat(NatType.SYMMETRIC)),
        TapCheck("oci-ashburn-1", runs[1], SERVER, result=nat(NatType.SYMMETRIC)),
        TapCheck("oci-ashburn-1", runs[2], SERVER, error="oci-ashburn-1: no TCP connection"),
        # gcp-west-1: UDP blocked twice, then port-restricted
        TapCheck("gcp-west-1", runs[0], SERVER, result=nat(NatType.UDP_BLOCKED)),
        TapCheck("gcp-west-1", runs[1], SERVER, result=nat(NatType.UDP_BLOCKED)),
        TapCheck("gcp-west-1", runs[2], SERVER, result=nat(NatType.PORT_RESTRICTED_CONE)),
        # home-pi: open; its only test is before the selected days
        TapCheck("home-pi", NOW - timedelta(days=40), SERVER, result=nat(NatType.OPEN)),
    ]
    record_tap_readiness(engine, checks)
    return engine


def test_latest_test_per_host_in_the_selected_days(tested: Engine) -> None:
    frame = queries.tap_readiness(tested, FleetFilter(DAYS[0], DAYS[-1]))
    assert frame["host"].tolist() == ["gcp-west-1", "oci-ashburn-1"]  # home-pi: out of range
    gcp, oci = frame.to_dict("records")
    assert (gcp["nat_type"], gcp["mapped_address"]) == ("port-restricted-cone", "198.51.100.7")
    assert pd.isna(gcp["error"])
    assert (gcp["tests"], gcp["blocked_tests"], gcp["failed_tests"]) == (3, 2, 0)
    assert pd.isna(oci["nat_type"]) and oci["error"] == "oci-ashburn-1: no TCP connection"
    assert (oci["tests"], oci["blocked_tests"], oci["failed_tests"]) == (3, 0, 1)
    assert oci["client_id"] == "node-oci" and oci["provider"] == "oci"


def test_readiness_follows_the_sidebar_filters_and_days(tested: Engine) -> None:
    only_gcp = queries.tap_readiness(tested, FleetFilter(DAYS[0], DAYS[-1], providers=("gcp",)))
    assert only_gcp["host"].tolist() == ["gcp-west-1"]
    first_day = queries.tap_readiness(tested, FleetFilter(DAYS[0], DAYS[0]))
    assert first_day.set_index("host")["nat_type"].to_dict() == {
        "gcp-west-1": "udp-blocked",
        "oci-ashburn-1": "symmetric",
    }
    assert queries.tap_readiness(tested, FleetFilter(DAYS[0], DAYS[-1], hosts=("x",))).empty


def test_uptime_page_shows_readiness_beside_taps(tested: Engine) -> None:
    at = run_app("views/uptime.py")
    assert [s.value for s in at.subheader] == ["Tap readiness"]
    assert len(at.get("vega_lite_chart")) == 3  # uptime, taps, taps by NAT type
    readiness = at.dataframe[1].value.set_index("host")
    rows = {r["nat_type"]: r for r in chart_rows(at.get("vega_lite_chart")[2])}
    assert rows["port-restricted-cone"]["taps_per_node_day"] == 12.0
    assert rows["not measured"]["nodes"] == 1
    assert readiness.loc["gcp-west-1", "nat_type"] == "port-restricted-cone"
    assert readiness.loc["gcp-west-1", "taps"] == 36  # 12 taps on each of the three days
    assert readiness.loc["gcp-west-1", "mapped"] == "198.51.100.7:40000"
    assert readiness.loc["oci-ashburn-1", "nat_type"] == "not measured"
    assert readiness.loc["oci-ashburn-1", "outlook"].startswith("unknown — the test did not run")
    assert readiness.loc["oci-ashburn-1", "taps"] == 0
    assert [b.key for b in at.download_button] == ["uptime_csv", "tap_readiness_csv"]


def test_uptime_page_without_readiness_says_which_flow_fills_it(engine: Engine) -> None:
    seed_fleet(engine)
    at = run_app("views/uptime.py")
    assert any("poc_taps flow" in i.value for i in at.info)
    assert len(at.dataframe) == 1
