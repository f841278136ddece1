"""Provision: create (or find) every host the fleet file declares and record it."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from gradientlab.inventory import provider_for
from tasks.common import fleet_from
from tasks.hosts import create_host


@flow(name="provision", log_prints=True)
def provision(
    fleet_path: str = "fleet.yaml", hosts: list[str] | None = None, apply: bool = True
) -> list[dict[str, object]]:
    """Plan the hosts, then (with `apply`) create the missing ones. Rerunning converges."""
    logger = get_run_logger()
    fleet = fleet_from(fleet_path)
    names = hosts or [h.name for h in fleet.hosts]
    plan = [provider_for(fleet, fleet.host(n).provider).plan(fleet.host(n)) for n in names]
    rows = [
        {
            "host": p.name,
            "provider": p.provider,
            "region": p.region or "",
            "action": p.action,
            "monthly_cost_usd": p.monthly_cost_usd,
            "free_tier": p.free_tier,
            "warnings": "; ".join(p.warnings),
        }
        for p in plan
    ]
    create_table_artifact(key="provision-plan", table=rows, description="What provision does")
    for p in plan:
        for warning in p.warnings:
            logger.warning("%s: %s", p.name, warning)
    if not apply:
        return rows
    futures = [create_host.submit(fleet, name) for name in names]
    records = [f.result() for f in futures]
    for r in records:
        logger.info("%s: %s at %s:%s (host key pinned)", r.name, r.state, r.address, r.ssh_port)
    return [{"host": r.name, "state": r.state, "address": r.address} for r in records]
