"""The health flow through the scheduled path, with the connection keeper and with fresh SSH.

    .venv/bin/python -m bench.keeper [--hosts 60] [--runs 7] [--interval 20]

As an operator runs it: a real Prefect server (SQLite), the health deployment served on an
interval schedule from its own process (each run in its own subprocess, as `serve` does), 60
local sshd hosts and the sandbox network. The figure is what Prefect records for each scheduled
run, from its expected start (or its start, when earlier) to its end; the first run of each
kind is a warm-up and is left out. Twice: served with the keeper (as `deployments.serve` starts
it), and with GRADIENTLAB_KEEPER=off, where each run opens fresh connections. `recover=False`:
the bench hosts carry the node's files but no browser, and recovery would deploy one. Prints one
JSON line per figure (median seconds). Needs root (local hosts)."""

from __future__ import annotations

# No project imports at module level: Prefect's runner starts each flow run by spawning this
# module again, and bench.health_sweep sets GRADIENTLAB_HOME when imported.
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any


def emit(figure: str, value: float, **extra: Any) -> None:
    print(
        json.dumps({"bench": "keeper", "figure": figure, "value": round(value, 4), **extra}),
        flush=True,
    )


def serve_health(fleet_path: str, name: str, interval: float) -> None:
    """The health deployment alone, served as deployments.serve serves it (keeper included)."""
    from prefect import serve

    from deployments.serve import ONE_AT_A_TIME, RUNNER_OPTIONS
    from deployments.table import DEPLOYMENTS
    from gradientlab.remote.keeper import start_keeper, stop_keeper

    health_deployment = next(d for d in DEPLOYMENTS if d.name == "health").load_flow()
    keeper = start_keeper(exit_with=os.getpid())  # None with GRADIENTLAB_KEEPER=off
    try:
        serve(
            health_deployment.to_deployment(
                name=name,
                parameters={"fleet_path": fleet_path, "recover": False},
                interval=timedelta(seconds=interval),
                concurrency_limit=ONE_AT_A_TIME,
            ),
            **RUNNER_OPTIONS,
        )
    finally:
        if keeper is not None:
            stop_keeper(keeper)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def finished_runs(name: str, wanted: int, limit: float) -> tuple[list[Any], int]:
    """The deployment's first `wanted` completed runs in schedule order, and how many were
    cancelled meanwhile (a failed one raises)."""
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    deadline = time.monotonic() + limit
    with get_client(sync_client=True) as client:
        while True:
            try:
                deployment = client.read_deployment_by_name(f"health/{name}")
            except Exception:  # noqa: BLE001 - not served yet
                runs: list[Any] = []
            else:
                runs = client.read_flow_runs(
                    deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
                    sort=FlowRunSort.EXPECTED_START_TIME_ASC,
                )
            # a run that found the last one still going is cancelled (CANCEL_NEW): counted apart
            bad = [r for r in runs if r.state and (r.state.is_failed() or r.state.is_crashed())]
            if bad:
                raise RuntimeError(f"run {bad[0].name} ended {bad[0].state.name}: {bad[0].state}")
            done = [r for r in runs if r.state and r.state.is_completed()]
            if len(done) >= wanted:
                last = done[wanted - 1].expected_start_time
                cancelled = [
                    r
                    for r in runs
                    if r.state and r.state.is_cancelled() and r.expected_start_time <= last
                ]
                return done[:wanted], len(cancelled)
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(done)} of {wanted} runs of {name} finished")
            time.sleep(1)


def measure(mode: str, fleet_file: Path, runs: int, interval: float, hosts: int) -> None:
    from gradientlab.remote.keeper_client import keeper_stats
    from gradientlab.remote.wire import KEEPER_ENV, socket_path

    name = f"health-{mode}"
    env = {**os.environ}
    if mode == "fresh":
        env[KEEPER_ENV] = "off"
    log = open(fleet_file.with_name(f"{name}.log"), "wb")  # noqa: SIM115 - closed below
    served = subprocess.Popen(
        [sys.executable, "-m", "bench.keeper", "--serve", str(fleet_file), "--name", name]
        + ["--interval", str(interval)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        done, cancelled = finished_runs(name, runs + 1, limit=120 + (runs + 1) * interval * 4)
        if mode == "keeper":
            sock = socket_path()
            assert sock is not None
            connects = keeper_stats(sock)["connects"]
            emit(
                "keeper_connects_per_host",
                statistics.mean(connects.values()),
                hosts=len(connects),
                runs=len(done),
            )
    finally:
        served.terminate()
        served.wait(60)
        log.close()
    measured = done[1:]  # the first run pays for the first connections and a cold server
    # Prefect may start a run up to half a second before it is due (it rounds the wait): count
    # from whichever came first, so an early start never shortens the figure
    total = [
        (r.end_time - min(r.expected_start_time, r.start_time)).total_seconds() for r in measured
    ]
    late = [(r.start_time - r.expected_start_time).total_seconds() for r in measured]
    own = [(r.end_time - r.start_time).total_seconds() for r in measured]
    emit(
        f"health_flow_scheduled_{mode}_s",
        statistics.median(total),
        hosts=hosts,
        runs=len(measured),
        cancelled=cancelled,
        each=[round(t, 2) for t in total],
        start_after_schedule_s=[round(t, 2) for t in late],
        running_s=[round(t, 2) for t in own],
    )
    slowest = max(measured, key=lambda r: (r.end_time - r.start_time).total_seconds())
    emit(f"health_flow_{mode}_slowest_run_tasks", 0, tasks=task_timeline(slowest))


def task_timeline(run: Any) -> list[str]:
    """Where one flow run's time went: each task run's start (from the flow run's start) and
    duration, in start order, to find what a slow run waited for."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        tasks = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
        )
    out = []
    for t in sorted(tasks, key=lambda t: t.start_time or run.end_time):
        if t.start_time is None or t.end_time is None:
            continue
        start = (t.start_time - run.start_time).total_seconds()
        out.append(f"{t.name}@{start:.2f}+{(t.end_time - t.start_time).total_seconds():.2f}")
    out.append(f"end@{(run.end_time - run.start_time).total_seconds():.2f}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, default=60)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--interval", type=float, default=20)
    parser.add_argument("--base-address", default="127.0.4.10")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_health(args.serve, args.name, args.interval)
        return

    from bench.health_sweep import BENCH_HOME, make_hosts, remove_hosts, sandbox_fleet
    from bench.scratch import scratch_database
    from gradientlab.cli import services
    from gradientlab.remote.executor import POOL
    from gradientlab.store.fleet import upsert_host

    provider, records = make_hosts(args.hosts, args.base_address)
    POOL.close_all()  # the runs below open their own
    port = free_port()
    os.environ.update(services.prefect_env(BENCH_HOME / "prefect", port))
    os.environ["PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS"] = "2"
    server = None
    try:
        server = services.start_prefect_server(BENCH_HOME / "prefect", port, BENCH_HOME / "logs")
        with scratch_database() as engine, sandbox_fleet() as fleet_file:
            for r in records:
                upsert_host(engine, r)
            for mode in ("keeper", "fresh"):
                measure(mode, fleet_file, args.runs, args.interval, len(records))
    finally:
        if server is not None:
            server.stop()
        remove_hosts(provider, records)


if __name__ == "__main__":
    main()
