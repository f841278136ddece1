"""Every page of the analysis app at fleet scale: its queries' p50/p95, and its render time in
headless Chromium, first load and warm.

    DATABASE_URL=postgresql+psycopg2://root@127.0.0.1:5432/gradientlab_bench \\
        .venv/bin/python -m bench.app_pages [--repeat 20] [--loads 3] [--no-browser]

Reads the database `DATABASE_URL` names as it is: seed it first with `bench.seed_history`
(1,000 hosts, a year of daily points and stats, 10 million status samples, 20,000 incidents).

- queries: each page's queries exactly as the page runs them on its default view (the last 30
  days of its data, no filter), uncached, run `--repeat` times: p50 and p95 of the page's total
  and of each query. The Rewards and Uptime pages are also timed over the whole year.
- render: Streamlit started on a free port. "first" is the page's first load after the app
  started, in a fresh browser context (an empty browser cache, the page's queries not cached
  yet). "warm" is the median of `--loads` reloads in one browser context, as an analyst who
  comes back sees it (the browser has Streamlit's scripts, the app has the page's data);
  "new visitor" the median of `--loads` loads each in a fresh context (the browser fetches and
  compiles Streamlit's scripts again). A page counts as drawn when its script has finished and
  every chart is drawn. Beside them, the same three for an empty page (a title and nothing
  else) say what Streamlit itself costs on this machine.

Goals (issue 9): queries p95 < 50 ms, warm render < 1 s, first load < 3 s. One JSON line per
figure."""

from __future__ import annotations

import argparse
import gc
import json
import socket
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from gradientlab.cli import services
from gradientlab.cli.demo import APP_RENDERED
from gradientlab.store import reads
from gradientlab.store.database import database_url, make_engine
from gradientlab.store.reads import FleetFilter
from gradientlab.store.reads._sql import _frame

DRAWN = f"""() => document.querySelector('{APP_RENDERED}')
  && !document.querySelector('[data-testid="stSkeleton"]')
  && [...document.querySelectorAll('[data-testid="stVegaLiteChart"]')]
       .every(chart => chart.querySelector('canvas, svg'))"""
GOAL_QUERY_P95_MS = 50
GOAL_WARM_S = 1.0
GOAL_FIRST_S = 3.0

Query = Callable[[Engine], Any]


def emit(figure: str, value: float, **extra: Any) -> None:
    print(
        json.dumps({"bench": "app_pages", "figure": figure, "value": round(value, 4), **extra}),
        flush=True,
    )


def default_view(engine: Engine, source: reads.DaySource, days: int = 30) -> FleetFilter:
    bounds = reads.day_bounds(engine, source)
    if bounds is None:
        raise SystemExit(f"no {source} in the database: run bench.seed_history first")
    first, last = bounds
    return FleetFilter(max(first, last - timedelta(days=days - 1)), last)


def page_queries(engine: Engine, now: datetime, node: str) -> dict[str, dict[str, Query]]:
    """What each page reads on its default view, query by query, as the page calls them."""
    checks = default_view(engine, "checks")
    points = default_view(engine, "points")
    year = default_view(engine, "points", days=365)
    stats = default_view(engine, "stats")
    stats_year = default_view(engine, "stats", days=365)
    incidents = default_view(engine, "incidents")
    today = now.date()
    cost_bounds = reads.host_day_bounds(engine, today)
    assert cost_bounds is not None
    cost = FleetFilter(max(cost_bounds[0], cost_bounds[1] - timedelta(days=29)), cost_bounds[1])
    node_first = today - timedelta(days=29)

    def rewards(sel: FleetFilter) -> dict[str, Query]:
        return {
            "day_bounds": lambda e: reads.day_bounds(e, "points"),
            "filter_choices": reads.filter_choices,
            "selection_totals": lambda e: reads.selection_totals(e, sel),
            "account_points_by_kind": lambda e: reads.account_points_by_kind(e, sel),
            "points_by_group": lambda e: reads.points_by_group(e, sel, "provider"),
            "best_nodes": lambda e: reads.node_totals(e, sel, "best", 10, 0),
            "worst_nodes": lambda e: reads.node_totals(e, sel, "worst", 10, 0),
            "node_page": lambda e: reads.node_totals(e, sel, "best", 50, 0),
        }

    def uptime(sel: FleetFilter) -> dict[str, Query]:
        return {
            "day_bounds": lambda e: reads.day_bounds(e, "stats"),
            "filter_choices": reads.filter_choices,
            "selection_totals": lambda e: reads.selection_totals(e, sel),
            "points_by_group": lambda e: reads.points_by_group(e, sel, "provider"),
            "top_nodes_by_taps": lambda e: reads.top_nodes_per_day(e, sel, 10, "taps"),
            "node_page": lambda e: reads.node_totals(e, sel, "host", 50, 0, with_stats=True),
            "tap_readiness": lambda e: reads.tap_readiness(
                e, sel, limit=50, offset=0, order="fewest_taps"
            ),
            "tap_readiness_summary": lambda e: reads.tap_readiness_summary(e, sel),
        }

    return {
        "fleet_now": {
            "fleet_now": reads.fleet_now,
            "day_bounds": lambda e: reads.day_bounds(e, "checks"),
            "filter_choices": reads.filter_choices,
            "fleet_status_per_day": lambda e: reads.fleet_status_per_day(e, checks),
        },
        "node": {
            "filter_choices": reads.filter_choices,
            "node_profile": lambda e: reads.node_profile(e, node),
            "node_days": lambda e: reads.node_days(e, node, node_first, today),
            "node_status_days": lambda e: reads.node_status_days(e, node, node_first, today),
            "node_recent_checks": lambda e: reads.node_recent_checks(
                e, node, now - timedelta(hours=48)
            ),
            "incidents": lambda e: reads.incidents(
                e, FleetFilter(node_first, today, hosts=(node,))
            ),
            "node_tap_readiness": lambda e: reads.node_tap_readiness(e, node),
        },
        "rewards": rewards(points),
        "rewards_year": rewards(year),
        "uptime": uptime(stats),
        "uptime_year": uptime(stats_year),
        "incidents": {
            "day_bounds": lambda e: reads.day_bounds(e, "incidents"),
            "filter_choices": reads.filter_choices,
            "incidents_by_cause": lambda e: reads.incidents_by_cause(e, incidents),
            "recovery_time_bands": lambda e: reads.recovery_time_bands(e, incidents),
            "recovery_step_success": lambda e: reads.recovery_step_success(e, incidents),
            "incidents_per_day": lambda e: reads.incidents_per_day(e, incidents),
            "incident_page": lambda e: reads.incident_page(e, incidents, 50, 0),
        },
        "cost": {
            "host_day_bounds": lambda e: reads.host_day_bounds(e, today),
            "filter_choices": reads.filter_choices,
            "host_costs": lambda e: reads.host_costs(e, cost, now),
            "status_shares": lambda e: reads.status_shares(e, cost),
        },
    }


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def time_queries(engine: Engine, pages: dict[str, dict[str, Query]], repeat: int) -> None:
    for page_reads in pages.values():  # warm the connection pool and Postgres' buffers once
        for read in page_reads.values():
            read(engine)
    gc.freeze()  # as the app does once it has imported everything (analysis_app/app.py)
    for page, page_reads in pages.items():
        totals: list[float] = []
        each: dict[str, list[float]] = {name: [] for name in page_reads}
        for _ in range(repeat):
            total = 0.0
            for name, read in page_reads.items():
                started = time.perf_counter()
                read(engine)
                took = time.perf_counter() - started
                each[name].append(took)
                total += took
            totals.append(total)
        slowest = max(each, key=lambda n: percentile(each[n], 0.95))
        emit(
            f"{page} queries p50 (ms)",
            1000 * statistics.median(totals),
            p95_ms=round(1000 * percentile(totals, 0.95), 2),
            queries=len(page_reads),
            slowest=slowest,
            slowest_p95_ms=round(1000 * percentile(each[slowest], 0.95), 2),
            goal_p95_ms=GOAL_QUERY_P95_MS,
            per_query_p95_ms={n: round(1000 * percentile(v, 0.95), 2) for n, v in each.items()},
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def load(browser: Any, url: str) -> float:
    """One load in a fresh browser context: nothing cached in the browser."""
    context = browser.new_context(viewport=VIEWPORT)
    try:
        return drawn(context.new_page(), url)
    finally:
        context.close()


def drawn(page: Any, url: str) -> float:
    started = time.perf_counter()
    page.goto(url)
    page.wait_for_function(DRAWN, timeout=180_000)
    return time.perf_counter() - started


VIEWPORT = {"width": 1400, "height": 1100}
EMPTY_PAGE = """import streamlit as st

st.title("An empty page")
"""


def time_page(browser: Any, name: str, url: str, loads: int) -> None:
    first = load(browser, url)
    context = browser.new_context(viewport=VIEWPORT)
    try:
        page = context.new_page()
        drawn(page, url)  # the browser fetches Streamlit's scripts once
        warm = [drawn(page, url) for _ in range(loads)]
    finally:
        context.close()
    new_visitor = [load(browser, url) for _ in range(loads)]
    emit(
        f"{name} render warm (s)",
        statistics.median(warm),
        first_load_s=round(first, 3),
        new_visitor_s=round(statistics.median(new_visitor), 3),
        runs=[round(t, 3) for t in warm],
        goal_warm_s=GOAL_WARM_S,
        goal_first_s=GOAL_FIRST_S,
    )


def time_renders(url: str, node: str, loads: int) -> None:
    from playwright.sync_api import sync_playwright

    logs = Path(tempfile.mkdtemp(prefix="gradientlab-bench-app-pages-"))
    paths = {
        "fleet_now": "",
        "node": f"node?node={node}",
        "rewards": "rewards",
        "uptime": "uptime",
        "incidents": "incidents",
        "cost": "cost",
    }
    empty = logs / "empty_page.py"
    empty.write_text(EMPTY_PAGE)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium")
        port = free_port()
        app = services.start_streamlit(port, logs, {"DATABASE_URL": url})
        try:
            for page, path in paths.items():
                time_page(browser, page, f"http://127.0.0.1:{port}/{path}", loads)
        finally:
            app.stop()
        port = free_port()
        floor = services.start_streamlit(port, logs / "empty", {}, script=empty)
        try:
            time_page(browser, "empty page (Streamlit alone)", f"http://127.0.0.1:{port}/", loads)
        finally:
            floor.stop()
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.app_pages")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--loads", type=int, default=3)
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()
    url = database_url()
    engine = make_engine(url)
    now = datetime.now(UTC)
    node = str(reads.filter_choices(engine)["host"].iloc[0])
    emit(
        "history",
        0,
        hosts=len(reads.fleet_now(engine)),
        status_samples=int(_frame(engine, "SELECT count(*) AS n FROM node_status_samples")["n"][0]),
        incidents=int(_frame(engine, "SELECT count(*) AS n FROM incidents")["n"][0]),
    )
    time_queries(engine, page_queries(engine, now, node), args.repeat)
    engine.dispose()
    if not args.no_browser:
        time_renders(url, node, args.loads)


if __name__ == "__main__":
    main()
