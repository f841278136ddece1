"""The analysis app's first page load, cold and after the demo has opened it once.

    .venv/bin/python -m bench.first_page [--repeat 3]

Seeds a scratch database at demo size (three hosts, a day of points, checks and incidents),
starts Streamlit on a free port and opens pages in headless Chromium, each load in a fresh
browser (nothing cached), as an operator's first click. A page counts as drawn when its script
has finished and no element is still a skeleton. Prints one JSON line per figure (seconds)."""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from gradientlab.cli import services
from gradientlab.cli.demo import APP_PAGES, APP_RENDERED

DRAWN = f"""() => document.querySelector('{APP_RENDERED}')
  && !document.querySelector('[data-testid="stSkeleton"]')
  && [...document.querySelectorAll('[data-testid="stVegaLiteChart"]')]
       .every(chart => chart.querySelector('canvas, svg'))"""


def emit(figure: str, value: float, **extra: Any) -> None:
    print(
        json.dumps({"bench": "first_page", "figure": figure, "value": round(value, 3), **extra}),
        flush=True,
    )


def seed(engine: Engine) -> None:
    """The demo a minute after its URLs show: three Good hosts, today's points, two recoveries."""
    now = datetime.now(UTC)
    with engine.begin() as conn:
        for i in (1, 2, 3):
            conn.execute(
                text(
                    "INSERT INTO hosts (id, name, provider, region, address, state)"
                    " VALUES (:i, :n, 'local', 'loopback', :a, 'running')"
                ),
                {"i": i, "n": f"demo-{i}", "a": f"127.0.0.{9 + i}"},
            )
            conn.execute(
                text("INSERT INTO nodes (host_id, client_id) VALUES (:i, :c)"),
                {"i": i, "c": f"node-{i}"},
            )
            conn.execute(
                text(
                    "INSERT INTO node_daily_points (client_id, day, points, taps)"
                    " VALUES (:c, :d, 2500000, 25)"
                ),
                {"c": f"node-{i}", "d": now.date()},
            )
            conn.execute(
                text(
                    "INSERT INTO node_daily_stats (client_id, day, duration, taps)"
                    " VALUES (:c, :d, 3600, 25)"
                ),
                {"c": f"node-{i}", "d": now.date()},
            )
            conn.execute(
                text(
                    "INSERT INTO node_status_samples (host_id, sampled_at, status, reachable,"
                    " ip, health_period_s) VALUES (:i, :t, 'Good', true, '127.0.0.1', 30)"
                ),
                {"i": i, "t": now - timedelta(seconds=10)},
            )
        conn.execute(
            text(
                "INSERT INTO incidents (host_id, kind, detected_at, status, recovered_at)"
                " VALUES (1, 'BrowserDown', :d, 'recovered', :r),"
                " (2, 'BrowserDown', :d, 'recovered', :r)"
            ),
            {"d": now - timedelta(minutes=3), "r": now - timedelta(minutes=3, seconds=-7)},
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def load(browser: Any, url: str) -> float:
    """Seconds until the page is drawn, in a browser context of its own (an empty cache)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    try:
        page = context.new_page()
        started = time.perf_counter()
        page.goto(url)
        page.wait_for_function(DRAWN, timeout=180_000)
        return time.perf_counter() - started
    finally:
        context.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.first_page")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    from bench.scratch import scratch_database

    with scratch_database() as engine:
        seed(engine)
        port = free_port()
        logs = Path(tempfile.mkdtemp(prefix="gradientlab-bench-first-page-"))
        base = f"http://127.0.0.1:{port}"
        url = engine.url.render_as_string(hide_password=False)
        app = services.start_streamlit(port, logs, {"DATABASE_URL": url})
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path="/usr/bin/chromium")
                emit("first page, cold app (no warm-up)", load(browser, f"{base}/"))
                for path in APP_PAGES:
                    times = [load(browser, f"{base}/{path}") for _ in range(args.repeat)]
                    emit(
                        f"page /{path}, warm app, fresh browser (median)",
                        statistics.median(times),
                        runs=[round(t, 3) for t in times],
                    )
                browser.close()
        finally:
            app.stop()


if __name__ == "__main__":
    main()
