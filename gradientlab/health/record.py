"""Recording a sweep: samples, incidents with their recovery steps, quarantine, and the alerts
each of those calls for (returned, for the flow to send; each sent at most once)."""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError, OperationalError

from gradientlab.config import HealthSettings
from gradientlab.health.act import ActionResult
from gradientlab.health.decide import (
    CUT_OFF_VERDICTS,
    Decision,
    History,
    PastAction,
    fault_confirmed,
)
from gradientlab.health.events import AlertEvent, IncidentStatus
from gradientlab.health.judge import NetworkState, SignInRefusal
from gradientlab.health.report import HealthReport, event_id, parse_time
from gradientlab.health.status import (
    CONTROL_VERDICTS,
    HEALTHY,
    NETWORK_VERDICTS,
    Kind,
    Verdict,
    about,
)
from gradientlab.store import fleet, recovery
from gradientlab.store.recovery import LOGIN_REFUSED, LOGIN_STEP

NETWORK_DOWN = "NetworkDown"
FLEET_UNREACHABLE = "FleetUnreachable"  # the control plane cannot reach its fleet


@dataclass(frozen=True)
class Alert:
    event: str  # gradientlab.incident.opened, ...
    subject: str  # a host name, or the fleet's name for fleet-wide alerts
    fleet_wide: bool
    payload: dict[str, Any]


@dataclass(frozen=True)
class HealthOutcome:
    host: str
    status: str
    reason: str
    decision: str
    incident_id: int | None
    incident_status: str | None  # open, recovered, quarantined
    actions: tuple[str, ...]
    recovery_seconds: float | None
    alerts: tuple[Alert, ...] = field(default=())


def runner_recoveries(events: list[dict[str, Any]]) -> list[tuple[datetime, datetime, str]]:
    """Browser exits the runner already repaired: (first exit, restart that worked, detail).

    A relaunch that failed logs another exit; the outage still began at the first one."""
    out = []
    exited: dict[str, Any] | None = None
    for event in events:
        if event.get("kind") == "browser_exited" and exited is None:
            exited = event
        elif event.get("kind") == "browser_started" and exited is not None:
            a, b = parse_time(exited.get("at")), parse_time(event.get("at"))
            if a and b:
                out.append((a, b, str(exited.get("detail", ""))))
            exited = None
    return out


def _merged(*lists: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events of several probes of one sweep, each once, in the log's order."""
    by_id: dict[Any, dict[str, Any]] = {}
    for events in lists:
        for event in events:
            by_id.setdefault(event.get("id"), event)
    return sorted(by_id.values(), key=event_id)


def settled_cursor(events: list[dict[str, Any]]) -> int:
    """The last event id that can be consumed: an exit not yet followed by a restart stays
    unread, so the next probe pairs it with its restart."""
    cursor = 0
    pending = False
    for event in events:
        if event.get("kind") == "browser_exited":
            pending = True
        elif event.get("kind") == "browser_started":
            pending = False
        if not pending:
            try:
                cursor = int(event.get("id", 0))
            except (TypeError, ValueError):
                continue
    return cursor


T = TypeVar("T")


def with_retries(
    engine: Engine, work: Callable[[Connection], T], attempts: int = 4, delay: float = 0.5
) -> T:
    """One transaction, retried when the database blips (a dropped connection, a lock held
    too long); the transaction either lands whole or not at all."""
    for attempt in range(1, attempts + 1):
        try:
            with engine.begin() as conn:
                conn.execute(
                    text("SET LOCAL lock_timeout = '5s'; SET LOCAL statement_timeout = '30s'")
                )
                return work(conn)
        except (OperationalError, DBAPIError) as exc:
            retry = isinstance(exc, OperationalError) or exc.connection_invalidated
            if not retry or attempt == attempts:
                raise
            time.sleep(delay * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


def _host_alert(event: str, host: str, **payload: Any) -> Alert:
    return Alert(event, host, False, payload)


def record_host(
    conn: Connection,
    before: HealthReport,
    after: HealthReport,
    actions: list[ActionResult],
    decision: Decision,
    policy: HealthSettings,
    network: NetworkState,
    fleet_name: str,
    health_period_s: float | None = None,
) -> HealthOutcome:
    """Store one host's sample and incident: one current incident per host, actions appended
    to it; an "opened" alert once it is confirmed, "resolved" when it is Good again.
    `health_period_s` (the schedule this check ran under) tells readers when it goes stale."""
    hid = fleet.host_id(conn, after.host)
    client_id = after.client_id or before.client_id
    if client_id:
        fleet.set_client_id(conn, hid, client_id)
    sample = after.sample()
    sample["decision"] = decision.summary
    sample["health_period_s"] = health_period_s
    cut_off = network.cut_off and before.status in CUT_OFF_VERDICTS
    control = before.status in CONTROL_VERDICTS  # GradientLab's own side, not the host's
    suppressed = (
        (network.down and before.status == Verdict.DISCONNECTED)
        or decision.hold
        or cut_off
        or control
    )
    if decision.hold:
        sample["reason"] = f"{after.reason} — {decision.reason}"
    elif cut_off:
        sample["reason"] = f"{after.reason} — {network.cut_off_reason}"
    elif control:
        pass  # the reason says it all
    elif suppressed:
        sample["reason"] = f"{after.reason} — the network is down or degraded ({network.reason})"
    fleet.insert_sample(conn, hid, sample)

    alerts: list[Alert] = []
    incident = fleet.current_incident(conn, hid)
    created = False

    def new_incident(kind: str, at: datetime, detail: str) -> dict[str, Any]:
        nonlocal created
        created = True
        iid = fleet.create_incident(conn, hid, kind, at, detail)
        return {"id": iid, "kind": kind, "detected_at": at, "sweeps": 1, "alerts": [],
                "host_quarantined": False}  # fmt: skip

    # what the runner logged, up to the last probe of this sweep (a recovery reprobes)
    new_log = bool(before.events_id and after.events_id and before.events_id != after.events_id)
    events = after.events if new_log else _merged(before.events, after.events)
    repaired = runner_recoveries(before.events) if new_log else []
    # browser deaths the runner repaired between checks are incidents too
    for exited_at, restarted_at, detail in repaired + runner_recoveries(events):
        if incident is None:
            incident = new_incident("BrowserDown", exited_at, f"browser exited ({detail})")
        fleet.add_action(
            conn,
            incident["id"],
            "runner_restarted_browser",
            exited_at,
            restarted_at,
            True,
            "the runner started a new browser",
        )

    verdict = Verdict(before.status)
    if verdict not in HEALTHY and not suppressed:
        if incident is None:
            incident = new_incident(verdict, before.checked_at, before.reason or str(verdict))
            sweeps = 1
        elif created or incident["detected_at"] >= before.checked_at:
            sweeps = 1  # opened in this sweep (a host step's "started" row opens one)
        else:
            sweeps = fleet.continue_incident(conn, incident["id"], verdict)
        iid = incident["id"]
        kind = about(verdict).kind
        confirmed = fault_confirmed(sweeps, incident["detected_at"], before.checked_at, policy)
        if confirmed:
            fleet.confirm_incident(conn, iid, before.checked_at)
            if kind in (Kind.NODE, Kind.HOST, Kind.ACCESS, Kind.EXTENSION) and fleet.add_alert(
                conn, iid, "opened", before.checked_at
            ):
                alerts.append(
                    _host_alert(
                        AlertEvent.INCIDENT_OPENED,
                        after.host,
                        kind=str(verdict),
                        reason=before.reason,
                        detected_at=incident["detected_at"].isoformat(),
                        fleet=fleet_name,
                    )
                )
        if verdict == Verdict.HOST_KEY_CHANGED and fleet.add_alert(
            conn, iid, "security", before.checked_at
        ):
            alerts.append(
                _host_alert(
                    AlertEvent.HOST_KEY_CHANGED,
                    after.host,
                    address=before.facts.get("address"),
                    pinned_fingerprint=before.facts.get("pinned_fingerprint"),
                    offered_fingerprint=before.facts.get("offered_fingerprint"),
                    reason=before.reason,
                )
            )
        # the network's verdict is alerted with its reason: wait a sweep for one if needed
        if (
            verdict in NETWORK_VERDICTS
            and (before.banned_reason or confirmed)
            and fleet.add_alert(conn, iid, "unsupported", before.checked_at)
        ):
            alerts.append(
                _host_alert(
                    AlertEvent.NODE_UNSUPPORTED,
                    after.host,
                    status=str(verdict),
                    reason=before.banned_reason or before.reason,
                )
            )

    for action in actions:
        if action.row_id is not None and recovery.finish_action(
            conn, action.row_id, action.finished_at, action.ok, action.detail
        ):
            continue  # its "started" row, completed
        if incident is None:  # a step on a host whose incident this sweep did not keep open
            incident = new_incident(verdict, before.checked_at, before.reason or str(verdict))
        fleet.add_action(
            conn,
            incident["id"],
            action.step,
            action.started_at,
            action.finished_at,
            action.ok,
            action.detail,
        )

    status: str | None = None
    recovery_seconds = None
    if incident is not None and after.status == Verdict.GOOD:
        detected_at: datetime = incident["detected_at"]
        recovered_at = after.status_updated_at or after.checked_at
        if recovered_at < detected_at:
            recovered_at = after.checked_at
        fleet.close_incident(conn, incident["id"], IncidentStatus.RECOVERED, recovered_at)
        fleet.end_quarantine(conn, hid, after.checked_at)
        status = IncidentStatus.RECOVERED
        recovery_seconds = (recovered_at - detected_at).total_seconds()
        paged = "opened" in incident["alerts"] or any(
            a.event == AlertEvent.INCIDENT_OPENED for a in alerts
        )
        if paged and fleet.add_alert(conn, incident["id"], "resolved", after.checked_at):
            alerts.append(
                _host_alert(
                    AlertEvent.INCIDENT_RESOLVED,
                    after.host,
                    kind=str(incident["kind"]),
                    reason=after.reason,
                    recovery_seconds=round(recovery_seconds, 1),
                    actions=[str(a.step) for a in actions],
                )
            )
    elif incident is not None:
        status = IncidentStatus.OPEN
        if decision.quarantine:
            if fleet.quarantine_host(conn, hid, after.checked_at, decision.reason):
                fleet.close_incident(conn, incident["id"], IncidentStatus.FAILED, after.checked_at)
                if fleet.add_alert(conn, incident["id"], "quarantined", after.checked_at):
                    alerts.append(
                        _host_alert(
                            AlertEvent.HOST_QUARANTINED,
                            after.host,
                            kind=str(before.status),
                            reason=decision.reason,
                            actions=[str(s) for s in decision.skipped],
                        )
                    )
            status = IncidentStatus.QUARANTINED
        elif incident["host_quarantined"]:
            status = IncidentStatus.QUARANTINED

    cursor = settled_cursor(events)
    log_id = after.events_id or before.events_id
    if cursor or log_id:
        fleet.set_event_cursor(conn, hid, cursor, log_id)
    return HealthOutcome(
        host=after.host,
        status=str(after.status),
        reason=sample["reason"],
        decision=decision.summary,
        incident_id=None if incident is None else int(incident["id"]),
        incident_status=status,
        actions=tuple(a.step for a in actions),
        recovery_seconds=recovery_seconds,
        alerts=tuple(alerts),
    )


def record_network(
    conn: Connection, state: NetworkState, at: datetime, policy: HealthSettings, fleet_name: str
) -> list[Alert]:
    """One fleet-wide incident while the network is down: alerted once (when confirmed),
    closed with one "restored" alert when it answers again. The same for the control plane
    cut off from the fleet."""
    sign_in = (
        record_sign_in(conn, state.sign_in_refused, at, fleet_name)
        if state.sign_in_refused is not None or state.signed_in
        else []  # the API failed before it could say
    )
    return (
        _record_network_down(conn, state, at, policy, fleet_name)
        + record_cut_off(conn, state, at, policy, fleet_name)
        + sign_in
    )


def record_cut_off(
    conn: Connection, state: NetworkState, at: datetime, policy: HealthSettings, fleet_name: str
) -> list[Alert]:
    """One fleet-wide incident while GradientLab cannot reach its fleet (its SSH fails on most
    hosts at once, or its keeper fails): one alert once confirmed, one when hosts answer again."""
    incident = fleet.open_fleet_incident(conn, FLEET_UNREACHABLE)
    alerts: list[Alert] = []
    if state.cut_off:
        if incident is None:
            iid = fleet.create_incident(conn, None, FLEET_UNREACHABLE, at, state.cut_off_reason)
            sweeps, since = 1, at
        else:
            iid = incident["id"]
            sweeps = fleet.continue_incident(conn, iid, FLEET_UNREACHABLE)
            since = incident["detected_at"]
        if fault_confirmed(sweeps, since, at, policy) and fleet.add_alert(
            conn, iid, "unreachable", at
        ):
            fleet.confirm_incident(conn, iid, at)
            alerts.append(
                Alert(
                    AlertEvent.FLEET_UNREACHABLE,
                    fleet_name,
                    True,
                    {"reason": state.cut_off_reason, "hosts": state.cut_off_hosts},
                )
            )
    elif incident is not None:
        fleet.close_incident(conn, incident["id"], IncidentStatus.RECOVERED, at)
        if "unreachable" in incident["alerts"] and fleet.add_alert(
            conn, incident["id"], "reachable", at
        ):
            alerts.append(
                Alert(
                    AlertEvent.FLEET_REACHABLE,
                    fleet_name,
                    True,
                    {
                        "reason": "GradientLab reaches its hosts again",
                        "down_seconds": round((at - incident["detected_at"]).total_seconds(), 1),
                    },
                )
            )
    return alerts


# what a refused password looks like in a login step's failure (the dashboard's alert text, or
# the identity service's error code)
PASSWORD_REFUSED = re.compile(
    r"INVALID_PASSWORD|INVALID_LOGIN_CREDENTIALS|EMAIL_NOT_FOUND|USER_DISABLED"
    r"|(wrong|invalid|incorrect) (email or )?password",
    re.IGNORECASE,
)


def record_login(
    conn: Connection, results: list[Any], at: datetime, fleet_name: str
) -> list[Alert]:
    """One account-wide incident when a login step finds the account's password refused:
    one alert for the whole fleet (however many hosts tried), closed when a login works."""
    refused = [
        a
        for _, _, actions, _ in results
        for a in actions
        if a.step == LOGIN_STEP and not a.ok and PASSWORD_REFUSED.search(a.detail or "")
    ]
    worked = any(a.step == LOGIN_STEP and a.ok for _, _, actions, _ in results for a in actions)
    incident = fleet.open_fleet_incident(conn, LOGIN_REFUSED)
    alerts: list[Alert] = []
    if refused and not worked:
        detail = PASSWORD_REFUSED.search(refused[0].detail or "")
        reason = (
            f"the Gradient account's password is refused ({detail.group(0) if detail else ''}); "
            "update the account's password (its Secret block) and redeploy; logins are held "
            "to one an hour across the fleet meanwhile"
        )
        if incident is None:
            iid = fleet.create_incident(conn, None, LOGIN_REFUSED, at, reason)
            fleet.confirm_incident(conn, iid, at)
            if fleet.add_alert(conn, iid, "refused", at):
                alerts.append(
                    Alert(
                        AlertEvent.LOGIN_REFUSED,
                        fleet_name,
                        True,
                        {"reason": reason, "hosts": len(refused)},
                    )
                )
        else:
            fleet.continue_incident(conn, incident["id"], LOGIN_REFUSED)
    elif worked and incident is not None:
        fleet.close_incident(conn, incident["id"], IncidentStatus.RECOVERED, at)
    return alerts


SIGN_IN_REFUSED = "SignInRefused"  # the control plane's own API sign-in is refused


def record_sign_in(
    conn: Connection, refused: SignInRefusal | None, at: datetime, fleet_name: str
) -> list[Alert]:
    """One account-wide incident while the control plane's sign-in is refused, whichever flow
    found it (health's network view, rewards): one alert naming the setting, however many
    runs see it; closed by the next sign-in that works (`refused` None)."""
    incident = fleet.open_fleet_incident(conn, SIGN_IN_REFUSED)
    if refused is None:
        if incident is not None:
            fleet.close_incident(conn, incident["id"], IncidentStatus.RECOVERED, at)
        return []
    if incident is not None:
        fleet.continue_incident(conn, incident["id"], SIGN_IN_REFUSED)
        return []
    iid = fleet.create_incident(conn, None, SIGN_IN_REFUSED, at, refused.detail)
    fleet.confirm_incident(conn, iid, at)  # no sweep will see it differently: the account's
    if not fleet.add_alert(conn, iid, "refused", at):
        return []
    payload = {"setting": refused.setting, "reason": refused.reason, "endpoint": refused.endpoint}
    return [Alert(AlertEvent.SIGN_IN_REFUSED, fleet_name, True, payload)]


def record_account_sign_in(
    engine: Engine, refused: SignInRefusal | None, at: datetime, fleet_name: str
) -> list[Alert]:
    """`record_sign_in` in a transaction of its own, retried on a database blip."""
    return with_retries(
        engine, functools.partial(record_sign_in, refused=refused, at=at, fleet_name=fleet_name)
    )


def _record_network_down(
    conn: Connection, state: NetworkState, at: datetime, policy: HealthSettings, fleet_name: str
) -> list[Alert]:
    incident = fleet.open_fleet_incident(conn, NETWORK_DOWN)
    alerts: list[Alert] = []
    if state.down:
        if incident is None:
            iid = fleet.create_incident(conn, None, NETWORK_DOWN, at, state.reason)
            sweeps, since = 1, at
        else:
            iid = incident["id"]
            sweeps, since = (
                fleet.continue_incident(conn, iid, NETWORK_DOWN),
                incident["detected_at"],
            )
        if fault_confirmed(sweeps, since, at, policy) and fleet.add_alert(conn, iid, "down", at):
            fleet.confirm_incident(conn, iid, at)
            alerts.append(
                Alert(
                    AlertEvent.NETWORK_DOWN,
                    fleet_name,
                    True,
                    {
                        "reason": state.reason,
                        "disconnected": state.disconnected,
                        "checked": state.checked,
                    },
                )
            )
    elif incident is not None:
        fleet.close_incident(conn, incident["id"], IncidentStatus.RECOVERED, at)
        if "down" in incident["alerts"] and fleet.add_alert(conn, incident["id"], "restored", at):
            alerts.append(
                Alert(
                    AlertEvent.NETWORK_RESTORED,
                    fleet_name,
                    True,
                    {
                        "reason": "the network answers and nodes connect again",
                        "down_seconds": round((at - incident["detected_at"]).total_seconds(), 1),
                    },
                )
            )
    return alerts


# connections a sweep's recording uses at once (the engine's pool holds 5 without overflow)
RECORD_CONNECTIONS = 4


def standing_network_state(engine: Engine, api_error: str | None) -> NetworkState:
    """The network's state for a sweep of a few named hosts: down when its API fails now, or
    while the last fleet-wide sweeps' network incident is open; otherwise up. Cut off while
    the fleet-wide sweeps' "cannot reach the fleet" incident is open."""
    with engine.connect() as conn:
        incident = fleet.open_fleet_incident(conn, NETWORK_DOWN)
        cut = fleet.open_fleet_incident(conn, FLEET_UNREACHABLE)
    extra: dict[str, Any] = {}
    if cut is not None:
        extra = {
            "cut_off": True,
            "cut_off_reason": f"{cut['detail']} (since the last fleet-wide sweep)",
        }
    if api_error:
        return NetworkState(True, f"the network's API fails: {api_error}", **extra)
    if incident is None:
        return NetworkState(False, "", **extra)
    return NetworkState(True, f"{incident['detail']} (since the last fleet-wide sweep)", **extra)


def record_sweep(
    engine: Engine,
    results: list[tuple[HealthReport, HealthReport, list[ActionResult], Decision]],
    policy: HealthSettings,
    network: NetworkState,
    at: datetime,
    fleet_name: str,
    health_period_s: float | None = None,
    fleet_level: bool = True,
) -> tuple[list[HealthOutcome], list[Alert], list[str]]:
    """Each host in its own transaction, retried on a database blip: one host's failure to be
    written never loses the others'. Returns outcomes, fleet alerts and per-host write errors.
    A shard of a sweep (`fleet_level=False`) leaves the network's state to its dispatcher, and
    so does a sweep of a few named hosts, which cannot tell the network went down or came back."""

    def one(
        result: tuple[HealthReport, HealthReport, list[ActionResult], Decision],
    ) -> HealthOutcome | str:
        before, after, actions, decision = result
        try:
            return with_retries(
                engine,
                functools.partial(
                    record_host,
                    before=before,
                    after=after,
                    actions=actions,
                    decision=decision,
                    policy=policy,
                    network=network,
                    fleet_name=fleet_name,
                    health_period_s=health_period_s,
                ),
            )
        except Exception as exc:  # noqa: BLE001 - reported; the other hosts are still written
            return f"{after.host}: could not record this check: {exc}"

    # hosts' rows are their own: a few transactions at once, each host's whole or not at all
    workers = max(1, min(RECORD_CONNECTIONS, len(results)))
    with ThreadPoolExecutor(workers, thread_name_prefix="record") as pool:
        written = list(pool.map(one, results))
    outcomes = [w for w in written if isinstance(w, HealthOutcome)]
    errors = [w for w in written if isinstance(w, str)]

    # the account is the fleet's, whichever shard's host found its password refused
    login_alerts = with_retries(
        engine, functools.partial(record_login, results=results, at=at, fleet_name=fleet_name)
    )
    if not fleet_level:
        return outcomes, login_alerts, errors
    fleet_alerts = with_retries(
        engine,
        functools.partial(
            record_network, state=network, at=at, policy=policy, fleet_name=fleet_name
        ),
    )
    return outcomes, fleet_alerts + login_alerts, errors


def record_network_state(
    engine: Engine, network: NetworkState, at: datetime, policy: HealthSettings, fleet_name: str
) -> list[Alert]:
    """The network's state for a whole sweep, once (a sharded sweep's dispatcher calls this)."""
    return with_retries(
        engine,
        functools.partial(
            record_network, state=network, at=at, policy=policy, fleet_name=fleet_name
        ),
    )


CLOUD_KINDS = ("oci", "gcp", "azure")


def host_histories(engine: Engine, records: list[Any], at: datetime) -> dict[str, History]:
    """Each host's recent history as `decide` reads it, on the sweep's own clock `at`."""
    rows = fleet.histories(engine, [r.name for r in records], at)
    out: dict[str, History] = {}
    for r in records:
        row = rows.get(r.name) or {}
        inc = row.get("incident")
        out[r.name] = History(
            fault=None if inc is None else str(inc["last_kind"] or inc["kind"]),
            fault_since=None if inc is None else inc["detected_at"],
            sweeps=0 if inc is None else int(inc["sweeps"]),
            actions=tuple(
                PastAction(a["step"], a["started_at"], a["ok"]) for a in row.get("actions", [])
            ),
            quarantined_at=row.get("quarantined_at"),
            quarantine_reason=row.get("quarantine_reason"),
            cloud=str(r.meta.get("cloud") or "") in CLOUD_KINDS,
        )
    return out
