"""The analysis app on a real Postgres: its pages through AppTest (the reads they call,
gradientlab.store.reads, are tested in tests/integration/test_reads_*.py on the fleets seeded here).

Every row and every clock here derive from one reference time, `NOW`, fixed and far from the
real date: the queries get it as `today`/`as_of`, the pages through `components.utc_now`. A
query or page that still read the database's `now()` or the local clock would see another
day and fail on every run, not only around midnight."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import streamlit as st
from sqlalchemy import Engine, text
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.element_tree import Node

from analysis_app import components
from analysis_app.components import NO_DATA_MESSAGE
from gradientlab.store import reads
from gradientlab.store.reads import FleetFilter
from gradientlab.store.rollups import refresh_rollups

APP = Path(__file__).resolve().parents[2] / "analysis_app" / "app.py"
# The reference clock: mid-morning, so that every "minutes/hours ago" below stays on TODAY.
NOW = datetime(2025, 3, 14, 10, 30, tzinfo=UTC)
TODAY = NOW.date()
DAYS = [TODAY - timedelta(days=2), TODAY - timedelta(days=1), TODAY]
# Raw integers as the API gives them: 1 point = 100000.
RAW_POINTS = {
    "node-oci": [0, 0, 0],
    "node-gcp": [1_234_567, 2_500_000, 75_000],
    "node-pi": [3_000_000, 2_875_000, 1_200_000],
    "laptop-node": [500_000, 500_000, 250_000],  # listed by the network, no host of ours
}
BANNED_REASON = "Data center IP address"


def seed_fleet(engine: Engine, now: datetime = NOW) -> None:
    """Three live hosts, one terminated; an Unsupported cloud VM; points, stats, incidents;
    the three days up to `now`'s, checks minutes before it."""
    today = now.date()
    DAYS = [today - timedelta(days=2), today - timedelta(days=1), today]  # noqa: N806
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO hosts (id, name, provider, region, address, state, created_at,"
                " updated_at) VALUES"
                " (1, 'oci-ashburn-1', 'oci', 'us-ashburn-1', '10.0.0.2', 'running', :c, :c),"
                " (2, 'gcp-west-1', 'gcp', 'us-west1', '10.0.0.3', 'running', :c, :c),"
                " (3, 'home-pi', 'static', NULL, '192.168.1.20', 'running', :c, :c),"
                " (4, 'old-vm', 'azure', 'westeurope', '10.0.0.9', 'terminated', :c, :c)"
            ),
            {"c": now - timedelta(days=30)},
        )
        conn.execute(
            text(
                "INSERT INTO nodes (host_id, client_id, extension_version) VALUES"
                " (1, 'node-oci', '1.2.3'), (2, 'node-gcp', '1.2.3'),"
                " (3, 'node-pi', '1.2.2'), (4, 'node-old', '1.0.0')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO node_daily_points (client_id, day, points, taps)"
                " VALUES (:client_id, :day, :points, :taps)"
            ),
            [
                {"client_id": cid, "day": day, "points": raw, "taps": i}
                for cid, raws in RAW_POINTS.items()
                for i, (day, raw) in enumerate(zip(DAYS, raws, strict=True))
            ],
        )
        samples = [
            (1, now - timedelta(minutes=30), "Good", None, "129.80.1.1"),
            (1, now - timedelta(minutes=5), "Unsupported", BANNED_REASON, "129.80.1.1"),
            (2, now - timedelta(minutes=4), "Good", None, "34.82.1.1"),
            (3, now - timedelta(minutes=3), "Disconnected", None, "81.2.69.160"),
        ]
        conn.execute(
            text(
                "INSERT INTO node_status_samples"
                " (host_id, sampled_at, status, reachable, banned, banned_reason, ip, taps_today)"
                " VALUES (:host_id, :at, :status, true, :banned, :reason, :ip, 1)"
            ),
            [
                {
                    "host_id": h,
                    "at": at,
                    "status": s,
                    "banned": r is not None,
                    "reason": r,
                    "ip": ip,
                }
                for h, at, s, r, ip in samples
            ],
        )
        conn.execute(
            text(
                "INSERT INTO node_daily_stats (client_id, day, duration, taps)"
                " VALUES (:cid, :day, :duration, :taps)"
            ),
            [
                {"cid": cid, "day": day, "duration": duration, "taps": taps}
                for day in DAYS
                for cid, duration, taps in (
                    ("node-oci", 86_400, 0),
                    ("node-gcp", 43_200, 12),
                    ("node-pi", 72_000, 30),
                )
            ],
        )
        detected = now - timedelta(hours=2)
        conn.execute(
            text(
                "INSERT INTO incidents (id, host_id, kind, detected_at, status, recovered_at)"
                " VALUES (1, 3, 'BrowserDown', :d1, 'recovered', :r1),"
                " (2, 2, 'LoggedOut', :d2, 'open', NULL)"
            ),
            {
                "d1": detected,
                "r1": detected + timedelta(seconds=42),
                "d2": now - timedelta(minutes=10),
            },
        )
        conn.execute(
            text(
                "INSERT INTO recovery_actions (incident_id, step, started_at, finished_at, ok)"
                " VALUES (1, 'login', :t2, :t3, true),"
                " (1, 'restart_browser', :t0, :t1, false),"
                " (2, 'login', :t4, NULL, NULL)"
            ),
            {
                "t0": detected + timedelta(seconds=1),
                "t1": detected + timedelta(seconds=11),
                "t2": detected + timedelta(seconds=12),
                "t3": detected + timedelta(seconds=40),
                "t4": now - timedelta(minutes=9),
            },
        )
        conn.execute(
            text(
                "INSERT INTO account_daily_points (account, day, node, referral, bonus, boost)"
                " VALUES ('me', :d0, 4734567, 100000, 0, 0), ('me', :d1, 5875000, 0, 1000000, 0),"
                " ('me', :d2, 1525000, 0, 0, 50000)"
            ),
            {"d0": DAYS[0], "d1": DAYS[1], "d2": DAYS[2]},
        )
        conn.execute(
            text(
                "UPDATE hosts SET quarantined_at = :t, quarantine_reason = 'reboot budget spent'"
                " WHERE name = 'home-pi'"
            ),
            {"t": now - timedelta(hours=1)},
        )
    refresh_rollups(engine)


@pytest.fixture()
def seeded(engine: Engine) -> Engine:
    seed_fleet(engine)
    return engine


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    """Cached query results are per process; each test reads its own rows."""
    st.cache_data.clear()
    yield
    st.cache_data.clear()


@pytest.fixture(autouse=True)
def page_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pages run in this process (AppTest) and read the time from `components.utc_now`."""
    monkeypatch.setattr(components, "utc_now", lambda: NOW)


def whole_range() -> FleetFilter:
    return FleetFilter(DAYS[0], DAYS[-1])


def at_hour(day: date, hour: int) -> datetime:
    return datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=hour)


def seed_costs(engine: Engine) -> None:
    """Hosts with known prices and creation times: a free local host, a paid cloud host that
    earns, paid hosts that earn nothing, one terminated, one only planned, one too new."""
    hosts = [
        # name, provider, region, state, USD per hour, created_at, updated_at
        ("local-1", "local", None, "running", 0, at_hour(DAYS[0], -24), None),
        ("gcp-paid", "gcp", "us-west1", "running", 0.05, at_hour(DAYS[0], 6), None),
        ("gcp-idle", "gcp", "us-west1", "running", 0.01, at_hour(DAYS[1], 0), None),
        ("oci-idle", "oci", "us-ashburn-1", "stopped", 0.02, at_hour(DAYS[0], 12), None),
        (
            "azure-gone",
            "azure",
            "westeurope",
            "terminated",
            0.1,
            at_hour(DAYS[0], -120),
            at_hour(DAYS[1], 3),
        ),
        ("planned-1", "gcp", "us-west1", "planned", 1, at_hour(DAYS[0], 0), None),
        ("new-vm", "oci", "us-ashburn-1", "running", 0.5, at_hour(TODAY, 1), None),
    ]
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO hosts (name, provider, region, state, hourly_cost_usd, created_at,"
                " updated_at) VALUES (:name, :provider, :region, :state, :cost, :created,"
                " :updated)"
            ),
            [
                {
                    "name": name,
                    "provider": provider,
                    "region": region,
                    "state": state,
                    "cost": cost,
                    "created": created,
                    "updated": updated or created,
                }
                for name, provider, region, state, cost, created, updated in hosts
            ],
        )
        conn.execute(
            text(
                "INSERT INTO nodes (host_id, client_id)"
                " SELECT id, 'node-' || name FROM hosts WHERE name <> 'gcp-idle'"
            )
        )
        raw = {
            "node-local-1": [100_000, 200_000, 300_000],
            "node-gcp-paid": [1_000_000, 2_000_000, 500_000],
            "node-oci-idle": [0, 0, 0],
            "node-azure-gone": [400_000, 0, 0],
            "node-new-vm": [0, 0, 700_000],
            "laptop-node": [900_000, 900_000, 900_000],  # no host of ours, so no cost
        }
        conn.execute(
            text(
                "INSERT INTO node_daily_points (client_id, day, points)"
                " VALUES (:client_id, :day, :points)"
            ),
            [
                {"client_id": cid, "day": day, "points": points}
                for cid, per_day in raw.items()
                for day, points in zip(DAYS, per_day, strict=True)
            ],
        )
        # gcp-idle: Unsupported at half of its checks, so half its cost earned nothing
        conn.execute(
            text(
                "INSERT INTO node_status_samples (host_id, sampled_at, status, reachable)"
                " SELECT id, :t, s, true FROM hosts,"
                " unnest(ARRAY['Unsupported', 'Good', 'Unsupported', 'Good']) s"
                " WHERE name = 'gcp-idle'"
            ),
            {"t": at_hour(DAYS[1], 12)},
        )
    refresh_rollups(engine)


@pytest.fixture()
def priced(engine: Engine) -> Engine:
    seed_costs(engine)
    return engine


# --- the app -------------------------------------------------------------------------------


def run_app(page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60).run()
    if page:
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def charts(at: AppTest) -> list[Node]:
    return list(at.get("vega_lite_chart"))


def table(at: AppTest, index: int, key: str = "host") -> pd.DataFrame:
    return at.dataframe[index].value.set_index(key)


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def chart_rows(chart: Node) -> list[dict[str, Any]]:
    """The rows a chart draws (Streamlit sends them beside the spec, as Arrow)."""
    from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df

    (dataset,) = chart.proto.datasets
    return list(convert_arrow_bytes_to_pandas_df(dataset.data.data).to_dict("records"))


def url_values(at: AppTest, key: str) -> list[str]:
    value = at.query_params[key]
    return list(value) if isinstance(value, list) else [value]


def test_fleet_now_counts_verdicts_earners_and_quarantine(seeded: Engine) -> None:
    at = run_app()

    assert at.title[0].value == "Fleet now"
    assert metrics(at) == {
        "Nodes Good": "1",
        "Unsupported": "1",
        "Earning": "2",  # gcp and pi listed points today, oci none
        "Quarantined": "1",
        "Since last check": "3 min",
    }
    helps = {m.label: m.help for m in at.metric}
    assert helps["Nodes Good"].startswith("Of 3 nodes")
    assert helps["Earning"].startswith("Of 3 nodes")
    fleet = table(at, -1)
    assert fleet.loc["oci-ashburn-1", "status_shown"] == f"Unsupported: {BANNED_REASON}"
    assert fleet.loc["home-pi", "status_shown"] == "Disconnected"
    assert fleet.loc["gcp-west-1", "today_points"] == 0.75
    assert fleet.loc["gcp-west-1", "node"] == "node?node=gcp-west-1"
    assert "old-vm" not in fleet.index
    # problems first: Unsupported, then Disconnected, then Good
    assert fleet.index.tolist() == ["oci-ashburn-1", "home-pi", "gcp-west-1"]
    quarantined = at.dataframe[1].value
    assert quarantined["node"].tolist() == ["node?node=home-pi"]
    assert quarantined["quarantine_reason"].tolist() == ["reboot budget spent"]
    by_region = at.dataframe[0].value.set_index("region")
    assert by_region.loc["us-west1", "Good"] == 1
    assert len(at.get("vega_lite_chart")) == 2  # verdicts by provider, checks per day
    assert {b.key for b in at.download_button} == {"fleet_csv"}


def test_fleet_now_sidebar_filter_and_the_url(seeded: Engine) -> None:
    at = run_app()

    at.sidebar.multiselect(key="filter_provider").set_value(["gcp"]).run()

    assert not at.exception
    assert table(at, -1).index.tolist() == ["gcp-west-1"]
    assert metrics(at)["Nodes Good"] == "1"
    assert {m.label: m.help for m in at.metric}["Nodes Good"].startswith("Of 1 node,")
    assert url_values(at, "provider") == ["gcp"]


def test_a_link_reproduces_a_view(seeded: Engine) -> None:
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["provider"] = ["static", "gcp"]
    at.query_params["from"] = str(DAYS[1])
    at.query_params["to"] = str(DAYS[1])
    at.switch_page("views/rewards.py").run()

    assert not at.exception, [e.value for e in at.exception]
    assert at.sidebar.multiselect(key="filter_provider").value == ["static", "gcp"]
    assert at.sidebar.date_input(key="rewards_days").value == (DAYS[1], DAYS[1])
    assert metrics(at)["Points"] == f"{(2_500_000 + 2_875_000) / 100_000:,.2f}"


def test_a_link_with_a_bad_day_says_so(seeded: Engine) -> None:
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["from"] = "last-week"
    at.run()

    assert any("`from=last-week` is not a day" in w.value for w in at.warning)


def test_rewards_page_by_kind_provider_best_worst_and_zero_days(seeded: Engine) -> None:
    at = run_app("views/rewards.py")

    assert at.title[0].value == "Rewards"
    all_points = sum(sum(v) for v in RAW_POINTS.values()) / 100_000
    assert metrics(at) == {
        "Points": f"{all_points:,.2f}",
        "Nodes": "4",
        "Node-days without a point": "3",  # node-oci on each day
        "Days no node earned": "0",
    }
    kinds, by_provider = (chart_rows(c) for c in charts(at))
    kind_rows = {(r["date"], r["by"]): r["points"] for r in kinds}
    assert kind_rows[(str(DAYS[1]), "bonus")] == 10.0
    assert kind_rows[(str(DAYS[0]), "node")] == 47.34567
    assert {(r["date"], r["by"]): r["points"] for r in by_provider}[
        (str(DAYS[0]), "gcp")
    ] == 12.34567
    best, worst, every = (at.dataframe[i].value for i in range(3))
    assert best["host"].tolist()[:2] == ["home-pi", "gcp-west-1"]
    assert worst["host"].tolist()[0] == "oci-ashburn-1"
    assert worst.set_index("host").loc["oci-ashburn-1", "zero_days"] == 3
    assert every.set_index("host").loc["laptop-node", "points"] == 12.5
    assert every.set_index("host").loc["laptop-node", "node"] == "node?node=laptop-node"
    assert [b.key for b in at.download_button] == ["rewards_csv"]


def test_rewards_page_says_plainly_when_the_network_pays_nothing_now(seeded: Engine) -> None:
    assert not [i.value for i in run_app("views/rewards.py").info if "pays no" in i.value]
    with seeded.begin() as conn:  # the same uptime and taps, and no point credited for them
        conn.execute(text("UPDATE node_daily_points SET points = 0"))
        conn.execute(text("UPDATE account_daily_points SET node = 0, bonus = 0, boost = 0"))
    refresh_rollups(seeded)
    st.cache_data.clear()

    at = run_app("views/rewards.py")
    [banner] = [i.value for i in at.info if "pays no" in i.value]
    assert banner.startswith("The network pays no points now: our nodes were online")
    assert f"on {DAYS[0]:%Y-%m-%d} to {TODAY:%Y-%m-%d}" in banner
    assert "no point was ever credited to this account" in banner
    assert "not a fault of the nodes" in banner


def test_rewards_page_cumulative_and_top_nodes(seeded: Engine) -> None:
    at = run_app("views/rewards.py")

    at.toggle(key="rewards_cumulative").set_value(True).run()
    at.segmented_control(key="rewards_group").set_value("Top 10 nodes").run()

    assert not at.exception
    rows = {(r["date"], r["by"]): r["points"] for r in chart_rows(charts(at)[1])}
    pi = [sum(RAW_POINTS["node-pi"][: i + 1]) / 100_000 for i in range(3)]
    assert [rows[(str(d), "home-pi")] for d in DAYS] == pytest.approx(pi)
    assert '"Points, cumulative"' in charts(at)[1].proto.spec


def test_the_full_selection_downloads_as_csv(seeded: Engine) -> None:
    csv = reads.node_days_csv(seeded, FleetFilter(DAYS[0], DAYS[-1], providers=("gcp",)))
    lines = csv.decode().splitlines()
    assert lines[0] == ("day,host,client_id,provider,region,points_raw,listed_taps,duration,taps")
    assert lines[1:] == [
        f"{DAYS[0]},gcp-west-1,node-gcp,gcp,us-west1,1234567,0,43200,12",
        f"{DAYS[1]},gcp-west-1,node-gcp,gcp,us-west1,2500000,1,43200,12",
        f"{DAYS[2]},gcp-west-1,node-gcp,gcp,us-west1,75000,2,43200,12",
    ]
    incidents_csv = reads.incidents_csv(seeded, FleetFilter(DAYS[0], DAYS[-1]))
    assert "restart_browser ✗ → login ✓" in incidents_csv.decode()


def test_sidebar_filter_follows_the_analyst_to_other_pages(seeded: Engine) -> None:
    at = run_app()
    at.sidebar.multiselect(key="filter_host").set_value(["home-pi"]).run()

    at.switch_page("views/uptime.py").run()

    assert not at.exception
    assert at.sidebar.multiselect(key="filter_host").value == ["home-pi"]
    assert set(at.dataframe[0].value["host"]) == {"home-pi"}


def test_empty_database_shows_no_data_message(engine: Engine) -> None:
    for page in (
        None,
        "views/rewards.py",
        "views/uptime.py",
        "views/incidents.py",
        "views/cost.py",
        "views/node.py",
    ):
        at = run_app(page)
        assert any(NO_DATA_MESSAGE in info.value for info in at.info), page
        assert not charts(at)
        assert not at.dataframe


def test_unreachable_database_says_what_to_do(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg2://root:secret@127.0.0.1:1/nowhere")

    at = run_app()

    assert "Cannot reach the fleet database" in at.error[0].value
    assert "secret" not in at.error[0].value


def test_uptime_page(seeded: Engine) -> None:
    at = run_app("views/uptime.py")

    assert at.title[0].value == "Uptime & taps"
    assert len(charts(at)) == 2
    nodes = table(at, 0)
    assert set(nodes.index) == {"oci-ashburn-1", "gcp-west-1", "home-pi"}
    assert nodes.loc["gcp-west-1", "uptime_hours"] == 36.0  # 12 h on each of three days
    assert nodes.loc["home-pi", "taps_per_day"] == 30.0
    assert metrics(at) == {
        "Mean uptime per node-day": f"{(24 + 12 + 20) / 3:.1f} h",
        "Taps": f"{3 * (12 + 30):,}",
        "Nodes without a tap": "1",
    }
    rows = chart_rows(charts(at)[1])
    assert {r["node"] for r in rows} == {"gcp-west-1", "home-pi", "oci-ashburn-1"}
    assert [b.key for b in at.download_button] == ["uptime_csv"]


def test_incidents_page(seeded: Engine) -> None:
    at = run_app("views/incidents.py")

    assert at.title[0].value == "Incidents"
    assert len(charts(at)) == 2
    assert metrics(at) == {
        "Incidents": "2",
        "Open now": "1",
        "Mean recovery": "42 s",
        "Recovery failed": "0",
    }
    causes, steps, found = (at.dataframe[i].value for i in range(3))
    assert causes.set_index("kind").loc["BrowserDown", "recovered"] == 1
    assert causes.set_index("kind").loc["LoggedOut", "open"] == 1
    steps = steps.set_index("step")
    assert steps.loc["login", "tries"] == 2 and steps.loc["login", "ok"] == 1
    assert steps.loc["login", "success_rate"] == 1.0  # the unfinished try is not a failure
    assert steps.loc["restart_browser", "success_rate"] == 0.0
    found = found.set_index("host")
    assert found.loc["home-pi", "recovery_seconds"] == pytest.approx(42.0)
    assert found.loc["home-pi", "actions"] == "restart_browser ✗ → login ✓"
    counted = {r["band"]: r["incidents"] for r in chart_rows(charts(at)[1])}
    assert counted["30 s – 1 min"] == 1 and sum(counted.values()) == 1
    assert [b.key for b in at.download_button] == ["incidents_csv"]


def test_node_page_from_a_link(seeded: Engine) -> None:
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["node"] = "home-pi"
    at.switch_page("views/node.py").run()

    assert not at.exception, [e.value for e in at.exception]
    assert at.subheader[0].value == "home-pi"
    assert metrics(at) == {
        "Status": "Disconnected",
        "Points": f"{sum(RAW_POINTS['node-pi']) / 100_000:,.2f}",
        "Checks Good": "0%",
        "Incidents": "1",
        "Cost": "$0.00",
    }
    assert any("reboot budget spent" in e.value for e in at.error)
    incidents = at.dataframe[-1].value if not at.dataframe[-1].value.empty else None
    assert incidents is not None
    versions = at.dataframe[0].value.set_index("what")
    assert versions.loc["Extension", "value"] == "1.2.2"
    steps = at.dataframe[1].value
    assert steps["actions"].tolist() == ["restart_browser ✗ → login ✓"]
    assert any("poc_taps flow" in i.value for i in at.info)


def test_node_page_names_an_unknown_node(seeded: Engine) -> None:
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["node"] = "no-such-host"
    at.switch_page("views/node.py").run()

    assert any("No host or node is named `no-such-host`" in w.value for w in at.warning)
    at.selectbox(key="node_pick").set_value("laptop-node").run()
    assert metrics(at)["Points"] == f"{sum(RAW_POINTS['laptop-node']) / 100_000:,.2f}"
    assert url_values(at, "node") == ["laptop-node"]


def test_cost_page_shows_charts_tables_and_csv(priced: Engine) -> None:
    at = run_app("views/cost.py")

    assert at.title[0].value == "Economics"
    assert len(charts(at)) == 2
    hosts = at.dataframe[0].value.set_index("host")
    assert set(hosts.index) == {
        "local-1",
        "gcp-paid",
        "gcp-idle",
        "oci-idle",
        "azure-gone",
        "new-vm",
    }
    assert hosts.loc["local-1", "per_point"] == "free"
    assert hosts.loc["oci-idle", "per_point"] == "no points"
    assert hosts.loc["gcp-paid", "per_point"].startswith("$")
    assert hosts.loc["gcp-paid", "points"] == 35.0
    assert hosts.loc["azure-gone", "cost_usd"] == pytest.approx(0.1 * (24 * 6 + 3))
    # live hosts count up to the page's clock: new-vm from 01:00 to 10:30
    assert hosts.loc["new-vm", "hours"] == pytest.approx(9.5)
    assert "points_raw" not in hosts.columns
    assert list(hosts.index[:2]) == ["oci-idle", "gcp-idle"]  # paying for nothing: first
    providers = at.dataframe[1].value.set_index("provider")
    assert providers.loc["local", "per_point"] == "free"
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Paid hosts without points"] == "2"
    assert metrics["Points"] == "52.00"  # 6 + 35 + 4 + 7: laptop-node is not ours
    gcp_idle_cost = hosts.loc["gcp-idle", "cost_usd"]
    assert metrics["Spent on Unsupported"] == f"${gcp_idle_cost / 2:.3g}"  # half its checks
    wasted = at.dataframe[-1].value.set_index("host")
    assert wasted.index.tolist() == ["gcp-idle"]
    assert wasted.loc["gcp-idle", "unsupported_share"] == 0.5
    assert [b.key for b in at.download_button] == [
        "cost_hosts_csv",
        "cost_providers_csv",
        "unsupported_csv",
    ]


def test_cost_page_at_fleet_scale_charts_the_priced_hosts(priced: Engine) -> None:
    """Past 20 hosts, the ones paying for no point would fill the chart with labels and no
    bar: the chart prices the hosts that earned, the page counts the others."""
    with priced.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO hosts (name, provider, region, state, hourly_cost_usd, created_at,"
                " updated_at) SELECT 'vm-' || lpad(i::text, 2, '0'), 'gcp', 'us-west1',"
                " 'running', 0.01 * i, :created, :created FROM generate_series(1, 24) i"
            ),
            {"created": at_hour(DAYS[0], -24)},
        )
        conn.execute(
            text(
                "INSERT INTO nodes (host_id, client_id)"
                " SELECT id, 'node-' || name FROM hosts WHERE name LIKE 'vm-%'"
            )
        )
        conn.execute(  # each earns 1 point a day: the dearest point is the dearest host's
            text(
                "INSERT INTO node_daily_points (client_id, day, points)"
                " SELECT 'node-' || name, d, 100000 FROM hosts, unnest(CAST(:days AS date[])) d"
                " WHERE name LIKE 'vm-%'"
            ),
            {"days": list(DAYS)},
        )
    refresh_rollups(priced)

    at = run_app("views/cost.py")

    chart = charts(at)[0]
    spec = json.loads(chart.proto.spec)
    assert spec["layer"][0]["title"] == "The 20 hosts paying most per point"
    rows = chart_rows(chart)
    drawn = {r["host"] for r in rows}
    assert len(drawn) == 20 and "vm-24" in drawn  # the dearest first
    assert not {"oci-idle", "gcp-idle"} & drawn  # paying for nothing: not in the chart
    assert {r["per_point"] for r in rows} != {"no points"}
    assert any("2 paid host(s) earned no point" in c.value for c in at.caption)
    assert {m.label: m.value for m in at.metric}["Paid hosts without points"] == "2"
    hosts = at.dataframe[0].value
    assert hosts["host"].tolist()[:2] == ["oci-idle", "gcp-idle"]  # first in the table


def test_cost_page_sidebar_filter(priced: Engine) -> None:
    at = run_app("views/cost.py")

    at.sidebar.multiselect(key="filter_provider").set_value(["gcp"]).run()

    assert not at.exception
    assert set(at.dataframe[0].value["host"]) == {"gcp-paid", "gcp-idle"}
    assert at.dataframe[1].value["provider"].tolist() == ["gcp"]


def test_cost_page_with_only_unmanaged_nodes_selected(priced: Engine) -> None:
    at = run_app("views/cost.py")

    at.sidebar.multiselect(key="filter_host").set_value(["laptop-node"]).run()

    assert not at.exception
    assert any("No hosts in the selected days" in info.value for info in at.info)
    assert not charts(at)
