"""Provider and SSH tasks: one task per host per step."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from gradientlab import health as health_lib
from gradientlab.config import Fleet
from gradientlab.gradient.models import NodeListItem
from gradientlab.inventory import executor_for, node_settings, provider_for
from gradientlab.node.deploy import deploy_node
from gradientlab.node.runner import RUNNER_VERSION
from gradientlab.providers.base import HostRecord, PlannedHost
from gradientlab.remote.executor import RemoteError
from gradientlab.remote.keys import operator_public_key
from gradientlab.store import fleet as fleet_store
from tasks.blocks import load_cloud_credentials
from tasks.common import engine, read_secret_block


@task(name="plan-host", cache_policy=NO_CACHE, tags=["provider"])
def plan_host(fleet: Fleet, name: str) -> PlannedHost:
    spec = fleet.host(name)
    return provider_for(fleet, spec.provider, load_cloud_credentials).plan(spec)


@task(
    name="terminate-host",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=10,
    tags=["provider"],
)
def terminate_host(fleet: Fleet, name: str) -> None:
    spec = fleet.host(name)
    provider_for(fleet, spec.provider, load_cloud_credentials).terminate(name)


@task(
    name="create-host", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5, tags=["provider"]
)
def create_host(fleet: Fleet, name: str) -> HostRecord:
    spec = fleet.host(name)
    provider = provider_for(fleet, spec.provider, load_cloud_credentials)
    record = provider.create(spec, operator_public_key())
    fleet_store.upsert_host(engine(), record)
    return record


@task(name="deploy-node", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5, tags=["ssh"])
def deploy_host(fleet: Fleet, record: HostRecord) -> dict[str, Any]:
    settings = node_settings(fleet, read_secret_block)
    result = deploy_node(executor_for(record), settings, record.meta.get("python"))
    fleet_store.record_deploy(
        engine(), record.name, result.extension_id, result.extension_version, RUNNER_VERSION
    )
    return asdict(result)


def _reprobe(
    record: HostRecord, cursor: int, by_client: dict[str, NodeListItem], use_network: bool = True
) -> health_lib.HealthReport:
    try:
        data = health_lib.probe(executor_for(record), cursor)
    except RemoteError as exc:
        return health_lib.assess(record.name, None, None, str(exc))
    client = ((data.get("status") or {}).get("popup") or {}).get("node_id")
    item = by_client.get(client or "") if use_network else None
    return health_lib.assess(record.name, data, item)


@task(name="sweep-fleet", cache_policy=NO_CACHE, tags=["ssh"])
def sweep_fleet(
    records: list[HostRecord], network: list[NodeListItem], parallel: int = 20
) -> list[health_lib.HealthReport]:
    """One probe per host over kept-open SSH connections, all in one task: thousands of tiny
    task runs would swamp the Prefect server; per-host tasks are kept for hosts that need work."""
    cursors = fleet_store.event_cursors(engine())
    by_client = {item.name: item for item in network}
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(records)))) as pool:
        return list(pool.map(lambda r: _reprobe(r, cursors.get(r.name, 0), by_client), records))


@task(name="heal-host", cache_policy=NO_CACHE, tags=["ssh"])
def heal_host(
    fleet: Fleet,
    record: HostRecord,
    before: health_lib.HealthReport,
    network: list[NodeListItem],
    recover: bool = True,
) -> tuple[health_lib.HealthReport, health_lib.HealthReport, list[health_lib.ActionResult]]:
    """Wait out a starting browser, then recover step by step: (before, after, actions)."""
    cursor = fleet_store.event_cursor(engine(), record.name)
    by_client = {item.name: item for item in network}
    if before.status == "Starting":
        # a browser the runner just (re)started: give it the time a recovery step gets
        before = health_lib.wait_until(
            lambda: _reprobe(record, cursor, by_client, use_network=False),
            lambda r: r.status != "Starting",
            fleet.health.recovery_wait_seconds,
        )
        if before.status == "Starting":
            before.status = "Disconnected"  # the runner cannot read its popup: act on it
            before.error = before.error or "the runner has not read the extension's popup"
    after, actions = before, list[health_lib.ActionResult]()
    if recover and before.recoverable:
        provider = provider_for(fleet, record.provider, load_cloud_credentials)
        recovery = health_lib.Recovery(
            ex=executor_for(record) if before.reachable else None,
            python=record.meta.get("python"),
            reboot_host=lambda: provider.reboot(record.name),
            # after an action only the runner's own view counts: the network list is older
            reprobe=lambda: _reprobe(record, cursor, by_client, use_network=False),
            wait_seconds=fleet.health.recovery_wait_seconds,
        )
        after, actions = recovery.recover(before)
    return before, after, actions


@task(name="record-health", cache_policy=NO_CACHE)
def record_health(
    results: list[
        tuple[health_lib.HealthReport, health_lib.HealthReport, list[health_lib.ActionResult]]
    ],
) -> list[health_lib.HealthOutcome]:
    db = engine()
    return [health_lib.record(db, before, after, actions) for before, after, actions in results]
