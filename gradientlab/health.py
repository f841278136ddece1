"""Health: read a node's state over SSH, judge it, recover it step by step, record incidents."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine

from gradientlab.gradient.models import NodeListItem
from gradientlab.node.deploy import PROBE_SH, runner_command
from gradientlab.remote.executor import Executor, RemoteError
from gradientlab.store import fleet

GOOD = "Good"
# What the popup and the network can say, plus what only the host can tell.
BAD_STATES = ("Unreachable", "RunnerDown", "BrowserDown", "LoggedOut", "Disconnected")
RECOVERY_PLAN: dict[str, tuple[str, ...]] = {
    "Unreachable": ("reboot_host",),
    "RunnerDown": ("start_runner", "reboot_host"),
    "BrowserDown": ("restart_browser", "start_runner", "reboot_host"),
    "LoggedOut": ("login", "restart_browser"),
    "Disconnected": ("restart_browser", "login", "reboot_host"),
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


@dataclass
class HealthReport:
    host: str
    status: str
    reachable: bool
    checked_at: datetime = field(default_factory=utcnow)
    runner_alive: bool | None = None
    browser_alive: bool | None = None
    logged_in: bool | None = None
    popup_status: str | None = None
    network_connect: bool | None = None
    banned: bool | None = None
    banned_reason: str | None = None
    client_id: str | None = None
    ip: str | None = None
    taps_today: int | None = None
    uptime_today: int | None = None
    pss_kib: int | None = None
    status_updated_at: datetime | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    @property
    def healthy(self) -> bool:
        return self.status in (GOOD, "Starting")

    @property
    def recoverable(self) -> bool:
        """Bad in a way recovery steps can change (Unsupported is the network's verdict)."""
        return not self.healthy and self.status != "Unsupported"

    def sample(self) -> dict[str, Any]:
        return {
            "sampled_at": self.checked_at,
            "status": self.status,
            "reachable": self.reachable,
            "runner_alive": self.runner_alive,
            "browser_alive": self.browser_alive,
            "logged_in": self.logged_in,
            "popup_status": self.popup_status,
            "network_connect": self.network_connect,
            "banned": self.banned,
            "banned_reason": self.banned_reason,
            "ip": self.ip,
            "taps_today": self.taps_today,
            "uptime_today": self.uptime_today,
            "pss_kib": self.pss_kib,
            "detail": {"error": self.error, "client_id": self.client_id},
        }


def _int(value: Any) -> int | None:
    try:
        return int(str(value).replace(",", "").split()[0])
    except (ValueError, IndexError):
        return None


def probe(ex: Executor, since: int = 0, timeout: float = 20) -> dict[str, Any]:
    """One SSH command that returns the node's JSON health report (events after `since`)."""
    result = ex.run(PROBE_SH, timeout=timeout)
    data = parse_probe(result.stdout)
    if data is None:
        raise RemoteError(
            f"{ex.name}: the probe printed no JSON (exit {result.exit_code}): "
            f"{(result.stderr or result.stdout).strip()[-300:]}"
        )
    data["events"] = [e for e in data.get("events") or [] if int(e.get("id", 0)) > since]
    status = data.get("status") or {}
    data.setdefault("pss_kib", status.get("pss_kib") if data.get("runner_alive") else None)
    return data


def parse_probe(text: str) -> dict[str, Any] | None:
    """The probe's JSON; an event line a crash cut short is dropped, not the whole report."""
    text = text.strip()
    if not text.startswith("{"):
        return None
    try:
        data: dict[str, Any] = json.loads(text)
        return data
    except ValueError:
        pass
    head, sep, tail = text.partition(', "events": [')
    if not sep:
        return None
    try:
        data = json.loads(head + "}")
    except ValueError:
        return None
    events = []
    for line in tail.splitlines():
        line = line.strip().rstrip(",")
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
    data["events"] = events
    return data


def assess(
    host: str, data: dict[str, Any] | None, network: NodeListItem | None, error: str | None = None
) -> HealthReport:
    """Judge one host from its probe and the network's view of its node."""
    if data is None:
        return HealthReport(host=host, status="Unreachable", reachable=False, error=error)
    status_file = data.get("status") or {}
    popup = status_file.get("popup") or {}
    report = HealthReport(
        host=host,
        status=GOOD,
        reachable=True,
        runner_alive=bool(data.get("runner_alive")),
        browser_alive=bool(data.get("browser_alive")),
        logged_in=status_file.get("logged_in"),
        popup_status=popup.get("status"),
        client_id=popup.get("node_id") or None,
        ip=popup.get("ip") or None,
        taps_today=_int(popup.get("taps_today")),
        uptime_today=_int(popup.get("uptime_today")),
        pss_kib=data.get("pss_kib"),
        banned_reason=popup.get("banned_reason") or None,
        status_updated_at=parse_time(status_file.get("popup_read_at")),
        events=list(data.get("events") or []),
        error=status_file.get("last_error"),
    )
    if network is not None:
        report.network_connect = network.connect
        report.banned = network.banned
        report.ip = network.ip or report.ip
    if not data.get("installed", True):
        report.status = "RunnerDown"
        report.error = "the node is not deployed on this host"
    elif not report.runner_alive:
        report.status = "RunnerDown"
    elif not report.browser_alive:
        report.status = "BrowserDown"
    elif report.popup_status is None or _popup_older_than_browser(status_file):
        report.status = "Starting"  # the runner has not read this browser's popup yet
    elif report.popup_status == "Logged out":
        report.status = "LoggedOut"
    elif report.popup_status == "Unsupported" or report.banned:
        report.status = "Unsupported"  # faithfully recorded; no restart makes it supported
    elif report.popup_status == "Disconnected" or report.network_connect is False:
        report.status = "Disconnected"
    else:
        report.status = GOOD if report.popup_status in ("Good", "Excellent") else "Disconnected"
    return report


def _popup_older_than_browser(status_file: dict[str, Any]) -> bool:
    read_at = parse_time(status_file.get("popup_read_at"))
    started = parse_time(status_file.get("browser_started_at"))
    return bool(started and (read_at is None or read_at < started))


@dataclass
class ActionResult:
    step: str
    started_at: datetime
    finished_at: datetime
    ok: bool
    detail: str


@dataclass
class Recovery:
    """How to act on one host; the flow wires in SSH, the provider and the network."""

    ex: Executor | None
    python: str | None
    reboot_host: Callable[[], object]
    reprobe: Callable[[], HealthReport]
    wait_seconds: float = 60
    poll_seconds: float = 1.0

    def run_step(self, step: str) -> str:
        if step == "reboot_host":
            self.reboot_host()
            return "host rebooted"
        if self.ex is None:
            raise RemoteError("no SSH connection for this step")
        command = {
            "restart_browser": "restart-browser",
            "start_runner": "start",
            "login": "login",
        }[step]
        result = self.ex.run(runner_command(self.python, command), timeout=120)
        if not result.ok:
            raise RemoteError(f"{self.ex.name}: {step} failed: {result.stdout.strip()[-300:]}")
        return result.stdout.strip()[-300:]

    def recover(self, report: HealthReport) -> tuple[HealthReport, list[ActionResult]]:
        actions: list[ActionResult] = []
        for step in RECOVERY_PLAN.get(report.status, ()):
            started = utcnow()
            try:
                detail = self.run_step(step)
            except Exception as exc:  # noqa: BLE001 - recorded as a failed action, next step runs
                actions.append(ActionResult(step, started, utcnow(), False, str(exc)))
                continue
            report = self.wait_good()
            actions.append(
                ActionResult(
                    step,
                    started,
                    utcnow(),
                    report.status == GOOD,
                    f"{detail}; then {report.status}" if detail else report.status,
                )
            )
            if report.status == GOOD:
                break
        return report, actions

    def wait_good(self) -> HealthReport:
        deadline = time.monotonic() + self.wait_seconds
        report = self.reprobe()
        while report.status != GOOD and time.monotonic() < deadline:
            time.sleep(self.poll_seconds)
            report = self.reprobe()
        return report


# ---------------------------------------------------------------- recording


@dataclass(frozen=True)
class HealthOutcome:
    host: str
    status: str
    incident_id: int | None
    incident_status: str | None
    actions: tuple[str, ...]
    recovery_seconds: float | None


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
            cursor = int(event.get("id", 0))
    return cursor


def record(
    engine: Engine, before: HealthReport, after: HealthReport, actions: list[ActionResult]
) -> HealthOutcome:
    """Store the sample and the incident: one open incident per host, actions appended to it."""
    with engine.begin() as conn:
        hid = fleet.host_id(conn, after.host)
        client_id = after.client_id or before.client_id
        if client_id:
            fleet.set_client_id(conn, hid, client_id)
        fleet.insert_sample(conn, hid, after.sample())
        incident = fleet.open_incident(conn, hid)
        incident_id = incident["id"] if incident else None
        already_alerted = bool(incident and incident["alerted_at"])
        status = None

        # Browser deaths the runner repaired between checks are incidents too.
        for exited_at, restarted_at, detail in runner_recoveries(before.events):
            if incident_id is None:
                incident_id = fleet.create_incident(
                    conn, hid, "BrowserDown", exited_at, f"browser exited ({detail})"
                )
            fleet.add_action(
                conn,
                incident_id,
                "runner_restarted_browser",
                exited_at,
                restarted_at,
                True,
                "the runner started a new browser",
            )
        if before.status not in (GOOD, "Starting", "Unsupported") and incident_id is None:
            # A host still down after a failed recovery continues that incident (and its
            # alert) rather than opening, and alerting, a new one every check.
            failed = fleet.reopen_failed_incident(conn, hid, before.status)
            if failed is not None:
                incident_id, already_alerted = failed["id"], bool(failed["alerted_at"])
            else:
                incident_id = fleet.create_incident(
                    conn, hid, before.status, before.checked_at, before.error or before.status
                )
        if before.status == "Unsupported" and incident_id is None:
            # Recorded once, faithfully: the network does not support this node's address.
            existing = conn.exec_driver_sql(
                "SELECT 1 FROM incidents WHERE host_id = %s AND kind = 'Unsupported'"
                " AND detected_at > now() - interval '1 day'",
                (hid,),
            ).first()
            if existing is None:
                iid = fleet.create_incident(
                    conn,
                    hid,
                    "Unsupported",
                    before.checked_at,
                    before.banned_reason or "the network marks this node Unsupported",
                )
                fleet.close_incident(conn, iid, "failed", after.checked_at)
        if incident_id is None and after.status == GOOD:
            # a host back after a failed recovery closes that incident with its recovery time
            failed_before = fleet.reopen_failed_incident(conn, hid, None)
            if failed_before is not None:
                incident_id = failed_before["id"]
        for action in actions:
            assert incident_id is not None
            fleet.add_action(
                conn,
                incident_id,
                action.step,
                action.started_at,
                action.finished_at,
                action.ok,
                action.detail,
            )
        recovery_seconds = None
        if incident_id is not None:
            if after.status == GOOD:
                detected_at = conn.exec_driver_sql(
                    "SELECT detected_at FROM incidents WHERE id = %s", (incident_id,)
                ).scalar_one()
                # when the runner saw the node Good again, else when this check did
                recovered_at = after.status_updated_at or after.checked_at
                if recovered_at < detected_at:
                    recovered_at = after.checked_at
                fleet.close_incident(conn, incident_id, "recovered", recovered_at)
                status = "recovered"
                recovery_seconds = (recovered_at - detected_at).total_seconds()
            elif actions and not any(a.ok for a in actions):
                fleet.close_incident(conn, incident_id, "failed", after.checked_at)
                fleet.mark_alerted(conn, incident_id, after.checked_at)
                # "failed" asks the flow to alert a person; once per incident
                status = "still-failing" if already_alerted else "failed"
            else:
                status = "open"
        cursor = settled_cursor(before.events)
        if cursor:
            fleet.set_event_cursor(conn, hid, cursor)
    return HealthOutcome(
        after.host,
        after.status,
        incident_id,
        status,
        tuple(a.step for a in actions),
        recovery_seconds,
    )


def wait_until(
    read: Callable[[], HealthReport],
    done: Callable[[HealthReport], bool],
    timeout: float,
    poll: float = 1.0,
) -> HealthReport:
    deadline = time.monotonic() + timeout
    report = read()
    while not done(report) and time.monotonic() < deadline:
        time.sleep(poll)
        report = read()
    return report
