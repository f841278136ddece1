"""Rewards and node statistics from Gradient's API into PostgreSQL, incrementally, at fleet scale.

- Which days to ask: everything within the backfill window on a first run; afterwards from the
  last complete day (yesterday), or from the newest day stored when that is older, so an hourly
  run re-reads two days, not a week.
- Per-node "today" points: the node list is read between two readings of the network's clock,
  and its values belong to the day the reading started in. A list read across midnight is
  stored against the day before, grow-only, so the new day's near-zero never lowers it.
- Node stats for thousands of nodes: a few requests in flight under the client's rate limit,
  stored in batches; a node the network no longer knows (404) is recorded and skipped; a batch
  that was stored is not asked again when the task is retried (``done``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from itertools import islice

from sqlalchemy import Engine

from gradientlab.gradient.client import GradientClient
from gradientlab.gradient.errors import GradientNotFound
from gradientlab.gradient.models import NodeDay, NodeListItem
from gradientlab.store import rewards

logger = logging.getLogger(__name__)

BATCH_NODES = 500
"""Nodes whose days are stored in one transaction."""


def utc_day(moment: datetime) -> date:
    """The UTC day of a moment; a naive datetime is taken as UTC."""
    if moment.tzinfo is None:
        return moment.date()
    return moment.astimezone(UTC).date()


def first_day_to_ask(last_stored: date | None, today: date, backfill_days: int) -> date:
    """The backfill window on a first run; later the last complete day, or the newest day
    stored when that is older (a run that was down for a while catches up)."""
    if backfill_days < 0:
        raise ValueError(f"backfill days must be 0 or more, got {backfill_days}")
    if last_stored is None:
        return today - timedelta(days=backfill_days)
    return min(last_stored, today - timedelta(days=1))


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), UTC)


# -- account points ---------------------------------------------------------------------------


def ingest_account_points(
    client: GradientClient, engine: Engine, account: str, now: datetime, backfill_days: int
) -> dict[str, int]:
    """``/point/stats`` days from the first day that can still change, up to ``now``."""
    stored = rewards.latest_account_day(engine, account)
    start = first_day_to_ask(stored, utc_day(now), backfill_days)
    point_days = client.point_stats(_midnight(start), now)
    count = rewards.upsert_account_points(engine, account, point_days)
    return {"days": len(point_days), "inserted": count.inserted, "updated": count.updated}


# -- the node list ----------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeSweep:
    """The network's node list and the days it belongs to.

    ``day`` is the network's day when the list was started (its "today" values belong to it);
    ``today`` is the network's day when it was finished. They differ when midnight fell while
    the list was read."""

    nodes: list[NodeListItem]
    day: date
    today: date


def sweep_nodes(client: GradientClient, *, page_size: int = 100, workers: int = 1) -> NodeSweep:
    before = client.status().time
    nodes = client.all_nodes(size=page_size, workers=workers)
    after = client.status().time
    return NodeSweep(nodes, utc_day(before), utc_day(after))


def snapshot_node_points(engine: Engine, sweep: NodeSweep) -> dict[str, int]:
    """Each node's points and taps "today", as the list showed them, against the list's day."""
    count = rewards.upsert_node_points(
        engine, sweep.day, [(n.name, n.today, n.taps) for n in sweep.nodes], today=sweep.today
    )
    return {"nodes": len(sweep.nodes), "inserted": count.inserted, "updated": count.updated}


# -- node stats -------------------------------------------------------------------------------


@dataclass
class NodeStatsResult:
    """What one ingest of node stats did. ``unknown`` are the ids the network answered 404 for."""

    nodes: int = 0
    asked: int = 0
    days: int = 0
    count: rewards.UpsertCount = field(default_factory=rewards.UpsertCount)
    unknown: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, int]:
        return {
            "nodes": self.nodes,
            "asked": self.asked,
            "days": self.days,
            "inserted": self.count.inserted,
            "updated": self.count.updated,
            "unknown": len(self.unknown),
        }


@dataclass
class _Batch:
    days: dict[str, list[NodeDay]] = field(default_factory=dict)
    unknown: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.days) + len(self.unknown)


def ingest_node_stats(
    client: GradientClient,
    engine: Engine,
    client_ids: Iterable[str],
    now: datetime,
    backfill_days: int,
    *,
    workers: int = 4,
    done: set[str] | None = None,
    batch_nodes: int = BATCH_NODES,
) -> NodeStatsResult:
    """Uptime and taps per day of each node, from the first day that can still change.

    Ids in ``done`` are skipped, and each id stored here is added to it, so a retry of the
    same work resumes where the last try stopped. A failure stores the nodes already read
    before it is raised; nothing read is lost and nothing is stored twice."""
    ids = sorted(set(client_ids))
    done = done if done is not None else set()
    today = utc_day(now)
    latest = rewards.latest_node_stat_days(engine)
    todo = [i for i in ids if i not in done]
    result = NodeStatsResult(nodes=len(ids), asked=len(todo))

    def read(client_id: str) -> list[NodeDay] | None:
        start = first_day_to_ask(latest.get(client_id), today, backfill_days)
        try:
            return client.node_stats(client_id, _midnight(start), now)
        except GradientNotFound:
            return None

    batch = _Batch()
    window = 4 * max(1, workers)  # in flight or queued: a failure cancels at most this many
    running: dict[Future[list[NodeDay] | None], str] = {}
    pending = iter(todo)
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="node-stats") as pool:
        try:
            while True:
                for client_id in islice(pending, window - len(running)):
                    running[pool.submit(read, client_id)] = client_id
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    client_id = running.pop(future)
                    node_days = future.result()
                    if node_days is None:
                        batch.unknown[client_id] = f"POST /sentrynode/stats/{client_id}"
                    else:
                        batch.days[client_id] = node_days
                if len(batch) >= batch_nodes:
                    _store(engine, batch, result, done, now)
                    batch = _Batch()
        except BaseException:
            for future in running:
                future.cancel()
            _store(engine, batch, result, done, now)  # what was read before the failure
            raise
    _store(engine, batch, result, done, now)
    if result.unknown:
        logger.warning(
            "the network does not know %d node id(s), skipped: %s",
            len(result.unknown),
            ", ".join(result.unknown[:20]) + (" ..." if len(result.unknown) > 20 else ""),
        )
    return result


def _store(
    engine: Engine, batch: _Batch, result: NodeStatsResult, done: set[str], now: datetime
) -> None:
    if not len(batch):
        return
    count = rewards.upsert_many_node_stats(engine, batch.days)
    rewards.record_unknown_nodes(engine, batch.unknown, batch.days, now)
    result.days += sum(len(d) for d in batch.days.values())
    result.count = result.count + count
    result.unknown.extend(batch.unknown)
    done.update(batch.days, batch.unknown)
