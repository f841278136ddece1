"""Recovery bookkeeping that must never be lost: the "started" row written before a host is
rebooted or re-provisioned, and what the whole fleet spent in the last hour."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, text

from gradientlab.store import fleet

# steps that touch the host itself (health.status.HOST_RUNGS' values)
HOST_STEPS = ("reboot_host", "reprovision")
LOGIN_STEP = "login"
# a step recorded as not run (a second signal withheld it) begins its detail with this
WITHHELD = "withheld: "
LOGIN_REFUSED = "LoginRefused"  # the account-wide incident: the account's password is refused


def start_action(engine: Engine, host: str, step: str, at: datetime, kind: str, detail: str) -> int:
    """Record that `step` starts now on `host`, in a transaction of its own, before it runs:
    a crash, a kill or a failed write afterwards can never let the budgets, the fleet's hourly
    cap or the quarantine miss it. The row goes on the host's open incident (one is opened
    with `kind` if there is none). Returns the row's id, for `finish_action`."""
    with engine.begin() as conn:
        hid = fleet.host_id(conn, host)
        incident = fleet.current_incident(conn, hid)
        if incident is None or incident["status"] != "open":
            iid = fleet.create_incident(conn, hid, kind, at, detail)
        else:
            iid = int(incident["id"])
        row = conn.execute(
            text(
                "INSERT INTO recovery_actions (incident_id, step, started_at, finished_at, ok,"
                " detail) VALUES (:i, :s, :a, NULL, NULL, 'started') RETURNING id"
            ),
            {"i": iid, "s": step, "a": at},
        ).one()
    return int(row.id)


def finish_action(conn: Any, action_id: int, finished_at: datetime, ok: bool, detail: str) -> bool:
    """Complete a started row; False when it is not there (then the caller inserts one)."""
    row = conn.execute(
        text(
            "UPDATE recovery_actions SET finished_at = :b, ok = :ok, detail = :d"
            " WHERE id = :id RETURNING id"
        ),
        {"b": finished_at, "ok": ok, "d": detail, "id": action_id},
    ).first()
    return row is not None


def fleet_usage(engine: Engine, at: datetime) -> dict[str, Any]:
    """The whole fleet's reboots and re-provisions (started ones included, withheld ones not)
    and logins in the hour before `at`, and the open account-wide login incident's reason."""
    with engine.connect() as conn:
        counts = conn.execute(
            text(
                "SELECT count(*) FILTER (WHERE step = ANY(:host_steps)) AS host_actions,"
                " count(*) FILTER (WHERE step = :login) AS logins"
                " FROM recovery_actions WHERE started_at > :since AND started_at <= :now"
                " AND NOT (ok IS FALSE AND detail LIKE :withheld)"
            ),
            {
                "host_steps": list(HOST_STEPS),
                "login": LOGIN_STEP,
                "since": at - timedelta(hours=1),
                "now": at,
                "withheld": WITHHELD + "%",
            },
        ).one()
        refused = fleet.open_fleet_incident(conn, LOGIN_REFUSED)
    return {
        "host_actions": int(counts.host_actions),
        "logins": int(counts.logins),
        "login_refused": None if refused is None else str(refused["detail"]),
    }
