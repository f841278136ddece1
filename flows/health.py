"""Health: probe every host, judge it, decide recoveries that cannot storm, run them, record,
alert. One host's trouble is that host's verdict; the run itself does not fail for it."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.events import emit_event

from gradientlab.health import (
    Alert,
    Decision,
    HealthOutcome,
    Verdict,
    apply_brake,
    decide,
    network_state,
)
from gradientlab.health.judge import NetworkNode, with_network_reason
from gradientlab.health.report import utcnow
from gradientlab.store.fleet import client_ids, host_records
from tasks.common import engine, fleet_from
from tasks.hosts import (
    HealResult,
    heal_host,
    hosts_being_deployed,
    load_histories,
    record_health,
    shared_ip_warnings,
    sweep_fleet,
)
from tasks.network import network_lookup, network_reasons, network_view


def send(alert: Alert) -> None:
    kind = "fleet" if alert.fleet_wide else "host"
    emit_event(
        event=alert.event,
        resource={
            "prefect.resource.id": f"gradientlab.{kind}.{alert.subject}",
            "prefect.resource.name": alert.subject,
        },
        payload=alert.payload,
    )


@flow(name="health", log_prints=True)
def health(fleet_path: str = "fleet.yaml", recover: bool = True) -> list[HealthOutcome]:
    logger = get_run_logger()
    fleet = fleet_from(fleet_path)
    policy = fleet.health
    records = host_records(engine())

    listed, api_error = network_view(fleet)
    network: dict[str, NetworkNode] = {item.name: item for item in listed}
    if api_error:
        logger.warning(
            "the network's node list is unavailable (%s); checking hosts only", api_error
        )
    else:
        # the list covers active nodes only: ask the network about each of ours it left out
        unlisted = sorted(set(client_ids(engine()).values()) - set(network))
        if unlisted:
            found, lookup_error = network_lookup(fleet, unlisted)
            network.update(found)
            if lookup_error:
                logger.warning("the network's answer for unlisted nodes failed: %s", lookup_error)
    reports = sweep_fleet(records, network, policy)
    unexplained = [
        r.client_id
        for r in reports
        if r.status == Verdict.UNSUPPORTED and not r.banned_reason and r.client_id
    ]
    if unexplained and not api_error:
        reasons = network_reasons(fleet, unexplained)
        for r in reports:
            if r.client_id in reasons:
                with_network_reason(r, reasons[r.client_id])
    at = max((r.checked_at for r in reports), default=utcnow())
    state = network_state(reports, api_error, policy)
    if state.down:
        logger.warning("the network is down or degraded: %s", state.reason)

    histories = load_histories(records, at)
    decisions = apply_brake(
        {r.host: decide(r, histories[r.host], state, policy) for r in reports},
        len(records),
        policy,
    )
    if not recover:
        decisions = {h: Decision((), "recovery is off for this run") for h in decisions}
    for name in hosts_being_deployed([r.host for r in reports if not r.healthy]):
        decisions[name] = Decision((), "a deploy is running on this host; not judged", hold=True)

    by_name = {r.name: r for r in records}
    # a just-started browser gets the time a recovery step would, then a decision of its own
    work = [
        r
        for r in reports
        if decisions[r.host].steps
        or (recover and r.status == Verdict.STARTING and not decisions[r.host].hold)
    ]
    futures = {
        r.host: heal_host.submit(
            fleet, by_name[r.host], r, decisions[r.host], histories[r.host], state
        )
        for r in work
    }
    results: list[HealResult] = []
    for report in reports:
        future = futures.get(report.host)
        if future is None:
            results.append((report, report, [], decisions[report.host]))
            continue
        try:
            results.append(future.result())
        except Exception as exc:  # noqa: BLE001 - this host's recovery failed, not the run
            logger.error("%s: the recovery task failed: %s", report.host, exc)
            results.append(
                (report, report, [], Decision((), f"the recovery task failed: {exc}"[:500]))
            )

    outcomes, fleet_alerts, errors = record_health(
        results, policy, state, at, fleet.name, fleet.schedules.health_seconds
    )
    for error in errors:
        logger.error(error)
    if errors and not outcomes:
        raise RuntimeError(f"no host's check could be recorded: {errors[0]}")

    for alert in fleet_alerts + [a for o in outcomes for a in o.alerts]:
        logger.warning("alert %s for %s: %s", alert.event, alert.subject, alert.payload)
        send(alert)
    for o in outcomes:
        if o.incident_status == "recovered":
            logger.info(
                "%s: recovered in %.1fs by %s",
                o.host,
                o.recovery_seconds or 0,
                ", ".join(o.actions) or "the runner",
            )
        elif o.status not in (Verdict.GOOD, Verdict.STARTING):
            logger.info("%s: %s — %s; %s", o.host, o.status, o.reason, o.decision)
    shared = shared_ip_warnings()
    for warning in shared:
        logger.warning(warning)
    create_table_artifact(
        key="fleet-health",
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
        description="Fleet health after the last check"
        + (f" — network down or degraded: {state.reason}" if state.down else "")
        + "".join(f" — {w}" for w in shared),
    )
    return outcomes
