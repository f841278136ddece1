"""Provision: plan the fleet's hosts; apply a plan an operator reviewed.

Run without approval, the flow plans (what, where, monthly cost, free tier, the network's rules),
stores the plan with an id and a digest in `provision_plans`, and publishes it as artifacts.
Nothing is created. Run with `approve_plan` set to that id (the Prefect UI's Custom run, or
`prefect deployment run provision/provision -p approve_plan=ID`), it plans again and applies
only when the fresh plan is the reviewed one (same digest), the plan is under a day old, not
superseded by a later applied plan and not applied yet; approving an applied plan again does
nothing. Otherwise it stores the current plan for review and fails, saying why: nothing is
created. `approve=true` plans and applies in one run, without a review: only for calls from
Python (the demo, scripts); a deployment run (the UI, the CLI, the app) refuses it.

Each host is recorded as `creating` before its create call, so a run that fails midway leaves a
record a rerun completes; the providers' creates are idempotent (retry tokens, request ids,
deterministic names)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger, runtime
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.task_runners import ThreadPoolTaskRunner

from gradientlab.config import Fleet
from gradientlab.plan import (
    PLAN_VALID_FOR,
    PlanRefused,
    StoredPlan,
    approval_refusal,
    fleet_warnings,
    load_plan,
    mark_approved,
    plan_body,
    plan_digest,
    plan_lock,
    plan_rows,
    record_applied,
    store_plan,
)
from gradientlab.providers.base import HostState, PlannedHost
from gradientlab.store.fleet import mark_host_state, record_intent
from tasks.common import engine, fleet_from
from tasks.hosts import create_host, plan_host, terminate_host

HOST_WORKERS = 8
"""Hosts created at once by one run (the `provider` tag's limit bounds all runs together)."""


@flow(
    name="provision",
    log_prints=True,
    task_runner=ThreadPoolTaskRunner(max_workers=HOST_WORKERS),  # type: ignore[arg-type]
)
def provision(
    fleet_path: str = "fleet.yaml",
    hosts: list[str] | None = None,
    approve_plan: int | None = None,
    approve: bool = False,
) -> dict[str, Any]:
    """Plan the hosts (all of the fleet's, or `hosts`); with `approve_plan` = a plan's id,
    apply exactly that reviewed plan."""
    logger = get_run_logger()
    fleet = fleet_from(fleet_path)
    run_id = str(runtime.flow_run.id) if runtime.flow_run.id else None
    if approve_plan is not None:
        return _apply_reviewed(fleet, hosts, approve_plan, run_id)

    names = hosts or [h.name for h in fleet.hosts]
    planned, body = _plan(fleet, names)
    plan_id = store_plan(engine(), fleet.source, body, run_id)
    _publish(plan_id, body, planned, "to review")
    if not approve:
        logger.info(
            "plan %s stored (digest %s); to apply exactly this plan, run provision with "
            "approve_plan=%s within %d h",
            plan_id,
            plan_digest(body)[:12],
            plan_id,
            PLAN_VALID_FOR.total_seconds() // 3600,
        )
        return {"plan_id": plan_id, "applied": False, "plan": plan_rows(planned)}
    if runtime.deployment.id:
        raise PlanRefused(
            f"approve=true does not apply from a deployment run: what is applied must be the "
            f"plan you reviewed. This run stored plan {plan_id} (digest "
            f"{plan_digest(body)[:12]}): read its artifact, then run provision with "
            f"approve_plan={plan_id}. Nothing was created."
        )
    logger.warning(
        "approve=true from Python: applying plan %s, made by this call, without a separate review",
        plan_id,
    )
    mark_approved(engine(), plan_id, run_id)
    return _apply(fleet, plan_id, names)


def _plan(fleet: Fleet, names: list[str]) -> tuple[list[PlannedHost], dict[str, Any]]:
    planned = [plan_host(fleet, n) for n in names]
    return planned, plan_body(fleet, planned, fleet_warnings(fleet, planned))


def _publish(plan_id: int, body: dict[str, Any], planned: list[PlannedHost], why: str) -> None:
    """The plan as artifacts and log lines: what it creates, what it costs, how to approve it."""
    logger = get_run_logger()
    rows = plan_rows(planned)
    digest = plan_digest(body)
    create_table_artifact(
        key="provision-plan",
        table=rows,
        description=f"Plan {plan_id} (digest {digest[:12]}), {why}: what provision creates",
    )
    total = sum(p.monthly_cost_usd for p in planned if p.action == "create")
    warnings: list[str] = body["warnings"]
    approval = (
        f"To apply exactly this plan, run the provision deployment with `approve_plan` = "
        f"**{plan_id}** within {PLAN_VALID_FOR.total_seconds() // 3600:.0f} h (UI: Run, "
        f"Custom run). It is applied only if planning again gives the same plan (digest "
        f"`{digest[:12]}`)."
    )
    create_markdown_artifact(
        key="provision-warnings",
        markdown="\n".join(
            [f"### Plan {plan_id}: {len(planned)} hosts, about ${total:.2f}/month new cost", ""]
            + [f"- {w}" for w in warnings + [f"{p.name}: {w}" for p in planned for w in p.warnings]]
            + ["", approval if why == "to review" else f"Plan {plan_id} is {why}."]
        ),
    )
    for row in rows:
        logger.info(
            "plan %(plan)s: %(host)s on %(provider)s (%(region)s): %(action)s, "
            "$%(monthly_cost_usd)s/month, free tier: %(free_tier)s",
            {**row, "plan": plan_id},
        )
    for w in warnings:
        logger.warning(w)
    for p in planned:
        for w in p.warnings:
            logger.warning("%s: %s", p.name, w)


def _apply_reviewed(
    fleet: Fleet, hosts: list[str] | None, plan_id: int, run_id: str | None
) -> dict[str, Any]:
    """Apply plan `plan_id` when planning again gives that plan; else store the current plan
    for review and refuse. An applied plan is not applied again."""
    logger = get_run_logger()
    reviewed = load_plan(engine(), plan_id)
    if reviewed.applied_at is not None:
        return _already_applied(reviewed)
    if hosts and sorted(hosts) != sorted(reviewed.hosts):
        raise PlanRefused(
            f"plan {plan_id} covers {', '.join(reviewed.hosts)}, not {', '.join(hosts)}: approve "
            "it without `hosts`, or plan those hosts and approve that plan. Nothing was created."
        )
    names = list(reviewed.hosts)
    planned, body = _plan(fleet, names)
    refusal = approval_refusal(engine(), reviewed, body, datetime.now(UTC))
    if refusal is not None:
        current = store_plan(engine(), fleet.source, body, run_id)
        _publish(current, body, planned, "to review")
        raise PlanRefused(
            f"plan {plan_id} was not applied and nothing was created: {refusal}. This run "
            f"stored the current plan as plan {current}: review it, then run provision with "
            f"approve_plan={current}."
        )
    with plan_lock(engine(), plan_id) as held:
        if not held:
            logger.info("plan %s is being applied by another run now; nothing to do", plan_id)
            return {"plan_id": plan_id, "applied": False, "busy": True}
        reviewed = load_plan(engine(), plan_id)
        if reviewed.applied_at is not None:  # applied while this run planned
            return _already_applied(reviewed)
        _publish(plan_id, body, planned, "approved: applying it")
        mark_approved(engine(), plan_id, run_id)
        return _apply(fleet, plan_id, names)


def _already_applied(plan: StoredPlan) -> dict[str, Any]:
    assert plan.applied_at is not None
    get_run_logger().info(
        "plan %s was already applied at %s (flow run %s); nothing to do",
        plan.id,
        f"{plan.applied_at:%Y-%m-%d %H:%M:%S} UTC",
        plan.approved_flow_run_id,
    )
    return {
        "plan_id": plan.id,
        "applied": False,
        "already_applied_at": plan.applied_at.isoformat(),
        "hosts": plan.result,
    }


def _apply(fleet: Fleet, plan_id: int, names: list[str]) -> dict[str, Any]:
    logger = get_run_logger()
    for name in names:
        record_intent(engine(), name, fleet.host(name).provider)
    futures = [create_host.submit(fleet, name) for name in names]
    results: list[dict[str, Any]] = []
    for name, future in zip(names, futures, strict=True):
        try:
            r = future.result()
            results.append({"host": r.name, "state": r.state, "address": r.address})
            logger.info("%s: %s at %s:%s (host key pinned)", r.name, r.state, r.address, r.ssh_port)
        except Exception as exc:  # noqa: BLE001 - report every host, then fail the run
            results.append({"host": name, "state": "failed", "error": str(exc)})
    record_applied(engine(), plan_id, results)
    failed = [r for r in results if r["state"] == "failed"]
    if failed:
        raise RuntimeError(
            "provision failed for "
            + "; ".join(f"{r['host']}: {r['error']}" for r in failed)
            + f". Their rows stay `creating`; plan {plan_id} is not marked applied: approve it"
            " again to complete them (or plan again if the fleet now plans otherwise)."
        )
    return {"plan_id": plan_id, "applied": True, "hosts": results}


@flow(name="terminate", log_prints=True)
def terminate(
    fleet_path: str = "fleet.yaml", hosts: list[str] | None = None, approve: bool = False
) -> list[str]:
    """Remove everything GradientLab created for these hosts, and only that."""
    logger = get_run_logger()
    fleet = fleet_from(fleet_path)
    if not hosts:
        raise ValueError("name the hosts to terminate; there is no terminate-all")
    if not approve:
        logger.warning("would terminate %s; run again with approve=true", ", ".join(hosts))
        return []
    for name in hosts:
        terminate_host(fleet, name)
        mark_host_state(engine(), name, HostState.TERMINATED)
    return hosts
