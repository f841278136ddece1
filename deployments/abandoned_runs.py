"""Flow runs nobody runs any more, marked Crashed.

A run that was pending or running when its process died (killed, or stopped after its grace
period) stays so on the server and keeps its deployment's one concurrency slot: with
CANCEL_NEW, every later run of that deployment is cancelled, and health never checks again.
Call this only when no process can be running them: the demo does, after it has stopped what
an earlier demo left and before it serves the flows."""

from __future__ import annotations

import asyncio

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.states import Crashed

UNFINISHED = [StateType.PENDING, StateType.RUNNING, StateType.CANCELLING]


async def _crash_abandoned_runs(reason: str) -> list[str]:
    async with get_client() as client:
        runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=UNFINISHED))
            )
        )
        for run in runs:
            # through the orchestration rules (no force): leaving the state frees the slot
            await client.set_flow_run_state(run.id, Crashed(message=reason))
        return [run.name for run in runs]


def crash_abandoned_runs(reason: str) -> list[str]:
    """Mark every pending, running or cancelling flow run Crashed; returns their names."""
    return asyncio.run(_crash_abandoned_runs(reason))
