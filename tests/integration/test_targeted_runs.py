"""Runs an operator starts for one host: a health check of named hosts only, and the release
of a quarantined host as a flow run. Real Postgres, the session's Prefect server, the sandbox
network; the hosts are rows whose SSH port answers nothing (each is judged Unreachable)."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from gradientlab.config import HealthSettings
from gradientlab.health import NetworkState, Verdict, record_sweep, standing_network_state
from gradientlab.health.record import NETWORK_DOWN
from gradientlab.providers.base import HostRecord
from gradientlab.store.fleet import upsert_host
from tests.conftest import fleet_yaml, rows

T0 = (datetime.now(UTC) - timedelta(days=365)).replace(hour=3, minute=7, second=0, microsecond=0)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def host_key() -> str:
    """A well-formed pinned key (of no running sshd)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    public = Ed25519PrivateKey.generate().public_key()
    return public.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()


def add_dead_host(engine: Engine, name: str) -> int:
    return upsert_host(
        engine,
        HostRecord(
            name=name,
            provider="local",
            address="127.0.0.1",
            ssh_port=closed_port(),
            ssh_user="nobody",
            host_key=host_key(),
            state="running",
            provider_ref=name,
        ),
    )


def open_network_incident(engine: Engine, detail: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO incidents (host_id, kind, last_kind, detected_at, detail)"
                " VALUES (NULL, :k, :k, :t, :d)"
            ),
            {"k": NETWORK_DOWN, "t": T0, "d": detail},
        )


@pytest.fixture()
def fleet_file(sandbox: Any, base_address: str, tmp_path: Path) -> str:
    path = tmp_path / "fleet.yaml"
    path.write_text(fleet_yaml(sandbox, [], base_address).replace("hosts:\n\n", "hosts: []\n"))
    return str(path)


def test_a_few_hosts_cannot_open_or_close_the_networks_incident(engine: Engine) -> None:
    add_dead_host(engine, "t-1")
    assert standing_network_state(engine, None) == NetworkState(False, "")
    assert standing_network_state(engine, "503 from /sentrynode/list").down
    open_network_incident(engine, "4 of 5 checked nodes are Disconnected at once")
    state = standing_network_state(engine, None)
    assert state.down
    assert state.reason.startswith("4 of 5 checked nodes are Disconnected at once")

    from gradientlab.health import Decision, HealthReport
    from gradientlab.health.sweep import HealResult

    good = HealthReport(host="t-1", status=Verdict.GOOD, reachable=True, checked_at=T0, reason="")
    results: list[HealResult] = [(good, good, [], Decision((), "test"))]
    up = NetworkState(False, "")
    _, alerts, _ = record_sweep(engine, results, HealthSettings(), up, T0, "f", fleet_level=False)
    assert alerts == []
    assert rows(engine, "SELECT status FROM incidents WHERE host_id IS NULL") == [("open",)]
    _, alerts, _ = record_sweep(engine, results, HealthSettings(), up, T0, "f")  # fleet-wide
    assert [a.event for a in alerts] == []  # never alerted down, so no "restored" either
    assert rows(engine, "SELECT status FROM incidents WHERE host_id IS NULL") == [("recovered",)]


def test_health_checks_only_the_named_hosts(
    prefect_server: None, engine: Engine, fleet_file: str
) -> None:
    from flows.health import UnknownHosts, health

    add_dead_host(engine, "t-1")
    add_dead_host(engine, "t-2")
    open_network_incident(engine, "the network's API fails: test")

    outcomes = health(fleet_path=fleet_file, hosts=["t-2"])

    assert [(o.host, o.status) for o in outcomes] == [("t-2", Verdict.UNREACHABLE)]
    assert rows(
        engine,
        "SELECT h.name, count(*) FROM node_status_samples s JOIN hosts h ON h.id = s.host_id"
        " GROUP BY h.name",
    ) == [("t-2", 1)]
    # the network's incident is the fleet-wide sweeps' to close, not one host's
    assert rows(engine, "SELECT status FROM incidents WHERE host_id IS NULL") == [("open",)]
    with pytest.raises(UnknownHosts, match="no live host named t-9 in the database"):
        health(fleet_path=fleet_file, hosts=["t-9"])


def test_release_ends_a_quarantine_as_a_flow_run(prefect_server: None, engine: Engine) -> None:
    from flows.release import release

    add_dead_host(engine, "t-q")
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE hosts SET quarantined_at = :t, quarantine_reason = 'budget spent'"
                " WHERE name = 't-q'"
            ),
            {"t": T0},
        )
    released = release(host="t-q")
    assert released["was_quarantined"] is True
    assert released["quarantine_reason"] == "budget spent"
    assert rows(engine, "SELECT quarantined_at, released_at IS NOT NULL FROM hosts") == [
        (None, True)
    ]
    assert release(host="t-q")["was_quarantined"] is False
    with pytest.raises(KeyError, match="host 't-nope' is not in the database"):
        release(host="t-nope")
