"""Deciding a recovery: which rung of a verdict's ladder to climb now, or why none; the fleet
brake; and whole outages simulated sweep by sweep, so a fault can never become a reboot storm.

Pure: a report, the host's history and the network's state in, a decision out. Fixed clock T0."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gradientlab.config import BudgetSettings, HealthSettings
from gradientlab.health import (
    ABOUT,
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
    network_state,
)

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
POLICY = HealthSettings()
UP = NetworkState(False, "")
DOWN = NetworkState(True, "3 of 3 checked nodes are Disconnected at once", 3, 3)
V, R = Verdict, Rung
SWEEP = timedelta(minutes=5)


def report(verdict: Verdict, at: datetime = T0, host: str = "node-1") -> HealthReport:
    return HealthReport(
        host=host,
        status=verdict,
        reachable=verdict != V.UNREACHABLE,
        checked_at=at,
        reason=about(verdict).meaning,
    )


def confirmed(verdict: Verdict, **kw: Any) -> History:
    """The fault was seen on the sweep before this one too."""
    return History(fault=str(verdict), fault_since=T0 - SWEEP, sweeps=1, **kw)


def tried(rung: Rung, *minutes_ago: float, ok: bool = False) -> tuple[PastAction, ...]:
    return tuple(PastAction(str(rung), T0 - timedelta(minutes=m), ok) for m in minutes_ago)


def spent(*rungs: Rung, policy: HealthSettings = POLICY) -> tuple[PastAction, ...]:
    """Each rung tried its whole hourly budget, the last try 50 minutes ago or earlier."""
    out: tuple[PastAction, ...] = ()
    for rung in rungs:
        budget = getattr(policy.budgets, rung.value)
        out += tried(rung, *(50 + i for i in range(budget)))
    return out


# ---------------------------------------------------------------- the vocabulary


def test_every_verdict_is_described() -> None:
    assert set(ABOUT) == set(Verdict)
    assert all(a.meaning for a in ABOUT.values())


# what one decision tries when nothing was tried yet and the fault is confirmed: the ladder up
# to and including its first host-touching rung (one reboot at most per decision)
CONFIRMED_STEPS = {
    V.UNREACHABLE: (R.REBOOT_HOST,),
    V.NOT_DEPLOYED: (R.DEPLOY,),
    V.MEMORY_LOW: (R.RESTART_BROWSER, R.REBOOT_HOST),
    V.RUNNER_DOWN: (R.RESTART_RUNNER, R.REBOOT_HOST),
    V.BROWSER_DOWN: (R.RESTART_BROWSER, R.RESTART_RUNNER, R.REBOOT_HOST),
    V.BROWSER_HUNG: (R.RESTART_BROWSER, R.RESTART_RUNNER, R.REBOOT_HOST),
    V.LOGGED_OUT: (R.LOGIN, R.RESTART_BROWSER, R.RESTART_RUNNER),
    V.DISCONNECTED: (R.RESTART_BROWSER, R.LOGIN, R.RESTART_RUNNER, R.REBOOT_HOST),
}
# on the first sweep that sees the fault: the light rungs only
FIRST_SWEEP_STEPS = {
    V.UNREACHABLE: (),
    V.NOT_DEPLOYED: (R.DEPLOY,),
    V.MEMORY_LOW: (R.RESTART_BROWSER,),
    V.RUNNER_DOWN: (R.RESTART_RUNNER,),
    V.BROWSER_DOWN: (R.RESTART_BROWSER, R.RESTART_RUNNER),
    V.BROWSER_HUNG: (R.RESTART_BROWSER, R.RESTART_RUNNER),
    V.LOGGED_OUT: (R.LOGIN, R.RESTART_BROWSER, R.RESTART_RUNNER),
    V.DISCONNECTED: (R.RESTART_BROWSER, R.LOGIN, R.RESTART_RUNNER),
}
# nothing GradientLab may do by itself: access, security, the network's word, or a person's job
NO_STEPS = {
    V.AUTH_REFUSED,
    V.HOST_KEY_CHANGED,
    V.HOST_KEY_INVALID,
    V.UNSUPPORTED,
    V.SUSPENDED,
    V.DISK_FULL,
    V.RUNNER_CRASH_LOOP,
    V.PROVISIONING,
    V.PROBE_INVALID,
    V.PAGE_CHANGED,  # a restart cannot make an unknown page readable
    V.KEEPER_FAILED,  # GradientLab's own keeper: nothing on the host to fix
    V.NOT_CHECKED,  # the sweep ran out of time: nothing is known
}


def test_the_tables_above_cover_every_verdict() -> None:
    assert set(CONFIRMED_STEPS) | NO_STEPS | {V.GOOD, V.STARTING} == set(Verdict)
    assert set(FIRST_SWEEP_STEPS) == set(CONFIRMED_STEPS)
    for verdict, steps in CONFIRMED_STEPS.items():
        assert about(verdict).ladder[: len(steps)] == steps  # a prefix of the ladder, in order
    assert {v for v in Verdict if not about(v).ladder} == NO_STEPS | {V.GOOD, V.STARTING}


# ---------------------------------------------------------------- the ladder


@pytest.mark.parametrize("verdict", [V.GOOD, V.STARTING])
def test_a_healthy_node_gets_no_steps(verdict: Verdict) -> None:
    decision = decide(report(verdict), confirmed(verdict), UP, POLICY)
    assert decision.steps == ()
    assert decision.quarantine is False
    assert decision.reason == about(verdict).meaning


@pytest.mark.parametrize("verdict", list(CONFIRMED_STEPS))
def test_a_confirmed_fault_climbs_its_ladder_in_order(verdict: Verdict) -> None:
    decision = decide(report(verdict), confirmed(verdict), UP, POLICY)
    assert decision.steps == CONFIRMED_STEPS[verdict]
    assert decision.quarantine is False
    assert decision.reason == f"{verdict}: {about(verdict).meaning}"


@pytest.mark.parametrize("verdict", list(FIRST_SWEEP_STEPS))
def test_the_first_sweep_runs_the_light_rungs_only(verdict: Verdict) -> None:
    decision = decide(report(verdict), History(), UP, POLICY)
    assert decision.steps == FIRST_SWEEP_STEPS[verdict]
    assert R.REBOOT_HOST not in decision.steps
    assert decision.quarantine is False


@pytest.mark.parametrize("verdict", sorted(NO_STEPS))
@pytest.mark.parametrize("network", [UP, DOWN], ids=["network-up", "network-down"])
def test_access_security_network_and_host_verdicts_never_get_steps(
    verdict: Verdict, network: NetworkState
) -> None:
    policy = HealthSettings(reprovision=True)
    long_seen = History(
        fault=str(verdict), fault_since=T0 - timedelta(days=2), sweeps=500, cloud=True
    )
    for history in (History(cloud=True), long_seen):
        decision = decide(report(verdict), history, network, policy)
        assert decision.steps == ()
        assert decision.quarantine is False  # nothing was tried, so nothing was spent


@pytest.mark.parametrize("verdict", sorted(NO_STEPS))
def test_their_reason_is_what_a_person_should_know(verdict: Verdict) -> None:
    assert decide(report(verdict), History(), UP, POLICY).reason == about(verdict).meaning


def test_not_deployed_is_deployed_at_once() -> None:
    assert decide(report(V.NOT_DEPLOYED), History(), UP, POLICY).steps == (R.DEPLOY,)


def test_the_summary_reads_like_the_decision() -> None:
    act = decide(report(V.RUNNER_DOWN), History(), UP, POLICY)
    assert act.summary == "try restart_runner (RunnerDown: the node runner is not running)"
    none = decide(report(V.DISK_FULL), History(), UP, POLICY)
    assert none.summary.startswith("no action: the disk where the node lives is full")
    stop = Decision((), "budget spent", quarantine=True)
    assert stop.summary == "quarantine: budget spent"


# ---------------------------------------------------------------- confirmation before a reboot


def test_unreachable_on_the_first_sweep_waits_for_confirmation() -> None:
    decision = decide(report(V.UNREACHABLE), History(), UP, POLICY)
    assert decision.steps == ()
    assert decision.quarantine is False
    assert decision.reason == "waiting: reboot_host once the fault is confirmed"
    assert decision.skipped == ("reboot_host: waits for the fault on 2 sweeps in a row",)


def test_unreachable_on_the_second_sweep_reboots() -> None:
    history = History(fault="Unreachable", fault_since=T0 - SWEEP, sweeps=1)
    assert decide(report(V.UNREACHABLE), history, UP, POLICY).steps == (R.REBOOT_HOST,)


def test_a_fault_seen_for_long_enough_is_confirmed_by_its_age() -> None:
    policy = HealthSettings(confirm_sweeps=5, confirm_seconds=900)
    old = History(fault="Unreachable", fault_since=T0 - timedelta(minutes=15), sweeps=1)
    young = History(fault="Unreachable", fault_since=T0 - timedelta(minutes=14), sweeps=1)
    assert decide(report(V.UNREACHABLE), old, UP, policy).steps == (R.REBOOT_HOST,)
    assert decide(report(V.UNREACHABLE), young, UP, policy).steps == ()


def test_the_confirm_sweeps_are_the_policys() -> None:
    policy = HealthSettings(confirm_sweeps=3)
    two = History(fault="Unreachable", fault_since=T0 - SWEEP, sweeps=1)
    three = History(fault="Unreachable", fault_since=T0 - 2 * SWEEP, sweeps=2)
    assert decide(report(V.UNREACHABLE), two, UP, policy).steps == ()
    assert decide(report(V.UNREACHABLE), three, UP, policy).steps == (R.REBOOT_HOST,)


def test_one_sweep_is_enough_when_the_policy_says_so() -> None:
    policy = HealthSettings(confirm_sweeps=1)
    assert decide(report(V.UNREACHABLE), History(), UP, policy).steps == (R.REBOOT_HOST,)


@pytest.mark.parametrize("verdict", [V.BROWSER_DOWN, V.DISCONNECTED])
def test_light_rungs_run_at_once_but_the_reboot_waits(verdict: Verdict) -> None:
    decision = decide(report(verdict), History(), UP, POLICY)
    assert decision.steps == FIRST_SWEEP_STEPS[verdict]
    assert decision.skipped == ("reboot_host: waits for the fault on 2 sweeps in a row",)
    confirmed_now = decide(report(verdict), confirmed(verdict), UP, POLICY)
    assert confirmed_now.steps[-1] == R.REBOOT_HOST


# ---------------------------------------------------------------- budgets and backoff


def test_a_rung_tried_its_budget_this_hour_is_spent() -> None:
    history = History(actions=tried(R.RESTART_BROWSER, 10, 20, 30, 40, 50, 59))  # 6 = budget
    decision = decide(report(V.DISCONNECTED), history, UP, POLICY)
    assert decision.steps == (R.LOGIN, R.RESTART_RUNNER)
    assert "restart_browser: budget of 6/h spent" in decision.skipped


def test_tries_older_than_an_hour_do_not_count() -> None:
    history = History(actions=tried(R.RESTART_BROWSER, 60, 61, 70, 80, 90, 100))
    decision = decide(report(V.DISCONNECTED), history, UP, POLICY)
    assert decision.steps == FIRST_SWEEP_STEPS[V.DISCONNECTED]


def test_successful_tries_count_against_the_budget_too() -> None:
    history = History(actions=tried(R.RESTART_RUNNER, 10, 20, 30, 40, ok=True))
    decision = decide(report(V.RUNNER_DOWN), history, UP, POLICY)
    assert decision.steps == ()
    assert "restart_runner: budget of 4/h spent" in decision.skipped


def test_the_budgets_are_the_policys() -> None:
    policy = HealthSettings(budgets=BudgetSettings(restart_runner=5))
    history = History(actions=tried(R.RESTART_RUNNER, 10, 20, 30, 40))
    assert decide(report(V.RUNNER_DOWN), history, UP, policy).steps == (R.RESTART_RUNNER,)


@pytest.mark.parametrize("tries", [1, 2, 3])
def test_the_backoff_doubles_after_each_try(tries: int) -> None:
    policy = HealthSettings(backoff_seconds=100)
    wait = timedelta(seconds=100 * 2 ** (tries - 1))  # 100 s, 200 s, 400 s
    earlier = tuple(
        PastAction("restart_runner", T0 - timedelta(minutes=20 + 5 * i), False)
        for i in range(tries - 1)
    )

    def decision_after(since_last: timedelta) -> Decision:
        history = History(actions=(*earlier, PastAction("restart_runner", T0 - since_last, False)))
        return decide(report(V.RUNNER_DOWN), history, UP, policy)

    waiting = decision_after(wait - timedelta(seconds=1))
    assert waiting.steps == ()
    assert waiting.quarantine is False
    until = T0 + timedelta(seconds=1)
    assert waiting.reason.startswith(f"waiting: restart_runner after {until:%H:%M:%S}")
    assert f"restart_runner: backing off until {until:%H:%M:%S} UTC" in waiting.skipped
    assert decision_after(wait).steps == (R.RESTART_RUNNER,)


def test_a_rung_in_backoff_is_skipped_and_the_next_one_runs() -> None:
    history = History(actions=tried(R.LOGIN, 0.5))
    decision = decide(report(V.LOGGED_OUT), history, UP, POLICY)
    assert decision.steps == (R.RESTART_BROWSER, R.RESTART_RUNNER)
    assert any(s.startswith("login: backing off until") for s in decision.skipped)


def test_every_rung_spent_quarantines_with_a_reason() -> None:
    history = confirmed(
        V.DISCONNECTED,
        actions=spent(R.RESTART_BROWSER, R.LOGIN, R.RESTART_RUNNER, R.REBOOT_HOST),
    )
    decision = decide(report(V.DISCONNECTED), history, UP, POLICY)
    assert decision.steps == ()
    assert decision.quarantine is True
    assert decision.reason == (
        "every recovery step's budget is spent (restart_browser, login, restart_runner, "
        "reboot_host); leaving the host alone until a person releases it"
    )
    assert len(decision.skipped) == 4
    assert decision.summary.startswith("quarantine: ")


def test_a_rung_still_in_backoff_means_waiting_not_quarantine() -> None:
    actions = spent(R.RESTART_BROWSER, R.LOGIN, R.RESTART_RUNNER) + tried(R.REBOOT_HOST, 0.5)
    decision = decide(
        report(V.DISCONNECTED), confirmed(V.DISCONNECTED, actions=actions), UP, POLICY
    )
    assert decision.steps == ()
    assert decision.quarantine is False
    assert decision.reason.startswith("waiting: reboot_host after ")


def test_a_reboot_waiting_for_confirmation_means_waiting_not_quarantine() -> None:
    history = History(actions=spent(R.RESTART_BROWSER, R.RESTART_RUNNER))
    decision = decide(report(V.BROWSER_DOWN), history, UP, POLICY)
    assert decision.steps == ()
    assert decision.quarantine is False
    assert decision.reason == "waiting: reboot_host once the fault is confirmed"


def test_a_quarantined_host_gets_nothing_until_released() -> None:
    history = confirmed(
        V.DISCONNECTED,
        quarantined_at=T0 - timedelta(hours=2),
        quarantine_reason="every recovery step's budget is spent",
    )
    decision = decide(report(V.DISCONNECTED), history, UP, POLICY)
    assert decision.steps == ()
    assert decision.quarantine is False  # already is: not quarantined again
    assert "quarantined since 2025-03-01 10:00 UTC" in decision.reason
    assert "every recovery step's budget is spent" in decision.reason
    assert "`gradientlab hosts release`" in decision.reason


def test_a_quarantined_host_that_is_good_again_is_just_good() -> None:
    history = History(quarantined_at=T0 - timedelta(hours=2))
    assert decide(report(V.GOOD), history, UP, POLICY).reason == about(V.GOOD).meaning


# ---------------------------------------------------------------- re-provisioning


def unreachable_after_reboots(cloud: bool) -> History:
    return confirmed(V.UNREACHABLE, actions=spent(R.REBOOT_HOST), cloud=cloud)


def test_a_lost_cloud_vm_is_reprovisioned_when_the_policy_allows() -> None:
    decision = decide(
        report(V.UNREACHABLE), unreachable_after_reboots(True), UP, HealthSettings(reprovision=True)
    )
    assert decision.steps == (R.REPROVISION,)


@pytest.mark.parametrize(("reprovision", "cloud"), [(False, True), (True, False), (False, False)])
def test_no_reprovision_without_the_policy_and_a_cloud_vm(reprovision: bool, cloud: bool) -> None:
    history = unreachable_after_reboots(cloud)
    decision = decide(report(V.UNREACHABLE), history, UP, HealthSettings(reprovision=reprovision))
    assert decision.steps == ()
    assert decision.quarantine is True


def test_reprovision_waits_for_confirmation_too() -> None:
    history = History(actions=spent(R.REBOOT_HOST), cloud=True)  # no current incident yet
    decision = decide(report(V.UNREACHABLE), history, UP, HealthSettings(reprovision=True))
    assert decision.steps == ()
    assert decision.reason == "waiting: reprovision once the fault is confirmed"


def test_reprovision_waits_while_the_reboot_only_backs_off() -> None:
    history = confirmed(V.UNREACHABLE, actions=tried(R.REBOOT_HOST, 0.5), cloud=True)
    decision = decide(report(V.UNREACHABLE), history, UP, HealthSettings(reprovision=True))
    assert decision.steps == ()
    assert decision.reason.startswith("waiting: reboot_host after ")


# ---------------------------------------------------------------- the network is down


@pytest.mark.parametrize("verdict", [V.DISCONNECTED, V.LOGGED_OUT])
def test_with_the_network_down_its_symptoms_get_no_steps(verdict: Verdict) -> None:
    decision = decide(report(verdict), confirmed(verdict), DOWN, POLICY)
    assert decision.steps == ()
    assert decision.quarantine is False
    assert decision.reason == (f"the network is down or degraded ({DOWN.reason}); waiting")


def test_with_the_network_down_a_dead_browser_is_still_restarted() -> None:
    decision = decide(report(V.BROWSER_DOWN), confirmed(V.BROWSER_DOWN), DOWN, POLICY)
    assert decision.steps == (R.RESTART_BROWSER, R.RESTART_RUNNER)


def test_with_the_network_down_a_dead_runner_is_still_restarted() -> None:
    decision = decide(report(V.RUNNER_DOWN), confirmed(V.RUNNER_DOWN), DOWN, POLICY)
    assert decision.steps == (R.RESTART_RUNNER,)


@pytest.mark.parametrize("verdict", list(Verdict))
def test_with_the_network_down_nothing_touches_a_host(verdict: Verdict) -> None:
    history = confirmed(verdict, cloud=True, actions=spent(R.REBOOT_HOST))
    for h in (confirmed(verdict, cloud=True), history):
        decision = decide(report(verdict), h, DOWN, HealthSettings(reprovision=True))
        assert R.REBOOT_HOST not in decision.steps
        assert R.REPROVISION not in decision.steps
        assert R.DEPLOY not in decision.steps
        assert decision.quarantine is False


# ---------------------------------------------------------------- the fleet brake


def host_names(n: int) -> list[str]:
    return [f"node-{i:02d}" for i in range(n)]


def test_the_brake_lets_a_share_of_the_fleet_reboot_and_keeps_the_light_rungs() -> None:
    policy = HealthSettings(max_reboot_share=0.2)
    decisions = {
        h: decide(report(V.BROWSER_DOWN, host=h), confirmed(V.BROWSER_DOWN), UP, policy)
        for h in host_names(10)
    }
    assert all(d.steps[-1] == R.REBOOT_HOST for d in decisions.values())
    braked = apply_brake(decisions, fleet_size=10, policy=policy)
    assert set(braked) == set(decisions)
    rebooting = sorted(h for h, d in braked.items() if R.REBOOT_HOST in d.steps)
    assert rebooting == ["node-00", "node-01"]  # in name order, the same every sweep
    for host in rebooting:
        assert braked[host] == decisions[host]
    for host in set(braked) - set(rebooting):
        d = braked[host]
        assert d.steps == (R.RESTART_BROWSER, R.RESTART_RUNNER)
        assert "fleet brake: 2 of 10 hosts may be rebooted per sweep" in d.reason
        assert d.reason.startswith(decisions[host].reason)


def test_a_braked_reboot_with_nothing_lighter_leaves_no_steps() -> None:
    decisions = {
        h: decide(report(V.UNREACHABLE, host=h), confirmed(V.UNREACHABLE), UP, POLICY)
        for h in host_names(10)
    }
    braked = apply_brake(decisions, 10, POLICY)
    assert sum(1 for d in braked.values() if d.steps) == 2
    assert braked["node-09"].steps == ()
    assert braked["node-09"].reason.startswith("fleet brake: 2 of 10 hosts")


def test_a_tiny_fleet_may_still_reboot_one_host() -> None:
    decisions = {
        h: decide(report(V.UNREACHABLE, host=h), confirmed(V.UNREACHABLE), UP, POLICY)
        for h in host_names(3)
    }
    braked = apply_brake(decisions, 3, HealthSettings(max_reboot_share=0.2))  # 0.6 hosts → 1
    assert [h for h, d in braked.items() if d.steps] == ["node-00"]


def test_the_brake_counts_the_whole_fleet_and_only_host_rungs() -> None:
    decisions = {
        "a-light": decide(report(V.LOGGED_OUT), History(), UP, POLICY),
        "b-reboot": decide(report(V.UNREACHABLE), confirmed(V.UNREACHABLE), UP, POLICY),
        "c-reboot": decide(report(V.UNREACHABLE), confirmed(V.UNREACHABLE), UP, POLICY),
        "d-good": decide(report(V.GOOD), History(), UP, POLICY),
    }
    braked = apply_brake(decisions, fleet_size=10, policy=POLICY)  # 2 of a fleet of 10
    assert braked == decisions


def test_reprovisioning_counts_against_the_brake() -> None:
    policy = HealthSettings(reprovision=True, max_reboot_share=0.1)
    history = unreachable_after_reboots(cloud=True)
    decisions = {h: decide(report(V.UNREACHABLE, host=h), history, UP, policy) for h in "ab"}
    braked = apply_brake(decisions, 10, policy)
    assert braked["a"].steps == (R.REPROVISION,)
    assert braked["b"].steps == ()


def test_the_brakes_share_is_not_lost_to_float_rounding() -> None:
    decisions = {
        h: decide(report(V.UNREACHABLE, host=h), confirmed(V.UNREACHABLE), UP, POLICY)
        for h in host_names(100)
    }
    braked = apply_brake(decisions, 100, HealthSettings(max_reboot_share=0.29))
    assert sum(1 for d in braked.values() if d.steps) == 29


# ---------------------------------------------------------------- outages, sweep by sweep


def after_sweep(history: History, verdict: Verdict, at: datetime, d: Decision) -> History:
    """What the store knows after a sweep that saw `verdict` and ran `d`, every step failing."""
    if verdict in (V.GOOD, V.STARTING):
        return History(cloud=history.cloud, quarantined_at=history.quarantined_at)
    return History(
        fault=str(verdict),
        fault_since=history.fault_since or at,
        sweeps=history.sweeps + 1,
        actions=history.actions + tuple(PastAction(str(s), at, False) for s in d.steps),
        quarantined_at=at if d.quarantine else history.quarantined_at,
        quarantine_reason=d.reason if d.quarantine else history.quarantine_reason,
        cloud=history.cloud,
    )


def test_an_hour_long_network_outage_reboots_nothing() -> None:
    hosts = ["node-a", "node-b", "node-c"]
    histories = {h: History(cloud=True) for h in hosts}
    policy = HealthSettings(reprovision=True)
    decisions: list[Decision] = []
    for sweep in range(12):  # every 5 minutes for an hour
        at = T0 + sweep * SWEEP
        reports = [report(V.DISCONNECTED, at, host=h) for h in hosts]
        api_error = "503 Service Unavailable" if sweep % 3 == 0 else None
        network = network_state(reports, api_error, policy)
        assert network.down
        plan = apply_brake(
            {r.host: decide(r, histories[r.host], network, policy) for r in reports},
            len(hosts),
            policy,
        )
        for r in reports:
            decisions.append(plan[r.host])
            histories[r.host] = after_sweep(histories[r.host], r.status, at, plan[r.host])
    assert len(decisions) == 36
    assert not any(R.REBOOT_HOST in d.steps for d in decisions)
    assert all(d.steps == () for d in decisions)
    assert not any(d.quarantine for d in decisions)
    assert all(h.quarantined_at is None and h.actions == () for h in histories.values())


def simulate(
    verdict: Verdict, hours: float, policy: HealthSettings, cloud: bool = False
) -> list[tuple[datetime, Decision]]:
    """Sweeps every 5 minutes on a host that stays `verdict`, every step failing."""
    history = History(cloud=cloud)
    log: list[tuple[datetime, Decision]] = []
    for sweep in range(int(hours * 12)):
        at = T0 + sweep * SWEEP
        d = apply_brake({"node-1": decide(report(verdict, at), history, UP, policy)}, 1, policy)
        log.append((at, d["node-1"]))
        history = after_sweep(history, verdict, at, d["node-1"])
    return log


def most_in_an_hour(times: list[datetime]) -> int:
    return max((sum(1 for t in times if s <= t < s + timedelta(hours=1)) for s in times), default=0)


def test_a_host_unreachable_for_three_hours_reboots_within_budget_then_is_quarantined() -> None:
    log = simulate(V.UNREACHABLE, hours=3, policy=POLICY)
    reboots = [at for at, d in log if R.REBOOT_HOST in d.steps]
    quarantines = [at for at, d in log if d.quarantine]
    assert log[0][1].steps == ()  # the first sweep only waits for confirmation
    assert reboots == [T0 + SWEEP, T0 + 2 * SWEEP]
    assert most_in_an_hour(reboots) <= POLICY.budgets.reboot_host
    assert quarantines == [T0 + 3 * SWEEP]  # exactly once
    assert all(d.steps == () for at, d in log if at > quarantines[0])
    assert all("gradientlab hosts release" in d.reason for at, d in log if at > quarantines[0])


def test_a_lost_cloud_vm_is_rebooted_then_reprovisioned_once_then_quarantined() -> None:
    log = simulate(V.UNREACHABLE, hours=3, policy=HealthSettings(reprovision=True), cloud=True)
    steps = Counter(s for _, d in log for s in d.steps)
    assert steps == {R.REBOOT_HOST: 2, R.REPROVISION: 1}
    assert [d.steps for _, d in log[:4]] == [
        (),
        (R.REBOOT_HOST,),
        (R.REBOOT_HOST,),
        (R.REPROVISION,),
    ]
    assert sum(1 for _, d in log if d.quarantine) == 1


def test_with_a_long_backoff_reboots_still_stay_within_budget() -> None:
    policy = HealthSettings(backoff_seconds=900, budgets=BudgetSettings(reboot_host=3))
    log = simulate(V.UNREACHABLE, hours=3, policy=policy)
    reboots = [at for at, d in log if R.REBOOT_HOST in d.steps]
    assert reboots == [T0 + SWEEP, T0 + 4 * SWEEP, T0 + 10 * SWEEP]  # 15 then 30 minutes apart
    assert most_in_an_hour(reboots) <= 3
    assert sum(1 for _, d in log if d.quarantine) == 1


def test_a_disconnected_node_climbs_the_whole_ladder_once_then_is_quarantined() -> None:
    log = simulate(V.DISCONNECTED, hours=3, policy=POLICY)
    steps = Counter(s for _, d in log for s in d.steps)
    budgets = POLICY.budgets
    assert steps[R.REBOOT_HOST] == budgets.reboot_host
    assert steps[R.RESTART_BROWSER] <= budgets.restart_browser
    assert steps[R.LOGIN] <= budgets.login
    assert steps[R.RESTART_RUNNER] <= budgets.restart_runner
    assert sum(1 for _, d in log if d.quarantine) == 1
