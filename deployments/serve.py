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

from flows.deploy import check_updates, deploy
from flows.health import health
from flows.poc_taps import poc_taps
from flows.provision import provision, terminate
from flows.prune_history import prune_history
from flows.release import release
from flows.report import report
from flows.rewards import rewards
from gradientlab.config import load_fleet
from gradientlab.remote.keeper import KeeperError, start_keeper, stop_keeper

# A run that finds another of its kind still going is cancelled: recoveries never stack.
ONE_AT_A_TIME = ConcurrencyLimitConfig(
    limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW
)

# Poll for due runs more often than the prefetch window (10 s), even with the poll's 30% jitter:
# each scheduled run is found, and its process started, before it is due, not up to 3 s after.
RUNNER_OPTIONS = {"query_seconds": 5.0, "prefetch_seconds": 10.0}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m deployments.serve")
    parser.add_argument("--fleet", default="fleet.yaml")
    args = parser.parse_args(argv)
    fleet = load_fleet(args.fleet)
    params = {"fleet_path": args.fleet}

    def scheduled(flow: Any, name: str, seconds: int) -> Any:
        """A deployment on an interval, one run at a time (a late run is cancelled)."""
        return flow.to_deployment(
            name=name,
            parameters=params,
            interval=timedelta(seconds=seconds),
            concurrency_limit=ONE_AT_A_TIME,
        )

    s = fleet.schedules
    try:
        keeper = start_keeper(exit_with=os.getpid())
    except KeeperError as exc:  # the flows still run, each opening its own connections
        print(f"no connection keeper: {exc}", file=sys.stderr)
        keeper = None
    try:
        serve(
            provision.to_deployment(name="provision", parameters=params),
            # one deploy at a time; each host's deploy and recovery also share a per-host lock
            deploy.to_deployment(name="deploy", parameters=params, concurrency_limit=ONE_AT_A_TIME),
            terminate.to_deployment(name="terminate", parameters=params),
            scheduled(health, "health", s.health_seconds),
            # a large fleet's sweep starts one run of this per shard (health.shard_hosts)
            health.to_deployment(name="health-shard", parameters=params),
            scheduled(rewards, "rewards", s.rewards_seconds),
            scheduled(poc_taps, "poc-taps", s.poc_taps_seconds),
            scheduled(check_updates, "check-updates", s.check_updates_seconds),
            # an operator's hand-back of a quarantined host (the app's "release" action)
            release.to_deployment(name="release"),
            scheduled(report, "report", s.report_seconds),
            scheduled(prune_history, "prune-history", s.prune_history_seconds),
            **RUNNER_OPTIONS,
        )
    finally:
        if keeper is not None:
            stop_keeper(keeper)


if __name__ == "__main__":
    main()
