"""Provision: plan the fleet's hosts, then, with approval, create the missing ones.

The plan (what, where, monthly cost, free tier, the network's rules) is printed, stored in
`provision_plans` and published as an artifact. Nothing is created unless `approve` is true.
Each host is recorded as `creating` before its create call, so a run that fails midway leaves a
record a rerun completes; the providers' creates are idempotent (retry tokens, request ids,
deterministic names)."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, runtime
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.task_runners import ThreadPoolTaskRunner

from gradientlab.plan import fleet_warnings, plan_rows, record_applied, store_plan
from gradientlab.providers.base import HostState
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
    fleet_path: str = "fleet.yaml", hosts: list[str] | None = None, approve: bool = False
) -> dict[str, Any]:
    logger = get_run_logger()
    fleet = fleet_from(fleet_path)
    names = hosts or [h.name for h in fleet.hosts]
    planned = [plan_host(fleet, n) for n in names]
    warnings = fleet_warnings(fleet, planned)
    rows = plan_rows(planned)
    plan_id = store_plan(
        engine(),
        fleet,
        planned,
        warnings,
        approve,
        str(runtime.flow_run.id) if runtime.flow_run.id else None,
    )
    create_table_artifact(
        key="provision-plan", table=rows, description=f"Plan {plan_id}: what provision creates"
    )
    total = sum(p.monthly_cost_usd for p in planned if p.action == "create")
    create_markdown_artifact(
        key="provision-warnings",
        markdown="\n".join(
            [f"### Plan {plan_id}: {len(planned)} hosts, about ${total:.2f}/month new cost", ""]
            + [f"- {w}" for w in warnings + [f"{p.name}: {w}" for p in planned for w in p.warnings]]
        ),
    )
    for row in rows:
        logger.info(
            "plan: %(host)s on %(provider)s (%(region)s): %(action)s, "
            "$%(monthly_cost_usd)s/month, free tier: %(free_tier)s",
            row,
        )
    for w in warnings:
        logger.warning(w)
    for p in planned:
        for w in p.warnings:
            logger.warning("%s: %s", p.name, w)
    if not approve:
        logger.info("plan %s stored; run again with approve=true to apply it", plan_id)
        return {"plan_id": plan_id, "applied": False, "plan": rows}

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
            + ". Their rows stay `creating`; rerun provision to complete them."
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
