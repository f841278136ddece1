"""What every task shares: the fleet file, the database, secrets from Prefect blocks."""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any, cast

from prefect.blocks.system import Secret
from prefect.events import emit_event
from sqlalchemy import Engine

from gradientlab.config import Fleet, FleetFileError, load_fleet, parse_fleet
from gradientlab.gradient.errors import GradientError
from gradientlab.health.events import REQUESTED_BY_TAG
from gradientlab.health.record import Alert
from gradientlab.remote import keys
from gradientlab.store.database import make_engine, migrate

# httpx logs each request URL at INFO; Firebase URLs carry the web API key as `?key=`.
logging.getLogger("httpx").setLevel(logging.WARNING)


def read_secret_block(name: str) -> str:
    block = cast(Secret[str], Secret.load(name))  # sync in a sync context
    return str(block.get())


def use_operator_key_block() -> str | None:
    """When `GRADIENTLAB_SSH_KEY_BLOCK` names a Secret block, SSH uses the key kept there (read
    once per process, parsed in memory) instead of a key file. Returns the block's name."""
    name = keys.key_block_name()
    if name:
        keys.read_operator_key_with(lambda: read_secret_block(name))
    return name


use_operator_key_block()  # every flow run imports this module before it opens a connection

FLEET_BLOCK_PREFIX = "block:"


def fleet_from(path: str) -> Fleet:
    """The fleet from a file (`fleet.yaml`), or from a FleetFile block (`block:NAME`), which
    every worker reads from Prefect rather than from its own disk."""
    if path.startswith(FLEET_BLOCK_PREFIX):
        from deployments.blocks import FleetFile

        name = path.removeprefix(FLEET_BLOCK_PREFIX)
        try:
            block = cast(FleetFile, FleetFile.load(name))
        except ValueError as exc:
            raise FleetFileError(
                f"{path}: no FleetFile block named {name!r} on this Prefect server "
                f"(save one with `python -m deployments.fleet_block fleet.yaml --block {name}`)"
            ) from exc
        return parse_fleet(block.text, f"block {name}")
    return load_fleet(path)


@lru_cache(maxsize=4)
def _engine(url: str | None) -> Engine:
    engine = make_engine(url)
    migrate(engine)
    return engine


def engine() -> Engine:
    """One migrated engine per process (a served flow keeps its connection pool)."""
    from gradientlab.store.database import database_url

    return _engine(database_url())


def retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry network hiccups, 5xx and 429; not bad credentials or a malformed answer."""
    try:
        state.result()
    except GradientError as exc:
        return exc.retryable
    except Exception:  # noqa: BLE001 - anything else is not a transient API fault
        return False
    return False


def send_alert(alert: Alert) -> None:
    """An alert as the Prefect event its automation (deployments/alerts.py) keys on."""
    kind = "fleet" if alert.fleet_wide else "host"
    emit_event(
        event=alert.event,
        resource={
            "prefect.resource.id": f"gradientlab.{kind}.{alert.subject}",
            "prefect.resource.name": alert.subject,
        },
        payload=alert.payload,
    )


def requested_by() -> str:
    """Who asked for the current flow run, as Prefect recorded it: the signed-in operator of the
    app (its `requested-by:` tag), an automation or another run (Prefect's created_by), the
    deployment's schedule, or else a person through the Prefect UI, its API or the CLI (the
    server's one shared sign-in cannot say which person)."""
    from prefect.runtime import flow_run

    for tag in flow_run.tags or []:
        if tag.startswith(REQUESTED_BY_TAG):
            return tag.removeprefix(REQUESTED_BY_TAG)
    if flow_run.parent_flow_run_id:
        return f"flow run {flow_run.parent_flow_run_id}"
    run_id = flow_run.id
    if run_id is None:
        return "a direct call (no flow run)"
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(run_id)
    except Exception as exc:  # noqa: BLE001 - who asked is a record, never the run's failure
        return f"unknown ({type(exc).__name__})"
    if run.created_by is not None and run.created_by.display_value:
        kind = (run.created_by.type or "prefect").lower()
        return f"{kind}:{run.created_by.display_value}"
    if run.auto_scheduled:
        return "the schedule"
    if run.deployment_id is None:
        return "a direct call of the flow"
    return "the Prefect UI or API (not signed by a person)"
