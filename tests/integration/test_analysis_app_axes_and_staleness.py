"""The analysis app at demo size and at a year: day axes with one band per day, time axes in
readable clock time, and a node's last check shown as stale (never as its state now) once it is
older than two health periods.

Pages run through AppTest on a real Postgres; every row derives from `NOW`, the page's clock."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from typing import Any, cast

import pandas as pd
from sqlalchemy import Engine, text
from streamlit.testing.v1 import AppTest

from analysis_app.charts import time_x
from gradientlab.store.rollups import refresh_rollups

# the same page clock and per-test cache as the app's other tests (autouse fixtures)
from tests.integration.test_analysis_app import APP, NOW, TODAY, fresh_cache, page_clock, run_app

__all__ = ["fresh_cache", "page_clock"]


def add_hosts(engine: Engine, *names: str) -> None:
    with engine.begin() as conn:
        for i, name in enumerate(names, start=1):
            conn.execute(
                text(
                    "INSERT INTO hosts (id, name, provider, region, address, state, created_at,"
                    " updated_at) VALUES (:i, :n, 'local', 'loopback', :a, 'running', :c, :c)"
                ),
                {"i": i, "n": name, "a": f"127.0.0.{10 + i}", "c": NOW - timedelta(days=400)},
            )
            conn.execute(
                text("INSERT INTO nodes (host_id, client_id) VALUES (:i, :c)"),
                {"i": i, "c": f"node-{name}"},
            )


def add_points(engine: Engine, days: list[date], hosts: tuple[str, ...]) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO node_daily_points (client_id, day, points, taps)"
                " VALUES (:c, :d, :p, 0)"
            ),
            [{"c": f"node-{h}", "d": d, "p": 250_000} for d in days for h in hosts],
        )
    refresh_rollups(engine)  # as the rewards flow does after it writes


def add_check(
    engine: Engine, host_id: int, age: timedelta, status: str, period: float | None
) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO node_status_samples (host_id, sampled_at, status, reachable,"
                " health_period_s) VALUES (:h, :t, :s, true, :p)"
            ),
            {"h": host_id, "t": NOW - age, "s": status, "p": period},
        )


def add_incidents(engine: Engine, detected: list[tuple[datetime, float]]) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO incidents (host_id, kind, detected_at, status, recovered_at)"
                " VALUES (1, 'BrowserDown', :d, 'recovered', :r)"
            ),
            [{"d": d, "r": d + timedelta(seconds=s)} for d, s in detected],
        )
    refresh_rollups(engine)  # as the health flow does after it writes


def specs(at: AppTest) -> list[dict[str, Any]]:
    return [json.loads(chart.proto.spec) for chart in at.get("vega_lite_chart")]


def x_of(spec: dict[str, Any]) -> dict[str, Any]:
    return dict(spec["encoding"]["x"])


# --- day axes --------------------------------------------------------------------------------


def test_one_day_of_points_is_one_band_labelled_by_its_date(engine: Engine) -> None:
    add_hosts(engine, "demo-1", "demo-2", "demo-3")
    add_points(engine, [TODAY], ("demo-1", "demo-2", "demo-3"))

    at = run_app("views/rewards.py")

    (points,) = specs(at)
    x = x_of(points)
    assert x["type"] == "ordinal" and "timeUnit" not in x  # a band, not a stretch of hours
    assert x["scale"]["domain"] == ["Mar 14"]
    assert points["width"] == {"step": 56}  # one readable bar, not the page's width


def test_a_year_of_points_is_a_band_per_day_in_order(engine: Engine) -> None:
    add_hosts(engine, "demo-1")
    days = [TODAY - timedelta(days=i) for i in range(365)]
    add_points(engine, days, ("demo-1",))

    at = run_app("views/rewards.py")
    # the whole year, not the default last 30 days
    at.sidebar.date_input(key="rewards_days").set_value((days[-1], TODAY)).run()

    (points,) = specs(at)
    domain = x_of(points)["scale"]["domain"]
    assert len(domain) == 365 and len(set(domain)) == 365
    assert domain[0] == "Mar 15" and domain[-1] == "Mar 14"
    assert "width" not in points  # the page's width: bands get thinner, labels thin out
    assert x_of(points)["axis"]["labelOverlap"] == "greedy"


def test_days_without_points_stay_as_gaps(engine: Engine) -> None:
    add_hosts(engine, "demo-1")
    add_points(engine, [TODAY - timedelta(days=3), TODAY], ("demo-1",))

    (points,) = specs(run_app("views/rewards.py"))

    assert x_of(points)["scale"]["domain"] == ["Mar 11", "Mar 12", "Mar 13", "Mar 14"]


def test_incidents_per_day_is_a_band_per_day(engine: Engine) -> None:
    add_hosts(engine, "demo-1")
    add_incidents(engine, [(NOW - timedelta(minutes=5), 4.0), (NOW - timedelta(minutes=3), 6.0)])

    per_day, _ = specs(run_app("views/incidents.py"))

    assert x_of(per_day)["type"] == "ordinal"
    assert x_of(per_day)["scale"]["domain"] == ["Mar 14"]


# --- time axes -------------------------------------------------------------------------------


def test_checks_seconds_apart_read_as_clock_time(engine: Engine) -> None:
    add_hosts(engine, "demo-1")
    add_check(engine, 1, timedelta(minutes=2), "Good", 30)
    add_check(engine, 1, timedelta(minutes=2, milliseconds=-927), "Disconnected", 30)

    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["node"] = "demo-1"
    at.switch_page("views/node.py").run()

    (recent,) = specs(at)  # no rollups yet: only the raw checks of the last hours
    x = x_of(recent)
    assert x["axis"]["format"] == "%H:%M"  # never ".927"
    low, high = (datetime.fromisoformat(end) for end in x["scale"]["domain"])
    assert high - low >= timedelta(hours=1)  # padded to an hour of clock time
    assert low < NOW - timedelta(minutes=2) < high


def test_a_year_of_moments_reads_as_days() -> None:
    moments = pd.Series([NOW - timedelta(days=300), NOW - timedelta(hours=1)])
    spec = cast(dict[str, Any], time_x("t", moments, "When").to_dict())
    assert spec["axis"]["format"] == "%b %d"


# --- staleness -------------------------------------------------------------------------------


def fleet_table(at: AppTest) -> Any:
    return at.dataframe[-1].value.set_index("host")


def test_a_check_older_than_two_health_periods_is_stale_never_good(engine: Engine) -> None:
    add_hosts(engine, "fresh", "restarted", "old-default")
    add_check(engine, 1, timedelta(seconds=20), "Good", 30)
    add_check(engine, 2, timedelta(seconds=75), "Good", 30)  # the previous run's last check
    add_check(engine, 3, timedelta(minutes=11), "Good", None)  # no period: the default 300 s

    at = run_app()

    fleet = fleet_table(at)
    assert fleet.loc["fresh", "status_shown"] == "Good"
    assert fleet.loc["restarted", "status_shown"] == "Stale: last check 1 min ago said Good"
    assert fleet.loc["old-default", "status_shown"] == "Stale: last check 11 min ago said Good"
    assert {m.label: m.value for m in at.metric}["Nodes Good"] == "1"
    assert any(
        "restarted" in w.value and "old-default" in w.value and "fresh" not in w.value
        for w in at.warning
    )


def test_a_check_within_two_periods_is_the_state_now(engine: Engine) -> None:
    add_hosts(engine, "slow-schedule", "default-period")
    add_check(engine, 1, timedelta(minutes=15), "Disconnected", 600)
    add_check(engine, 2, timedelta(minutes=9), "Good", None)

    at = run_app()

    fleet = fleet_table(at)
    assert fleet.loc["slow-schedule", "status_shown"] == "Disconnected"
    assert fleet.loc["default-period", "status_shown"] == "Good"
    assert {m.label: m.value for m in at.metric}["Nodes Good"] == "1"
    assert not at.warning


# --- first minutes ---------------------------------------------------------------------------


def test_a_page_opened_before_the_flows_wrote_anything_fills_in_at_once(engine: Engine) -> None:
    """The demo opens the app before its first data: an empty answer is not kept in cache."""
    from analysis_app.components import NO_DATA_MESSAGE

    at = run_app()
    assert any(NO_DATA_MESSAGE in info.value for info in at.info)

    add_hosts(engine, "demo-1")
    add_points(engine, [TODAY], ("demo-1",))
    add_check(engine, 1, timedelta(seconds=5), "Good", 30)

    at.run()
    assert not any(NO_DATA_MESSAGE in info.value for info in at.info)
    assert len(specs(at)) == 1
    assert {m.label: m.value for m in at.metric}["Nodes Good"] == "1"
