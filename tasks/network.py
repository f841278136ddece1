"""Tasks that read the Gradient network's API. Retries only for transient faults."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from prefect import task
from prefect.cache_policies import NO_CACHE

from gradientlab.config import Fleet
from gradientlab.gradient.models import NodeListItem
from gradientlab.inventory import gradient_client
from gradientlab.store import rewards
from tasks.common import engine, read_secret_block, retry_if_transient

API_RETRIES = dict(
    retries=3,
    retry_delay_seconds=[1, 2, 4],
    retry_condition_fn=retry_if_transient,
    cache_policy=NO_CACHE,
    tags=["gradient-api"],
    timeout_seconds=900,  # each request has its own deadline; this bounds a whole ingest
)


@task(name="list-network-nodes", **API_RETRIES)  # type: ignore[call-overload]
def list_network_nodes(fleet: Fleet) -> list[NodeListItem]:
    with gradient_client(fleet, read_secret_block) as client:
        return client.all_nodes()


@task(name="network-view", cache_policy=NO_CACHE, tags=["gradient-api"], timeout_seconds=120)
def network_view(fleet: Fleet) -> tuple[list[NodeListItem], str | None]:
    """The network's node list, or why it could not be read (the sweep goes on without it).
    The client retries transient faults itself within its own deadline."""
    try:
        with gradient_client(fleet, read_secret_block) as client:
            return client.all_nodes(), None
    except Exception as exc:  # noqa: BLE001 - the API's failure is a fact about the network
        return [], f"{type(exc).__name__}: {exc}"[:500]


@task(name="network-reasons", cache_policy=NO_CACHE, tags=["gradient-api"], timeout_seconds=300)
def network_reasons(fleet: Fleet, client_ids: list[str]) -> dict[str, str]:
    """Why the network marks these nodes (`GET /sentrynode/get/{id}`): its node list says
    that a node is banned, not why. Asked only for nodes whose reason is not known yet."""
    out: dict[str, str] = {}
    try:
        with gradient_client(fleet, read_secret_block) as client:
            for client_id in client_ids:
                info = client.node(client_id)
                if info is not None and info.banned and info.banned_reason:
                    out[client_id] = info.banned_reason
    except Exception:  # noqa: BLE001 - the reason is a detail; the verdict stands without it
        pass
    return out


@task(name="network-time", **API_RETRIES)  # type: ignore[call-overload]
def network_time(fleet: Fleet) -> datetime:
    """The network's clock defines "today": a sped-up sandbox or a skewed host clock agree."""
    with gradient_client(fleet, read_secret_block) as client:
        return client.status().time


@task(name="ingest-account-points", **API_RETRIES)  # type: ignore[call-overload]
def ingest_account_points(fleet: Fleet, end: datetime, days: int) -> dict[str, int]:
    start = end - timedelta(days=days)
    with gradient_client(fleet, read_secret_block) as client:
        point_days = client.point_stats(start, end)
    count = rewards.upsert_account_points(engine(), fleet.account.email, point_days)
    return {"days": len(point_days), "inserted": count.inserted, "updated": count.updated}


@task(name="ingest-node-stats", **API_RETRIES)  # type: ignore[call-overload]
def ingest_node_stats(
    fleet: Fleet, client_ids: list[str], end: datetime, days: int
) -> dict[str, int]:
    """Uptime and taps per node per day; one task for the whole fleet, batched inside."""
    start = end - timedelta(days=days)
    total = rewards.UpsertCount()
    rows = 0
    with gradient_client(fleet, read_secret_block) as client:
        for client_id in client_ids:
            node_days = client.node_stats(client_id, start, end)
            rows += len(node_days)
            total = total + rewards.upsert_node_stats(engine(), client_id, node_days)
    return {
        "nodes": len(client_ids),
        "days": rows,
        "inserted": total.inserted,
        "updated": total.updated,
    }


@task(name="snapshot-node-points", cache_policy=NO_CACHE, timeout_seconds=300)
def snapshot_node_points(items: list[NodeListItem], day: date) -> dict[str, int]:
    count = rewards.upsert_node_points(engine(), day, [(i.name, i.today, i.taps) for i in items])
    return {"nodes": len(items), "inserted": count.inserted, "updated": count.updated}


def utc_day(t: datetime) -> date:
    return t.astimezone(UTC).date()
