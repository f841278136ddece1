"""Rewards at fleet scale: the sandbox with N browserless nodes behind a rate limit.

    .venv/bin/python -m bench.rewards_scale [--nodes 10000] [--rate 50] [--page-size 1000]
                                            [--workers 8] [--days 7] [--rerun] [--told]

The sandbox runs in a process of its own, as the network is another machine, and answers 429
(with Retry-After) beyond `--rate` requests per second (a token bucket of `--burst`, by default
one second's worth, as a "50 per second" limit usually counts). By default the fleet file does
not tell the client that rate: it has the default settings, so the client finds the limit
(from 10 requests/s on a first run, from what the run before learned on a rerun); with `--told`
the fleet file sets `network.requests_per_second` to the rate. Figures, one JSON line each:

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
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from datetime import time as day_time
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import yaml

BENCH_HOME = Path(tempfile.mkdtemp(prefix="gradientlab-bench-"))
os.environ["GRADIENTLAB_HOME"] = str(BENCH_HOME)
os.environ.setdefault("PREFECT_HOME", str(BENCH_HOME / "prefect"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from gradientlab.config import load_fleet  # noqa: E402
from gradientlab.inventory import gradient_client  # noqa: E402

EMAIL = "bench@gradientlab.test"
PASSWORD_ENV = "BENCH_GRADIENT_PASSWORD"
API_KEY = "bench-web-api-key"


def emit(figure: str, value: float, **extra: Any) -> None:
    print(
        json.dumps({"bench": "rewards_scale", "figure": figure, "value": round(value, 3), **extra}),
        flush=True,
    )


@contextmanager
def sandbox_process(args: argparse.Namespace) -> Iterator[str]:
    """The sandbox with N simulated nodes behind a rate limit, in its own process; its URL."""
    # Sim time from 01:00 today at 60x: a run of up to ~20 real minutes stays in one sim day.
    start = datetime.combine(datetime.now(UTC).date(), day_time(hour=1), UTC)
    config = BENCH_HOME / "sandbox.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "accounts": [
                    {
                        "email": EMAIL,
                        "password": os.environ[PASSWORD_ENV],
                        "simulated_nodes": args.nodes,
                    }
                ],
                "api_key": API_KEY,
                "speed": 60,
                "start_time": start.isoformat(),
                "api_rate_limit": args.rate,
                "api_rate_burst": args.burst,
                "accrual_step_seconds": 1.0,
                "seed": 1,
            }
        )
    )
    command = [sys.executable, "-m", "gradientlab.sandbox", "--port", "0", "--stun-port", "0"]
    process = subprocess.Popen(
        [*command, "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        if not url.startswith("http://"):
            raise RuntimeError(f"the sandbox did not start (said {url!r})")
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def network_fleet_yaml(url: str, rate: float | None) -> str:
    """A fleet file's account and network sections for the sandbox at `url` (more network
    settings may follow); `rate` None leaves the pace to the client's search."""
    return (
        f"account: {{email: {EMAIL}, password: {{env: {PASSWORD_ENV}}}}}\n"
        "network:\n"
        f"  api_base: {url}/api\n"
        f"  identity_base: {url}/identitytoolkit\n"
        f"  token_base: {url}/securetoken\n"
        f"  web_api_key: {API_KEY}\n"
        + (f"  requests_per_second: {rate}\n" if rate is not None else "")
    )


def measured(url: str, fn: Callable[[], Any]) -> tuple[float, dict[str, int], Any]:
    """Seconds, the network's request counters over the call, and its result."""
    before = httpx.get(f"{url}/__sandbox/counters").json()
    started = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - started
    after = httpx.get(f"{url}/__sandbox/counters").json()
    return seconds, {k: v - before[k] for k, v in after.items()}, result


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
    parser.add_argument("--burst", type=int, default=50, help="the limit's burst")
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--rerun", action="store_true", help="also time an incremental rerun")
    parser.add_argument(
        "--told", action="store_true", help="tell the client the rate (a fixed pace)"
    )
    args = parser.parse_args()

    os.environ[PASSWORD_ENV] = "bench-password"
    with sandbox_process(args) as url:
        fleet_file = BENCH_HOME / "fleet.yaml"
        fleet_file.write_text(
            network_fleet_yaml(url, args.rate if args.told else None)
            + f"  node_page_size: {args.page_size}\n"
            f"  api_concurrency: {args.workers}\n"
            "providers: {bench: {kind: local}}\n"
        )
        with gradient_client(load_fleet(fleet_file)) as client:
            client.status()  # signed in: the sweep is timed without the sign-in
            for size in sorted({args.page_size, 100}):
                seconds, counts, nodes = measured(
                    url, partial(client.all_nodes, size=size, workers=args.workers)
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
        rewards_figures(url, fleet_file, args)


def rewards_figures(url: str, fleet_file: Path, args: argparse.Namespace) -> None:
    from prefect.testing.utilities import prefect_test_harness

    from bench.scratch import scratch_database

    with scratch_database() as engine, prefect_test_harness(server_startup_timeout=180):
        from flows.rewards import rewards

        runs = ["first", "rerun"] if args.rerun else ["first"]
        for run in runs:
            seconds, counts, summary = measured(
                url, lambda: rewards(fleet_path=str(fleet_file), days=args.days)
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
                pace="told" if args.told else "found",
                pace_at_end=summary["api"]["pace_now"],
                next_run_starts_at=summary["api"]["next_run_starts_at"],
                refusal_episodes=summary["api"]["refusals"],
                stats_days_read=summary["node_stats"]["days"],
                stats_rows_stored=stored,
                **requests_figures(counts, args.rate, seconds),
            )


if __name__ == "__main__":
    main()
