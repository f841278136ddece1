"""Node footprint: PSS of everything GradientLab runs on a host (runner + Chromium tree).

    .venv/bin/python -m bench.node_footprint [--seconds 120]

Creates one local host, deploys a node on the sandbox network, waits until it is Good, then
samples the probe's PSS every second. Prints one JSON line per figure (MiB): the median and
maximum over the window (the maximum includes the moments the runner attaches Playwright to
read the popup), and the steady state between attaches. Needs root (a local host)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HOME = Path(tempfile.mkdtemp(prefix="gradientlab-bench-"))
os.chmod(HOME, 0o755)
os.environ["GRADIENTLAB_HOME"] = str(HOME)

from gradientlab import health  # noqa: E402
from gradientlab.config import parse_fleet  # noqa: E402
from gradientlab.inventory import executor_for, node_settings, provider_for  # noqa: E402
from gradientlab.node.deploy import deploy_node  # noqa: E402
from gradientlab.remote.executor import POOL  # noqa: E402
from gradientlab.remote.keys import operator_public_key  # noqa: E402
from gradientlab.sandbox.network import SandboxAccount, SandboxConfig  # noqa: E402
from gradientlab.sandbox.server import SandboxServer  # noqa: E402


def emit(figure: str, value: float, **extra: Any) -> None:
    print(
        json.dumps(
            {"bench": "node_footprint", "figure": figure, "value": round(value, 1), **extra}
        ),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=120)
    parser.add_argument("--status-interval", type=float, default=60)
    args = parser.parse_args()
    os.environ["BENCH_PASSWORD"] = "bench-password"
    sandbox = SandboxServer(
        SandboxConfig(accounts=[SandboxAccount(email="a@b.c", password="bench-password")]), port=0
    )
    sandbox.start()
    fleet = parse_fleet(f"""
account: {{email: a@b.c, password: {{env: BENCH_PASSWORD}}}}
{sandbox.fleet_network_yaml()}providers: {{local: {{kind: local, base_address: 127.0.4.10}}}}
hosts: [{{name: footprint, provider: local}}]
runner: {{status_interval_seconds: {args.status_interval}}}
""")
    provider = provider_for(fleet, "local")
    record = provider.create(fleet.hosts[0], operator_public_key())
    try:
        ex = executor_for(record)
        python = record.meta["python"]
        deploy_node(ex, node_settings(fleet), python)

        def check() -> health.HealthReport:
            obs = health.observe(record.name, lambda: ex, datetime.now(UTC))
            return health.judge(obs, None, fleet.health)

        report = health.wait_until(check, lambda r: r.status == "Good", timeout=120)
        assert report.status == "Good", report
        time.sleep(10)  # past the first attach
        samples = []
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            pss = check().pss_kib
            if pss:
                samples.append(pss / 1024)
            time.sleep(1)
        steady = sorted(samples)[: max(1, len(samples) * 3 // 4)]
        emit("pss_median_mib", statistics.median(samples), samples=len(samples))
        emit("pss_max_mib", max(samples), samples=len(samples))
        emit("pss_steady_mib", statistics.median(steady), target=350)
    finally:
        POOL.close_all()
        provider.terminate(record.name)
        sandbox.stop()
        shutil.rmtree(HOME, ignore_errors=True)


if __name__ == "__main__":
    main()
