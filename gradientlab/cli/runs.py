"""`gradientlab run` (and `deploy`, `provision`, `health`): start a deployed flow through
Prefect's API, as the UI's Run button does, and follow it to its end with a progress line.

The run executes on the work pool's workers (or `deployments.serve`), never in this process:
the CLI only asks Prefect and reads back the flow run and its task runs."""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from gradientlab.cli.progress import Progress

FINAL_STATES = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
RUN_SCHEMA = "gradientlab.run/1"


class RunError(RuntimeError):
    """The deployment cannot be named or started; the message says which and why."""


@dataclass
class RunOutcome:
    deployment: str
    flow_run_id: str
    flow_run_name: str
    state: str  # Prefect's state type: SCHEDULED, RUNNING, COMPLETED, FAILED, ...
    state_name: str  # its name as the UI shows it: "Completed", "Late", ...
    seconds: float | None = None
    tasks: Counter[str] = field(default_factory=Counter)
    ui_url: str | None = None

    @property
    def ok(self) -> bool:
        return self.state == "COMPLETED"

    def as_json(self) -> dict[str, Any]:
        return {
            "schema": RUN_SCHEMA,
            "deployment": self.deployment,
            "flow_run_id": self.flow_run_id,
            "flow_run_name": self.flow_run_name,
            "state": self.state,
            "state_name": self.state_name,
            "seconds": None if self.seconds is None else round(self.seconds, 1),
            "task_runs": {state.lower(): n for state, n in sorted(self.tasks.items())},
            "ui_url": self.ui_url,
        }

    def line(self) -> str:
        took = "" if self.seconds is None else f" in {self.seconds:.0f}s"
        counts = ", ".join(f"{n} {s.lower()}" for s, n in sorted(self.tasks.items()))
        total = sum(self.tasks.values())
        text = f"{self.deployment}: {self.state_name}{took} (flow run {self.flow_run_name}"
        text += f", {total} task run(s): {counts})" if total else ")"
        return text + (f"\n  {self.ui_url}" if self.ui_url else "")


def parameters(pairs: list[str]) -> dict[str, Any]:
    """`name=value` pairs; a value that reads as JSON (true, 3, ["a"]) is that value."""
    params: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise RunError(f"parameter {pair!r} is not name=value")
        try:
            params[name] = json.loads(value)
        except ValueError:
            params[name] = value
    return params


def deployment_name(client: Any, name: str) -> str:
    """`flow/deployment` for a name with a slash; otherwise the one deployment of that name."""
    if "/" in name:
        return name
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    found = client.read_deployments(
        deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[name]))
    )
    flows = {d.flow_id: client.read_flow(d.flow_id).name for d in found}
    names = sorted(f"{flows[d.flow_id]}/{d.name}" for d in found)
    if len(names) == 1:
        return names[0]
    if not names:
        raise RunError(
            f"no deployment named {name!r} on {_api_url()}: `prefect deploy --all` makes them "
            "(docs/production.md), `python -m deployments.serve` serves them on one machine"
        )
    raise RunError(f"{name!r} names {len(names)} deployments: say which, {' or '.join(names)}")


def start(name: str, params: dict[str, Any]) -> RunOutcome:
    from prefect import get_client
    from prefect.deployments import run_deployment

    with get_client(sync_client=True) as client:
        try:
            full = deployment_name(client, name)
        except RunError:
            raise
        except Exception as exc:  # noqa: BLE001 - Prefect's API is not there, or refuses
            raise RunError(f"cannot ask Prefect at {_api_url()}: {exc}") from exc
    try:
        run = run_deployment(full, parameters=params, timeout=0, as_subflow=False)
    except Exception as exc:  # noqa: BLE001 - an unknown deployment, bad parameters
        raise RunError(f"cannot start {full}: {exc}") from exc
    return _outcome(full, run, [])


def follow(outcome: RunOutcome, progress: Progress, poll: float = 1.0) -> RunOutcome:
    """Read the flow run and its task runs until it is final, showing how many task runs are
    done of those started so far (a flow starts them as it goes)."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    run_id = UUID(outcome.flow_run_id)
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(run_id)
            tasks = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
            )
            outcome = _outcome(outcome.deployment, run, tasks)
            if outcome.state in FINAL_STATES:
                break
            done = sum(outcome.tasks[s] for s in FINAL_STATES)
            running = sorted(t.name for t in tasks if _state(t) == "RUNNING")
            note = outcome.state_name + (f": {', '.join(running[:2])}" if running else "")
            progress.update(done, len(tasks), note)
            time.sleep(poll)
    progress.finish()
    return outcome


def _state(run: Any) -> str:
    return str(run.state_type.value) if run.state_type is not None else "PENDING"


def _outcome(deployment: str, run: Any, tasks: list[Any]) -> RunOutcome:
    seconds = None
    if run.start_time is not None and run.end_time is not None:
        seconds = (run.end_time - run.start_time).total_seconds()
    return RunOutcome(
        deployment=deployment,
        flow_run_id=str(run.id),
        flow_run_name=str(run.name),
        state=_state(run),
        state_name=str(run.state_name or _state(run).title()),
        seconds=seconds,
        tasks=Counter(_state(t) for t in tasks),
        ui_url=_ui_url(run.id),
    )


def _api_url() -> str:
    from prefect.settings import PREFECT_API_URL

    return str(PREFECT_API_URL.value() or "Prefect's ephemeral API (PREFECT_API_URL is not set)")


def _ui_url(run_id: Any) -> str | None:
    from prefect.settings import PREFECT_UI_URL

    base = PREFECT_UI_URL.value()
    return f"{str(base).rstrip('/')}/runs/flow-run/{run_id}" if base else None
