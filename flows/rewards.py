"""Rewards: account points per day, node uptime and taps per day, today's points per node."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from gradientlab.config import Fleet
from gradientlab.gradient.errors import GradientSignInRefused
from gradientlab.health.judge import SignInRefusal
from gradientlab.health.record import record_account_sign_in
from gradientlab.health.report import utcnow
from gradientlab.store.fleet import node_client_ids
from tasks.common import engine, fleet_from, send_alert
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
    try:
        now = network_time(fleet)  # the run's first request signs in
    except GradientSignInRefused as exc:
        sign_in_refused(fleet, exc)
        raise
    record_account_sign_in(engine(), None, utcnow(), fleet.name)  # it works: close a refusal
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


def sign_in_refused(fleet: Fleet, exc: GradientSignInRefused) -> None:
    """The account's verdict, not the network's: the setting to fix, on the run's page, and
    as one alert for the account-wide incident (not one per hourly run)."""
    get_run_logger().error("the account's sign-in is refused: fix %s (%s)", exc.setting, exc)
    refusal = SignInRefusal(exc.setting, exc.reason, exc.endpoint)
    for alert in record_account_sign_in(engine(), refusal, utcnow(), fleet.name):
        send_alert(alert)
    create_markdown_artifact(
        key="account-verdict",
        markdown=f"### The account's sign-in is refused: fix `{exc.setting}`\n\n{exc}",
        description="Why rewards could not be read",
    )
