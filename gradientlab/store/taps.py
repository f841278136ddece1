"""Tap readiness in Postgres: one row per host per poc_taps run (sql/006_tap_readiness.sql)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, text

from gradientlab.node.readiness import TapCheck

_INSERT = text(
    """
    INSERT INTO tap_readiness (
        host_id, checked_at, run_id, stun_server, udp_reachable, local_address, local_port,
        mapped_address, mapped_port, behind_nat, rfc5780, mapping, filtering, nat_type, rtt_ms,
        error, notes)
    SELECT h.id, :checked_at, :run_id, :stun_server, :udp_reachable, :local_address,
           :local_port, :mapped_address, :mapped_port, :behind_nat, :rfc5780, :mapping,
           :filtering, :nat_type, :rtt_ms, :error, :notes
    FROM hosts h WHERE h.name = :host
    ON CONFLICT (host_id, checked_at) DO NOTHING
    RETURNING host_id
    """
)


def _row(check: TapCheck, run_id: str | None) -> dict[str, Any]:
    r = check.result
    return {
        "host": check.host,
        "checked_at": check.checked_at,
        "run_id": run_id,
        "stun_server": check.stun_server,
        "udp_reachable": r.udp_reachable if r else None,
        "local_address": r.local_address if r else None,
        "local_port": r.local_port if r else None,
        "mapped_address": r.mapped_address if r else None,
        "mapped_port": r.mapped_port if r else None,
        "behind_nat": r.behind_nat if r else None,
        "rfc5780": bool(r and r.rfc5780),
        "mapping": r.mapping.value if r and r.mapping else None,
        "filtering": r.filtering.value if r and r.filtering else None,
        "nat_type": r.nat_type.value if r and r.nat_type else None,
        "rtt_ms": r.rtt_ms if r else None,
        "error": check.message,
        "notes": list(r.notes) if r else [],
    }


def record_tap_readiness(
    engine: Engine, checks: Sequence[TapCheck], run_id: str | None = None
) -> int:
    """Store every check in one transaction; returns how many rows are new.

    A check already stored (same host, same checked_at: a retried task) is not written again.
    A check for a host the database does not know raises KeyError naming it, and nothing of
    the batch is stored."""
    hosts = sorted({c.host for c in checks})
    with engine.begin() as conn:
        known = {
            row.name
            for row in conn.execute(
                text("SELECT name FROM hosts WHERE name = ANY(:names)"), {"names": hosts}
            )
        }
        missing = [h for h in hosts if h not in known]
        if missing:
            raise KeyError(
                f"tap readiness for hosts not in the database: {', '.join(missing)}; "
                "run the provision flow first"
            )
        inserted = 0
        for check in checks:
            inserted += len(conn.execute(_INSERT, _row(check, run_id)).all())
    return inserted


def latest_tap_readiness(engine: Engine) -> list[dict[str, Any]]:
    """Each host's latest test (the view the app reads), host by host."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM v_tap_readiness_latest ORDER BY host"))
        return [dict(r._mapping) for r in rows]
