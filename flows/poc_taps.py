"""POC taps: each host's tap readiness (a STUN test from the host) and taps per node per day as
the network reports them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import flow
from prefect.artifacts import create_table_artifact
from sqlalchemy import text

from flows.rewards import known_client_ids
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
        ingest_node_stats(fleet, known_client_ids(), now, days)
    finally:  # the tests stored above reach the Uptime page's rollup even if the API failed
        refresh_node_rollups(started)
    with engine().connect() as conn:
        rows = conn.execute(
            text(
                "SELECT h.name AS host, s.client_id, s.day, s.taps FROM node_daily_stats s"
                " LEFT JOIN nodes n ON n.client_id = s.client_id"
                " LEFT JOIN hosts h ON h.id = n.host_id"
                " WHERE s.day >= CAST(:since AS date) ORDER BY s.day DESC, host"
            ),
            {"since": (now - timedelta(days=days)).date()},
        )
        table = [{k: str(v) for k, v in r._mapping.items()} for r in rows]
    create_table_artifact(key="poc-taps", table=table, description="Taps per node per day")
    create_table_artifact(
        key="tap-readiness",
        table=[check.as_row() for check in readiness],
        description="Tap readiness per host: a STUN test against the network's STUN server",
    )
    return table
