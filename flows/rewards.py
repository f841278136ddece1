"""Rewards: account points per day, node uptime and taps per day, today's points per node."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow
from prefect.artifacts import create_table_artifact

from gradientlab.store.fleet import node_client_ids
from tasks.common import engine, fleet_from
from tasks.network import (
    api_requests,
    ingest_account_points,
    ingest_node_stats,
    list_network_nodes,
    network_time,
    remember_api_pace,
    snapshot_node_points,
)
from tasks.rollups import refresh_node_rollups


@flow(name="rewards", log_prints=True)
def rewards(fleet_path: str = "fleet.yaml", days: int = 7) -> dict[str, Any]:
    """Incremental and idempotent: `days` are backfilled on a first run, later runs read from
    the last complete day; a rerun with nothing new changes no row. One sign-in per run."""
    started = datetime.now(UTC)  # this machine's clock, as the upserts' updated_at
    fleet = fleet_from(fleet_path)
    now = network_time(fleet)
    account = ingest_account_points(fleet, now, days)
    sweep = list_network_nodes(fleet)
    snapshot = snapshot_node_points(sweep)
    client_ids = sorted(set(node_client_ids(engine())) | {n.name for n in sweep.nodes})
    stats = ingest_node_stats(fleet, client_ids, now, days)
    refresh_node_rollups(started)
    summary = {
        "account_points": account,
        "node_points": snapshot,
        "node_stats": stats,
        "api": {"requests": api_requests(fleet), **remember_api_pace(fleet)},
    }
    create_table_artifact(
        key="rewards-ingest",
        table=[{"what": k, **v} for k, v in summary.items()],
        description=f"Rewards ingested up to {now:%Y-%m-%d %H:%M} UTC (network time); node "
        f"points of {sweep.day}",
    )
    return summary
