"""Every deployment GradientLab has, in one table: `deployments/serve.py` serves exactly these,
and prefect.yaml (for workers on a process pool) must list the same ones the same way
(tests/unit/test_deployments_table.py checks it).

Their schedules have one source, the fleet file's `schedules`: `serve` reads the fleet file;
prefect.yaml writes no interval (`schedules: null`: `prefect deploy` keeps what a deployment
has), and `python -m deployments.fleet_block fleet.yaml` sets every deployed deployment's
interval from the same fields (deployments/schedules.py)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from gradientlab.config import ScheduleSettings

WORK_POOL = "gradientlab"


@dataclass(frozen=True)
class Deployment:
    name: str
    entrypoint: str  # "flows/<module>.py:<flow>", as prefect.yaml writes it
    schedule: str | None = None  # the fleet file's `schedules` field giving its interval
    one_at_a_time: bool = False  # a run that finds another still going is cancelled
    fleet_parameter: bool = True  # takes the fleet file (`fleet_path`)

    def load_flow(self) -> Any:
        path, function = self.entrypoint.split(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        return getattr(module, function)

    def interval_seconds(self, schedules: ScheduleSettings) -> int | None:
        return None if self.schedule is None else int(getattr(schedules, self.schedule))


DEPLOYMENTS: tuple[Deployment, ...] = (
    Deployment("provision", "flows/provision.py:provision"),
    # one deploy at a time; each host's deploy and recovery also share a per-host lock
    Deployment("deploy", "flows/deploy.py:deploy", one_at_a_time=True),
    # plans by default; approve=true deletes what the plan lists
    Deployment("terminate", "flows/provision.py:terminate"),
    Deployment("health", "flows/health.py:health", "health_seconds", one_at_a_time=True),
    # a sweep above health.shard_hosts hosts runs one of these per shard
    Deployment("health-shard", "flows/health.py:health"),
    Deployment("rewards", "flows/rewards.py:rewards", "rewards_seconds", one_at_a_time=True),
    Deployment("poc-taps", "flows/poc_taps.py:poc_taps", "poc_taps_seconds", one_at_a_time=True),
    # which nodes run an older extension than the Web Store publishes
    Deployment("check-updates", "flows/deploy.py:check_updates", "check_updates_seconds", True),
    # an operator's hand-back of a quarantined host (the app's "release" action)
    Deployment("release", "flows/release.py:release", fleet_parameter=False),
    # the daily report: the fleet, earnings, incidents and cost of the last UTC day
    Deployment("report", "flows/daily_report.py:report", "report_seconds", one_at_a_time=True),
    # rolls up, then deletes raw samples past retention.raw_samples_days
    Deployment(
        "prune-history", "flows/prune_history.py:prune_history", "prune_history_seconds", True
    ),
)
