"""Health: probe every host, judge it, decide recoveries that cannot storm, run them, record,
alert. One host's trouble is that host's verdict; the run itself does not fail for it."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import cast
from uuid import UUID

from prefect import flow, get_client, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment

from gradientlab.config import Fleet
from gradientlab.health import HealthOutcome
from gradientlab.health import sweep as health_sweep
from gradientlab.health.report import utcnow
from gradientlab.health.shards import Shard, parse_shard, shards_for
from gradientlab.health.sweep import HealJob, HealResult
from gradientlab.providers.base import HostRecord
from gradientlab.store.fleet import host_records
from gradientlab.store.locks import HostBusy, host_lock
from tasks.common import engine, fleet_from, requested_by
from tasks.common import send_alert as send
from tasks.hosts import (
    heal_host,
    hosts_being_deployed,
    load_histories,
    record_health,
    record_network_state,
    shared_ip_warnings,
    sweep_fleet,
)
from tasks.network import network_lookup, network_reasons, network_view
from tasks.rollups import refresh_health_rollups

# The deployment a sharded sweep's dispatcher starts once per shard (deployments/serve.py and
# prefect.yaml define it beside `health/health`, with no schedule of its own).
SHARD_DEPLOYMENT = "health/health-shard"


class UnknownHosts(ValueError):
    """The hosts named for a health run are not live hosts in the database."""


@flow(name="health", log_prints=True)
def health(
    fleet_path: str = "fleet.yaml",
    recover: bool = True,
    shard: str | None = None,
    hosts: list[str] | None = None,
) -> list[HealthOutcome]:
    """Check every host, or only shard "<index>/<count>" of them, or only the named `hosts`
    (an operator's check of one node). A fleet of more than `health.shard_hosts` hosts is
    checked by one flow run per shard, which this run starts and waits for (any worker in the
    pool may run each), recording the network's state once. A check of named hosts leaves the
    network's state to the fleet-wide sweeps and keeps the fleet brake at the fleet's size."""
    logger = get_run_logger()
    fleet = fleet_from(fleet_path)
    records = host_records(engine())
    if hosts is not None:
        logger.info("a check of %s, requested by %s", ", ".join(hosts), requested_by())
        unknown = sorted(set(hosts) - {r.name for r in records})
        if unknown:
            raise UnknownHosts(
                f"no live host named {', '.join(unknown)} in the database (live hosts: "
                f"{', '.join(r.name for r in records) or 'none'}); run the provision flow first"
            )
        named = [r for r in records if r.name in set(hosts)]
        return sweep(fleet, named, recover, fleet_size=len(records), named=True)
    if shard is not None:
        part = parse_shard(shard)
        records = [r for r in records if part.holds(r.name)]
        try:
            with host_lock(engine(), f"health shard {part}"):
                return sweep(fleet, records, recover, part)
        except HostBusy:
            logger.warning("shard %s of the last sweep is still running; this one is skipped", part)
            return []
    if len(records) > fleet.health.shard_hosts:
        started = utcnow()
        try:
            dispatch_shards(fleet, fleet_path, recover, [r.name for r in records])
        finally:
            refresh_rollups_after(started)  # once for every shard's checks
        return []
    return sweep(fleet, records, recover)


def refresh_rollups_after(started: datetime) -> None:
    """The daily rollups of what this run wrote; a failure is logged, never the run's."""
    try:
        refresh_health_rollups(started, utcnow())
    except Exception as exc:  # noqa: BLE001 - `gradientlab refresh-rollups` catches up later
        get_run_logger().error("the daily rollups were not refreshed: %s", exc)


class PrefectSweepSteps:
    """The health cycle's steps as this layer's tasks: each a task run of its own in the UI,
    with its retries; the per-host recoveries submitted to the flow's task runner."""

    network_view = staticmethod(network_view)
    network_lookup = staticmethod(network_lookup)
    network_reasons = staticmethod(network_reasons)
    check_hosts = staticmethod(sweep_fleet)
    load_histories = staticmethod(load_histories)
    hosts_being_deployed = staticmethod(hosts_being_deployed)
    record = staticmethod(record_health)

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    def heal_hosts(self, jobs: Sequence[HealJob]) -> list[HealResult | Exception]:
        futures = [heal_host.submit(self.fleet, job) for job in jobs]
        out: list[HealResult | Exception] = []
        for future in futures:
            try:
                out.append(future.result())
            except Exception as exc:  # noqa: BLE001 - that host's recovery, not the run
                out.append(exc)
        return out


def sweep(
    fleet: Fleet,
    records: list[HostRecord],
    recover: bool,
    part: Shard | None = None,
    fleet_size: int | None = None,
    named: bool = False,
) -> list[HealthOutcome]:
    """Check `records`: the fleet, a shard of it, or hosts an operator `named` (out of a fleet
    of `fleet_size` hosts, which the brake counts); then refresh, alert, publish."""
    logger = get_run_logger()
    started = utcnow()
    result = health_sweep.sweep(
        engine(), PrefectSweepSteps(fleet), fleet, records, recover, logger,
        part=part, fleet_size=fleet_size, named=named,
    )  # fmt: skip
    outcomes, state = result.outcomes, result.network
    if part is None:  # a shard's dispatcher refreshes once all shards are done
        refresh_rollups_after(started)
    for alert in result.alerts:
        logger.warning("alert %s for %s: %s", alert.event, alert.subject, alert.payload)
        send(alert)
    shared = shared_ip_warnings() if part is None and not named else []  # the dispatcher's
    for warning in shared:
        logger.warning(warning)
    create_table_artifact(
        key="hosts-health"
        if named
        else "fleet-health"
        if part is None
        else f"fleet-health-shard-{part.index}-of-{part.count}",
        table=[
            {
                "host": o.host,
                "status": o.status,
                "reason": o.reason,
                "decision": o.decision,
                "incident": o.incident_status or "",
                "actions": ", ".join(o.actions),
            }
            for o in outcomes
        ],
        description=(
            f"Health of {', '.join(r.name for r in records)} after a check of those only"
            if named
            else "Fleet health after the last check"
        )
        + (f" (shard {part})" if part is not None else "")
        + (f" — network down or degraded: {state.reason}" if state.down else "")
        + "".join(f" — {w}" for w in shared),
    )
    return outcomes


def dispatch_shards(fleet: Fleet, fleet_path: str, recover: bool, hosts: list[str]) -> None:
    """Start one `health-shard` flow run per shard, wait for them (up to one health period),
    then record the network's state from the verdicts they wrote. A shard that did not complete
    fails this run, after everything the others found is recorded."""
    logger = get_run_logger()
    policy = fleet.health
    period = fleet.schedules.health_seconds
    shards = shards_for(len(hosts), policy.shard_hosts)
    # the shards' samples carry their workers' clocks: allow those a little skew against ours
    since = utcnow() - timedelta(seconds=min(30.0, period / 2))
    started = {
        str(part): cast(  # a sync call from a sync flow: the run, not a coroutine
            FlowRun,
            run_deployment(
                SHARD_DEPLOYMENT,
                parameters={"fleet_path": fleet_path, "recover": recover, "shard": str(part)},
                timeout=0,
            ),
        )
        for part in shards
    }
    logger.info("%d hosts: checked in %d shards by the pool's workers", len(hosts), len(shards))
    # only whether the API answers (and takes the account's sign-in): shards read it too
    _, api_error, refused = network_view(fleet)
    if refused is not None:
        logger.error("%s", refused.detail)
    ended = wait_for_runs({k: r.id for k, r in started.items()}, deadline_seconds=period)
    state, fleet_alerts, statuses = record_network_state(
        hosts, since, api_error, refused, policy, utcnow(), fleet.name
    )
    if state.down:
        logger.warning("the network is down or degraded: %s", state.reason)
    for alert in fleet_alerts:
        logger.warning("alert %s for %s: %s", alert.event, alert.subject, alert.payload)
        send(alert)
    shared = shared_ip_warnings()
    for warning in shared:
        logger.warning(warning)
    unchecked = len(hosts) - len(statuses)
    create_table_artifact(
        key="fleet-health",
        table=[
            {"shard": k, "state": ended.get(k, "still running"), "flow run": str(r.id)}
            for k, r in started.items()
        ],
        description=f"Fleet health after the last check: {len(statuses)} of {len(hosts)} hosts"
        f" checked in {len(shards)} shards"
        + (f" — network down or degraded: {state.reason}" if state.down else "")
        + "".join(f" — {w}" for w in shared),
    )
    bad = {k: v for k, v in ended.items() if v != "Completed"}
    bad.update({k: "still running" for k in started if k not in ended})
    if bad:
        raise RuntimeError(
            f"health shards did not complete ({', '.join(f'{k}: {v}' for k, v in bad.items())});"
            f" {unchecked} of {len(hosts)} hosts have no verdict from this sweep"
        )


def wait_for_runs(runs: dict[str, UUID], deadline_seconds: float) -> dict[str, str]:
    """The final state's name of each run that ended within the deadline, by key."""
    ended: dict[str, str] = {}
    deadline = time.monotonic() + deadline_seconds
    with get_client(sync_client=True) as client:
        while len(ended) < len(runs) and time.monotonic() < deadline:
            for key, run_id in runs.items():
                if key in ended:
                    continue
                state = client.read_flow_run(run_id).state
                if state is not None and state.is_final():
                    ended[key] = state.name or state.type.value
            if len(ended) < len(runs):
                time.sleep(1)
    return ended
