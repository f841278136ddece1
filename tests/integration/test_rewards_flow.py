"""The rewards flow against a throttling network: real Prefect, real Postgres, the sandbox.

The sandbox answers 429 (Retry-After: 1) to every fourth API call. The flow must still complete,
sign in once, store every node's days exactly once, and record (not fail on) a node id the
network does not know."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from tests.conftest import add_host, rows

NODES = 12
PASSWORD_ENV = "GRADIENTLAB_TEST_THROTTLED_PASSWORD"
EMAIL = "throttled@gradientlab.test"


@pytest.fixture(scope="module")
def throttled() -> Iterator[Any]:
    """A sandbox of its own: browserless nodes, sim clock from 01:00 today at 60x (a session
    of up to ~20 real minutes stays inside one sim day, see conftest.sandbox)."""
    from gradientlab.sandbox.network import SandboxAccount, SandboxConfig
    from gradientlab.sandbox.server import SandboxServer

    password = uuid.uuid4().hex
    os.environ[PASSWORD_ENV] = password
    start = datetime.combine(datetime.now(UTC).date(), time(hour=1), UTC)
    server = SandboxServer(
        SandboxConfig(
            accounts=[SandboxAccount(email=EMAIL, password=password, simulated_nodes=NODES)],
            speed=60,
            start_time=start.timestamp(),
            seed=5,
        )
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def fleet_file(throttled: Any, tmp_path: Path) -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text(
        f"account:\n  email: {EMAIL}\n  password: {{env: {PASSWORD_ENV}}}\n"
        + throttled.fleet_network_yaml()
        + "  requests_per_second: 200\n  node_page_size: 5\n"
        + "providers:\n  local: {kind: local}\nhosts: []\n"
    )
    return path


def test_rewards_completes_through_429s_and_stores_everything_once(
    prefect_server: None, engine: Engine, throttled: Any, fleet_file: Path
) -> None:
    from flows.rewards import rewards

    net = throttled.network
    host_id = add_host(engine, "gone-host")
    with engine.begin() as conn:  # a node GradientLab knows and the network no longer does
        conn.execute(
            text("INSERT INTO nodes (host_id, client_id) VALUES (:h, 'gone-node')"), {"h": host_id}
        )
        conn.execute(text("TRUNCATE network_unknown_nodes"))
    net.clear_faults()
    net.add_fault({"kind": "rate_limit", "every": 4, "retry_after": 1, "path": "/api/"})
    before = dict(net.counters)
    try:
        summary = rewards(fleet_path=str(fleet_file), days=3)
    finally:
        net.clear_faults()
    counters = {k: v - before[k] for k, v in net.counters.items()}

    state = net.state()
    ids = sorted(n["clientid"] for n in state["nodes"])
    assert len(ids) == NODES
    network_days = sorted((n["clientid"], day) for n in state["nodes"] for day in n["days"])
    stored = rows(engine, "SELECT client_id, to_char(day, 'YYYYMMDD') FROM node_daily_stats")
    assert sorted(stored) == network_days  # every node's days, once each
    assert summary["node_stats"]["inserted"] == len(network_days)
    assert summary["node_stats"]["unknown"] == 1
    assert rows(engine, "SELECT client_id, times FROM network_unknown_nodes") == [("gone-node", 1)]
    assert sorted(r[0] for r in rows(engine, "SELECT client_id FROM node_daily_points")) == ids
    assert summary["node_points"]["inserted"] == NODES
    assert rows(engine, "SELECT count(*) FROM account_daily_points") == [(1,)]

    # the network throttled a quarter of the calls; the flow obeyed and went on, signed in once
    assert counters["apiRequests"] == summary["api"]["requests"]
    assert counters["faulted"] == counters["apiRequests"] // 4 >= 5
    assert counters["signIns"] == 1

    # a second run: nothing new is inserted, the unknown node is counted again
    again = rewards(fleet_path=str(fleet_file), days=3)
    assert again["node_stats"]["inserted"] == 0
    assert again["account_points"]["inserted"] == 0
    assert rows(engine, "SELECT times FROM network_unknown_nodes") == [(2,)]
    assert sorted(
        rows(engine, "SELECT client_id, to_char(day, 'YYYYMMDD') FROM node_daily_stats")
    ) == (network_days)
