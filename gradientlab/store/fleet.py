"""Fleet state in Postgres: hosts, nodes, status samples, incidents and recovery actions."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, text

from gradientlab.providers.base import HostRecord


def upsert_host(engine: Engine, record: HostRecord) -> int:
    with engine.begin() as conn:
        row = conn.execute(
            text(
                """
                INSERT INTO hosts (name, provider, region, address, ssh_port, ssh_user, host_key,
                                   state, provider_ref, hourly_cost_usd, meta)
                VALUES (:name, :provider, :region, :address, :ssh_port, :ssh_user, :host_key,
                        :state, :provider_ref, :hourly_cost_usd, CAST(:meta AS jsonb))
                ON CONFLICT (name) DO UPDATE SET
                    provider = EXCLUDED.provider, region = EXCLUDED.region,
                    address = EXCLUDED.address, ssh_port = EXCLUDED.ssh_port,
                    ssh_user = EXCLUDED.ssh_user, host_key = EXCLUDED.host_key,
                    state = EXCLUDED.state, provider_ref = EXCLUDED.provider_ref,
                    hourly_cost_usd = EXCLUDED.hourly_cost_usd, meta = EXCLUDED.meta,
                    updated_at = now()
                RETURNING id
                """
            ),
            {**asdict(record), "meta": json.dumps(record.meta)},
        ).one()
    return int(row.id)


def host_records(engine: Engine, names: list[str] | None = None) -> list[HostRecord]:
    sql = (
        "SELECT name, provider, address, ssh_port, ssh_user, host_key, state, provider_ref,"
        " region, hourly_cost_usd, meta FROM hosts"
        " WHERE state NOT IN ('terminated', 'creating') AND address IS NOT NULL"
    )
    params: dict[str, Any] = {}
    if names is not None:
        sql += " AND name = ANY(:names)"
        params["names"] = names
    with engine.connect() as conn:
        rows = conn.execute(text(sql + " ORDER BY name"), params).mappings().all()
    return [HostRecord(**{**dict(r), "hourly_cost_usd": float(r["hourly_cost_usd"])}) for r in rows]


def host_id(conn: Connection, name: str) -> int:
    row = conn.execute(text("SELECT id FROM hosts WHERE name = :n"), {"n": name}).first()
    if row is None:
        raise KeyError(f"host {name!r} is not in the database; run the provision flow first")
    return int(row.id)


def mark_host_state(engine: Engine, name: str, state: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE hosts SET state = :s, updated_at = now() WHERE name = :n"),
            {"s": state, "n": name},
        )


def record_deploy(
    engine: Engine,
    host: str,
    extension_id: str | None,
    extension_version: str | None,
    runner_version: str | None,
) -> None:
    with engine.begin() as conn:
        hid = host_id(conn, host)
        conn.execute(
            text(
                """
                INSERT INTO nodes (host_id, extension_id, extension_version, runner_version,
                                   deployed_at)
                VALUES (:h, :eid, :ev, :rv, now())
                ON CONFLICT (host_id) DO UPDATE SET
                    extension_id = COALESCE(EXCLUDED.extension_id, nodes.extension_id),
                    extension_version = COALESCE(EXCLUDED.extension_version,
                                                 nodes.extension_version),
                    runner_version = COALESCE(EXCLUDED.runner_version, nodes.runner_version),
                    deployed_at = now(), updated_at = now()
                """
            ),
            {"h": hid, "eid": extension_id, "ev": extension_version, "rv": runner_version},
        )


def set_client_id(conn: Connection, hid: int, client_id: str) -> None:
    """The node id the popup shows; a client id moving between hosts follows the newest host."""
    conn.execute(
        text("UPDATE nodes SET client_id = NULL WHERE client_id = :c AND host_id <> :h"),
        {"c": client_id, "h": hid},
    )
    conn.execute(
        text(
            """
            INSERT INTO nodes (host_id, client_id) VALUES (:h, :c)
            ON CONFLICT (host_id) DO UPDATE SET client_id = EXCLUDED.client_id, updated_at = now()
            WHERE nodes.client_id IS DISTINCT FROM EXCLUDED.client_id
            """
        ),
        {"h": hid, "c": client_id},
    )


def event_cursor(engine: Engine, host: str) -> int:
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT n.event_cursor FROM nodes n JOIN hosts h ON h.id = n.host_id"
                " WHERE h.name = :n"
            ),
            {"n": host},
        ).first()
    return int(row.event_cursor) if row else 0


def event_cursors(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT h.name, n.event_cursor FROM nodes n JOIN hosts h ON h.id = n.host_id")
        )
        return {r.name: int(r.event_cursor) for r in rows}


def insert_sample(conn: Connection, hid: int, sample: dict[str, Any]) -> None:
    conn.execute(
        text(
            """
            INSERT INTO node_status_samples (host_id, sampled_at, status, reachable, runner_alive,
                browser_alive, logged_in, popup_status, network_connect, banned, banned_reason,
                ip, taps_today, uptime_today, pss_kib, detail)
            VALUES (:host_id, :sampled_at, :status, :reachable, :runner_alive, :browser_alive,
                :logged_in, :popup_status, :network_connect, :banned, :banned_reason, :ip,
                :taps_today, :uptime_today, :pss_kib, CAST(:detail AS jsonb))
            """
        ),
        {**sample, "host_id": hid, "detail": json.dumps(sample.get("detail", {}))},
    )


def open_incident(conn: Connection, hid: int) -> dict[str, Any] | None:
    row = (
        conn.execute(
            text("SELECT * FROM incidents WHERE host_id = :h AND status = 'open'"), {"h": hid}
        )
        .mappings()
        .first()
    )
    return dict(row) if row else None


def create_incident(
    conn: Connection, hid: int, kind: str, detected_at: datetime, detail: str
) -> int:
    row = conn.execute(
        text(
            "INSERT INTO incidents (host_id, kind, detected_at, detail)"
            " VALUES (:h, :k, :t, :d) RETURNING id"
        ),
        {"h": hid, "k": kind, "t": detected_at, "d": detail},
    ).one()
    return int(row.id)


def add_action(
    conn: Connection,
    incident_id: int,
    step: str,
    started_at: datetime,
    finished_at: datetime | None,
    ok: bool | None,
    detail: str,
) -> None:
    conn.execute(
        text(
            "INSERT INTO recovery_actions (incident_id, step, started_at, finished_at, ok, detail)"
            " VALUES (:i, :s, :a, :b, :ok, :d)"
        ),
        {"i": incident_id, "s": step, "a": started_at, "b": finished_at, "ok": ok, "d": detail},
    )


def close_incident(conn: Connection, incident_id: int, status: str, at: datetime) -> None:
    conn.execute(
        text(
            "UPDATE incidents SET status = :s, recovered_at = CASE WHEN :s = 'recovered'"
            " THEN CAST(:t AS timestamptz) END WHERE id = :i"
        ),
        {"s": status, "t": at, "i": incident_id},
    )


def reopen_failed_incident(conn: Connection, hid: int, kind: str | None) -> dict[str, Any] | None:
    """The host's latest failed incident of the last day (of `kind`, or any but Unsupported),
    open again so that this check continues it."""
    row = (
        conn.execute(
            text(
                "UPDATE incidents SET status = 'open' WHERE id = ("
                " SELECT id FROM incidents WHERE host_id = :h AND status = 'failed'"
                " AND kind <> 'Unsupported' AND (CAST(:k AS text) IS NULL OR kind = :k)"
                " AND detected_at > now() - interval '1 day' ORDER BY detected_at DESC LIMIT 1)"
                " RETURNING *"
            ),
            {"h": hid, "k": kind},
        )
        .mappings()
        .first()
    )
    return dict(row) if row else None


def mark_alerted(conn: Connection, incident_id: int, at: datetime) -> None:
    conn.execute(
        text("UPDATE incidents SET alerted_at = COALESCE(alerted_at, :t) WHERE id = :i"),
        {"t": at, "i": incident_id},
    )


def set_event_cursor(conn: Connection, hid: int, cursor: int) -> None:
    conn.execute(
        text(
            "INSERT INTO nodes (host_id, event_cursor) VALUES (:h, :c) ON CONFLICT (host_id)"
            " DO UPDATE SET event_cursor = EXCLUDED.event_cursor"
            " WHERE nodes.event_cursor < EXCLUDED.event_cursor"
        ),
        {"h": hid, "c": cursor},
    )


def record_intent(engine: Engine, name: str, provider: str) -> None:
    """Before a host is created: a row a rerun will find and complete if this run fails."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO hosts (name, provider, state) VALUES (:n, :p, 'creating')"
                " ON CONFLICT (name) DO UPDATE SET state = 'creating', updated_at = now()"
                " WHERE hosts.state IN ('terminated', 'planned')"
            ),
            {"n": name, "p": provider},
        )
