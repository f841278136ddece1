"""Fleet state in Postgres: hosts, nodes, status samples, incidents and recovery actions."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, text

from gradientlab.providers.base import HostRecord
from gradientlab.rules import ObservedIp


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
    browser: str | None = None,
    browser_source: str | None = None,
    host_os: str | None = None,
) -> None:
    with engine.begin() as conn:
        hid = host_id(conn, host)
        conn.execute(
            text(
                """
                INSERT INTO nodes (host_id, extension_id, extension_version, runner_version,
                                   browser, browser_source, host_os, deployed_at)
                VALUES (:h, :eid, :ev, :rv, :b, :bs, :os, now())
                ON CONFLICT (host_id) DO UPDATE SET
                    extension_id = COALESCE(EXCLUDED.extension_id, nodes.extension_id),
                    extension_version = COALESCE(EXCLUDED.extension_version,
                                                 nodes.extension_version),
                    runner_version = COALESCE(EXCLUDED.runner_version, nodes.runner_version),
                    browser = COALESCE(EXCLUDED.browser, nodes.browser),
                    browser_source = COALESCE(EXCLUDED.browser_source, nodes.browser_source),
                    host_os = COALESCE(EXCLUDED.host_os, nodes.host_os),
                    deployed_at = now(), updated_at = now()
                """
            ),
            {
                "h": hid,
                "eid": extension_id,
                "ev": extension_version,
                "rv": runner_version,
                "b": browser,
                "bs": browser_source,
                "os": host_os,
            },
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


SAMPLE_COLUMNS = (
    "sampled_at", "status", "reason", "decision", "reachable", "runner_alive", "browser_alive",
    "logged_in", "popup_status", "network_connect", "banned", "banned_reason", "ip",
    "taps_today", "uptime_today", "pss_kib", "load1", "mem_total_kib", "mem_available_kib",
    "disk_total_kib", "disk_free_kib", "runner_pss_kib", "browser_pss_kib", "clock_offset_s",
    "health_period_s",
)  # fmt: skip


def insert_sample(conn: Connection, hid: int, sample: dict[str, Any]) -> None:
    columns = ", ".join(SAMPLE_COLUMNS)
    values = ", ".join(f":{c}" for c in SAMPLE_COLUMNS)
    conn.execute(
        text(
            f"INSERT INTO node_status_samples (host_id, {columns}, detail)"
            f" VALUES (:host_id, {values}, CAST(:detail AS jsonb))"
        ),
        {
            **{c: sample.get(c) for c in SAMPLE_COLUMNS},
            "host_id": hid,
            "detail": json.dumps(sample.get("detail", {})),
        },
    )


def current_incident(conn: Connection, hid: int) -> dict[str, Any] | None:
    """The host's open incident; for a quarantined host, the one its quarantine ended."""
    row = (
        conn.execute(
            text(
                "SELECT i.*, h.quarantined_at IS NOT NULL AS host_quarantined"
                " FROM incidents i JOIN hosts h ON h.id = i.host_id"
                " WHERE i.host_id = :h AND (i.status = 'open'"
                "  OR (h.quarantined_at IS NOT NULL AND i.status = 'failed'))"
                " ORDER BY (i.status = 'open') DESC, i.detected_at DESC LIMIT 1"
            ),
            {"h": hid},
        )
        .mappings()
        .first()
    )
    return dict(row) if row else None


def create_incident(
    conn: Connection, hid: int | None, kind: str, detected_at: datetime, detail: str
) -> int:
    row = conn.execute(
        text(
            "INSERT INTO incidents (host_id, kind, last_kind, detected_at, detail)"
            " VALUES (:h, :k, :k, :t, :d) RETURNING id"
        ),
        {"h": hid, "k": kind, "t": detected_at, "d": detail},
    ).one()
    return int(row.id)


def continue_incident(conn: Connection, incident_id: int, kind: str) -> int:
    """One more sweep saw it; returns how many have."""
    row = conn.execute(
        text(
            "UPDATE incidents SET sweeps = sweeps + 1, last_kind = :k WHERE id = :i"
            " RETURNING sweeps"
        ),
        {"i": incident_id, "k": kind},
    ).one()
    return int(row.sweeps)


def confirm_incident(conn: Connection, incident_id: int, at: datetime) -> None:
    conn.execute(
        text("UPDATE incidents SET confirmed_at = COALESCE(confirmed_at, :t) WHERE id = :i"),
        {"t": at, "i": incident_id},
    )


def add_alert(conn: Connection, incident_id: int, alert: str, at: datetime) -> bool:
    """Note that `alert` was sent for this incident; False when it already had been."""
    row = conn.execute(
        text(
            "UPDATE incidents SET alerts = array_append(alerts, CAST(:a AS text)),"
            " alerted_at = COALESCE(alerted_at, :t)"
            " WHERE id = :i AND NOT (CAST(:a AS text) = ANY(alerts)) RETURNING id"
        ),
        {"a": alert, "i": incident_id, "t": at},
    ).first()
    return row is not None


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


def open_fleet_incident(conn: Connection, kind: str) -> dict[str, Any] | None:
    row = (
        conn.execute(
            text("SELECT * FROM incidents WHERE host_id IS NULL AND kind = :k AND status = 'open'"),
            {"k": kind},
        )
        .mappings()
        .first()
    )
    return dict(row) if row else None


def quarantine_host(conn: Connection, hid: int, at: datetime, reason: str) -> bool:
    row = conn.execute(
        text(
            "UPDATE hosts SET quarantined_at = :t, quarantine_reason = :r"
            " WHERE id = :h AND quarantined_at IS NULL RETURNING id"
        ),
        {"t": at, "r": reason, "h": hid},
    ).first()
    return row is not None


def end_quarantine(conn: Connection, hid: int, at: datetime) -> None:
    """Recovery budgets count again from `at` (a person released it, or it came back Good)."""
    conn.execute(
        text(
            "UPDATE hosts SET quarantined_at = NULL, quarantine_reason = NULL, released_at = :t"
            " WHERE id = :h AND quarantined_at IS NOT NULL"
        ),
        {"t": at, "h": hid},
    )


def release_host(engine: Engine, name: str, at: datetime, by: str | None = None) -> dict[str, Any]:
    """A person (`by`: who, as the run or the command recorded it) hands a quarantined host
    back to automatic recovery, with fresh budgets."""
    with engine.begin() as conn:
        hid = host_id(conn, name)
        row = (
            conn.execute(
                text("SELECT quarantined_at, quarantine_reason FROM hosts WHERE id = :h"),
                {"h": hid},
            )
            .mappings()
            .one()
        )
        conn.execute(
            text(
                "UPDATE hosts SET quarantined_at = NULL, quarantine_reason = NULL,"
                " released_at = :t, released_by = :by WHERE id = :h"
            ),
            {"t": at, "h": hid, "by": by},
        )
        # its incident goes on (open) until the host is Good again
        conn.execute(
            text(
                "UPDATE incidents SET status = 'open' WHERE id = ("
                " SELECT id FROM incidents WHERE host_id = :h AND status = 'failed'"
                " ORDER BY detected_at DESC LIMIT 1)"
                " AND NOT EXISTS (SELECT 1 FROM incidents WHERE host_id = :h AND status = 'open')"
            ),
            {"h": hid},
        )
    return dict(row)


def histories(
    engine: Engine, names: list[str], now: datetime, window: timedelta = timedelta(hours=1)
) -> dict[str, dict[str, Any]]:
    """Per host: its current incident, its quarantine, and the recovery steps since `now -
    window` (and since it was last released), oldest first. `now` is the sweep's own clock."""
    out: dict[str, dict[str, Any]] = {
        n: {"incident": None, "actions": [], "quarantined_at": None, "quarantine_reason": None}
        for n in names
    }
    with engine.connect() as conn:
        hosts = conn.execute(
            text(
                "SELECT id, name, quarantined_at, quarantine_reason FROM hosts WHERE name = ANY(:n)"
            ),
            {"n": names},
        ).mappings()
        ids: dict[int, str] = {}
        for h in hosts:
            ids[h["id"]] = h["name"]
            out[h["name"]].update(
                quarantined_at=h["quarantined_at"], quarantine_reason=h["quarantine_reason"]
            )
        for inc in conn.execute(
            text(
                "SELECT DISTINCT ON (i.host_id) i.* FROM incidents i JOIN hosts h"
                " ON h.id = i.host_id WHERE i.host_id = ANY(:ids) AND (i.status = 'open'"
                "  OR (h.quarantined_at IS NOT NULL AND i.status = 'failed'))"
                " ORDER BY i.host_id, (i.status = 'open') DESC, i.detected_at DESC"
            ),
            {"ids": list(ids)},
        ).mappings():
            out[ids[inc["host_id"]]]["incident"] = dict(inc)
        for a in conn.execute(
            text(
                "SELECT i.host_id, a.step, a.started_at, a.ok FROM recovery_actions a"
                " JOIN incidents i ON i.id = a.incident_id JOIN hosts h ON h.id = i.host_id"
                " WHERE i.host_id = ANY(:ids) AND a.started_at > :since AND a.started_at <= :now"
                " AND (h.released_at IS NULL OR a.started_at > h.released_at)"
                " ORDER BY a.started_at"
            ),
            {"ids": list(ids), "since": now - window, "now": now},
        ).mappings():
            out[ids[a["host_id"]]]["actions"].append(dict(a))
    return out


def set_event_cursor(conn: Connection, hid: int, cursor: int, log_id: str | None = None) -> None:
    """Advance the cursor; a new runner log (another `log_id`) starts it again."""
    conn.execute(
        text(
            "INSERT INTO nodes (host_id, event_cursor, event_log_id) VALUES (:h, :c, :l)"
            " ON CONFLICT (host_id) DO UPDATE SET event_cursor = EXCLUDED.event_cursor,"
            " event_log_id = COALESCE(EXCLUDED.event_log_id, nodes.event_log_id)"
            " WHERE nodes.event_cursor < EXCLUDED.event_cursor"
            " OR nodes.event_log_id IS DISTINCT FROM COALESCE(EXCLUDED.event_log_id,"
            "  nodes.event_log_id)"
        ),
        {"h": hid, "c": cursor, "l": log_id},
    )


def event_positions(engine: Engine) -> dict[str, tuple[int, str | None]]:
    """(cursor, runner log id) per host."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT h.name, n.event_cursor, n.event_log_id FROM nodes n"
                " JOIN hosts h ON h.id = n.host_id"
            )
        )
        return {r.name: (int(r.event_cursor), r.event_log_id) for r in rows}


def client_ids(engine: Engine) -> dict[str, str]:
    """The network's id of each host's node, as the last health check read it."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT h.name, n.client_id FROM nodes n JOIN hosts h ON h.id = n.host_id"
                " WHERE n.client_id IS NOT NULL"
            )
        )
        return {r.name: r.client_id for r in rows}


def node_client_ids(engine: Engine) -> list[str]:
    """Every node's network id the database knows, the fleet's and unmanaged ones, sorted."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT client_id FROM nodes WHERE client_id IS NOT NULL"))
        return sorted(r.client_id for r in rows)


def deployed_host_keys(engine: Engine) -> dict[str, str]:
    """The pinned host key of every live host that has a node deployed on it."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT h.name, h.host_key FROM hosts h JOIN nodes n ON n.host_id = h.id"
                " WHERE h.state <> 'terminated' AND h.host_key IS NOT NULL"
                " AND n.deployed_at IS NOT NULL"
            )
        )
        return {r.name: r.host_key for r in rows}


def node_extension_versions(engine: Engine) -> dict[str, str | None]:
    """The extension version deploy installed on each live host's node (None: not deployed)."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT host, extension_version FROM v_fleet_status"))
        return {r.host: r.extension_version for r in rows}


def observed_ips(engine: Engine) -> list[ObservedIp]:
    """Each live host's public IP as the network last reported it and as STUN last mapped it."""
    with engine.connect() as conn:
        network = conn.execute(
            text("SELECT host, ip FROM v_fleet_status WHERE ip IS NOT NULL AND ip <> ''")
        ).all()
        stun = conn.execute(
            text(
                "SELECT t.host, t.mapped_address FROM v_tap_readiness_latest t"
                " JOIN hosts h ON h.name = t.host"
                " WHERE h.state <> 'terminated' AND t.mapped_address IS NOT NULL"
            )
        ).all()
    return [ObservedIp(r.host, r.ip, "network") for r in network] + [
        ObservedIp(r.host, r.mapped_address, "stun") for r in stun
    ]


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


def sweep_statuses(engine: Engine, hosts: list[str], since: datetime) -> dict[str, str]:
    """Each of these hosts' latest verdict recorded at or after `since` (what a sharded sweep's
    shards wrote), by host name; hosts with none are left out."""
    if not hosts:
        return {}
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT DISTINCT ON (h.id) h.name, s.status FROM hosts h"
                " JOIN node_status_samples s ON s.host_id = h.id"
                " WHERE h.name = ANY(:names) AND s.sampled_at >= :since"
                " ORDER BY h.id, s.sampled_at DESC, s.id DESC"
            ),
            {"names": hosts, "since": since},
        )
        return {r.name: r.status for r in rows}
