"""Apply the fleet file's `schedules` to the deployed deployments: the one source of every
flow's interval.

`python -m deployments.fleet_block fleet.yaml` calls this after saving the fleet file. prefect.yaml
writes no interval (`schedules: null`, which `prefect deploy` reads as "keep the deployment's
schedules"), so a redeploy never undoes what this set. `deployments.serve` reads the fleet file
itself; the staleness of checks and the dead-man alert read the same fields."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import DeploymentScheduleCreate
from prefect.client.schemas.schedules import IntervalSchedule
from prefect.exceptions import ObjectNotFound

from deployments.table import DEPLOYMENTS
from gradientlab.config import ScheduleSettings


@dataclass
class ScheduleChanges:
    changed: list[str] = field(default_factory=list)  # one line per deployment changed
    not_deployed: list[str] = field(default_factory=list)  # scheduled deployments not found


def publish_schedules(schedules: ScheduleSettings) -> ScheduleChanges:
    """Give every deployed deployment of the table its interval from `schedules` (an active
    interval schedule, or the interval of the ones it has, which keep their paused state)."""
    out = ScheduleChanges()
    with get_client(sync_client=True) as client:
        for d in DEPLOYMENTS:
            seconds = d.interval_seconds(schedules)
            if seconds is None:
                continue
            try:
                deployment = client.read_deployment_by_name(f"{d.load_flow().name}/{d.name}")
            except ObjectNotFound:
                out.not_deployed.append(d.name)
                continue
            wanted = timedelta(seconds=seconds)
            intervals = [
                s for s in deployment.schedules if isinstance(s.schedule, IntervalSchedule)
            ]
            if not intervals:
                client.create_deployment_schedules(
                    deployment.id,
                    [DeploymentScheduleCreate(schedule=IntervalSchedule(interval=wanted))],
                )
                out.changed.append(f"{d.name}: every {seconds} s (schedules.{d.schedule})")
            for s in intervals:
                assert isinstance(s.schedule, IntervalSchedule)
                if s.schedule.interval == wanted:
                    continue
                client.update_deployment_schedule(
                    deployment.id,
                    s.id,
                    schedule=IntervalSchedule(
                        interval=wanted,
                        anchor_date=s.schedule.anchor_date,
                        timezone=s.schedule.timezone,
                    ),
                )
                was = int(s.schedule.interval.total_seconds())
                out.changed.append(
                    f"{d.name}: every {seconds} s, was {was} s (schedules.{d.schedule})"
                )
    return out
