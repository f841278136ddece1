"""Recovery benchmark: how long until a fault is recorded as recovered, and how many reboots a
network outage causes.

    .venv/bin/python -m bench.recovery [--hosts 3] [--period 5] [--outage-hosts 50]

Real local sshd hosts, Chromium with the sandbox extension, Postgres (DATABASE_URL or the
embedded one) and a Prefect test server; the health flow runs every `--period` seconds as its
schedule would. Prints one JSON line per figure:

- killed_browser_recovery_s: `kill -9` of a node's browser to the incident's recorded recovery
  (detected → Good again, as stored), and the wall time until the flow had recorded it;
- frozen_browser_recovery_s: a browser that hangs (SIGSTOP: alive, but the network sees the node
  Disconnected) until it is recorded Good again, through the recovery ladder;
- outage_reboots: reboots decided during a simulated one-hour network outage (sweeps every five
  minutes over `--outage-hosts` hosts, every node Disconnected); the goal is 0."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BENCH_HOME = Path(tempfile.mkdtemp(prefix="gradientlab-bench-"))
os.chmod(BENCH_HOME, 0o755)
os.environ["GRADIENTLAB_HOME"] = str(BENCH_HOME)
os.environ.setdefault("PREFECT_HOME", str(BENCH_HOME / "prefect"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def emit(figure: str, value: float, **extra: Any) -> None:
    print(
        json.dumps({"bench": "recovery", "figure": figure, "value": round(value, 3), **extra}),
        flush=True,
    )


def outage_reboots(hosts: int) -> None:
    """One hour of network outage, decided sweep by sweep as the flow does (pure)."""
    from gradientlab.config import HealthSettings
    from gradientlab.health import (
        Decision,
        HealthReport,
        History,
        PastAction,
        Verdict,
        apply_brake,
        decide,
        network_state,
    )

    policy = HealthSettings()
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    history = {f"h{i}": History() for i in range(hosts)}
    reboots = other = 0
    for sweep in range(13):
        at = t0 + timedelta(minutes=5 * sweep)
        reports = [
            HealthReport(host=h, status=Verdict.DISCONNECTED, reachable=True, checked_at=at)
            for h in history
        ]
        state = network_state(reports, None, policy)
        decisions: dict[str, Decision] = apply_brake(
            {r.host: decide(r, history[r.host], state, policy) for r in reports}, hosts, policy
        )
        for host, d in decisions.items():
            reboots += sum(1 for s in d.steps if s == "reboot_host")
            other += sum(1 for s in d.steps if s != "reboot_host")
            h = history[host]
            history[host] = History(
                fault="Disconnected",
                fault_since=h.fault_since or at,
                sweeps=h.sweeps + 1,
                actions=h.actions + tuple(PastAction(s, at, False) for s in d.steps),
            )
    emit("outage_reboots", reboots, hosts=hosts, minutes=60, other_steps=other)


def fleet_figures(hosts: int, period: float) -> None:
    from bench.scratch import scratch_database

    with scratch_database() as engine:
        _fleet_figures(engine, hosts, period)


def _fleet_figures(engine: Any, hosts: int, period: float) -> None:
    from prefect.testing.utilities import prefect_test_harness
    from sqlalchemy import text

    from gradientlab.config import load_fleet
    from gradientlab.inventory import executor_for, provider_for
    from gradientlab.remote.executor import POOL
    from gradientlab.sandbox.network import SandboxAccount, SandboxConfig
    from gradientlab.sandbox.server import SandboxServer
    from gradientlab.store.fleet import host_records

    os.environ["BENCH_PASSWORD"] = "bench-password"
    sandbox = SandboxServer(
        SandboxConfig(
            accounts=[SandboxAccount(email="a@b.c", password="bench-password")],
            extension_heartbeat_seconds=3,
        ),
        port=0,
    )
    sandbox.start()
    names = [f"rec-{i}" for i in range(hosts)]
    fleet_file = BENCH_HOME / "fleet.yaml"
    fleet_file.write_text(
        "account: {email: a@b.c, password: {env: BENCH_PASSWORD}}\n"
        + sandbox.fleet_network_yaml()
        + "  api_timeout_seconds: 5\n"
        + "providers: {bench: {kind: local, base_address: 127.0.5.10}}\n"
        + "hosts:\n"
        + "".join(f"  - {{name: {h}, provider: bench}}\n" for h in names)
        + "runner: {status_interval_seconds: 15, browser_check_seconds: 1}\n"
        + "health: {recovery_wait_seconds: 30, backoff_seconds: 5, popup_stale_seconds: 30}\n"
    )
    fleet = load_fleet(fleet_file)
    try:
        with prefect_test_harness(server_startup_timeout=180):
            from flows.deploy import deploy
            from flows.health import health
            from flows.provision import provision

            provision(fleet_path=str(fleet_file), approve=True)
            deploy(fleet_path=str(fleet_file))

            def run_until(done: Any, limit: float = 300) -> dict[str, Any]:
                deadline = time.monotonic() + limit
                while True:
                    started = time.monotonic()
                    out = {o.host: o for o in health(fleet_path=str(fleet_file))}
                    if done(out) or time.monotonic() > deadline:
                        return out
                    time.sleep(max(0.0, period - (time.monotonic() - started)))

            run_until(lambda o: all(x.status == "Good" for x in o.values()))
            target = next(r for r in host_records(engine) if r.name == names[0])
            for figure, how in (
                ("killed_browser_recovery_s", "kill -9 $(cat .gradientlab/node/browser.pid)"),
                (
                    "frozen_browser_recovery_s",
                    "kill -s STOP -- -$(cat .gradientlab/node/browser.pid)",  # the whole group
                ),
            ):
                with engine.begin() as conn:
                    conn.execute(text("TRUNCATE incidents, recovery_actions"))
                done_how = executor_for(target).run(how)
                assert done_how.ok, done_how
                broke = time.monotonic()
                out = run_until(
                    lambda o: (
                        o[names[0]].incident_status == "recovered"
                        and all(x.status == "Good" for x in o.values())
                    )
                )
                recorded = time.monotonic() - broke
                done = out[names[0]]
                with engine.connect() as conn:
                    steps = [r[0] for r in conn.execute(text("SELECT step FROM recovery_actions"))]
                emit(
                    figure,
                    done.recovery_seconds if done.recovery_seconds is not None else float("nan"),
                    recorded_after_s=round(recorded, 1),
                    steps=steps,
                    health_period_s=period,
                )
    finally:
        POOL.close_all()
        for h in names:
            provider_for(fleet, "bench").terminate(h)
        sandbox.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.recovery")
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--period", type=float, default=5, help="health period, seconds")
    parser.add_argument("--outage-hosts", type=int, default=50)
    parser.add_argument("--skip-fleet", action="store_true", help="only the outage simulation")
    args = parser.parse_args()
    outage_reboots(args.outage_hosts)
    if not args.skip_fleet:
        fleet_figures(args.hosts, args.period)


if __name__ == "__main__":
    main()
