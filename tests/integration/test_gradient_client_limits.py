"""The Gradient client against a throttling, failing network (the sandbox server over HTTP).

Each request is tried again by itself: a 429 after its Retry-After, a 5xx after a bounded
backoff; a client-side rate limit keeps it under the network's. Waits are recorded by an
injected sleep, never measured on the wall clock."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gradientlab.gradient import (
    GradientClient,
    GradientEndpoints,
    GradientNotFound,
    GradientRateLimited,
    GradientServerError,
)
from gradientlab.gradient.throttle import (
    RECOVER_AFTER_SECONDS,
    SLOWDOWN,
    RateLimiter,
    RetryPolicy,
)
from gradientlab.sandbox import SandboxConfig, SandboxServer
from gradientlab.sandbox.network import SandboxAccount

KEY = "limits-web-key"
EMAIL = "fleet@example.test"
PASSWORD = "limits-password"
NODES = 30
# 60x from 01:00: no sim midnight falls inside this module, whatever the real hour.
SIM_START = datetime(2025, 3, 1, 1, 0, tzinfo=UTC).timestamp()


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    config = SandboxConfig(
        accounts=[SandboxAccount(email=EMAIL, password=PASSWORD, simulated_nodes=NODES)],
        api_key=KEY,
        speed=60,
        start_time=SIM_START,
    )
    with SandboxServer(config) as srv:
        yield srv


@pytest.fixture(autouse=True)
def no_faults(server: SandboxServer) -> Iterator[None]:
    server.network.clear_faults()
    yield
    server.network.clear_faults()
    server.network.config.api_rate_limit = None


class Sleeps:
    """Records the waits the client asks for and moves its own clock instead of waiting
    (the network's token bucket runs on real time: tests of it sleep for real)."""

    def __init__(self, real: bool = False) -> None:
        self.waits: list[float] = []
        self.real = real
        self.now = 1000.0

    def clock(self) -> float:
        return time.monotonic() if self.real else self.now

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.real:
            time.sleep(seconds)
        else:
            self.now += seconds


def make_client(server: SandboxServer, sleep: Any = None, **kwargs: Any) -> GradientClient:
    endpoints = GradientEndpoints(
        api_base=server.api_base,
        identity_base=f"{server.url}/identitytoolkit",
        token_base=f"{server.url}/securetoken",
        web_api_key=KEY,
    )
    if sleep is not None:
        kwargs.update(sleep=sleep, clock=sleep.clock)
    return GradientClient(endpoints, EMAIL, PASSWORD, **kwargs)


def counted(server: SandboxServer) -> dict[str, int]:
    return dict(server.network.counters)


def since(server: SandboxServer, before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in server.network.counters.items()}


def test_429_on_every_fourth_call_is_waited_out_per_request(server: SandboxServer) -> None:
    sleeps = Sleeps()
    with make_client(server, sleeps) as client:
        client.status()  # signed in
        server.network.add_fault({"kind": "rate_limit", "every": 4, "retry_after": 1})
        before = counted(server)
        answers = [client.status() for _ in range(12)]
        done = since(server, before)

    assert len(answers) == 12
    # 12 answers, every fourth request refused: the 4th, 8th and 12th of 15
    assert done["apiRequests"] == 15 and done["faulted"] == 3
    assert sleeps.waits == [1.0] * 3  # each refusal waited exactly its Retry-After, then retried
    assert client.requests_sent == 16


def test_429_pauses_every_thread_not_only_the_refused_one() -> None:
    now = [100.0]
    limiter = RateLimiter(
        None, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s)
    )

    assert limiter.acquire() == 0.0
    limiter.refused(3.0)
    assert limiter.acquire() == 3.0  # any thread's next request waits out the Retry-After
    assert limiter.acquire() == 0.0


def test_refusals_slow_the_pace_which_recovers_after_a_quiet_spell() -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    limiter = RateLimiter(10, burst=1, clock=lambda: now[0], sleep=sleep)
    limiter.acquire()
    limiter.refused(1.0)
    limiter.refused(1.0)  # the same episode (other threads refused too): one step, not two
    assert limiter.pace == pytest.approx(10 / SLOWDOWN)
    for _ in range(30):
        now[0] += 1.5  # past the last Retry-After: each a new refusal
        limiter.refused(1.0)
    assert limiter.pace == pytest.approx(5)  # at most half the set rate

    quiet = now[0]
    while now[0] - quiet < RECOVER_AFTER_SECONDS * 0.9:
        limiter.acquire()
    assert limiter.pace == pytest.approx(5)  # not yet a quiet spell
    while now[0] - quiet < RECOVER_AFTER_SECONDS * 20:
        limiter.acquire()
    assert limiter.pace == pytest.approx(10)  # a step back up every quiet spell, to the set rate


def test_the_pace_is_an_even_grid_a_late_caller_does_not_push_back() -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    limiter = RateLimiter(10, burst=2, clock=lambda: now[0], sleep=sleep)
    waits = [limiter.acquire() for _ in range(5)]
    assert waits == pytest.approx([0.0, 0.0, 0.1, 0.1, 0.1])  # a burst of 2, then 10 per second

    now[0] += 0.15  # the next caller comes late (0.45 for the 0.4 slot): it goes at once
    caught_up = [limiter.acquire() for _ in range(3)]
    assert caught_up == pytest.approx([0.0, 0.05, 0.1])
    assert now[0] == pytest.approx(0.6)  # still on the grid; pushed back it would be 0.75


def test_a_5xx_is_retried_with_bounded_backoff(server: SandboxServer) -> None:
    sleeps = Sleeps()
    with make_client(server, sleeps) as client:
        client.status()
        server.network.add_fault({"kind": "error", "status": 503, "count": 3})
        before = counted(server)
        client.node_list(page=1, size=5)
        done = since(server, before)

    assert done["apiRequests"] == 4 and done["faulted"] == 3
    policy = RetryPolicy()
    assert len(sleeps.waits) == 3
    for attempt, wait in enumerate(sleeps.waits, start=1):
        ceiling = min(policy.max_backoff, policy.backoff * 2 ** (attempt - 1))
        assert ceiling / 2 <= wait <= ceiling


def test_a_lasting_5xx_fails_after_the_policy_s_tries_naming_the_endpoint(
    server: SandboxServer,
) -> None:
    sleeps = Sleeps()
    with make_client(server, sleeps, retry=RetryPolicy(attempts=3)) as client:
        client.status()
        server.network.add_fault({"kind": "error", "status": 502, "path": "/api/point"})
        before = counted(server)
        with pytest.raises(GradientServerError) as caught:
            client.point_stats(datetime(2025, 3, 1), datetime(2025, 3, 2))
        done = since(server, before)

    assert done["apiRequests"] == 3 and len(sleeps.waits) == 2
    assert caught.value.endpoint == "POST /point/stats" and caught.value.status == 502


def test_a_retry_after_beyond_the_bound_goes_to_the_caller(server: SandboxServer) -> None:
    sleeps = Sleeps()
    with make_client(server, sleeps, retry=RetryPolicy(max_retry_after=60)) as client:
        client.status()
        server.network.add_fault({"kind": "rate_limit", "retry_after": 3600, "count": 1})
        with pytest.raises(GradientRateLimited) as caught:
            client.status()

    assert caught.value.retry_after == 3600 and sleeps.waits == []


def test_an_unknown_node_is_not_found_and_not_retried(server: SandboxServer) -> None:
    with make_client(server, Sleeps()) as client:
        client.status()
        before = counted(server)
        with pytest.raises(GradientNotFound):
            client.node_stats("no-such-node", datetime(2025, 3, 1), datetime(2025, 3, 2))
        assert client.node("no-such-node") is None
        assert since(server, before)["apiRequests"] == 2


def test_the_client_s_rate_keeps_it_under_the_network_s_limit(server: SandboxServer) -> None:
    # The client's burst at 10/s is 1; the network's 3 leaves room for a request the server
    # takes up to 0.2 s longer to count than the one after it (a busy machine).
    server.network.config.api_rate_limit = 10
    server.network.config.api_rate_burst = 3
    with make_client(server, requests_per_second=10) as client:
        client.status()
        before = counted(server)
        for _ in range(20):
            client.status()
        done = since(server, before)

    assert done["apiRequests"] == 20
    assert done["throttled"] == 0  # paced by the client, never refused by the network


def test_without_a_client_rate_the_network_refuses_and_the_client_waits(
    server: SandboxServer,
) -> None:
    server.network.config.api_rate_limit = 20
    server.network.config.api_rate_burst = 2
    sleeps = Sleeps(real=True)
    with make_client(server, sleeps) as client:
        before = counted(server)
        answers = [client.status() for _ in range(6)]
        done = since(server, before)

    assert len(answers) == 6
    assert done["throttled"] >= 1  # back-to-back requests emptied the bucket of 2
    assert done["apiRequests"] == 6 + done["throttled"]
    assert len(sleeps.waits) >= done["throttled"]  # each refusal was waited out (Retry-After 1)


def test_node_sweep_reads_every_page_concurrently_once(server: SandboxServer) -> None:
    with make_client(server, requests_per_second=200) as client:
        before = counted(server)
        nodes = client.all_nodes(size=4, workers=4)
        done = since(server, before)

    assert sorted(n.name for n in nodes) == sorted(
        n["clientid"] for n in server.network.state()["nodes"]
    )
    assert len(nodes) == NODES
    # 30 nodes in pages of 4: 8 pages, the 8th short; at most workers - 1 asked past it
    assert 8 <= done["apiRequests"] <= 8 + 3


def test_one_sign_in_serves_many_calls_and_a_rejected_token_is_refreshed(
    server: SandboxServer,
) -> None:
    before = counted(server)
    with make_client(server) as client:
        client.all_nodes(size=10, workers=3)
        server.network.expire_tokens()
        client.node_stats(
            client.all_nodes(size=10)[0].name,
            datetime.now(UTC) - timedelta(days=2),
            datetime.now(UTC),
        )
    done = since(server, before)

    assert done["signIns"] == 1
    assert done["refreshes"] == 1


def test_threads_that_meet_a_rejected_token_together_renew_it_once(
    server: SandboxServer,
) -> None:
    with make_client(server) as client:
        ids = [n.name for n in client.all_nodes(size=NODES)]
        before = counted(server)
        server.network.expire_tokens()
        now = datetime.now(UTC)
        with ThreadPoolExecutor(max_workers=6) as pool:
            days = list(pool.map(lambda i: client.node_stats(i, now - timedelta(days=1), now), ids))
    done = since(server, before)

    assert len(days) == NODES
    assert (done["signIns"], done["refreshes"]) == (0, 1)


def test_a_quick_look_shares_the_session_and_gives_up_early(server: SandboxServer) -> None:
    sleeps = Sleeps()
    before = counted(server)
    with make_client(server, sleeps) as client:
        client.status()
        quick = client.with_retry(RetryPolicy(attempts=2))
        server.network.add_fault({"kind": "error", "status": 503})
        with pytest.raises(GradientServerError):
            quick.status()
        quick.close()  # the view's close leaves the client's connections open
        server.network.clear_faults()
        client.status()
    done = since(server, before)

    assert done["signIns"] == 1 and done["apiRequests"] == 1 + 2 + 1
    assert client.requests_sent == quick.requests_sent == 4
    assert len(sleeps.waits) == 1
