"""The 10,000-node rehearsal: what one health sweep of a 10,000-host fleet costs, and how it is
split across workers. Figures, not assertions; one JSON line each.

    .venv/bin/python -m bench.rehearsal [--nodes 10000] [--hosts 40] [--workers 4]
                                        [--parallel 20] [--repeat 3]

No machine here holds 10,000 sshd hosts, so each part is measured where it is real and the
sweep is projected from the measurements:

- node_sweep_s: the network-level node sweep (the health flow's network view) against the
  sandbox serving `--nodes` simulated nodes (no browsers) in its own process, rate-limited;
- probe_hosts_per_s: the probing core (`sweep-fleet`'s own function: probe + judge) over
  `--hosts` real local sshd hosts, connections kept open, at `--parallel`: the measured per-host
  probe cost;
- keeper_mib_per_connection: what each kept-open SSH connection costs the process holding it
  (RSS and threads), for the connections a worker keeps for its shard;
- task_runs_per_sweep: Prefect task runs that one health flow run records, by task name, on the
  real hosts (recover=False: the bench hosts have the node's files but no browser; with
  recovery on, each host needing work adds one `heal-host` run);
- db_*: the database phases of a sweep (host list, histories, recording every host's verdict)
  at one shard's size and at the whole fleet's, with every host row in Postgres: the verdict
  recorded is the real probe answer of a bench host, copied to each host row (the bench hosts
  are not Good, so each first sweep opens an incident per host: the costly case);
- projected_sweep_s: one sweep of `--nodes` hosts on `--workers` workers, each taking one shard
  of nodes/workers hosts (health.shard_hosts): flow-run overhead + node sweep + probes at the
  measured rate + the database phases at shard size; the dispatcher's own steps run meanwhile.
  `--whole-fleet-db` also times the database phases for all hosts at once (the one-worker
  figure; otherwise the shard's times the workers).
  Goal: under 300 s.

Uses DATABASE_URL (or the embedded Postgres) and a scratch database, dropped at the end. Needs
root (local hosts)."""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import threading
import time
import uuid
from argparse import Namespace
from collections import Counter
from dataclasses import replace
from typing import Any

# the bench hosts' alerts (their nodes are not installed) would fill the output
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")

from bench.health_sweep import BENCH_HOME, make_hosts, remove_hosts, sandbox_fleet
from bench.rewards_scale import PASSWORD_ENV, measured, network_fleet_yaml, sandbox_process


def emit(figure: str, value: float, **extra: Any) -> None:
    import json

    print(
        json.dumps({"bench": "rehearsal", "figure": figure, "value": round(value, 3), **extra}),
        flush=True,
    )


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024


def timed(fn: Any, repeat: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), [round(t, 3) for t in times]


def network_figures(args: Namespace) -> float:
    from gradientlab.config import load_fleet
    from gradientlab.inventory import gradient_client

    os.environ[PASSWORD_ENV] = uuid.uuid4().hex
    ns = Namespace(nodes=args.nodes, rate=args.rate, burst=int(args.rate))
    with sandbox_process(ns) as url:
        fleet_file = BENCH_HOME / "rehearsal-network.yaml"
        fleet_file.write_text(
            network_fleet_yaml(url, args.rate) + "providers: {bench: {kind: local}}\n"
        )
        fleet = load_fleet(fleet_file)
        net = fleet.network
        with gradient_client(fleet) as client:
            client.status()  # signed in: the sweep is timed without the sign-in
            seconds, counts, nodes = measured(
                url,
                lambda: client.all_nodes(size=net.node_page_size, workers=net.api_concurrency),
            )
    emit(
        "node_sweep_s",
        seconds,
        nodes=len(nodes),
        page_size=net.node_page_size,
        requests=counts["apiRequests"],
        refused_429=counts["throttled"],
        rate_limit=args.rate,
    )
    return seconds


def probe_figures(records: list[Any], args: Namespace) -> tuple[float, list[Any]]:
    from gradientlab.config import HealthSettings
    from gradientlab.health.sweep import check_hosts
    from gradientlab.remote.executor import POOL
    from tasks.common import engine

    policy = HealthSettings()
    POOL.close_all()  # making the hosts opened connections: count them from none
    threads_before, rss_before = threading.active_count(), rss_mib()
    reports = check_hosts(engine(), records, {}, policy, parallel=args.parallel)  # connects once
    threads_after, rss_after = threading.active_count(), rss_mib()
    emit(
        "keeper_mib_per_connection",
        (rss_after - rss_before) / len(records),
        threads_per_connection=round((threads_after - threads_before) / len(records), 2),
        connections=len(records),
        note="RSS and threads of the process holding the connections, after one sweep",
    )
    seconds, each = timed(
        lambda: check_hosts(engine(), records, {}, policy, parallel=args.parallel), args.repeat
    )
    rate = len(records) / seconds
    emit(
        "probe_hosts_per_s",
        rate,
        hosts=len(records),
        parallel=args.parallel,
        sweep_s=round(seconds, 3),
        each=each,
        verdicts=dict(Counter(str(r.status) for r in reports)),
    )
    POOL.close_all()
    return rate, reports


def task_run_figures(records: list[Any]) -> float:
    """One health flow run on the real hosts: its task runs by name, and its own overhead."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.testing.utilities import prefect_test_harness

    from flows.health import health
    from gradientlab.store.fleet import upsert_host
    from tasks.common import engine

    for r in records:
        upsert_host(engine(), r)
    with sandbox_fleet() as fleet_file, prefect_test_harness(server_startup_timeout=180):
        health(fleet_path=str(fleet_file), recover=False)  # warm: connections, imports
        started = time.perf_counter()
        state = health(fleet_path=str(fleet_file), recover=False, return_state=True)
        flow_seconds = time.perf_counter() - started
        run_id = state.state_details.flow_run_id
        with get_client(sync_client=True) as client:
            tasks = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
            )
    names = Counter(t.task_key.rsplit("-", 1)[0] if t.task_key else t.name for t in tasks)
    emit(
        "task_runs_per_sweep",
        len(tasks),
        hosts=len(records),
        per_host=round(len(tasks) / len(records), 3),
        by_task=dict(names),
        note="recover=False; with recovery, +1 heal-host per host that needs work (<= 3 per host)",
    )
    emit("health_flow_run_s", flow_seconds, hosts=len(records))
    return flow_seconds


def database_figures(
    reports: list[Any], fleet_hosts: int, shard_hosts: int, whole_fleet: bool
) -> dict[int, float]:
    """Host list, histories and recording, at shard size and fleet size, on `fleet_hosts` host
    rows: the per-host verdicts are the bench hosts' real ones, copied."""
    from gradientlab.config import HealthSettings
    from gradientlab.health import Decision, network_state
    from gradientlab.health.record import host_histories, record_sweep
    from gradientlab.health.report import utcnow
    from gradientlab.health.sweep import HealResult
    from gradientlab.providers.base import HostRecord
    from gradientlab.store.fleet import host_records, upsert_host
    from tasks.common import engine

    db = engine()
    template = reports[0]
    started = time.perf_counter()
    for i in range(fleet_hosts):  # host rows as provision records them
        upsert_host(
            db,
            HostRecord(
                name=f"r{i:05d}",
                provider="bench",
                address="10.0.0.1",
                ssh_port=22,
                ssh_user="gradientlab",
                host_key="ssh-ed25519 AAAA",
                state="running",
                provider_ref=f"r{i}",
            ),
        )
    emit("db_insert_host_rows_s", time.perf_counter() - started, hosts=fleet_hosts)
    policy = HealthSettings()
    out: dict[int, float] = {}
    for size in sorted({shard_hosts, fleet_hosts} if whole_fleet else {shard_hosts}):
        started = time.perf_counter()
        records: list[HostRecord] = [r for r in host_records(db) if r.name.startswith("r")][:size]
        listed = time.perf_counter() - started
        at = utcnow()
        started = time.perf_counter()
        host_histories(db, records, at)
        histories = time.perf_counter() - started
        copies = [replace(template, host=r.name, checked_at=at) for r in records]
        state = network_state(copies, None, policy)
        results: list[HealResult] = [
            (c, c, [], Decision((), "no recovery step applies")) for c in copies
        ]
        started = time.perf_counter()
        record_sweep(db, results, policy, state, at, "rehearsal", 300)
        first = time.perf_counter() - started
        at = utcnow()
        copies = [replace(c, checked_at=at) for c in copies]
        results = [(c, c, [], Decision((), "no recovery step applies")) for c in copies]
        started = time.perf_counter()
        host_histories(db, records, at)
        record_sweep(db, results, policy, state, at, "rehearsal", 300)
        second = time.perf_counter() - started
        emit(
            "db_sweep_phases_s",
            listed + histories + second,
            hosts=size,
            host_list_s=round(listed, 3),
            histories_s=round(histories, 3),
            record_first_sweep_s=round(first, 3),
            record_next_sweep_s=round(second, 3),
            verdict=str(template.status),
        )
        out[size] = listed + histories + max(first, second)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--hosts", type=int, default=40, help="real sshd hosts to probe")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--parallel", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rate", type=float, default=50.0, help="requests/s the network allows")
    parser.add_argument("--base-address", default="127.0.5.10")
    parser.add_argument(
        "--whole-fleet-db",
        action="store_true",
        help="also time the database phases for all hosts at once (one worker; slow)",
    )
    args = parser.parse_args()

    from bench.scratch import scratch_database

    node_sweep = network_figures(args)
    provider, records = make_hosts(args.hosts, args.base_address)
    try:
        rate, reports = probe_figures(records, args)
        with scratch_database("gradientlab_rehearsal"):
            flow_seconds = task_run_figures(records)
            shard = -(-args.nodes // args.workers)
            db = database_figures(reports, args.nodes, shard, args.whole_fleet_db)
    finally:
        remove_hosts(provider, records)

    # one shard per worker, all at once; a flow run's own overhead is what the measured run
    # took beyond probing its hosts
    overhead = max(0.0, flow_seconds - len(records) / rate)
    probes = shard / rate
    projected = overhead + node_sweep + probes + db[shard]
    emit(
        "projected_sweep_s",
        projected,
        hosts=args.nodes,
        workers=args.workers,
        hosts_per_worker=shard,
        parallel_per_worker=args.parallel,
        flow_overhead_s=round(overhead, 2),
        node_sweep_s=round(node_sweep, 2),
        probes_s=round(probes, 2),
        db_s=round(db[shard], 2),
        one_worker_s=round(
            overhead
            + node_sweep
            + args.nodes / rate
            + db.get(args.nodes, db[shard] * args.workers),
            2,
        ),
        one_worker_db="measured" if args.nodes in db else "shard's, times the workers",
        goal_s=300,
    )


if __name__ == "__main__":
    main()
