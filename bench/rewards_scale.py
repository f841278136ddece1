"""Rewards at fleet scale: the sandbox with N browserless nodes behind a rate limit.

    .venv/bin/python -m bench.rewards_scale [--nodes 10000] [--rate 50] [--page-size 1000]
                                            [--workers 8] [--days 7] [--rerun]

The sandbox answers 429 (with Retry-After) beyond `--rate` requests per second (a token bucket
of `--burst`); the fleet file sets `network.requests_per_second` to the same rate. Figures, one
JSON line each:

- node_sweep_s: the network-level node sweep (`GradientClient.all_nodes`, as the health flow's
  network view reads it), with its requests;
- rewards_run_s: one whole rewards flow run (Prefect, Postgres, every node's stats), with the
  requests it made, how many the network refused, and `vs_ideal`: its time over
  (requests needed / allowed rate). Goals: sweep under 30 s, vs_ideal at most 1.2.
- with --rerun, the same for an hourly rerun (incremental: two days per node, not a week).

Uses DATABASE_URL (or the embedded Postgres) and a scratch database, dropped at the end."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from datetime import time as day_time
from pathlib import Path
from typing import Any

BENCH_HOME = Path(tempfile.mkdtemp(prefix="gradientlab-bench-"))
os.environ["GRADIENTLAB_HOME"] = str(BENCH_HOME)
os.environ.setdefault("PREFECT_HOME", str(BENCH_HOME / "prefect"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from gradientlab.config import load_fleet  # noqa: E402
from gradientlab.inventory import gradient_client  # noqa: E402
from gradientlab.sandbox.network import SandboxAccount, SandboxConfig  # noqa: E402
from gradientlab.sandbox.server import SandboxServer  # noqa: E402

EMAIL = "bench@gradientlab.test"
PASSWORD_ENV = "BENCH_GRADIENT_PASSWORD"


def emit(figure: str, value: float, **extra: Any) -> None:
    print(
        json.dumps({"bench": "rewards_scale", "figure": figure, "value": round(value, 3), **extra}),
        flush=True,
    )


def measured(sandbox: SandboxServer, fn: Callable[[], Any]) -> tuple[float, dict[str, int], Any]:
    """Seconds, the network's request counters over the call, and its result."""
    before = dict(sandbox.network.counters)
    started = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - started
    return seconds, {k: v - before[k] for k, v in sandbox.network.counters.items()}, result


def requests_figures(counts: dict[str, int], rate: float, seconds: float) -> dict[str, Any]:
    needed = counts["apiRequests"] - counts["throttled"] - counts["faulted"]
    ideal = needed / rate
    return {
        "requests": counts["apiRequests"],
        "refused_429": counts["throttled"],
        "needed": needed,
        "ideal_s": round(ideal, 3),
        "vs_ideal": round(seconds / ideal, 3) if ideal else None,
        "sign_ins": counts["signIns"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=50.0, help="requests/s the network allows")
    parser.add_argument("--burst", type=int, default=10)
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--rerun", action="store_true", help="also time an incremental rerun")
    args = parser.parse_args()

    os.environ[PASSWORD_ENV] = "bench-password"
    # Sim time from 01:00 today at 60x: a run of up to ~20 real minutes stays in one sim day.
    start = datetime.combine(datetime.now(UTC).date(), day_time(hour=1), UTC)
    sandbox = SandboxServer(
        SandboxConfig(
            accounts=[
                SandboxAccount(email=EMAIL, password="bench-password", simulated_nodes=args.nodes)
            ],
            speed=60,
            start_time=start.timestamp(),
            api_rate_limit=args.rate,
            api_rate_burst=args.burst,
            accrual_step_seconds=1.0,
            seed=1,
        )
    )
    sandbox.start()
    fleet_file = BENCH_HOME / "fleet.yaml"
    fleet_file.write_text(
        f"account: {{email: {EMAIL}, password: {{env: {PASSWORD_ENV}}}}}\n"
        + sandbox.fleet_network_yaml()
        + f"  requests_per_second: {args.rate}\n"
        + f"  node_page_size: {args.page_size}\n"
        + f"  api_concurrency: {args.workers}\n"
        + "providers: {bench: {kind: local}}\n"
    )
    fleet = load_fleet(fleet_file)
    try:
        with gradient_client(fleet) as client:
            client.status()  # signed in: the sweep is timed without the sign-in
            for size in sorted({args.page_size, 100}):
                seconds, counts, nodes = measured(
                    sandbox, lambda size=size: client.all_nodes(size=size, workers=args.workers)
                )
                assert len(nodes) == args.nodes, (len(nodes), args.nodes)
                emit(
                    "node_sweep_s",
                    seconds,
                    nodes=len(nodes),
                    page_size=size,
                    workers=args.workers,
                    rate=args.rate,
                    **requests_figures(counts, args.rate, seconds),
                )
        rewards_figures(sandbox, fleet_file, args)
    finally:
        sandbox.stop()


def rewards_figures(sandbox: SandboxServer, fleet_file: Path, args: argparse.Namespace) -> None:
    from prefect.testing.utilities import prefect_test_harness

    from bench.scratch import scratch_database

    with scratch_database() as engine, prefect_test_harness(server_startup_timeout=180):
        from flows.rewards import rewards

        runs = ["first", "rerun"] if args.rerun else ["first"]
        for run in runs:
            seconds, counts, summary = measured(
                sandbox, lambda: rewards(fleet_path=str(fleet_file), days=args.days)
            )
            with engine.connect() as conn:
                from sqlalchemy import text

                stored = conn.execute(text("SELECT count(*) FROM node_daily_stats")).scalar()
            emit(
                "rewards_run_s",
                seconds,
                run=run,
                nodes=args.nodes,
                rate=args.rate,
                workers=args.workers,
                stats_days_read=summary["node_stats"]["days"],
                stats_rows_stored=stored,
                **requests_figures(counts, args.rate, seconds),
            )


if __name__ == "__main__":
    main()
