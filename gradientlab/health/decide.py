"""Deciding a recovery: which rung to climb now, or why none. Pure: the current verdict and the
host's recent history in, a decision with its reason out; unit-tested without a database."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from gradientlab.config import HealthSettings
from gradientlab.health.judge import NetworkState
from gradientlab.health.report import HealthReport
from gradientlab.health.status import HOST_RUNGS, Rung, Verdict, about

HOUR = timedelta(hours=1)

# verdicts that are (or may be) the control plane's own fault while it is cut off from the fleet
CUT_OFF_VERDICTS = frozenset(
    {Verdict.UNREACHABLE, Verdict.AUTH_REFUSED, Verdict.KEEPER_FAILED, Verdict.NOT_CHECKED}
)


@dataclass(frozen=True)
class PastAction:
    step: str
    at: datetime
    ok: bool | None


@dataclass(frozen=True)
class History:
    """What the store knows about a host before this sweep."""

    fault: str | None = None  # the kind of its current incident
    fault_since: datetime | None = None
    sweeps: int = 0  # consecutive earlier sweeps that saw the current incident
    actions: tuple[PastAction, ...] = ()  # recovery steps since the last release, newest last
    quarantined_at: datetime | None = None
    quarantine_reason: str | None = None
    cloud: bool = False  # a cloud VM (re-provisioning can replace it)


@dataclass(frozen=True)
class Decision:
    steps: tuple[Rung, ...]  # to try now, in order, until the node is Good
    reason: str
    quarantine: bool = False
    hold: bool = False  # the host is being deployed: no incident for what that looks like
    skipped: tuple[str, ...] = field(default=())  # rungs left out, each with why

    @property
    def summary(self) -> str:
        if self.steps:
            return "try " + " → ".join(self.steps) + f" ({self.reason})"
        return ("quarantine: " if self.quarantine else "no action: ") + self.reason


def fault_confirmed(
    sweeps: int, since: datetime | None, at: datetime, policy: HealthSettings
) -> bool:
    """A fault seen on `sweeps` sweeps in a row (this one included), first seen at `since`:
    confirmed when seen on enough sweeps, or for long enough. The one rule for touching a
    host, paging a person, and calling the network down."""
    if sweeps >= policy.confirm_sweeps:
        return True
    return since is not None and at - since >= timedelta(seconds=policy.confirm_seconds)


def confirmed(report: HealthReport, history: History, policy: HealthSettings) -> bool:
    """Seen on enough consecutive sweeps, or for long enough, to touch the host."""
    since = history.fault_since if history.fault is not None else None
    return fault_confirmed(history.sweeps + 1, since, report.checked_at, policy)


def _attempts(history: History, rung: Rung, now: datetime) -> list[PastAction]:
    return [a for a in history.actions if a.step == rung and now - HOUR < a.at <= now]


def rung_state(
    history: History, rung: Rung, now: datetime, policy: HealthSettings
) -> tuple[str, datetime | None]:
    """("ready", None), ("backoff", until) or ("spent", None) for one rung of one host."""
    budget = getattr(policy.budgets, rung.value)
    tries = _attempts(history, rung, now)
    if len(tries) >= budget:
        return "spent", None
    if tries:
        last = max(a.at for a in tries)
        wait = timedelta(seconds=policy.backoff_seconds * 2 ** (len(tries) - 1))
        if now < last + wait:
            return "backoff", last + wait
    return "ready", None


def decide(
    report: HealthReport, history: History, network: NetworkState, policy: HealthSettings
) -> Decision:
    verdict = Verdict(report.status)
    now = report.checked_at
    if verdict in (Verdict.GOOD, Verdict.STARTING):
        return Decision((), about(verdict).meaning)
    if history.quarantined_at is not None:
        return Decision(
            (),
            f"quarantined since {history.quarantined_at:%Y-%m-%d %H:%M} UTC "
            f"({history.quarantine_reason or 'recovery budget spent'}); "
            "`gradientlab hosts release` hands it back",
        )
    if network.cut_off and verdict in CUT_OFF_VERDICTS:
        return Decision((), f"not this host's fault: {network.cut_off_reason}; waiting")
    ladder = about(verdict).ladder
    if not ladder:
        return Decision((), about(verdict).meaning)
    if network.cut_off:
        # GradientLab cannot see most of its fleet: it touches no host until it can again
        ladder = tuple(r for r in ladder if r not in HOST_RUNGS)
        if not ladder:
            return Decision((), f"{network.cut_off_reason}; no host is touched meanwhile")
    if network.down:
        # fleet-wide: only what does not depend on the network, a dead browser or runner
        ladder = tuple(
            r
            for r in ladder
            if verdict in (Verdict.BROWSER_DOWN, Verdict.RUNNER_DOWN)
            and r in (Rung.RESTART_BROWSER, Rung.RESTART_RUNNER)
        )
        if not ladder:
            return Decision((), f"the network is down or degraded ({network.reason}); waiting")
    if verdict == Verdict.RUNNER_DOWN and report.facts.get("runner_crashed"):
        # a runner that crashes on start is not fixed by rebooting the machine under it
        ladder = tuple(r for r in ladder if r not in HOST_RUNGS)
    if Rung.REPROVISION in ladder and not (policy.reprovision and history.cloud):
        ladder = tuple(r for r in ladder if r != Rung.REPROVISION)
    sure = confirmed(report, history, policy)
    steps: list[Rung] = []
    skipped: list[str] = []
    spent: list[Rung] = []
    waiting: list[str] = []
    for rung in ladder:
        state, until = rung_state(history, rung, now, policy)
        if state == "spent":
            spent.append(rung)
            skipped.append(f"{rung}: budget of {getattr(policy.budgets, rung.value)}/h spent")
            continue
        if state == "backoff":
            assert until is not None
            waiting.append(f"{rung} after {until:%H:%M:%S}")
            skipped.append(f"{rung}: backing off until {until:%H:%M:%S} UTC")
            if rung in HOST_RUNGS:
                break  # a heavier host rung waits for this one, never jumps past it
            continue
        if rung in HOST_RUNGS:
            if not sure:
                waiting.append(f"{rung} once the fault is confirmed")
                skipped.append(
                    f"{rung}: waits for the fault on {policy.confirm_sweeps} sweeps in a row"
                )
                break
            steps.append(rung)
            break  # one host-touching rung at most, and only after the lighter ones
        steps.append(rung)
    if steps:
        return Decision(tuple(steps), f"{verdict}: {report.reason}", skipped=tuple(skipped))
    if waiting:
        return Decision((), "waiting: " + "; ".join(waiting), skipped=tuple(skipped))
    if spent and len(spent) == len(ladder) and not network.cut_off:
        return Decision(
            (),
            f"every recovery step's budget is spent ({', '.join(spent)}); "
            "leaving the host alone until a person releases it",
            quarantine=True,
            skipped=tuple(skipped),
        )
    return Decision((), "no recovery step applies", skipped=tuple(skipped))


@dataclass(frozen=True)
class FleetUsage:
    """What the whole fleet already spent in the rolling hour before this sweep."""

    host_actions: int = 0  # reboots and re-provisions, started ones included
    logins: int = 0
    login_refused: str | None = None  # the open account-wide incident's reason, if any


def host_actions_per_hour(fleet_size: int, policy: HealthSettings) -> int:
    """The fleet-wide hourly cap on reboots and re-provisions."""
    if policy.host_actions_per_hour is not None:
        return policy.host_actions_per_hour
    return per_sweep_cap(fleet_size, policy)


def per_sweep_cap(fleet_size: int, policy: HealthSettings) -> int:
    return max(1, math.floor(policy.max_reboot_share * fleet_size + 1e-9))


def apply_brake(
    decisions: dict[str, Decision],
    fleet_size: int,
    policy: HealthSettings,
    usage: FleetUsage | None = None,
) -> dict[str, Decision]:
    """Never touch more than a share of the fleet's hosts in one sweep (at least one), nor more
    than the hourly cap across sweeps; never log in more often than the fleet's hourly login
    cap, and only once an hour while the account's password is refused."""
    usage = usage or FleetUsage()
    per_sweep = per_sweep_cap(fleet_size, policy)
    hourly = host_actions_per_hour(fleet_size, policy)
    allowed = min(per_sweep, max(0, hourly - usage.host_actions))
    login_cap = 1 if usage.login_refused else policy.logins_per_hour
    logins_left = max(0, login_cap - usage.logins)
    out: dict[str, Decision] = {}
    used = 0
    for host in sorted(decisions):
        d = decisions[host]
        if Rung.LOGIN in d.steps:
            if logins_left > 0:
                logins_left -= 1
            else:
                why = (
                    f"the account's password was refused ({usage.login_refused}); one login "
                    "an hour is tried across the fleet until it works"
                    if usage.login_refused
                    else f"fleet login cap: {login_cap} logins per hour across the fleet"
                )
                rest: tuple[Rung, ...] = tuple(s for s in d.steps if s != Rung.LOGIN)
                d = replace(d, steps=rest, reason=f"{d.reason}; {why}" if rest else why)
        if not any(step in HOST_RUNGS for step in d.steps):
            out[host] = d
            continue
        if used < allowed:
            used += 1
            out[host] = d
            continue
        kept = tuple(s for s in d.steps if s not in HOST_RUNGS)
        if allowed < per_sweep:
            note = (
                f"fleet brake: {hourly} reboots or re-provisions per hour across the fleet, "
                f"{usage.host_actions} already in the last hour; this one waits"
            )
        else:
            note = (
                f"fleet brake: {allowed} of {fleet_size} hosts may be rebooted per sweep; "
                "this one waits for the next"
            )
        out[host] = replace(d, steps=kept, reason=note if not kept else f"{d.reason}; {note}")
    return out
