"""The control plane's own faults, decided without I/O: the breaker (GradientLab cut off from
its fleet), the keeper's verdict, the fleet-wide hourly caps on reboots and logins, the
provider's second signal, and a host's output that can never stop a sweep.

Pure: reports and histories in, verdicts and decisions out, on a fixed clock of their own."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from gradientlab.config import HealthSettings
from gradientlab.health import (
    Decision,
    HealthReport,
    History,
    NetworkState,
    PastAction,
    Rung,
    Verdict,
    about,
    apply_brake,
    decide,
    judge,
    observe,
    parse_probe,
)
from gradientlab.health.act import Recovery, Withheld
from gradientlab.health.decide import FleetUsage
from gradientlab.health.judge import cut_off_of, failure_verdict, with_cut_off
from gradientlab.health.sweep import provider_objection
from gradientlab.providers.base import HostRecord, HostState
from gradientlab.remote.executor import (
    AuthRefused,
    CommandResult,
    CommandTimeout,
    HostUnreachable,
    RemoteError,
)
from gradientlab.remote.keeper import capped_run_answer
from gradientlab.remote.wire import MAX_HEADER

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
POLICY = HealthSettings()
UP = NetworkState(False, "")
V, R = Verdict, Rung


def report(verdict: Verdict, host: str = "node-1", stage: str | None = None) -> HealthReport:
    r = HealthReport(
        host=host, status=verdict, reachable=False, checked_at=T0, reason=about(verdict).meaning
    )
    if stage:
        r.facts["ssh_stage"] = stage
    return r


def seen_before(verdict: Verdict) -> History:
    return History(fault=str(verdict), fault_since=T0 - timedelta(minutes=5), sweeps=1)


# ---------------------------------------------------------------- the keeper's own verdict


@pytest.mark.parametrize("cause", ["keeper-gone", "keeper-error", "keeper-timeout"])
def test_a_keeper_failure_is_a_verdict_of_its_own_not_unreachable(cause: str) -> None:
    exc = RemoteError("node-1: the connection keeper stopped", host="node-1", cause=cause)
    assert failure_verdict(exc) == V.KEEPER_FAILED
    assert about(V.KEEPER_FAILED).ladder == ()
    rep = judge(observe("node-1", lambda: (_ for _ in ()).throw(exc), T0), None, POLICY)
    assert rep.status == V.KEEPER_FAILED and rep.facts["ssh_stage"] == cause
    # not a host fault: never a rung, even confirmed
    assert decide(rep, seen_before(V.KEEPER_FAILED), UP, POLICY).steps == ()


# ---------------------------------------------------------------- the breaker


def sweep_of(failing: int, good: int, stage: str = "no-tcp") -> list[HealthReport]:
    out = [report(V.UNREACHABLE, f"bad-{i}", stage) for i in range(failing)]
    out += [report(V.GOOD, f"good-{i}") for i in range(good)]
    return out


@pytest.mark.parametrize("stage", ["no-tcp", "no-banner", "no-handshake", "no-answer"])
def test_most_hosts_failing_at_the_connection_is_the_control_planes_fault(stage: str) -> None:
    state = with_cut_off(UP, sweep_of(3, 1, stage), POLICY)
    assert state.cut_off and state.cut_off_hosts == 3
    assert "cannot reach the fleet from" in state.cut_off_reason
    assert "operator_cidr, the firewall, the keeper" in state.cut_off_reason


def test_one_unreachable_host_of_three_is_that_hosts_fault() -> None:
    assert not with_cut_off(UP, sweep_of(1, 2), POLICY).cut_off


def test_hung_probes_on_hosts_that_answered_ssh_do_not_trip_the_breaker() -> None:
    assert not with_cut_off(UP, sweep_of(3, 0, stage="timeout"), POLICY).cut_off


def test_refused_logins_everywhere_trip_it_and_hosts_not_checked_count_neither_way() -> None:
    failures = [(V.AUTH_REFUSED, "auth-refused")] * 2 + [(V.NOT_CHECKED, None)] * 50
    assert cut_off_of(failures, POLICY, worker="w1")[0]
    assert "from w1" in cut_off_of(failures, POLICY, worker="w1")[1]


def test_any_keeper_failure_trips_it() -> None:
    cut, why, _ = cut_off_of([(V.KEEPER_FAILED, "keeper-gone"), (V.GOOD, None)], POLICY)
    assert cut and "keeper failed" in why


def test_cut_off_no_host_is_touched_nor_quarantined() -> None:
    cut = with_cut_off(UP, sweep_of(3, 1), POLICY)
    for verdict in (V.UNREACHABLE, V.AUTH_REFUSED, V.KEEPER_FAILED):
        d = decide(report(verdict, stage="no-tcp"), seen_before(verdict), cut, POLICY)
        assert d.steps == () and not d.quarantine, d
        assert "not this host's fault" in d.reason
    # a host that answered still gets its light rungs, never a reboot
    d = decide(report(V.BROWSER_HUNG), seen_before(V.BROWSER_HUNG), cut, POLICY)
    assert d.steps == (R.RESTART_BROWSER, R.RESTART_RUNNER)
    # a host whose every budget is spent is not quarantined while the plane is cut off
    spent = History(
        fault="RunnerDown",
        fault_since=T0 - timedelta(minutes=5),
        sweeps=1,
        actions=tuple(
            PastAction("restart_runner", T0 - timedelta(minutes=50 - i), False)
            for i in range(POLICY.budgets.restart_runner)
        ),
    )
    d = decide(report(V.RUNNER_DOWN), spent, cut, POLICY)
    assert not d.quarantine and d.steps == ()


# ---------------------------------------------------------------- fleet-wide hourly caps


def reboots(*hosts: str) -> dict[str, Decision]:
    return {h: Decision((R.REBOOT_HOST,), "Unreachable") for h in hosts}


def test_the_hourly_cap_holds_reboots_across_sweeps() -> None:
    policy = HealthSettings(max_reboot_share=0.5, host_actions_per_hour=3)
    hosts = [f"h{i}" for i in range(10)]
    first = apply_brake(reboots(*hosts), 10, policy, FleetUsage(host_actions=0))
    assert sum(R.REBOOT_HOST in d.steps for d in first.values()) == 3  # the hour's cap, not 5
    later = apply_brake(reboots(*hosts), 10, policy, FleetUsage(host_actions=3))
    assert not any(R.REBOOT_HOST in d.steps for d in later.values())
    assert all("per hour across the fleet" in d.reason for d in later.values())


def test_unset_the_hourly_cap_is_the_per_sweep_brake() -> None:
    policy = HealthSettings(max_reboot_share=0.2)
    hosts = [f"h{i}" for i in range(10)]
    assert (
        sum(
            R.REBOOT_HOST in d.steps
            for d in apply_brake(reboots(*hosts), 10, policy, FleetUsage(1)).values()
        )
        == 1
    )


def logins(*hosts: str) -> dict[str, Decision]:
    return {h: Decision((R.LOGIN, R.RESTART_BROWSER), "LoggedOut") for h in hosts}


def test_logins_are_capped_across_the_fleet_per_hour() -> None:
    policy = HealthSettings(logins_per_hour=4)
    out = apply_brake(logins(*[f"h{i}" for i in range(10)]), 10, policy, FleetUsage(logins=1))
    assert sum(R.LOGIN in d.steps for d in out.values()) == 3
    held = [d for d in out.values() if R.LOGIN not in d.steps]
    assert all(d.steps == (R.RESTART_BROWSER,) and "login cap" in d.reason for d in held)


def test_a_refused_password_leaves_one_login_an_hour_for_the_whole_fleet() -> None:
    usage = FleetUsage(logins=0, login_refused="INVALID_PASSWORD")
    out = apply_brake(logins(*[f"h{i}" for i in range(10)]), 10, POLICY, usage)
    assert sum(R.LOGIN in d.steps for d in out.values()) == 1
    usage = FleetUsage(logins=1, login_refused="INVALID_PASSWORD")
    out = apply_brake(logins(*[f"h{i}" for i in range(10)]), 10, POLICY, usage)
    assert not any(R.LOGIN in d.steps for d in out.values())
    assert all("password was refused" in d.reason for d in out.values())


# ---------------------------------------------------------------- the provider's second signal


def host(state: str) -> HostRecord:
    return HostRecord("vm-1", "oci", "192.0.2.1", 22, "gradient", "ssh-ed25519 AAAA", state, "x")


def test_the_provider_must_agree_before_a_host_is_touched() -> None:
    assert provider_objection(R.REBOOT_HOST, host(HostState.RUNNING)) is None
    assert provider_objection(R.REBOOT_HOST, host(HostState.STOPPED)) is None
    assert "no such machine" in (provider_objection(R.REBOOT_HOST, None) or "")
    assert provider_objection(R.REPROVISION, None) is None  # gone: re-create it
    assert provider_objection(R.REPROVISION, host(HostState.STOPPED)) is None
    assert "runs" in (provider_objection(R.REPROVISION, host(HostState.RUNNING)) or "")


def test_a_withheld_or_unrecordable_host_step_never_runs() -> None:
    ran: list[str] = []
    good = report(V.GOOD)

    def recovery(signal: object, start: object) -> Recovery:
        return Recovery(
            connect=lambda: (_ for _ in ()).throw(AssertionError("no SSH here")),
            python=None,
            reprobe=lambda: good,
            reboot_host=lambda: ran.append("reboot"),
            second_signal=signal,  # type: ignore[arg-type]
            start_row=start,  # type: ignore[arg-type]
            wait_seconds=0,
        )

    def objects(step: Rung) -> None:
        raise Withheld("the provider has no such machine any more")

    def cannot_write(step: Rung, at: datetime) -> int:
        raise OSError("database gone")

    _, actions = recovery(objects, None).recover(report(V.UNREACHABLE), (R.REBOOT_HOST,))
    assert ran == [] and actions[0].detail.startswith("withheld: ") and not actions[0].ok
    _, actions = recovery(None, cannot_write).recover(report(V.UNREACHABLE), (R.REBOOT_HOST,))
    assert ran == [] and "could not be recorded" in actions[0].detail
    rows: list[Rung] = []

    def written(step: Rung, at: datetime) -> int:
        rows.append(step)
        return 41

    _, actions = recovery(None, written).recover(report(V.UNREACHABLE), (R.REBOOT_HOST,))
    assert rows == [R.REBOOT_HOST] and ran == ["reboot"]  # the row first, then the reboot
    assert actions[0].row_id == 41 and actions[0].ok


# ---------------------------------------------------------------- a host's output


def test_a_deeply_nested_status_json_is_an_unreadable_probe_not_an_exception() -> None:
    nested = "[" * 100_000 + "]" * 100_000
    text = '{"probe_version": "sh2", "status": ' + nested + ', "events": [\n]}\n'
    assert parse_probe(text) is None
    ex = CommandResult("probe", 0, text, "")

    class Answer:
        name = "node-1"

        def run(self, command: str, timeout: float = 60) -> CommandResult:
            return ex

    rep = judge(observe("node-1", Answer, T0), None, POLICY)
    assert rep.status == V.PROBE_INVALID


def test_a_probe_answer_at_the_cap_says_so() -> None:
    from gradientlab.health.judge import PROBE_MAX_BYTES

    text = '{"probe_version": "sh2", "status": {"x": "' + "y" * PROBE_MAX_BYTES
    text = text[:PROBE_MAX_BYTES]

    class Answer:
        name = "node-1"

        def run(self, command: str, timeout: float = 60) -> CommandResult:
            return CommandResult(command, 0, text, "")

    rep = judge(observe("node-1", Answer, T0), None, POLICY)
    assert rep.status == V.PROBE_INVALID and "KiB cap" in rep.reason


@pytest.mark.parametrize("char", ["x", "\u00e9", "\x01"])
def test_the_keeper_answer_always_fits_its_wire(char: str) -> None:
    answer = capped_run_answer(0, char * (3 * MAX_HEADER), char * MAX_HEADER)
    assert len(json.dumps(answer).encode()) <= MAX_HEADER
    assert answer["truncated"] is True and answer["stdout"].startswith(char * 100)
    small = capped_run_answer(0, "ok\n", "")
    assert small["stdout"] == "ok\n" and small["truncated"] is False


@pytest.mark.parametrize(
    ("exc", "verdict"),
    [
        (HostUnreachable("x", cause="no-banner"), V.UNREACHABLE),
        (AuthRefused("x"), V.AUTH_REFUSED),
        (CommandTimeout("x"), V.UNREACHABLE),
    ],
)
def test_the_ssh_stage_is_kept_for_the_breaker(exc: RemoteError, verdict: Verdict) -> None:
    def connect() -> None:
        raise exc

    rep = judge(observe("node-1", connect, T0), None, POLICY)
    assert rep.status == verdict and rep.facts["ssh_stage"] == exc.cause
