"""Serve every flow from one long-lived process on one machine, without a worker.

    python -m deployments.serve --fleet fleet.yaml

Schedules come from the fleet file's `schedules`. Each flow run is its own process, so SSH
connections are kept open between runs by the connection keeper (`gradientlab.remote.keeper`),
which this starts unless one runs already, and stops when it stops."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import timedelta
from typing import Any

from prefect import serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

from deployments.limits import ensure_tag_limits
from deployments.table import DEPLOYMENTS
from gradientlab.config import load_fleet
from gradientlab.remote.keeper import KeeperError, start_keeper, stop_keeper

# A run that finds another of its kind still going is cancelled: recoveries never stack.
ONE_AT_A_TIME = ConcurrencyLimitConfig(
    limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW
)

# Poll for due runs more often than the prefetch window (10 s), even with the poll's 30% jitter:
# each scheduled run is found, and its process started, before it is due, not up to 3 s after.
RUNNER_OPTIONS: dict[str, Any] = {"query_seconds": 5.0, "prefetch_seconds": 10.0}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m deployments.serve")
    parser.add_argument("--fleet", default="fleet.yaml")
    args = parser.parse_args(argv)
    fleet = load_fleet(args.fleet)
    deployments = []
    for d in DEPLOYMENTS:
        interval = d.interval_seconds(fleet.schedules)
        deployments.append(
            d.load_flow().to_deployment(
                name=d.name,
                parameters={"fleet_path": args.fleet} if d.fleet_parameter else None,
                interval=None if interval is None else timedelta(seconds=interval),
                concurrency_limit=ONE_AT_A_TIME if d.one_at_a_time else None,
            )
        )
    ensure_tag_limits()  # ssh, provider, gradient-api: bounded across every run
    try:
        keeper = start_keeper(exit_with=os.getpid())
    except KeeperError as exc:  # the flows still run, each opening its own connections
        print(f"no connection keeper: {exc}", file=sys.stderr)
        keeper = None
    try:
        serve(*deployments, **RUNNER_OPTIONS)
    finally:
        if keeper is not None:
            stop_keeper(keeper)


if __name__ == "__main__":
    main()
