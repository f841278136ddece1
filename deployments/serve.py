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
            health.to_deployment(
                name="health",
                parameters=params,
                interval=timedelta(seconds=s.health_seconds),
                concurrency_limit=ONE_AT_A_TIME,
            ),
            # a large fleet's sweep starts one run of this per shard (health.shard_hosts)
            health.to_deployment(name="health-shard", parameters=params),
            rewards.to_deployment(
                name="rewards",
                parameters=params,
                interval=timedelta(seconds=s.rewards_seconds),
                concurrency_limit=ONE_AT_A_TIME,
            ),
            poc_taps.to_deployment(
                name="poc-taps",
                parameters=params,
                interval=timedelta(seconds=s.poc_taps_seconds),
                concurrency_limit=ONE_AT_A_TIME,
            ),
            check_updates.to_deployment(
                name="check-updates",
                parameters=params,
                interval=timedelta(seconds=s.check_updates_seconds),
                concurrency_limit=ONE_AT_A_TIME,
            ),
            # an operator's hand-back of a quarantined host (the app's "release" action)
            release.to_deployment(name="release"),
            report.to_deployment(
                name="report",
                parameters=params,
                interval=timedelta(seconds=s.report_seconds),
                concurrency_limit=ONE_AT_A_TIME,
            ),
            prune_history.to_deployment(
                name="prune-history",
                parameters=params,
                interval=timedelta(seconds=s.prune_history_seconds),
                concurrency_limit=ONE_AT_A_TIME,
            ),
            **RUNNER_OPTIONS,
        )
    finally:
        if keeper is not None:
            stop_keeper(keeper)


if __name__ == "__main__":
    main()
