"""The health cycle as plain code: probe every host, judge it, decide recoveries that cannot
storm, run them, record what happened and the alerts it calls for.

The cycle's steps that the orchestration layer runs as units of their own (Prefect tasks with
retries, tags and a place in the UI) come through `SweepSteps`; everything else is here, so the
health flow reads as its runbook and a test or a script can run the same cycle without Prefect.
One host's trouble is that host's verdict: nothing one host does stops the others."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

from sqlalchemy import Engine

from gradientlab.config import Fleet, HealthSettings
from gradientlab.gradient.models import NodeInfo, NodeListItem
from gradientlab.health.act import ActionResult, Recovery, Withheld, wait_until
from gradientlab.health.decide import Decision, FleetUsage, History, apply_brake, decide
from gradientlab.health.judge import (
    NetworkNode,
    NetworkState,
    Observation,
    SignInRefusal,
    judge,
    network_state,
    observe,
    with_cut_off,
    with_network_reason,
)
from gradientlab.health.record import Alert, HealthOutcome, standing_network_state
from gradientlab.health.report import HealthReport, as_dict, utcnow
from gradientlab.health.shards import Shard
from gradientlab.health.status import HOST_RUNGS, Rung, Verdict
from gradientlab.inventory import BlockReader, CredentialsLoader, executor_for, provider_for
from gradientlab.lifecycle import create_host, deploy_host
from gradientlab.providers.base import HostRecord, HostState
from gradientlab.store import fleet as fleet_store
from gradientlab.store.locks import HostBusy, host_lock
from gradientlab.store.recovery import fleet_usage, start_action

# (before, after, actions, decision) of one host's recovery
HealResult = tuple[HealthReport, HealthReport, list[ActionResult], Decision]

# verdicts that will not turn Good by waiting: a rollout stops at once
NOT_BY_WAITING = frozenset({Verdict.PAGE_CHANGED, Verdict.RUNNER_CRASH_LOOP})


def check_host(
    record: HostRecord,
    position: tuple[int, str | None],
    by_client: dict[str, NetworkNode],
    policy: HealthSettings,
    use_network: bool = True,
) -> HealthReport:
    """Probe and judge one host; whatever goes wrong becomes that host's verdict."""
    checked_at = utcnow()
    try:
        obs = observe(
            record.name,
            lambda: executor_for(record),
            checked_at,
            timeout=policy.probe_timeout_seconds,
        )
    except Exception as exc:  # noqa: BLE001 - observe maps every SSH error; this is the rest
        obs = Observation(record.name, checked_at, None, Verdict.PROBE_INVALID, f"{exc!r}"[:500])
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


def check_hosts(
    engine: Engine,
    records: list[HostRecord],
    network: dict[str, NetworkNode],
    policy: HealthSettings,
    parallel: int = 20,
) -> list[HealthReport]:
    """One probe per host over kept-open SSH connections, `parallel` at a time. Every host gets
    a report, whatever happens to the others. `network` is the network's view by client id.

    The checks stop at the policy's sweep deadline: a host not checked by then (its probe
    still waits on a hung host ahead of it, or hangs itself) is reported NotChecked, and what
    the others found is kept."""
    if not records:
        return []
    positions = fleet_store.event_positions(engine)
    started = time.monotonic()
    pool = ThreadPoolExecutor(
        max_workers=max(1, min(parallel, len(records))), thread_name_prefix="check"
    )
    try:
        futures = [
            pool.submit(check_host, r, positions.get(r.name, (0, None)), network, policy)
            for r in records
        ]
        wait(futures, timeout=policy.sweep_deadline_seconds)
        out: list[HealthReport] = []
        for record, future in zip(records, futures, strict=True):
            if future.done() and not future.cancelled() and future.exception() is None:
                out.append(future.result())
                continue
            out.append(not_checked(record, policy, time.monotonic() - started))
        return out
    finally:
        # probes still running end by their own SSH deadlines; nothing waits for them here
        pool.shutdown(wait=False, cancel_futures=True)


def not_checked(record: HostRecord, policy: HealthSettings, elapsed: float) -> HealthReport:
    """The report of a host the sweep did not get to check before its deadline."""
    reason = (
        f"not checked: the sweep's deadline ({policy.sweep_deadline_seconds:g} s) passed after "
        f"{elapsed:.0f} s, before this host's check finished (hosts ahead of it may hang)"
    )
    report = HealthReport(
        host=record.name, status=Verdict.NOT_CHECKED, reachable=False, reason=reason
    )
    report.facts["address"] = f"{record.address}:{record.ssh_port}"
    return report


def await_good(record: HostRecord, policy: HealthSettings, wait_seconds: float) -> HealthReport:
    """Check one host until its node reads Good (the runner has read the new popup), for at
    most `wait_seconds`; the last report either way."""
    deadline = time.monotonic() + wait_seconds
    while True:
        report = check_host(record, (0, None), {}, policy, use_network=False)
        if report.status == Verdict.GOOD or report.status in NOT_BY_WAITING:
            return report
        if time.monotonic() > deadline:
            return report
        time.sleep(2)


@dataclass(frozen=True)
class HealJob:
    """One host's recovery, as the cycle decided it."""

    record: HostRecord
    before: HealthReport
    decision: Decision
    history: History
    network: NetworkState


def heal(
    engine: Engine,
    fleet: Fleet,
    job: HealJob,
    credentials: CredentialsLoader,
    secrets: BlockReader,
) -> HealResult:
    """Wait out a starting browser, then run the decided rungs. Holds the host's lock, so a
    deploy never runs under a recovery; a host whose lock is held is skipped this sweep."""
    try:
        with host_lock(engine, job.record.name, wait_seconds=0):
            return _heal(engine, fleet, job, credentials, secrets)
    except HostBusy as exc:
        return job.before, job.before, [], Decision((), f"{exc}; recovery skipped this sweep")


def _heal(
    engine: Engine,
    fleet: Fleet,
    job: HealJob,
    credentials: CredentialsLoader,
    secrets: BlockReader,
) -> HealResult:
    record, before, decision, policy = job.record, job.before, job.decision, fleet.health
    position = fleet_store.event_positions(engine).get(record.name, (0, None))

    def reprobe() -> HealthReport:
        # after an action only the host's own view counts: the network list is older
        return check_host(record, position, {}, policy, use_network=False)

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
        decision = decide(before, job.history, job.network, policy)
        # never touch the host for a browser that has only just started
        decision = replace(decision, steps=tuple(s for s in decision.steps if s not in HOST_RUNGS))
    if not decision.steps:
        return before, before, [], decision
    provider = provider_for(fleet, record.provider, credentials)

    def reprovision() -> None:
        provider.terminate(record.name)
        deploy_host(engine, fleet, create_host(engine, fleet, record.name, credentials), secrets)

    def second_signal(step: Rung) -> None:
        if getattr(provider, "kind", None) not in SIGNAL_KINDS:
            return  # an SSH inventory knows nothing beyond what SSH says
        withheld = provider_objection(step, provider.get(record.name))
        if withheld:
            raise Withheld(withheld)

    def start_row(step: Rung, at: datetime) -> int:
        return start_action(engine, record.name, step, at, str(before.status), before.reason)

    recovery = Recovery(
        connect=lambda: executor_for(record),
        python=record.meta.get("python"),
        reprobe=reprobe,
        reboot_host=lambda: provider.reboot(record.name),
        deploy=lambda: deploy_host(engine, fleet, record, secrets),
        reprovision=reprovision,
        wait_seconds=policy.recovery_wait_seconds,
        second_signal=second_signal,
        start_row=start_row,
    )
    after, actions = recovery.recover(before, decision.steps)
    return before, after, actions, decision


# providers that can say whether a host's machine runs, stopped or is gone: a second signal
# besides SSH before a reboot or a re-provision
SIGNAL_KINDS = frozenset({"local", "oci", "gcp", "azure"})


def provider_objection(step: Rung, found: HostRecord | None) -> str | None:
    """Why the provider's view of the host speaks against `step`, or None to go ahead.

    Reboot: only a machine the provider has, and not one it is starting or creating.
    Re-provision (terminate, then create): only one the provider says is stopped or gone;
    never one it says runs (SSH cannot reach it, but re-creating would not be the fix)."""
    state = None if found is None else found.state
    if step == Rung.REBOOT_HOST:
        if state is None or state == HostState.TERMINATED:
            return "the provider has no such machine any more: nothing to reboot"
        if state in (HostState.PROVISIONING, HostState.CREATING):
            return f"the provider says the machine is {state}: rebooting it would interrupt that"
        return None
    if step == Rung.REPROVISION:
        if state in (None, HostState.STOPPED, HostState.TERMINATED):
            return None
        return (
            f"the provider says the machine is {state}; re-creating a machine that runs "
            "is left to a person (check its console)"
        )
    return None


class SweepSteps(Protocol):
    """The steps of the cycle that the orchestration layer runs as its own units."""

    def network_view(
        self, fleet: Fleet
    ) -> tuple[list[NodeListItem], str | None, SignInRefusal | None]: ...

    def network_lookup(
        self, fleet: Fleet, client_ids: list[str]
    ) -> tuple[dict[str, NodeInfo], str | None]: ...

    def network_reasons(self, fleet: Fleet, client_ids: list[str]) -> dict[str, str]: ...

    def check_hosts(
        self, records: list[HostRecord], network: dict[str, NetworkNode], policy: HealthSettings
    ) -> list[HealthReport]: ...

    def load_histories(self, records: list[HostRecord], at: datetime) -> dict[str, History]: ...

    def hosts_being_deployed(self, names: list[str]) -> set[str]: ...

    def heal_hosts(self, jobs: Sequence[HealJob]) -> list[HealResult | Exception]:
        """Each job's result, in the jobs' order; a recovery that raised is its exception."""
        ...

    def record(
        self,
        results: list[HealResult],
        policy: HealthSettings,
        network: NetworkState,
        at: datetime,
        fleet_name: str,
        health_period_s: float | None,
        fleet_level: bool,
    ) -> tuple[list[HealthOutcome], list[Alert], list[str]]: ...


@dataclass
class SweepResult:
    outcomes: list[HealthOutcome]
    alerts: list[Alert]  # the fleet's and every host's, to send
    network: NetworkState


def sweep(
    engine: Engine,
    steps: SweepSteps,
    fleet: Fleet,
    records: list[HostRecord],
    recover: bool,
    log: logging.Logger | logging.LoggerAdapter[logging.Logger],
    part: Shard | None = None,
    fleet_size: int | None = None,
    named: bool = False,
) -> SweepResult:
    """Check `records`: the fleet, a shard of it, or hosts an operator `named` (out of a fleet
    of `fleet_size` hosts, which the brake counts)."""
    policy = fleet.health
    listed, api_error, refused = steps.network_view(fleet)
    network: dict[str, NetworkNode] = {item.name: item for item in listed}
    if refused is not None:
        # the account's settings, not the network: it is neither down nor degraded for it
        log.error("%s; checking hosts by their own popups only", refused.detail)
    elif api_error:
        log.warning("the network's node list is unavailable (%s); checking hosts only", api_error)
    else:
        # the list covers active nodes only: ask the network about each of ours it left out
        ours = {r.name for r in records}  # a shard asks about its own hosts only
        known = fleet_store.client_ids(engine)
        unlisted = sorted({c for h, c in known.items() if h in ours} - set(network))
        if unlisted:
            found, lookup_error = steps.network_lookup(fleet, unlisted)
            network.update(found)
            if lookup_error:
                log.warning("the network's answer for unlisted nodes failed: %s", lookup_error)
    reports = steps.check_hosts(records, network, policy)
    unexplained = [
        r.client_id
        for r in reports
        if r.status == Verdict.UNSUPPORTED and not r.banned_reason and r.client_id
    ]
    if unexplained and not api_error and refused is None:
        reasons = steps.network_reasons(fleet, unexplained)
        for r in reports:
            if r.client_id in reasons:
                with_network_reason(r, reasons[r.client_id])
    at = max((r.checked_at for r in reports), default=utcnow())
    state = (
        standing_network_state(engine, api_error)
        if named
        else network_state(reports, api_error, policy)
    )
    if not state.cut_off:
        state = with_cut_off(state, reports, policy)
    state = replace(state, sign_in_refused=refused, signed_in=not api_error and refused is None)
    if state.down:
        log.warning("the network is down or degraded: %s", state.reason)
    if state.cut_off:
        log.error("%s; no host is rebooted, re-provisioned or quarantined", state.cut_off_reason)

    histories = steps.load_histories(records, at)
    decisions = apply_brake(
        {r.host: decide(r, histories[r.host], state, policy) for r in reports},
        fleet_size or len(records),
        policy,
        FleetUsage(**fleet_usage(engine, at)),
    )
    if not recover:
        decisions = {h: Decision((), "recovery is off for this run") for h in decisions}
    for name in steps.hosts_being_deployed([r.host for r in reports if not r.healthy]):
        decisions[name] = Decision((), "a deploy is running on this host; not judged", hold=True)

    by_name = {r.name: r for r in records}
    # a just-started browser gets the time a recovery step would, then a decision of its own
    jobs = [
        HealJob(by_name[r.host], r, decisions[r.host], histories[r.host], state)
        for r in reports
        if decisions[r.host].steps
        or (recover and r.status == Verdict.STARTING and not decisions[r.host].hold)
    ]
    healed = dict(zip([j.before.host for j in jobs], steps.heal_hosts(jobs), strict=True))
    results: list[HealResult] = []
    for report in reports:
        result = healed.get(report.host)
        if result is None:
            results.append((report, report, [], decisions[report.host]))
        elif isinstance(result, Exception):  # this host's recovery failed, not the run
            log.error("%s: the recovery task failed: %s", report.host, result)
            results.append(
                (report, report, [], Decision((), f"the recovery task failed: {result}"[:500]))
            )
        else:
            results.append(result)

    fleet_level = part is None and not named
    outcomes, fleet_alerts, errors = steps.record(
        results, policy, state, at, fleet.name, fleet.schedules.health_seconds, fleet_level
    )
    for error in errors:
        log.error(error)
    if errors and not outcomes:
        raise RuntimeError(f"no host's check could be recorded: {errors[0]}")
    for o in outcomes:
        if o.incident_status == "recovered":
            log.info(
                "%s: recovered in %.1fs by %s",
                o.host,
                o.recovery_seconds or 0,
                ", ".join(o.actions) or "the runner",
            )
        elif o.status not in (Verdict.GOOD, Verdict.STARTING):
            log.info("%s: %s — %s; %s", o.host, o.status, o.reason, o.decision)
    return SweepResult(outcomes, fleet_alerts + [a for o in outcomes for a in o.alerts], state)
