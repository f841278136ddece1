"""What one health check of one host found: the probe's answer, parsed, and the report."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gradientlab.health.status import HEALTHY, NETWORK_VERDICTS, Verdict


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


def as_int(value: Any) -> int | None:
    """A counter as the popup or the probe shows it ("1,234", "12 taps", 7); None if not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value == value and abs(value) < 2**62 else None
    try:
        return int(str(value).replace(",", "").split()[0])
    except (ValueError, IndexError):
        return None


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_float(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if f == f and abs(f) != float("inf") else None


@dataclass
class HostMetrics:
    load1: float | None = None
    mem_total_kib: int | None = None
    mem_available_kib: int | None = None
    disk_total_kib: int | None = None
    disk_free_kib: int | None = None
    runner_pss_kib: int | None = None
    browser_pss_kib: int | None = None
    clock_offset_s: float | None = None  # the host's clock minus the control plane's

    @classmethod
    def from_probe(cls, data: dict[str, Any], checked_at: datetime) -> HostMetrics:
        host = as_dict(data.get("host"))
        status = as_dict(data.get("status"))
        clock = as_float(host.get("clock"))

        def nonneg(v: Any) -> int | None:
            n = as_int(v)
            return n if n is not None and n >= 0 else None

        return cls(
            load1=as_float(host.get("load1")),
            mem_total_kib=nonneg(host.get("mem_total_kib")),
            mem_available_kib=nonneg(host.get("mem_available_kib")),
            disk_total_kib=nonneg(host.get("disk_total_kib")),
            disk_free_kib=nonneg(host.get("disk_free_kib")),
            runner_pss_kib=nonneg(status.get("runner_pss_kib")),
            browser_pss_kib=nonneg(status.get("browser_pss_kib")),
            clock_offset_s=None if clock is None else round(clock - checked_at.timestamp(), 3),
        )


@dataclass
class HealthReport:
    host: str
    status: Verdict
    reachable: bool
    checked_at: datetime = field(default_factory=utcnow)
    reason: str = ""
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
    events: list[dict[str, Any]] = field(default_factory=list)  # after the cursor
    events_id: str | None = None  # the runner's event log identity
    metrics: HostMetrics = field(default_factory=HostMetrics)
    error: str | None = None
    popup_source: str | None = None  # "api": the popup's own sentrynode/get answer; "badge"
    disagreement: str | None = None  # when the popup and the network's own answer differ
    # SSH facts the flow needs for alerts (host key fingerprints, address)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return self.status in HEALTHY

    @property
    def recoverable(self) -> bool:
        """Bad in a way recovery steps might change (the network's verdicts are not)."""
        return not self.healthy and self.status not in NETWORK_VERDICTS

    def sample(self) -> dict[str, Any]:
        m = self.metrics
        return {
            "sampled_at": self.checked_at,
            "status": str(self.status),
            "reason": self.reason,
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
            "load1": m.load1,
            "mem_total_kib": m.mem_total_kib,
            "mem_available_kib": m.mem_available_kib,
            "disk_total_kib": m.disk_total_kib,
            "disk_free_kib": m.disk_free_kib,
            "runner_pss_kib": m.runner_pss_kib,
            "browser_pss_kib": m.browser_pss_kib,
            "clock_offset_s": m.clock_offset_s,
            "detail": {
                "error": self.error,
                "client_id": self.client_id,
                "popup_source": self.popup_source,
                "disagreement": self.disagreement,
            },
        }


def parse_probe(text: str) -> dict[str, Any] | None:
    """The probe's JSON; an event line a crash cut short is dropped, not the whole report.

    None for anything that is not a report, a JSON nested too deeply for the parser included:
    whatever a host prints is that host's verdict, never an exception for the sweep."""
    text = text.strip()
    if not text.startswith("{"):
        return None
    try:
        data = json.loads(text)
        return data if isinstance(data, dict) else None
    except (ValueError, RecursionError):
        pass
    head, sep, tail = text.partition(', "events": [')
    if not sep:
        return None
    try:
        data = json.loads(head + "}")
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    events = []
    for line in tail.splitlines():
        line = line.strip().rstrip(",")
        if line.startswith("{"):
            try:
                event = json.loads(line)
            except (ValueError, RecursionError):
                continue
            if isinstance(event, dict):
                events.append(event)
    data["events"] = events
    return data


def event_id(event: dict[str, Any]) -> int:
    n = as_int(event.get("id"))
    return n if n is not None else 0
