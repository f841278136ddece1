"""Running a decided recovery on one host, step by step, stopping at the first that works."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from gradientlab.health.report import HealthReport, utcnow
from gradientlab.health.status import HOST_RUNGS, Rung, Verdict, about
from gradientlab.node.deploy import runner_command
from gradientlab.remote.executor import Executor, RemoteError
from gradientlab.store.recovery import WITHHELD


@dataclass
class ActionResult:
    step: str
    started_at: datetime
    finished_at: datetime
    ok: bool
    detail: str
    row_id: int | None = None  # the "started" row written before a host-touching step


class Withheld(Exception):
    """A host-touching step not run: a second signal (the provider's word) speaks against it."""


RUNNER_COMMANDS: dict[Rung, tuple[str, ...]] = {
    Rung.RESTART_BROWSER: ("restart-browser",),
    Rung.LOGIN: ("login",),
    Rung.RESTART_RUNNER: ("stop", "start"),
}


@dataclass
class Recovery:
    """How to act on one host; the task layer wires in SSH, the provider and deploy."""

    connect: Callable[[], Executor]
    python: str | None
    reprobe: Callable[[], HealthReport]
    reboot_host: Callable[[], object]
    deploy: Callable[[], object] | None = None
    reprovision: Callable[[], object] | None = None
    wait_seconds: float = 60
    poll_seconds: float = 1.0
    command_timeout: float = 120
    # before a host-touching step: the provider's second signal (raises Withheld to stop it),
    # then the "started" row, written before the step runs (its id, or None when not kept)
    second_signal: Callable[[Rung], None] | None = None
    start_row: Callable[[Rung, datetime], int | None] | None = None

    def run_step(self, step: Rung) -> str:
        if step == Rung.REBOOT_HOST:
            self.reboot_host()
            return "host rebooted"
        if step == Rung.DEPLOY:
            if self.deploy is None:
                raise RemoteError("deploy is not available here")
            self.deploy()
            return "deployed"
        if step == Rung.REPROVISION:
            if self.reprovision is None:
                raise RemoteError("re-provisioning is not enabled for this host")
            self.reprovision()
            return "re-provisioned"
        ex = self.connect()
        out = []
        for command in RUNNER_COMMANDS[step]:
            result = ex.run(runner_command(self.python, command), timeout=self.command_timeout)
            text = result.stdout.strip()[-300:]
            if not result.ok:
                raise RemoteError(
                    f"{ex.name}: {step} ({command}) failed: {text or result.stderr[-300:]}"
                )
            out.append(text)
        return "; ".join(out)

    def recover(
        self, report: HealthReport, steps: tuple[Rung, ...]
    ) -> tuple[HealthReport, list[ActionResult]]:
        actions: list[ActionResult] = []
        for step in steps:
            started = utcnow()
            row_id: int | None = None
            if step in HOST_RUNGS:
                try:
                    if self.second_signal is not None:
                        self.second_signal(step)
                except Withheld as why:
                    actions.append(ActionResult(step, started, utcnow(), False, f"{WITHHELD}{why}"))
                    continue
                except Exception as exc:  # noqa: BLE001 - no second signal: the step waits
                    detail = f"{WITHHELD}the provider could not confirm the host's state: {exc}"
                    actions.append(ActionResult(step, started, utcnow(), False, detail[:500]))
                    continue
                if self.start_row is not None:
                    try:
                        row_id = self.start_row(step, started)
                    except Exception as exc:  # noqa: BLE001 - unrecorded, it must not run
                        detail = f"{WITHHELD}its start could not be recorded ({exc}); not run"
                        actions.append(ActionResult(step, started, utcnow(), False, detail[:500]))
                        continue
            try:
                detail = self.run_step(step)
            except Exception as exc:  # noqa: BLE001 - recorded as a failed action, next step runs
                actions.append(ActionResult(step, started, utcnow(), False, str(exc)[:500], row_id))
                continue
            report = self.wait_good(
                longer=step in (Rung.REBOOT_HOST, Rung.REPROVISION, Rung.DEPLOY)
            )
            ok = report.status == Verdict.GOOD
            actions.append(
                ActionResult(
                    step,
                    started,
                    utcnow(),
                    ok,
                    f"{detail}; then {report.status}" if detail else str(report.status),
                    row_id,
                )
            )
            if ok or not about(report.status).ladder:
                break  # Good, or something no rung fixes (a crash loop, a ban, a key change)
        return report, actions

    def wait_good(self, longer: bool = False) -> HealthReport:
        deadline = time.monotonic() + self.wait_seconds * (3 if longer else 1)
        report = self.reprobe()
        while report.status != Verdict.GOOD and time.monotonic() < deadline:
            time.sleep(self.poll_seconds)
            report = self.reprobe()
        return report


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
