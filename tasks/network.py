"""Tasks that read the Gradient network's API. Retries only for transient faults.

The tasks of one flow run share one signed-in client (`run_client`): one Firebase sign-in per
run, renewed with its refresh token, and one rate limit for all of them. Firebase locks out an
account that signs in too often, and a limit per task would let tasks together exceed it."""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import date, datetime

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run, task_run

from gradientlab import ingest
from gradientlab.config import Fleet
from gradientlab.gradient.client import GradientClient
from gradientlab.gradient.errors import GradientSignInRefused
from gradientlab.gradient.models import NodeInfo, NodeListItem
from gradientlab.gradient.throttle import RetryPolicy
from gradientlab.health.judge import SignInRefusal
from gradientlab.inventory import gradient_client
from gradientlab.store.pace import load_pace, save_pace
from gradientlab.store.webkeys import bundle_web_key
from tasks.common import engine, read_secret_block, retry_if_transient

API_RETRIES = dict(
    retries=3,
    # The client already retried each request within its bounds; these are for a longer outage.
    retry_delay_seconds=[2, 5, 10],
    retry_condition_fn=retry_if_transient,
    cache_policy=NO_CACHE,
    tags=["gradient-api"],
    timeout_seconds=900,  # each request has its own deadline; this bounds a whole ingest
)

_RUN_CLIENTS: OrderedDict[tuple[str, ...], GradientClient] = OrderedDict()
_RUN_PROGRESS: OrderedDict[str, set[str]] = OrderedDict()
_LOCK = threading.Lock()
_KEEP = 8  # flow runs whose clients a long-lived process keeps (each run is usually its own)
# The health sweep's look at the network: one more try at most, then the sweep goes on without.
QUICK_LOOK = RetryPolicy(attempts=2, max_retry_after=5)


def run_client(fleet: Fleet) -> GradientClient:
    """This flow run's client, signed in on first use and shared by all its tasks."""
    net = fleet.network
    key = (
        flow_run.get_id() or "no-flow-run",
        net.api_base,
        net.identity_base,
        net.token_base,
        fleet.account.email,
    )
    with _LOCK:
        client = _RUN_CLIENTS.get(key)
        if client is None:
            learned = load_pace(engine(), net.api_base) if net.requests_per_second is None else None
            bundle_key = None if net.web_api_key else bundle_web_key(engine(), net.extension_id)
            client = _RUN_CLIENTS[key] = gradient_client(
                fleet, read_secret_block, learned, bundle_key
            )
            while len(_RUN_CLIENTS) > _KEEP:
                _RUN_CLIENTS.popitem(last=False)[1].close()
        return client


def _task_progress() -> set[str]:
    """Work this task run has stored: a retry of the same task run skips it."""
    key = task_run.get_id()
    if key is None:  # called outside a task run: nothing to resume
        return set()
    with _LOCK:
        done = _RUN_PROGRESS.setdefault(key, set())
        while len(_RUN_PROGRESS) > _KEEP:
            _RUN_PROGRESS.popitem(last=False)
        return done


def api_requests(fleet: Fleet) -> int:
    """API requests this flow run has sent so far (each try counts)."""
    return run_client(fleet).requests_sent


@task(name="remember-api-pace", cache_policy=NO_CACHE, timeout_seconds=60)
def remember_api_pace(fleet: Fleet) -> dict[str, float | int | None]:
    """Keep the pace this run's client found for the next run (any worker's), and report it."""
    limiter = run_client(fleet).limiter
    learned = limiter.learned()
    if learned is not None:
        save_pace(engine(), fleet.network.api_base, learned)
    return {
        "pace_now": round(limiter.pace, 2) if limiter.pace else None,
        "next_run_starts_at": round(learned.pace, 2) if learned else None,
        "last_refused_at": round(learned.refused_at, 2) if learned and learned.refused_at else None,
        "refusals": learned.refusals if learned else 0,
    }


@task(name="list-network-nodes", **API_RETRIES)  # type: ignore[call-overload]
def list_network_nodes(fleet: Fleet) -> ingest.NodeSweep:
    """The account's nodes, read between two readings of the network's clock."""
    net = fleet.network
    return ingest.sweep_nodes(
        run_client(fleet), page_size=net.node_page_size, workers=net.api_concurrency
    )


@task(name="network-view", cache_policy=NO_CACHE, tags=["gradient-api"], timeout_seconds=120)
def network_view(
    fleet: Fleet,
) -> tuple[list[NodeListItem], str | None, SignInRefusal | None]:
    """The network's node list, or why it could not be read (the sweep goes on without it):
    the API's failure, or the account's sign-in refused (the setting to fix: the account's
    fault, not the network's). One quick retry of a transient fault at most: an outage must
    not hold up the sweep."""
    net = fleet.network
    try:
        client = run_client(fleet).with_retry(QUICK_LOOK)
        return client.all_nodes(size=net.node_page_size, workers=net.api_concurrency), None, None
    except GradientSignInRefused as exc:
        return [], None, SignInRefusal(exc.setting, exc.reason, exc.endpoint)
    except Exception as exc:  # noqa: BLE001 - the API's failure is a fact about the network
        return [], f"{type(exc).__name__}: {exc}"[:500], None


@task(name="network-reasons", cache_policy=NO_CACHE, tags=["gradient-api"], timeout_seconds=300)
def network_reasons(fleet: Fleet, client_ids: list[str]) -> dict[str, str]:
    """Why the network marks these nodes (`GET /sentrynode/get/{id}`): its node list says
    that a node is banned, not why. Asked only for nodes whose reason is not known yet."""
    out: dict[str, str] = {}
    try:
        client = run_client(fleet).with_retry(QUICK_LOOK)
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
    return run_client(fleet).status().time


@task(name="ingest-account-points", **API_RETRIES)  # type: ignore[call-overload]
def ingest_account_points(fleet: Fleet, end: datetime, days: int) -> dict[str, int]:
    """Account points per day: `days` back on a first run, then from the last complete day."""
    return ingest.ingest_account_points(run_client(fleet), engine(), fleet.account.email, end, days)


@task(
    name="ingest-node-stats",
    **{**API_RETRIES, "timeout_seconds": None},  # 10,000 nodes at a low rate take a while
)  # type: ignore[call-overload]
def ingest_node_stats(
    fleet: Fleet, client_ids: list[str], end: datetime, days: int
) -> dict[str, int]:
    """Uptime and taps per node per day; one task for the whole fleet, batched inside. Node
    ids the network does not know are recorded and skipped."""
    result = ingest.ingest_node_stats(
        run_client(fleet),
        engine(),
        client_ids,
        end,
        days,
        workers=fleet.network.api_concurrency,
        done=_task_progress(),
    )
    if result.unknown:
        get_run_logger().warning(
            "the network does not know %d node id(s); recorded in network_unknown_nodes and "
            "skipped: %s",
            len(result.unknown),
            ", ".join(result.unknown[:20]),
        )
    return result.summary()


@task(name="snapshot-node-points", cache_policy=NO_CACHE, timeout_seconds=300)
def snapshot_node_points(sweep: ingest.NodeSweep) -> dict[str, int]:
    return ingest.snapshot_node_points(engine(), sweep)


def utc_day(t: datetime) -> date:
    return ingest.utc_day(t)


@task(name="network-lookup", cache_policy=NO_CACHE, tags=["gradient-api"], timeout_seconds=300)
def network_lookup(fleet: Fleet, client_ids: list[str]) -> tuple[dict[str, NodeInfo], str | None]:
    """The network's own answer (`GET /sentrynode/get/{id}`) for nodes its node list does not
    cover (the list shows active nodes only), or why it could not be read. A node the network
    does not know (404) is simply absent."""
    found: dict[str, NodeInfo] = {}
    try:
        client = run_client(fleet)
        for client_id in client_ids:
            info = client.node(client_id)
            if info is not None:
                found[client_id] = info
    except Exception as exc:  # noqa: BLE001 - the popup's view stands without it
        return found, f"{type(exc).__name__}: {exc}"[:500]
    return found, None
