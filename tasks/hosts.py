"""Provider and SSH tasks: one task per host per step.

Deadlines: every SSH step, HTTP request and cloud wait inside these tasks has its own. Tasks run
in the flow's thread get a Prefect `timeout_seconds` as well; the per-host tasks a flow submits
(create-host, deploy-node, heal-host) run in worker threads, where Prefect cannot interrupt a
blocking call and only warns on every run, so they rely on the inner deadlines alone."""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from datetime import datetime
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from deployments.blocks import load_cloud_credentials
from gradientlab import lifecycle
from gradientlab.config import Fleet, HealthSettings
from gradientlab.health import (
    Alert,
    HealthOutcome,
    HealthReport,
    History,
    NetworkState,
    network_state_of,
    record_sweep,
    sweep,
)
from gradientlab.health import record as health_record
from gradientlab.health.judge import NetworkNode, SignInRefusal, cut_off_of
from gradientlab.health.record import host_histories
from gradientlab.health.sweep import HealJob, HealResult
from gradientlab.inventory import provider_for
from gradientlab.providers.base import HostRecord, PlannedHost
from gradientlab.providers.errors import retry_wait
from gradientlab.rules import SecondNodeRefused, check_one_node_per_device, shared_ips
from gradientlab.store import fleet as fleet_store
from gradientlab.store.locks import busy_hosts, host_lock
from gradientlab.webstore import Published, published_version
from tasks.common import engine, read_secret_block

# The longest a cloud's Retry-After holds a provider task before its retry.
MAX_PROVIDER_WAIT_SECONDS = 300.0


def retry_if_provider_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry throttling, lack of capacity and the cloud's own faults; never bad credentials, an
    exhausted quota, a host that is not there or a refused request (`ProviderError.retryable`).
    A Retry-After longer than the task's own retry delay is waited out here first."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - classified by retry_wait
        wait = retry_wait(exc, cap=MAX_PROVIDER_WAIT_SECONDS)
        if wait is None:
            return False
        delay = task.retry_delay_seconds
        own = float(delay) if isinstance(delay, int | float) else 0.0
        if wait > own:
            time.sleep(wait - own)
        return True
    return False


@task(name="plan-host", cache_policy=NO_CACHE, tags=["provider"], timeout_seconds=300)
def plan_host(fleet: Fleet, name: str) -> PlannedHost:
    spec = fleet.host(name)
    return provider_for(fleet, spec.provider, load_cloud_credentials).plan(spec)


@task(
    name="terminate-host",
    timeout_seconds=1800,
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=10,
    retry_condition_fn=retry_if_provider_transient,
    tags=["provider"],
)
def terminate_host(fleet: Fleet, name: str) -> None:
    spec = fleet.host(name)
    provider_for(fleet, spec.provider, load_cloud_credentials).terminate(name)


@task(
    name="create-host",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=retry_if_provider_transient,
    tags=["provider"],
)
def create_host(fleet: Fleet, name: str) -> HostRecord:
    return lifecycle.create_host(engine(), fleet, name, load_cloud_credentials)


def retry_unless_refused(task: Any, task_run: Any, state: Any) -> bool:
    """A deploy that broke the network's rules is refused for good; anything else may pass."""
    try:
        state.result()
    except SecondNodeRefused:
        return False
    except Exception:  # noqa: BLE001 - an SSH hiccup, a host still booting
        return True
    return False


@task(
    name="deploy-node",
    cache_policy=NO_CACHE,
    retries=1,
    retry_delay_seconds=5,
    retry_condition_fn=retry_unless_refused,
    tags=["ssh"],
)
def deploy_host(fleet: Fleet, record: HostRecord, plan: bool = False) -> dict[str, Any]:
    """Deploy the node on one host; with `plan`, only say what a deploy would change."""
    # one Sentry Node per device: not on a machine another host of the fleet already runs one on
    check_one_node_per_device(
        record.name, record.host_key, fleet_store.deployed_host_keys(engine())
    )
    if plan:
        return asdict(lifecycle.plan_deploy(fleet, record, read_secret_block))
    # never at the same time as a recovery on this host (any worker): wait for it to finish
    with host_lock(engine(), record.name, wait_seconds=900):
        result = lifecycle.deploy_host(engine(), fleet, record, read_secret_block)
    return asdict(result)


@task(name="sweep-fleet", cache_policy=NO_CACHE, tags=["ssh"], timeout_seconds=300)
def sweep_fleet(
    records: list[HostRecord],
    network: dict[str, NetworkNode],
    policy: HealthSettings,
    parallel: int = 20,
) -> list[HealthReport]:
    """One probe per host over kept-open SSH connections, all in one task: thousands of tiny
    task runs would swamp the Prefect server; per-host tasks are kept for hosts that need work."""
    return sweep.check_hosts(engine(), records, network, policy, parallel)


@task(name="await-good", cache_policy=NO_CACHE, tags=["ssh"], timeout_seconds=1800)
def await_good(record: HostRecord, policy: HealthSettings, wait_seconds: float) -> HealthReport:
    return sweep.await_good(record, policy, wait_seconds)


@task(name="extension-published", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=10,
      timeout_seconds=120)  # fmt: skip
def extension_published(fleet: Fleet) -> Published:
    """The version of the fleet's extension the Web Store's update service publishes now."""
    return published_version(fleet.network)


@task(name="shared-ip-warnings", cache_policy=NO_CACHE, timeout_seconds=60)
def shared_ip_warnings() -> list[str]:
    """Hosts the network or STUN sees at one public IP: their nodes split rewards."""
    return [s.warning for s in shared_ips(fleet_store.observed_ips(engine()))]


@task(name="load-histories", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2,
      timeout_seconds=60)  # fmt: skip
def load_histories(records: list[HostRecord], at: datetime) -> dict[str, History]:
    return host_histories(engine(), records, at)


@task(name="hosts-being-deployed", cache_policy=NO_CACHE, timeout_seconds=60)
def hosts_being_deployed(names: list[str]) -> set[str]:
    return busy_hosts(engine(), names)


@task(name="heal-host", cache_policy=NO_CACHE, tags=["ssh"])
def heal_host(fleet: Fleet, job: HealJob) -> HealResult:
    """Wait out a starting browser, then run the decided rungs: (before, after, actions,
    decision). Holds the host's lock, so a deploy never runs under a recovery."""
    return sweep.heal(engine(), fleet, job, load_cloud_credentials, read_secret_block)


@task(name="record-health", cache_policy=NO_CACHE, timeout_seconds=300)
def record_health(
    results: list[HealResult],
    policy: HealthSettings,
    network: NetworkState,
    at: datetime,
    fleet_name: str,
    health_period_s: float | None = None,
    fleet_level: bool = True,
) -> tuple[list[HealthOutcome], list[Alert], list[str]]:
    return record_sweep(
        engine(), results, policy, network, at, fleet_name, health_period_s, fleet_level
    )


@task(name="record-network-state", cache_policy=NO_CACHE, timeout_seconds=120)
def record_network_state(
    hosts: list[str],
    since: datetime,
    api_error: str | None,
    refused: SignInRefusal | None,
    policy: HealthSettings,
    at: datetime,
    fleet_name: str,
) -> tuple[NetworkState, list[Alert], dict[str, str]]:
    """A sharded sweep's network state, from the verdicts its shards recorded since `since`,
    recorded once; with the verdicts by host."""
    statuses = fleet_store.sweep_statuses(engine(), hosts, since)
    state = network_state_of(list(statuses.values()), api_error, policy)
    # the shards each held their own hosts' actions when cut off; the incident is the fleet's
    cut, why, failing = cut_off_of([(v, None) for v in statuses.values()], policy)
    state = replace(
        state,
        cut_off=cut,
        cut_off_reason=why,
        cut_off_hosts=failing,
        sign_in_refused=refused,
        signed_in=not api_error and refused is None,
    )
    alerts = health_record.record_network_state(engine(), state, at, policy, fleet_name)
    return state, alerts, statuses


@task(name="release-host", cache_policy=NO_CACHE, timeout_seconds=60)
def release_host(name: str, at: datetime, by: str | None = None) -> dict[str, Any]:
    """A person hands a quarantined host back to automatic recovery, with fresh budgets.
    Returns its quarantine as it was (`quarantined_at` None when it was not quarantined)."""
    return fleet_store.release_host(engine(), name, at, by)
