"""Incremental ingest on Postgres against the sandbox, whose clock is moved by hand.

The network's clock (not this machine's) says which day it is: the sandbox runs from a fixed
sim date on a fake clock, so these tests pass on any date and hour and never sleep."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import Engine, text

from gradientlab import ingest
from gradientlab.gradient import GradientClient, GradientEndpoints, GradientServerError
from gradientlab.gradient.throttle import NO_RETRY, RetryPolicy
from gradientlab.sandbox import SandboxConfig, SandboxServer
from gradientlab.sandbox.network import SandboxAccount, SandboxNetwork
from gradientlab.store import rewards

KEY = "ingest-web-key"
EMAIL = "ingest@example.test"
PASSWORD = "ingest-password"
NODES = 3
DAY = 86_400.0
START = datetime(2025, 3, 1, 23, 50, tzinfo=UTC)  # ten sim minutes before a midnight


class FakeClock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture()
def server(clock: FakeClock) -> Iterator[SandboxServer]:
    config = SandboxConfig(
        accounts=[SandboxAccount(email=EMAIL, password=PASSWORD, simulated_nodes=NODES)],
        api_key=KEY,
        speed=1,
        start_time=START.timestamp(),
        token_ttl_seconds=1e9,  # the fake clock jumps days; tokens are not what is tested here
        seed=7,
    )
    network = SandboxNetwork(config, clock=clock)
    with SandboxServer(network=network, tick_seconds=3600) as srv:
        yield srv


def client_of(server: SandboxServer, retry: RetryPolicy | None = None) -> GradientClient:
    endpoints = GradientEndpoints(
        api_base=server.api_base,
        identity_base=f"{server.url}/identitytoolkit",
        token_base=f"{server.url}/securetoken",
        web_api_key=KEY,
    )
    return GradientClient(endpoints, EMAIL, PASSWORD, retry=retry)


def node_ids(server: SandboxServer) -> list[str]:
    return sorted(n["clientid"] for n in server.network.state()["nodes"])


def stored_stats(engine: Engine) -> dict[tuple[str, date], tuple[int, int]]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT client_id, day, duration, taps FROM node_daily_stats"))
        return {(r.client_id, r.day): (r.duration, r.taps) for r in rows}


def network_stats(server: SandboxServer) -> dict[tuple[str, date], tuple[int, int]]:
    out = {}
    for node in server.network.state()["nodes"]:
        for did, d in node["days"].items():
            day = date(int(did[:4]), int(did[4:6]), int(did[6:]))
            out[(node["clientid"], day)] = (d["duration"], d["latency"])
    return out


def test_first_run_backfills_later_runs_read_from_the_last_complete_day(
    engine: Engine, server: SandboxServer, clock: FakeClock
) -> None:
    ids = node_ids(server)
    clock.now += 3 * DAY + 20 * 60  # 00:10 on day 4: days 0 (the start) .. 4
    with client_of(server) as client:
        now = client.status().time
        first = ingest.ingest_node_stats(client, engine, ids, now, 7)
        account = ingest.ingest_account_points(client, engine, EMAIL, now, 7)
        assert (first.days, first.count.inserted) == (NODES * 5, NODES * 5)
        assert account["days"] == 5

        clock.now += 3600  # an hour later: yesterday and today only
        now = client.status().time
        second = ingest.ingest_node_stats(client, engine, ids, now, 7)
        account = ingest.ingest_account_points(client, engine, EMAIL, now, 7)
        assert second.days == NODES * 2
        assert (second.count.inserted, second.count.updated) == (0, NODES)  # today grew
        assert account["days"] == 2

        clock.now += 2 * DAY  # down for two days: from the newest day stored
        now = client.status().time
        third = ingest.ingest_node_stats(client, engine, ids, now, 7)
        assert third.days == NODES * 3
        assert (third.count.inserted, third.count.updated) == (NODES * 2, NODES)

    assert stored_stats(engine) == network_stats(server)  # every day of every node, as told


def test_an_unknown_node_is_recorded_and_skipped(engine: Engine, server: SandboxServer) -> None:
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE network_unknown_nodes"))
    ids = node_ids(server)
    with client_of(server) as client:
        now = client.status().time
        result = ingest.ingest_node_stats(client, engine, [*ids, "retired-node"], now, 2)

    assert result.unknown == ["retired-node"]
    assert result.summary()["unknown"] == 1
    assert {k[0] for k in stored_stats(engine)} == set(ids)
    assert rewards.unknown_nodes(engine) == {"retired-node": 1}


def test_a_failed_try_keeps_what_it_read_and_a_retry_resumes(
    engine: Engine, server: SandboxServer
) -> None:
    ids = node_ids(server)
    broken = ids[2]
    server.network.add_fault(
        {"kind": "error", "status": 503, "path": f"/api/sentrynode/stats/{broken}"}
    )
    done: set[str] = set()
    with client_of(server, retry=NO_RETRY) as client:
        now = client.status().time
        with pytest.raises(GradientServerError):
            ingest.ingest_node_stats(client, engine, ids, now, 2, workers=1, done=done)
        assert done == set(ids[:2])  # stored before the failure was raised
        assert {k[0] for k in stored_stats(engine)} == set(ids[:2])

        server.network.clear_faults()
        before = server.network.counters["apiRequests"]
        retry = ingest.ingest_node_stats(client, engine, ids, now, 2, workers=1, done=done)

    assert retry.asked == 1 and server.network.counters["apiRequests"] - before == 1
    assert {k[0] for k in stored_stats(engine)} == set(ids)


def node_points(engine: Engine) -> dict[tuple[str, date], tuple[int, int]]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT client_id, day, points, taps FROM node_daily_points"))
        return {(r.client_id, r.day): (r.points, r.taps) for r in rows}


def test_a_past_day_s_points_never_go_down_across_midnight(
    engine: Engine, server: SandboxServer, clock: FakeClock
) -> None:
    eve = START.date()
    with client_of(server) as client:
        clock.now += 9 * 60  # 23:59 on the first day
        sweep = ingest.sweep_nodes(client, page_size=2, workers=2)
        assert (sweep.day, sweep.today) == (eve, eve)
        ingest.snapshot_node_points(engine, sweep)
        evening = node_points(engine)
        assert len(evening) == NODES and all(p > 0 for p, _ in evening.values())

        clock.now += 5 * 60  # 00:04: the list now shows the new day's near-zero "today"
        after_midnight = client.all_nodes(size=2)
        # a list started before midnight and finished after it belongs to the day before
        crossing = ingest.NodeSweep(after_midnight, day=eve, today=eve + timedelta(days=1))
        count = ingest.snapshot_node_points(engine, crossing)
        assert count["updated"] == 0 and node_points(engine) == evening

        higher = [n.model_copy(update={"today": 10**9}) for n in after_midnight]
        ingest.snapshot_node_points(engine, ingest.NodeSweep(higher, eve, crossing.today))
        assert {v[0] for k, v in node_points(engine).items() if k[1] == eve} == {10**9}

        sweep = ingest.sweep_nodes(client, page_size=2)
        assert sweep.day == sweep.today == eve + timedelta(days=1)
        ingest.snapshot_node_points(engine, sweep)

    points = node_points(engine)
    assert {k[1] for k in points} == {eve, eve + timedelta(days=1)}
    assert all(v[0] == 10**9 for k, v in points.items() if k[1] == eve)


def test_today_s_points_follow_the_network(engine: Engine, server: SandboxServer) -> None:
    with client_of(server) as client:
        sweep = ingest.sweep_nodes(client)
        ingest.snapshot_node_points(engine, sweep)
        lower = [n.model_copy(update={"today": 0}) for n in sweep.nodes]
        ingest.snapshot_node_points(engine, ingest.NodeSweep(lower, sweep.day, sweep.today))

    assert {v[0] for v in node_points(engine).values()} == {0}  # today is not grow-only
