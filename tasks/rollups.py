"""Keep the daily rollups and the raw history's size in step with what the flows write."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from gradientlab.store import retention, rollups
from tasks.common import engine


def _summary(count: rollups.RefreshCount) -> dict[str, Any]:
    return {f"{family}_days": days for family, days in count.days.items()}


@task(name="refresh-health-rollups", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2,
      timeout_seconds=300)  # fmt: skip
def refresh_health_rollups(since: datetime, until: datetime) -> dict[str, Any]:
    """The days of checks and incidents a health run wrote between `since` and `until`."""
    return _summary(rollups.refresh_after_health(engine(), since, until))


@task(name="refresh-node-rollups", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2,
      timeout_seconds=300)  # fmt: skip
def refresh_node_rollups(since: datetime) -> dict[str, Any]:
    """The days of points, uptime and taps a rewards or poc-taps run changed since `since`."""
    return _summary(rollups.refresh_after_ingest(engine(), since))


@task(name="prune-samples", cache_policy=NO_CACHE, timeout_seconds=3600)
def prune_samples(keep_days: int, today: date) -> retention.PruneResult:
    """Roll up the old days not rolled up yet, then delete their raw samples."""
    return retention.roll_up_then_prune(engine(), keep_days, today)
