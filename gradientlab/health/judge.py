"""Judging a host: from what the probe saw (or why it saw nothing) to a verdict with its reason.

`judge` and `network_state` are pure: every decision is made on the report's own clock."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from gradientlab.agent.pages import GOOD_STATES
from gradientlab.config import HealthSettings
from gradientlab.gradient.models import NodeInfo, NodeListItem
from gradientlab.health.report import (
    HealthReport,
    HostMetrics,
    as_dict,
    as_float,
    as_int,
    event_id,
    parse_probe,
    parse_time,
)
from gradientlab.health.status import Verdict, about
from gradientlab.node.deploy import PROBE_SH
from gradientlab.remote.executor import (
    AuthRefused,
    Executor,
    HostKeyInvalid,
    HostKeyMismatch,
    RemoteError,
)


@dataclass
class Observation:
    """What one probe of one host gave: its parsed answer, or the verdict its failure means."""

    host: str
    checked_at: datetime
    data: dict[str, Any] | None = None
    failure: Verdict | None = None
    error: str | None = None
    facts: dict[str, Any] | None = None


# where a connection failed before any command ran: TCP, banner, key exchange, login, or a kept-open
# connection that stopped answering. When most of a sweep's hosts fail here at once, the fault is
# far likelier on GradientLab's side (its address, its firewall) than on every host at once.
ACCESS_CAUSES = frozenset(
    {"no-tcp", "no-banner", "no-handshake", "no-answer", "dropped", "auth-refused"}
)
# the connection keeper's own failures (remote/keeper_client.py, remote/keeper.py)
KEEPER_CAUSES = frozenset({"keeper-gone", "keeper-error", "keeper-timeout"})

# the most of the probe's answer read from a host: a runaway status.json or event log is cut
# here (on the host, before it crosses the wire), and the answer is judged as what it is
PROBE_MAX_BYTES = 512 * 1024
# how long a browser the runner is launching counts as Starting, not BrowserDown: the launch
# waits up to 30 s for Chromium's DevTools pipe, after ending an orphan browser for up to 5 s
LAUNCH_GRACE_SECONDS = 60


def probe_command(max_bytes: int = PROBE_MAX_BYTES) -> str:
    """The health probe with its output capped on the host."""
    return f"(\n{PROBE_SH}\n) | head -c {max_bytes}"


def failure_verdict(exc: BaseException) -> Verdict:
    """Which verdict an SSH failure means; never a reboot for a key or auth problem, and
    never a host's verdict for the keeper's own failure."""
    if isinstance(exc, RemoteError) and exc.cause in KEEPER_CAUSES:
        return Verdict.KEEPER_FAILED
    if isinstance(exc, HostKeyMismatch):
        return Verdict.HOST_KEY_CHANGED
    if isinstance(exc, HostKeyInvalid):
        return Verdict.HOST_KEY_INVALID
    if isinstance(exc, AuthRefused):
        return Verdict.AUTH_REFUSED
    return Verdict.UNREACHABLE  # HostUnreachable, CommandTimeout, anything else on the wire


def observe(host: str, connect: Any, checked_at: datetime, timeout: float = 20) -> Observation:
    """Run the probe on one host. `connect()` gives its executor (it may raise too).

    Whatever happens to this host becomes its observation; nothing raises."""
    obs = Observation(host=host, checked_at=checked_at)
    try:
        ex: Executor = connect()
        result = ex.run(probe_command(), timeout=timeout)
    except RemoteError as exc:
        obs.failure, obs.error = failure_verdict(exc), str(exc)
        obs.facts = {"ssh_stage": exc.cause}
        if isinstance(exc, HostKeyMismatch):
            obs.facts |= {
                "pinned_fingerprint": exc.pinned_fingerprint,
                "offered_fingerprint": exc.offered_fingerprint,
            }
        return obs
    except Exception as exc:  # noqa: BLE001 - one host's trouble is that host's verdict
        obs.failure, obs.error = Verdict.UNREACHABLE, f"{type(exc).__name__}: {exc}"
        return obs
    data = parse_probe(result.stdout)
    if data is None:
        obs.failure = Verdict.PROBE_INVALID
        size = len(result.stdout.encode(errors="replace"))
        if size >= PROBE_MAX_BYTES:
            obs.error = (
                f"the probe's answer reached the {PROBE_MAX_BYTES // 1024} KiB cap and was cut "
                "there: the runner's status.json or event log on the host (.gradientlab/node/) "
                "has grown past any normal size"
            )
        else:
            text = (result.stderr or result.stdout).strip()[-300:]
            obs.error = f"the probe printed no readable report (exit {result.exit_code}): {text!r}"
        return obs
    obs.data = data
    return obs


def _mib(kib: int | None) -> str:
    return "?" if kib is None else f"{kib / 1024:.0f} MiB"


def crash_loop(events: list[dict[str, Any]], starts: int, window_s: float) -> str | None:
    """The last error when the runner's last `starts` starts each ended in a crash within
    `window_s` (measured on the host's own event clock); None otherwise."""
    runs: list[tuple[datetime | None, str | None]] = []  # (started at, crash detail)
    for event in events:
        kind = event.get("kind")
        if kind == "runner_started":
            runs.append((parse_time(event.get("at")), None))
        elif kind == "runner_crashed" and runs and runs[-1][1] is None:
            runs[-1] = (runs[-1][0], str(event.get("detail") or "crashed"))
        elif kind in ("popup_status", "runner_stopped") and runs:
            runs.append((None, None))  # a run that worked or stopped cleanly breaks the loop
    last = runs[-starts:]
    if len(last) < starts or any(detail is None or at is None for at, detail in last):
        return None
    first_at, last_at = last[0][0], last[-1][0]
    assert first_at is not None and last_at is not None
    if last_at - first_at > timedelta(seconds=window_s):
        return None
    return last[-1][1]


def last_run_crash(events: list[dict[str, Any]]) -> str | None:
    """The error the runner's last run crashed with, if it did."""
    for event in reversed(events):
        kind = event.get("kind")
        if kind == "runner_crashed":
            return str(event.get("detail") or "crashed")
        if kind in ("runner_started", "runner_stopped"):
            return None
    return None


# The network's own view of one node: a row of its node list, or `GET /sentrynode/get/{id}`.
NetworkNode = NodeListItem | NodeInfo


def judge(
    obs: Observation,
    network: NetworkNode | None,
    policy: HealthSettings,
    cursor: int = 0,
    events_id: str | None = None,
) -> HealthReport:
    """One host's verdict from its observation and the network's view of its node."""
    if obs.data is None:
        verdict = obs.failure or Verdict.UNREACHABLE
        return HealthReport(
            host=obs.host,
            status=verdict,
            reachable=verdict not in (Verdict.UNREACHABLE,),
            checked_at=obs.checked_at,
            reason=obs.error or about(verdict).meaning,  # the SSH error says what to check
            error=obs.error,
            facts=dict(obs.facts or {}),
        )
    data = obs.data
    status_file = as_dict(data.get("status"))
    popup = as_dict(status_file.get("popup"))
    raw_events = data.get("events")
    all_events = (
        [e for e in raw_events if isinstance(e, dict)] if isinstance(raw_events, list) else []
    )
    probe_events_id = data.get("events_id") if isinstance(data.get("events_id"), str) else None
    if probe_events_id and events_id and probe_events_id != events_id:
        cursor = 0  # a new runner log: every event in it is new
    runner_alive = bool(data.get("runner_alive"))
    report = HealthReport(
        host=obs.host,
        status=Verdict.GOOD,
        reachable=True,
        checked_at=obs.checked_at,
        runner_alive=runner_alive,
        browser_alive=bool(data.get("browser_alive")),
        logged_in=v if isinstance(v := status_file.get("logged_in"), bool) else None,
        popup_status=popup.get("status") if isinstance(popup.get("status"), str) else None,
        client_id=str(popup.get("node_id")) if popup.get("node_id") else None,
        ip=str(popup.get("ip")) if popup.get("ip") else None,
        taps_today=as_int(popup.get("taps_today")),
        uptime_today=as_int(popup.get("uptime_today")),
        pss_kib=as_int(status_file.get("pss_kib")) if runner_alive else None,
        banned_reason=str(popup.get("banned_reason")) if popup.get("banned_reason") else None,
        status_updated_at=parse_time(status_file.get("popup_read_at")),
        events=[e for e in all_events if event_id(e) > cursor],
        events_id=probe_events_id,
        metrics=HostMetrics.from_probe(data, obs.checked_at),
        error=status_file.get("last_error")
        if isinstance(status_file.get("last_error"), str)
        else None,
    )
    report.popup_source = popup.get("source") if isinstance(popup.get("source"), str) else None
    if network is not None:
        report.network_connect = network.connect
        report.banned = network.banned
        report.banned_reason = report.banned_reason or network.banned_reason or None
        report.ip = network.ip or report.ip
        report.disagreement = disagreement(report.popup_status, network)
    verdict, reason = _verdict(report, data, status_file, all_events, policy)
    report.status = verdict
    report.reason = reason
    if report.disagreement and verdict not in (Verdict.STARTING, Verdict.PAGE_CHANGED):
        report.reason = f"{reason}; {report.disagreement}"
    return report


def disagreement(popup: str | None, network: NetworkNode) -> str | None:
    """What the popup and the network's own answer for the node say differently, if anything."""
    if popup is None or popup == "Logged out":
        return None
    if network.banned and popup != "Unsupported":
        return f"the popup reads {popup} but the network marks the node banned"
    if network.banned is False and popup == "Unsupported":
        return "the popup reads Unsupported but the network does not mark the node banned"
    if popup in GOOD_STATES and network.connect is False:
        return f"the popup reads {popup} but the network shows the node not connected"
    if popup == "Disconnected" and network.connect is True:
        return "the popup reads Disconnected but the network shows the node connected"
    return None


def _verdict(
    report: HealthReport,
    data: dict[str, Any],
    status_file: dict[str, Any],
    events: list[dict[str, Any]],
    policy: HealthSettings,
) -> tuple[Verdict, str]:
    m = report.metrics
    host_info = as_dict(data.get("host"))
    if not data.get("installed", True):
        if host_info.get("cloud_init") == "running":
            return Verdict.PROVISIONING, about(Verdict.PROVISIONING).meaning
        return Verdict.NOT_DEPLOYED, about(Verdict.NOT_DEPLOYED).meaning
    popup = report.popup_status
    good_now = popup in GOOD_STATES and report.browser_alive and report.runner_alive
    if m.disk_free_kib is not None and m.disk_free_kib < policy.disk_free_min_mib * 1024:
        return Verdict.DISK_FULL, (
            f"{_mib(m.disk_free_kib)} free of {_mib(m.disk_total_kib)} where the node lives "
            f"(under {policy.disk_free_min_mib} MiB); free space on the host"
        )
    if not report.runner_alive:
        last = crash_loop(events, policy.crash_loop_starts, policy.crash_loop_seconds)
        if last is not None:
            return Verdict.RUNNER_CRASH_LOOP, (
                f"the runner crashed on each of its last {policy.crash_loop_starts} starts; "
                f"last error: {last}"
            )
        crashed = last_run_crash(events)
        if crashed is not None:
            report.facts["runner_crashed"] = crashed
            return Verdict.RUNNER_DOWN, f"the node runner crashed: {crashed}"
        detail = f" (last error: {report.error})" if report.error else ""
        return Verdict.RUNNER_DOWN, about(Verdict.RUNNER_DOWN).meaning + detail
    if not report.browser_alive:
        launching = _seconds_since(status_file.get("browser_launching_at"), host_info)
        if launching is not None and -5 <= launching <= LAUNCH_GRACE_SECONDS:
            return Verdict.STARTING, f"the runner is starting the browser ({launching:.0f} s ago)"
        detail = f" (last error: {report.error})" if report.error else ""
        return Verdict.BROWSER_DOWN, about(Verdict.BROWSER_DOWN).meaning + detail
    low_memory = (
        m.mem_available_kib is not None
        and m.mem_available_kib < policy.memory_available_min_mib * 1024
    )
    if low_memory and not good_now:
        return Verdict.MEMORY_LOW, (
            f"{_mib(m.mem_available_kib)} of {_mib(m.mem_total_kib)} memory available "
            f"(under {policy.memory_available_min_mib} MiB)"
        )
    changed = status_file.get("page_changed")
    if isinstance(changed, str) and changed:
        # before Starting and BrowserHung: the runner reads the browser fine, just not the page
        return Verdict.PAGE_CHANGED, changed
    if popup is None or _popup_older_than_browser(status_file):
        return Verdict.STARTING, about(Verdict.STARTING).meaning
    silent = _popup_age(status_file, host_info)
    if silent is not None and silent > policy.popup_stale_seconds:
        detail = f" (last error: {report.error})" if report.error else ""
        return Verdict.BROWSER_HUNG, (
            f"the browser runs but the runner has not read its popup for {silent:.0f} s{detail}"
        )
    if popup == "Disconnected" and not report.banned and _settling(status_file, host_info):
        # the extension connects in the seconds after its browser starts: not an outage yet
        return Verdict.STARTING, "the browser has just started; the extension is still connecting"
    if popup == "Logged out":
        return Verdict.LOGGED_OUT, about(Verdict.LOGGED_OUT).meaning
    if popup == "Suspended":
        return Verdict.SUSPENDED, about(Verdict.SUSPENDED).meaning
    if popup == "Unsupported" or report.banned:
        why = report.banned_reason or "no reason given"
        return Verdict.UNSUPPORTED, f"the network marks this node Unsupported: {why}"
    if popup == "Disconnected" or report.network_connect is False:
        who = "the popup" if popup == "Disconnected" else "the network"
        return Verdict.DISCONNECTED, f"{about(Verdict.DISCONNECTED).meaning} (per {who})"
    if popup in GOOD_STATES:
        return Verdict.GOOD, f"the popup reads {popup}"
    return Verdict.DISCONNECTED, f"the popup reads {popup!r}, which is not a connected state"


def _popup_age(status_file: dict[str, Any], host_info: dict[str, Any]) -> float | None:
    """Seconds since the runner last read the popup, on the host's own clock (the probe's
    `date`, else the runner's last status write): never compared with the control plane's."""
    read_at = parse_time(status_file.get("popup_read_at"))
    if read_at is None:
        return None
    clock = as_float(host_info.get("clock"))
    if clock is not None:
        return clock - read_at.timestamp()
    updated = parse_time(status_file.get("updated_at"))
    return None if updated is None else (updated - read_at).total_seconds()


def _seconds_since(stamp: Any, host_info: dict[str, Any]) -> float | None:
    """Seconds from a time the runner wrote to the probe's `date`, both on the host's clock;
    None when either is missing."""
    at = parse_time(stamp)
    clock = as_float(host_info.get("clock"))
    return None if at is None or clock is None else clock - at.timestamp()


def _settling(status_file: dict[str, Any], host_info: dict[str, Any]) -> bool:
    """The runner is still in the minute after a browser start in which it re-reads the
    popup until the node settles (`settling_until`, on the host's clock)."""
    left = _seconds_since(status_file.get("settling_until"), host_info)
    return left is not None and left < 0


def _popup_older_than_browser(status_file: dict[str, Any]) -> bool:
    read_at = parse_time(status_file.get("popup_read_at"))
    started = parse_time(status_file.get("browser_started_at"))
    return bool(started and (read_at is None or read_at < started))


def with_network_reason(report: HealthReport, reason: str) -> HealthReport:
    """An Unsupported verdict completed with the reason the network gives for it."""
    if report.status == Verdict.UNSUPPORTED and not report.banned_reason:
        report.banned_reason = reason
        report.reason = f"the network marks this node Unsupported: {reason}"
    return report


# ---------------------------------------------------------------- the fleet


@dataclass(frozen=True)
class SignInRefusal:
    """Firebase refused the control plane's sign-in for the account: the setting to fix."""

    setting: str  # network.web_api_key, account.email or account.password
    reason: str  # Firebase's own word for it
    endpoint: str

    @property
    def detail(self) -> str:
        return (
            f"the Gradient account's API sign-in is refused ({self.reason}): fix {self.setting} "
            "in the fleet file; the network's view and rewards are unavailable until then"
        )


@dataclass(frozen=True)
class NetworkState:
    """The fleet-wide state of one sweep: the Gradient network's (`down`), and whether
    GradientLab itself is cut off from the fleet (`cut_off`: its SSH fails on most hosts at
    once, or its connection keeper fails). Neither is any host's fault."""

    down: bool
    reason: str
    disconnected: int = 0
    checked: int = 0
    cut_off: bool = False
    cut_off_reason: str = ""
    cut_off_hosts: int = 0  # hosts whose check failed for it
    # the account's own API sign-in: refused (the setting to fix; not the network's fault), or
    # known to work this sweep (the network's view was read); neither when the API failed
    sign_in_refused: SignInRefusal | None = None
    signed_in: bool = False


def worker_name() -> str:
    return socket.gethostname() or "this worker"


def cut_off_of(
    failures: Sequence[tuple[str, str | None]],
    policy: HealthSettings,
    worker: str | None = None,
    sample_error: str | None = None,
) -> tuple[bool, str, int]:
    """Whether the control plane is cut off from the fleet, from each checked host's (verdict,
    SSH stage it failed at): (cut off, why, hosts failing for it). Cut off when the keeper
    failed on any host, or when at least `breaker_share` (and `breaker_min_hosts`) of the
    checked hosts failed before any command ran (TCP, banner, key exchange, login). A host not
    checked at all (the sweep's deadline) counts neither way."""
    checked = [(v, stage) for v, stage in failures if v != Verdict.NOT_CHECKED]
    keeper = sum(1 for v, _ in checked if v == Verdict.KEEPER_FAILED)
    access = sum(
        1
        for v, stage in checked
        if v in (Verdict.UNREACHABLE, Verdict.AUTH_REFUSED)
        and (stage is None or stage in ACCESS_CAUSES)
    )
    where = worker or worker_name()
    hint = "check operator_cidr, the firewall, the keeper"
    detail = f" (e.g. {sample_error[:200]})" if sample_error else ""
    if keeper:
        return (
            True,
            f"GradientLab cannot reach the fleet from {where}: its connection keeper failed on "
            f"{keeper} of {len(checked)} checked hosts{detail}; {hint}",
            keeper + access,
        )
    if access >= policy.breaker_min_hosts and access >= policy.breaker_share * len(checked):
        return (
            True,
            f"GradientLab cannot reach the fleet from {where}: {access} of {len(checked)} checked "
            f"hosts fail at TCP, SSH banner or login at once{detail}; {hint}",
            access,
        )
    return False, "", 0


def with_cut_off(
    state: NetworkState, reports: list[HealthReport], policy: HealthSettings
) -> NetworkState:
    """`state` completed with whether this sweep's reports say the control plane is cut off."""
    failures = [(Verdict(r.status), r.facts.get("ssh_stage")) for r in reports]
    sample = next(
        (
            r.error
            for r in reports
            if r.error and r.status in (Verdict.KEEPER_FAILED, Verdict.UNREACHABLE)
        ),
        None,
    )
    cut, why, hosts = cut_off_of(failures, policy, sample_error=sample)
    return replace(state, cut_off=cut, cut_off_reason=why, cut_off_hosts=hosts)


def network_state(
    reports: list[HealthReport], api_error: str | None, policy: HealthSettings
) -> NetworkState:
    """Down or degraded when the network's API fails, or when most nodes whose browser runs
    show Disconnected in the same sweep: a fleet-wide fault, not a node's."""
    return network_state_of([r.status for r in reports], api_error, policy)


def network_state_of(
    statuses: Sequence[str], api_error: str | None, policy: HealthSettings
) -> NetworkState:
    """`network_state` from the sweep's verdicts alone (a sharded sweep's, read back from the
    samples its shards recorded)."""
    checked = [
        s
        for s in statuses
        if s in (Verdict.GOOD, Verdict.DISCONNECTED, Verdict.UNSUPPORTED, Verdict.SUSPENDED)
    ]
    disconnected = sum(1 for s in checked if s == Verdict.DISCONNECTED)
    if api_error:
        return NetworkState(
            True, f"the network's API fails: {api_error}", disconnected, len(checked)
        )
    if len(
        checked
    ) >= policy.network_down_min_nodes and disconnected >= policy.network_down_share * len(checked):
        return NetworkState(
            True,
            f"{disconnected} of {len(checked)} checked nodes are Disconnected at once",
            disconnected,
            len(checked),
        )
    return NetworkState(False, "", disconnected, len(checked))
