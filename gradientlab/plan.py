"""The provision plan: what will be created where, what it costs, what the network's rules say."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict
from typing import Any

from sqlalchemy import Engine, text

from gradientlab.config import Fleet
from gradientlab.providers.base import PlannedHost


def fleet_warnings(fleet: Fleet, planned: list[PlannedHost]) -> list[str]:
    """Warnings that need the whole fleet: shared addresses mean shared IPs and split rewards."""
    out = []
    by_address: dict[str, list[str]] = defaultdict(list)
    for host in fleet.hosts:
        if host.address:
            by_address[f"{host.address}:{host.port or 22}"].append(host.name)
    for address, names in by_address.items():
        if len(names) > 1:
            out.append(
                f"{', '.join(names)} are one machine ({address}): Gradient allows one Sentry Node "
                "per device; GradientLab deploys one node per host"
            )
    local = [p.name for p in planned if p.region == "loopback"]
    if len(local) > 1:
        out.append(
            f"{', '.join(local)} share one public IP: nodes behind one IP split their rewards"
        )
    return out


def plan_rows(planned: list[PlannedHost]) -> list[dict[str, Any]]:
    return [
        {
            "host": p.name,
            "provider": p.provider,
            "region": p.region or "",
            "action": p.action,
            "monthly_cost_usd": round(p.monthly_cost_usd, 2),
            "free_tier": p.free_tier,
            "warnings": "; ".join(p.warnings),
        }
        for p in planned
    ]


def store_plan(
    engine: Engine,
    fleet: Fleet,
    planned: list[PlannedHost],
    warnings: list[str],
    approved: bool,
    flow_run_id: str | None,
) -> int:
    with engine.begin() as conn:
        row = conn.execute(
            text(
                "INSERT INTO provision_plans (fleet, flow_run_id, plan, approved)"
                " VALUES (:f, :r, CAST(:p AS jsonb), :a) RETURNING id"
            ),
            {
                "f": fleet.source,
                "r": flow_run_id,
                "a": approved,
                "p": json.dumps({"hosts": [asdict(p) for p in planned], "warnings": warnings}),
            },
        ).one()
    return int(row.id)


def record_applied(engine: Engine, plan_id: int, result: list[dict[str, Any]]) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE provision_plans SET applied_at = now(), result = CAST(:r AS jsonb)"
                " WHERE id = :i"
            ),
            {"i": plan_id, "r": json.dumps(result, default=str)},
        )
