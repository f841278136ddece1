"""Provider and SSH tasks: one task per host per step.

Deadlines: every SSH step, HTTP request and cloud wait inside these tasks has its own. Tasks run
in the flow's thread get a Prefect `timeout_seconds` as well; the per-host tasks a flow submits
(create-host, deploy-node, heal-host) run in worker threads, where Prefect cannot interrupt a
blocking call and only warns on every run, so they rely on the inner deadlines alone."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from datetime import datetime
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from deployments.blocks import load_cloud_credentials
from gradientlab.agent.home import RUNNER_VERSION
from gradientlab.config import Fleet, HealthSettings
from gradientlab.health import (
    ActionResult,
    Alert,
    Decision,
    HealthOutcome,
    HealthReport,
    History,
    NetworkState,
    Observation,
    Recovery,
    Verdict,
    decide,
    judge,
    network_state_of,
    observe,
    record_sweep,
    wait_until,
)
from gradientlab.health import record as health_record
from gradientlab.health.judge import NetworkNode
from gradientlab.health.record import host_histories
from gradientlab.health.report import as_dict, utcnow
from gradientlab.health.status import HOST_RUNGS
from gradientlab.inventory import executor_for, node_settings, provider_for
from gradientlab.node.deploy import DeployResult, deploy_node
from gradientlab.providers.base import HostRecord, PlannedHost
from gradientlab.providers.errors import retry_wait
from gradientlab.remote.keys import operator_public_key
from gradientlab.rules import SecondNodeRefused, check_one_node_per_device, shared_ips
from gradientlab.store import fleet as fleet_store
from gradientlab.store.locks import HostBusy, busy_hosts, host_lock
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
    return _create(fleet, name)


def _create(fleet: Fleet, name: str) -> HostRecord:
    spec = fleet.host(name)
    provider = provider_for(fleet, spec.provider, load_cloud_credentials)
    record = provider.create(spec, operator_public_key())
    fleet_store.upsert_host(engine(), record)
    return record


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
        settings = node_settings(fleet, read_secret_block)
        result = deploy_node(executor_for(record), settings, record.meta.get("python"), plan=True)
        return asdict(result)
    # never at the same time as a recovery on this host (any worker): wait for it to finish
    with host_lock(engine(), record.name, wait_seconds=900):
        result = _deploy(fleet, record)
    return asdict(result)


def _deploy(fleet: Fleet, record: HostRecord) -> DeployResult:
    settings = node_settings(fleet, read_secret_block)
    result = deploy_node(executor_for(record), settings, record.meta.get("python"))
    fleet_store.record_deploy(
        engine(),
        record.name,
        result.extension_id,
        result.extension_version,
        RUNNER_VERSION,
        browser=result.browser,
        browser_source=result.browser_source,
        host_os=result.host_os,
    )
    return result


def _check(
    record: HostRecord,
    position: tuple[int, str | None],
    by_client: dict[str, NetworkNode],
    policy: HealthSettings,
    use_network: bool = True,
) -> HealthReport:
    """Probe and judge one host; whatever goes wrong becomes that host's verdict."""
    checked_at = utcnow()
    obs = observe(
        record.name,
        lambda: executor_for(record),
        checked_at,
        timeout=policy.probe_timeout_seconds,
    )
    try:
        client = as_dict(as_dict(as_dict(obs.data).get("status")).get("popup")).get("node_id")
        item = by_client.get(str(client or "")) if use_network else None
        report = judge(obs, item, policy, cursor=position[0], events_id=position[1])
    except Exception as exc:  # noqa: BLE001 - an answer the judge cannot read
        report = judge(
            Observation(record.name, checked_at, None, Verdict.PROBE_INVALID, f"{exc!r}"),
            None,
            policy,
        )
    report.facts.setdefault("address", f"{record.address}:{record.ssh_port}")
    return report


@task(name="sweep-fleet", cache_policy=NO_CACHE, tags=["ssh"], timeout_seconds=300)
def sweep_fleet(
    records: list[HostRecord],
    network: dict[str, NetworkNode],
    policy: HealthSettings,
    parallel: int = 20,
) -> list[HealthReport]:
    """One probe per host over kept-open SSH connections, all in one task: thousands of tiny
    task runs would swamp the Prefect server; per-host tasks are kept for hosts that need work.
    Every host gets a report, whatever happens to the others."""
    positions = fleet_store.event_positions(engine())
    by_client = network  # the network's own view of each node, by client id
    if not records:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(records)))) as pool:
        return list(
            pool.map(
                lambda r: _check(r, positions.get(r.name, (0, None)), by_client, policy),
                records,
            )
        )


# verdicts that will not turn Good by waiting: a rollout stops at once
_NOT_BY_WAITING = frozenset({Verdict.PAGE_CHANGED, Verdict.RUNNER_CRASH_LOOP})


@task(name="await-good", cache_policy=NO_CACHE, tags=["ssh"], timeout_seconds=1800)
def await_good(record: HostRecord, policy: HealthSettings, wait_seconds: float) -> HealthReport:
    """Check one host until its node reads Good (the runner has read the new popup), for at
    most `wait_seconds`; the last report either way."""
    deadline = time.monotonic() + wait_seconds
    while True:
        report = _check(record, (0, None), {}, policy, use_network=False)
        if report.status == Verdict.GOOD or report.status in _NOT_BY_WAITING:
            return report
        if time.monotonic() > deadline:
            return report
        time.sleep(2)


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


HealResult = tuple[HealthReport, HealthReport, list[ActionResult], Decision]


@task(name="heal-host", cache_policy=NO_CACHE, tags=["ssh"])
def heal_host(
    fleet: Fleet,
    record: HostRecord,
    before: HealthReport,
    decision: Decision,
    history: History,
    network: NetworkState,
) -> HealResult:
    """Wait out a starting browser, then run the decided rungs: (before, after, actions,
    decision). Holds the host's lock, so a deploy never runs under a recovery."""
    try:
        with host_lock(engine(), record.name, wait_seconds=0):
            return _heal(fleet, record, before, decision, history, network, fleet.health)
    except HostBusy as exc:
        return before, before, [], Decision((), f"{exc}; recovery skipped this sweep")


def _heal(
    fleet: Fleet,
    record: HostRecord,
    before: HealthReport,
    decision: Decision,
    history: History,
    network: NetworkState,
    policy: HealthSettings,
) -> HealResult:
    position = fleet_store.event_positions(engine()).get(record.name, (0, None))

    def reprobe() -> HealthReport:
        # after an action only the host's own view counts: the network list is older
        return _check(record, position, {}, policy, use_network=False)

    if before.status == Verdict.STARTING:
        # a browser the runner just (re)started: give it the time a recovery step gets
        waited = wait_until(
            reprobe, lambda r: r.status != Verdict.STARTING, policy.recovery_wait_seconds
        )
        if waited.status == Verdict.STARTING:
            waited.status = Verdict.DISCONNECTED  # the runner cannot read its popup: act on it
            waited.reason = (
                "the runner has not read the extension's popup since the browser started"
            )
        waited.events = before.events + [e for e in waited.events if e not in before.events]
        before = waited
        decision = decide(before, history, network, policy)
        # never touch the host for a browser that has only just started
        decision = replace(decision, steps=tuple(s for s in decision.steps if s not in HOST_RUNGS))
    if not decision.steps:
        return before, before, [], decision
    provider = provider_for(fleet, record.provider, load_cloud_credentials)

    def reprovision() -> None:
        provider.terminate(record.name)
        _deploy(fleet, _create(fleet, record.name))

    recovery = Recovery(
        connect=lambda: executor_for(record),
        python=record.meta.get("python"),
        reprobe=reprobe,
        reboot_host=lambda: provider.reboot(record.name),
        deploy=lambda: _deploy(fleet, record),
        reprovision=reprovision,
        wait_seconds=policy.recovery_wait_seconds,
    )
    after, actions = recovery.recover(before, decision.steps)
    return before, after, actions, decision


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
    policy: HealthSettings,
    at: datetime,
    fleet_name: str,
) -> tuple[NetworkState, list[Alert], dict[str, str]]:
    """A sharded sweep's network state, from the verdicts its shards recorded since `since`,
    recorded once; with the verdicts by host."""
    statuses = fleet_store.sweep_statuses(engine(), hosts, since)
    state = network_state_of(list(statuses.values()), api_error, policy)
    alerts = health_record.record_network_state(engine(), state, at, policy, fleet_name)
    return state, alerts, statuses


@task(name="release-host", cache_policy=NO_CACHE, timeout_seconds=60)
def release_host(name: str, at: datetime) -> dict[str, Any]:
    """A person hands a quarantined host back to automatic recovery, with fresh budgets.
    Returns its quarantine as it was (`quarantined_at` None when it was not quarantined)."""
    return fleet_store.release_host(engine(), name, at)
