"""A run a stopped demo left pending holds its deployment's one slot, so every later run is
cancelled (health never checks again after a restart) until the next demo marks it Crashed.

On a real Prefect server (the session's test harness)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import (
    ConcurrencyLimitStrategy,
    ConcurrencyOptions,
    StateType,
)
from prefect.states import Pending

from deployments.abandoned_runs import crash_abandoned_runs


@flow
def sweep() -> None:
    """Stands in for the health flow: only its deployment's concurrency matters here."""


@pytest.mark.usefixtures("prefect_server")
def test_a_run_left_pending_stops_blocking_its_deployment_once_crashed() -> None:
    with get_client(sync_client=True) as client:
        flow_id = client.create_flow(sweep)
        deployment_id = client.create_deployment(
            flow_id=flow_id,
            name=f"health-{uuid.uuid4().hex[:6]}",
            concurrency_limit=1,
            concurrency_options=ConcurrencyOptions(
                collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW
            ),
        )

        def pending_run() -> tuple[str, StateType | None]:
            run = client.create_flow_run_from_deployment(deployment_id)
            answer: Any = client.set_flow_run_state(run.id, Pending())
            return run.name, answer.state.type if answer.state else None

        left, state = pending_run()
        assert state == StateType.PENDING  # the stopped demo's run: it has the slot
        assert pending_run()[1] == StateType.CANCELLED  # every later one is turned away

        crashed = crash_abandoned_runs("the demo that ran it stopped before it finished")

        assert left in crashed
        assert pending_run()[1] == StateType.PENDING  # the slot is free again
