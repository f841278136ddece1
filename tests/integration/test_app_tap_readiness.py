"""Tap readiness in the analysis app on a real Postgres: the Uptime & taps page shows each
host's latest test beside its node's taps, paged like the other tables, with a summary per NAT
type and the full selection as CSV (the reads themselves: tests/integration/test_reads_taps.py,
on the fleet and tests seeded here). Rows and clocks derive from the app tests' fixed
reference time."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
import streamlit as st
from sqlalchemy import Engine, text

from analysis_app import components
from gradientlab.agent.stun import Behaviour, NatType, TapReadiness
from gradientlab.node.readiness import TapCheck
from gradientlab.store.rollups import refresh_rollups
from gradientlab.store.taps import record_tap_readiness
from tests.integration.test_analysis_app import NOW, chart_rows, run_app, seed_fleet

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


def seed_tap_tests(engine: Engine) -> None:
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
    refresh_rollups(engine)  # as poc_taps does after it stores its tests


@pytest.fixture()
def tested(engine: Engine) -> Engine:
    seed_tap_tests(engine)
    return engine


def test_uptime_page_shows_readiness_beside_taps(tested: Engine) -> None:
    at = run_app("views/uptime.py")
    assert [s.value for s in at.subheader] == ["Tap readiness"]
    assert len(at.get("vega_lite_chart")) == 3  # uptime, taps, taps by NAT type
    readiness = at.dataframe[1].value.set_index("host")
    rows = {r["nat_type"]: r for r in chart_rows(at.get("vega_lite_chart")[2])}
    assert rows["port-restricted-cone"]["taps_per_node_day"] == 12.0
    assert rows["not measured"]["nodes"] == 1
    assert readiness.index.tolist() == ["oci-ashburn-1", "gcp-west-1"]  # fewest taps first
    assert readiness.loc["gcp-west-1", "nat_type"] == "port-restricted-cone"
    assert readiness.loc["gcp-west-1", "taps"] == 36  # 12 taps on each of the three days
    assert readiness.loc["gcp-west-1", "mapped"] == "198.51.100.7:40000"
    assert readiness.loc["gcp-west-1", "node"] == "node?node=gcp-west-1"
    assert readiness.loc["oci-ashburn-1", "nat_type"] == "not measured"
    assert readiness.loc["oci-ashburn-1", "outlook"].startswith("unknown — the test did not run")
    assert readiness.loc["oci-ashburn-1", "taps"] == 0
    assert any(
        c.value.startswith("Rows 1–2 of 2 tested hosts, fewest taps first; at their latest test "
                           "0 had UDP blocked and 1 could not be tested.")
        for c in at.caption
    )  # fmt: skip
    assert [b.key for b in at.download_button] == ["uptime_csv", "tap_readiness_csv"]
    assert not at.number_input  # one page: no page picker


@pytest.fixture()
def many_tested(tested: Engine) -> Engine:
    """Sixty more tested hosts without node statistics: the readiness table needs two pages."""
    names = [f"edge-{i:02d}" for i in range(60)]
    with tested.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO hosts (id, name, provider, region, state, created_at, updated_at)"
                " VALUES (:id, :n, 'local', 'lab', 'running', :c, :c)"
            ),
            [{"id": 100 + i, "n": n, "c": NOW - timedelta(days=30)} for i, n in enumerate(names)],
        )
    record_tap_readiness(
        tested,
        [
            TapCheck(n, NOW - timedelta(hours=1), SERVER, result=nat(NatType.FULL_CONE))
            for n in names
        ],
    )
    refresh_rollups(tested)
    return tested


def test_the_readiness_table_is_paged_with_its_totals_beside_it(many_tested: Engine) -> None:
    at = run_app("views/uptime.py")
    readiness = at.dataframe[1].value
    assert len(readiness) == 50
    assert readiness["host"].tolist()[:3] == ["edge-00", "edge-01", "edge-02"]  # 0 taps, by name
    assert any(c.value.startswith("Rows 1–50 of 62 tested hosts") for c in at.caption)
    rows = {r["nat_type"]: r for r in chart_rows(at.get("vega_lite_chart")[2])}
    assert rows["full-cone"]["nodes"] == 60

    at.number_input(key="tap_readiness_page").set_value(2).run()
    assert not at.exception
    second = at.dataframe[1].value
    assert second["host"].tolist()[-1] == "gcp-west-1"  # the most taps: last
    assert len(second) == 12
    assert any(c.value.startswith("Rows 51–62 of 62 tested hosts") for c in at.caption)


def test_uptime_page_without_readiness_says_which_flow_fills_it(engine: Engine) -> None:
    seed_fleet(engine)
    at = run_app("views/uptime.py")
    assert any("poc_taps flow" in i.value for i in at.info)
    assert len(at.dataframe) == 1
