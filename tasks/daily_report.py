"""The daily report's reads: the reads the analysis app's pages call (Fleet now, Rewards,
Incidents, Economics; gradientlab.store.reads), so the report shows the app's numbers for the
same days, and the notification block a summary goes through."""

from __future__ import annotations

import inspect
from datetime import date, datetime
from typing import Any, cast
from uuid import UUID

from prefect import task
from prefect.blocks.abstract import NotificationBlock
from prefect.blocks.core import Block
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from prefect.utilities.asyncutils import run_coro_as_sync

from gradientlab.daily_report import BEST_AND_WORST, UNRESOLVED_LISTED
from gradientlab.health.events import ALERTS_AUTOMATION_PREFIX
from gradientlab.store import reads
from tasks.common import engine


@task(name="read-report", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def read_report(start: date, end: date, as_of: datetime) -> dict[str, Any]:
    """Everything the report is built from, for the UTC days `start`..`end`: the pages'
    reads over the daily rollups (which the flows keep up to date), never the base tables."""
    eng = engine()
    selection = reads.FleetFilter(start=start, end=end)
    costs = reads.host_costs(eng, selection, as_of)
    return {
        "fleet_now": reads.fleet_now(eng),
        "totals": reads.selection_totals(eng, selection),
        "by_provider": reads.points_by_group(eng, selection, "provider"),
        "best": reads.node_totals(eng, selection, "best", BEST_AND_WORST, 0),
        "worst": reads.node_totals(eng, selection, "worst", BEST_AND_WORST, 0),
        "causes": reads.incidents_by_cause(eng, selection),
        "unresolved": reads.incidents(eng, selection, limit=UNRESOLVED_LISTED, unresolved=True),
        "steps": reads.recovery_step_success(eng, selection),
        "host_costs": costs,
        "provider_costs": reads.provider_costs(costs),
        "unsupported": reads.unsupported_costs(costs, reads.status_shares(eng, selection)),
        # whether the network pays at all now, from its latest answers (not the report's days)
        "season": reads.season_text(reads.reward_season(eng)),
    }


class NotificationBlockError(ValueError):
    """The block named for the report's notification is missing or cannot notify."""


def _alerts_block_id() -> UUID | None:
    """The block GradientLab's alert automations (those named `ALERTS_AUTOMATION_PREFIX`…)
    notify through."""
    with get_client(sync_client=True) as client:
        for automation in client.read_automations():
            if not automation.name.startswith(ALERTS_AUTOMATION_PREFIX):
                continue
            for action in automation.actions:
                block_id = getattr(action, "block_document_id", None)
                if block_id is not None:
                    return cast(UUID, block_id)
    return None


def notification_block(name: str | None) -> tuple[NotificationBlock | None, str]:
    """The block `name` ("<block type slug>/<block name>", e.g. "slack-webhook/ops"), or else
    the one the alert automations use; (None, why) when neither is configured."""
    if name:
        if "/" not in name:
            raise NotificationBlockError(
                f"notify_block {name!r} must be '<block type slug>/<block name>', "
                "e.g. 'slack-webhook/ops' (the slug is shown on the block's page in the UI)"
            )
        try:
            block = Block.load(name)
        except (ValueError, ObjectNotFound) as exc:
            raise NotificationBlockError(
                f"no notification block {name!r}: make one in the Prefect UI (Blocks → +): {exc}"
            ) from None
        where = f"the block {name}"
    else:
        block_id = _alerts_block_id()
        if block_id is None:
            return None, "no notify_block given and no GradientLab alert automation installed"
        with get_client(sync_client=True) as client:
            document = client.read_block_document(block_id)
        block = Block._from_block_document(document)
        kind = document.block_type.slug if document.block_type else document.block_type_name
        where = f"the alerts' block {kind}/{document.name}"
    if not isinstance(block, NotificationBlock):
        raise NotificationBlockError(
            f"{where} is a {type(block).__name__}, not a notification block"
        )
    return block, where


@task(name="notify-report", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=10)
def notify(block: NotificationBlock, subject: str, body: str) -> None:
    with block.raise_on_failure():
        sent = block.notify(body, subject=subject)
        if inspect.isawaitable(sent):  # a block whose notify is async-only
            run_coro_as_sync(sent)
