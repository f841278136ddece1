"""Prune history: raw health samples older than the fleet file's `retention.raw_samples_days`
are deleted once their days are rolled up; the daily rollups are kept for ever."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from tasks.common import fleet_from
from tasks.rollups import prune_samples


@flow(name="prune-history", log_prints=True)
def prune_history(fleet_path: str = "fleet.yaml") -> dict[str, Any]:
    logger = get_run_logger()
    keep = fleet_from(fleet_path).retention.raw_samples_days
    result = prune_samples(keep, datetime.now(UTC).date())
    if result.unrolled_days:
        logger.warning(
            "kept the raw samples of %d day(s) that changed while being rolled up: %s",
            len(result.unrolled_days),
            ", ".join(f"{d}" for d in result.unrolled_days[:10]),
        )
    create_markdown_artifact(
        key="prune-history",
        markdown=(
            f"Raw samples are kept for {keep} days (before {result.cutoff}).\n\n"
            f"- days pruned: {len(result.pruned_days)}\n"
            f"- samples deleted: {result.deleted:,}\n"
            f"- days kept, not rolled up: {len(result.unrolled_days)}\n"
        ),
        description="Raw history pruned past retention",
    )
    return {
        "cutoff": str(result.cutoff),
        "pruned_days": len(result.pruned_days),
        "deleted": result.deleted,
        "unrolled_days": len(result.unrolled_days),
    }
