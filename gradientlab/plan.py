"""The provision plan: what will be created where, what it costs, what the network's rules say;
and its approval.

A plan is stored with an id and a digest of its content (each host's action, cost and warnings,
the host's and its provider's settings, the fleet's warnings). Approval names the plan's id; the
approving run plans again and applies only when the fresh plan has the reviewed plan's digest,
the plan is recent, not superseded and not applied yet. So what is applied is what was reviewed."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

from gradientlab.config import Fleet
from gradientlab.providers.base import PlannedHost

PLAN_VALID_FOR = timedelta(hours=24)
"""A plan older than this is not applied: prices, capacity and the fleet move on; plan again."""

PLAN_LOCK_SPACE = 0x7070  # "pp": the advisory lock class of a plan being applied


class PlanRefused(ValueError):
    """An approval that applied nothing; the message says why and what to do."""


@dataclass(frozen=True)
class StoredPlan:
    id: int
    created_at: datetime
    hosts: tuple[str, ...]
    digest: str | None  # None: stored before plans had digests
    body: dict[str, Any]
    applied_at: datetime | None
    approved_flow_run_id: str | None
    result: Any


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


def plan_body(fleet: Fleet, planned: list[PlannedHost], warnings: list[str]) -> dict[str, Any]:
    """What a plan says, as stored: the planned hosts, the fleet's warnings, and the settings
    each host is created from (its own and its provider's; secrets are only references)."""
    specs = {}
    for p in planned:
        host = fleet.host(p.name)
        specs[p.name] = {
            "host": host.model_dump(mode="json"),
            "provider": fleet.providers[host.provider].model_dump(mode="json"),
        }
    body = {
        "fleet": fleet.name,
        "hosts": [asdict(p) for p in planned],
        "warnings": warnings,
        "specs": specs,
    }
    return dict(json.loads(json.dumps(body)))  # as it reads back from jsonb: lists, not tuples


def plan_digest(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def store_plan(
    engine: Engine, fleet_source: str, body: dict[str, Any], flow_run_id: str | None
) -> int:
    with engine.begin() as conn:
        row = conn.execute(
            text(
                "INSERT INTO provision_plans (fleet, flow_run_id, plan, digest, hosts)"
                " VALUES (:f, :r, CAST(:p AS jsonb), :d, CAST(:h AS text[])) RETURNING id"
            ),
            {
                "f": fleet_source,
                "r": flow_run_id,
                "p": json.dumps(body),
                "d": plan_digest(body),
                "h": [h["name"] for h in body["hosts"]],
            },
        ).one()
    return int(row.id)


def load_plan(engine: Engine, plan_id: int) -> StoredPlan:
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT id, created_at, hosts, digest, plan, applied_at, approved_flow_run_id,"
                " result FROM provision_plans WHERE id = :i"
            ),
            {"i": plan_id},
        ).first()
    if row is None:
        raise PlanRefused(
            f"there is no provision plan {plan_id}: run provision without approve_plan to make "
            "one, review it, then approve its id"
        )
    return StoredPlan(
        id=int(row.id),
        created_at=row.created_at,
        hosts=tuple(row.hosts or [h["name"] for h in row.plan.get("hosts", [])]),
        digest=row.digest,
        body=dict(row.plan),
        applied_at=row.applied_at,
        approved_flow_run_id=row.approved_flow_run_id,
        result=row.result,
    )


def approval_refusal(
    engine: Engine, plan: StoredPlan, fresh: dict[str, Any], now: datetime
) -> str | None:
    """Why `plan` must not be applied when planning again gives `fresh`; None when it may."""
    if plan.digest is None:
        return f"plan {plan.id} was stored before plans had digests, so it cannot be checked"
    age = now - plan.created_at
    if age > PLAN_VALID_FOR:
        return (
            f"plan {plan.id} is {age.total_seconds() / 3600:.0f} h old (made "
            f"{plan.created_at:%Y-%m-%d %H:%M} UTC); a plan is applied within "
            f"{PLAN_VALID_FOR.total_seconds() / 3600:.0f} h of its review"
        )
    with engine.connect() as conn:
        later = conn.execute(
            text(
                "SELECT id, applied_at FROM provision_plans WHERE id > :i"
                " AND applied_at IS NOT NULL AND hosts && CAST(:h AS text[])"
                " ORDER BY id DESC LIMIT 1"
            ),
            {"i": plan.id, "h": list(plan.hosts)},
        ).first()
    if later is not None:
        return (
            f"plan {plan.id} is superseded: plan {later.id}, made after it for some of the "
            f"same hosts, was applied at {later.applied_at:%Y-%m-%d %H:%M} UTC"
        )
    if plan_digest(fresh) != plan.digest:
        changes = differences(plan.body, fresh)
        return (
            f"the fleet's plan is no longer plan {plan.id} (digest {plan.digest[:12]}); since the "
            f"review: {'; '.join(changes) or 'its content changed'}"
        )
    return None


def differences(reviewed: dict[str, Any], fresh: dict[str, Any]) -> list[str]:
    """What changed between two plan bodies, in the operator's words."""
    out: list[str] = []
    if reviewed.get("fleet") != fresh.get("fleet"):
        out.append(f"the fleet's name {reviewed.get('fleet')!r} -> {fresh.get('fleet')!r}")
    old_hosts = {h["name"]: h for h in reviewed.get("hosts", [])}
    new_hosts = {h["name"]: h for h in fresh.get("hosts", [])}
    out += [f"{n}: no longer planned" for n in old_hosts if n not in new_hosts]
    out += [f"{n}: newly planned" for n in new_hosts if n not in old_hosts]
    old_specs, new_specs = reviewed.get("specs", {}), fresh.get("specs", {})
    for name in (n for n in old_hosts if n in new_hosts):
        for key, (a, b) in _changed(old_hosts[name], new_hosts[name]).items():
            out.append(f"{name}: {key} {a!r} -> {b!r}")
        for key, (a, b) in _changed(old_specs.get(name, {}), new_specs.get(name, {})).items():
            out.append(f"{name}: {key} {a!r} -> {b!r} in the fleet file")
    if reviewed.get("warnings") != fresh.get("warnings"):
        out.append("the fleet's warnings changed")
    return out


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flat(item, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def _changed(a: dict[str, Any], b: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    flat_a, flat_b = _flat(a), _flat(b)
    return {
        k: (flat_a.get(k), flat_b.get(k))
        for k in sorted(flat_a.keys() | flat_b.keys())
        if flat_a.get(k) != flat_b.get(k)
    }


@contextmanager
def plan_lock(engine: Engine, plan_id: int) -> Iterator[bool]:
    """Hold plan `plan_id`'s lock while it is applied (every worker sees it); yields False when
    another run holds it. The lock has a connection of its own, outside the engine's pool, and
    goes when the run ends or its process dies."""
    lock_engine = create_engine(engine.url, poolclass=NullPool)
    try:
        with lock_engine.connect() as conn:
            held = bool(
                conn.execute(
                    text("SELECT pg_try_advisory_lock(:s, :i)"),
                    {"s": PLAN_LOCK_SPACE, "i": plan_id},
                ).scalar_one()
            )
            conn.commit()
            try:
                yield held
            finally:
                if held:
                    conn.execute(
                        text("SELECT pg_advisory_unlock(:s, :i)"),
                        {"s": PLAN_LOCK_SPACE, "i": plan_id},
                    )
                    conn.commit()
    finally:
        lock_engine.dispose()


def mark_approved(engine: Engine, plan_id: int, flow_run_id: str | None) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE provision_plans SET approved = true, approved_at = now(),"
                " approved_flow_run_id = :r WHERE id = :i"
            ),
            {"i": plan_id, "r": flow_run_id},
        )


def record_applied(engine: Engine, plan_id: int, result: list[dict[str, Any]]) -> None:
    """The outcome of every host; the plan counts as applied only when every host was created
    (after a failure, approving it again retries while the fleet still plans the same)."""
    complete = all(r.get("state") != "failed" for r in result)
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE provision_plans SET result = CAST(:r AS jsonb),"
                " applied_at = CASE WHEN :c THEN now() END WHERE id = :i"
            ),
            {"i": plan_id, "r": json.dumps(result, default=str), "c": complete},
        )
