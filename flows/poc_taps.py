"""POC taps: each host's tap readiness (a STUN test from the host) and taps per node per day as
the network reports them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import flow
from prefect.artifacts import create_table_artifact

from gradientlab.store.fleet import node_client_ids
from gradientlab.store.rewards import taps_per_node_day
from tasks.common import engine, fleet_from
from tasks.network import ingest_node_stats, network_time
from tasks.rollups import refresh_node_rollups
from tasks.taps import tap_readiness


@flow(name="poc-taps", log_prints=True)
def poc_taps(fleet_path: str = "fleet.yaml", days: int = 2) -> list[dict[str, Any]]:
    started = datetime.now(UTC)  # this machine's clock, as the upserts' updated_at
    fleet = fleet_from(fleet_path)
    # each host's NAT as a peer tapping it meets it; needs only SSH, not the network's API
    readiness = tap_readiness(fleet)
    try:
        now = network_time(fleet)
        ingest_node_stats(fleet, node_client_ids(engine()), now, days)
    finally:  # the tests stored above reach the Uptime page's rollup even if the API failed
        refresh_node_rollups(started)
    table = taps_per_node_day(engine(), (now - timedelta(days=days)).date())
    create_table_artifact(key="poc-taps", table=table, description="Taps per node per day")
    create_table_artifact(
        key="tap-readiness",
        table=[check.as_row() for check in readiness],
        description="Tap readiness per host: a STUN test against the network's STUN server",
    )
    return table
