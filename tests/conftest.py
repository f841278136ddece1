"""Shared fixtures: a real PostgreSQL database per test session, a private data folder."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

# Keep every test run's state (keys, hosts, Prefect home) out of the project folder.
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="gradientlab-test-"))
os.chmod(_SESSION_HOME, 0o755)  # local hosts run as their own users and must reach their homes
# pytest-xdist's workers inherit the environment of the process that started them, which
# imported this file first: each worker is a session of its own, with its own homes (and so its
# own local hosts' users, keeper socket, Prefect server and database), never its parent's.
_PARENT_HOME = os.environ.get("GRADIENTLAB_TEST_SESSION_HOME")
if _PARENT_HOME:
    for _var in ("GRADIENTLAB_HOME", "PREFECT_HOME"):
        if os.environ.get(_var, "").startswith(_PARENT_HOME):
            del os.environ[_var]
os.environ["GRADIENTLAB_TEST_SESSION_HOME"] = str(_SESSION_HOME)
os.environ.setdefault("GRADIENTLAB_HOME", str(_SESSION_HOME))
os.environ.setdefault("PREFECT_HOME", str(_SESSION_HOME / "prefect"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
# the analysis app's sign-in mode is explicit: the page tests run it read-only on loopback (the
# sign-in tests set their own)
os.environ.setdefault("GRADIENTLAB_APP_SIGN_IN", "none")


def _admin_url() -> str:
    from gradientlab.store.database import database_url

    return database_url()


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh database on the server `DATABASE_URL` (or the embedded one) names, dropped after."""
    from gradientlab.store.database import make_engine, migrate

    admin_url = make_url(_admin_url())
    name = f"gradientlab_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin_url.set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()
    previous = os.environ.get("DATABASE_URL")
    os.environ["DATABASE_URL"] = url
    try:
        yield url
    finally:
        if previous is None:
            os.environ.pop("DATABASE_URL", None)
        else:
            os.environ["DATABASE_URL"] = previous
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        if previous is None:  # the embedded server this session started
            from gradientlab.paths import data_dir
            from gradientlab.store.embedded import stop_embedded_postgres

            stop_embedded_postgres(data_dir() / "pgdata")


@pytest.fixture()
def engine(database_url: str) -> Iterator[Engine]:
    """The session database, emptied of rows before each test."""
    from gradientlab.store.database import make_engine

    eng = make_engine(database_url)
    with eng.begin() as conn:
        conn.execute(
            text(
                "TRUNCATE hosts, nodes, node_status_samples, node_daily_stats,"
                " account_daily_points, node_daily_points, incidents, recovery_actions,"
                " provision_plans, rollup_sample_days, rollup_fleet_day_status,"
                " rollup_node_day, rollup_node, rollup_group_day, rollup_incident_day,"
                " rollup_step_day, tap_readiness, rollup_tap_day"
                " RESTART IDENTITY CASCADE"
            )
        )
    yield eng
    eng.dispose()


def add_host(engine: Engine, name: str) -> int:
    """A host row as provision records one (for tests of what is stored about hosts)."""
    from gradientlab.providers.base import HostRecord
    from gradientlab.store.fleet import upsert_host

    return upsert_host(
        engine,
        HostRecord(
            name=name,
            provider="local",
            address="127.0.0.9",
            ssh_port=2222,
            ssh_user="u",
            host_key="ssh-ed25519 AAAA",
            state="running",
            provider_ref="x",
        ),
    )


def rows(engine: Engine, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
    """Every row of a query, as plain tuples."""
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql), params or {})]


def terminate_fleet(path: Path) -> None:
    """Close this process's SSH connections and terminate every host of the fleet file."""
    from gradientlab.config import load_fleet
    from gradientlab.inventory import provider_for
    from gradientlab.remote.executor import POOL

    POOL.close_all()
    fleet = load_fleet(path)
    for host in fleet.hosts:
        provider_for(fleet, host.provider).terminate(host.name)


# ---------------------------------------------------------------- the sandbox and a fleet on it

SANDBOX_PASSWORD_ENV = "GRADIENTLAB_TEST_PASSWORD"


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Any]:
    """The sandbox Gradient network on a free loopback port, sped up 60x.

    The network's clock, not this machine's, says which day rewards belong to, and at 60x a sim
    day passes in 24 real minutes. Started at whatever the real hour is, a sim midnight could
    fall between two rewards runs that must insert nothing. So the sim clock starts at 01:00
    UTC (today's date): one real minute is 60 sim minutes, and the next sim midnight is 23 sim
    hours = 23 real minutes away. A session using the sandbox for up to ~20 real minutes stays
    inside one sim day, with 3 minutes to spare. (Tokens, heartbeats and timeouts run on real
    time and are unaffected.)"""
    from datetime import UTC, datetime, time

    from gradientlab.sandbox.network import SandboxAccount, SandboxConfig
    from gradientlab.sandbox.server import SandboxServer

    password = uuid.uuid4().hex
    os.environ[SANDBOX_PASSWORD_ENV] = password
    start = datetime.combine(datetime.now(UTC).date(), time(hour=1), UTC)
    server = SandboxServer(
        SandboxConfig(
            accounts=[SandboxAccount(email="operator@gradientlab.test", password=password)],
            speed=60,
            start_time=start.timestamp(),
            seed=3,
            extension_heartbeat_seconds=3,
        ),
        port=0,
    )
    server.start()
    yield server
    server.stop()


def fleet_yaml(sandbox: Any, hosts: list[str], base_address: str) -> str:
    """A fleet of local hosts on the sandbox. Its runners read their popups every 10 s (each
    read costs a host about a CPU-second), and every few seconds after a browser start."""
    host_lines = "\n".join(f"  - {{name: {h}, provider: local}}" for h in hosts)
    return f"""
account:
  email: operator@gradientlab.test
  password: {{env: {SANDBOX_PASSWORD_ENV}}}
{sandbox.fleet_network_yaml()}providers:
  local: {{kind: local, base_address: {base_address}, ssh_port: 2222}}
hosts:
{host_lines}
runner: {{status_interval_seconds: 10, browser_check_seconds: 0.5}}
health: {{recovery_wait_seconds: 45}}
"""


@pytest.fixture(scope="session")
def base_address() -> str:
    """A loopback range of this test session's own, away from the demo's 127.0.0.10."""
    return f"127.{100 + os.getpid() % 100}.{os.getpid() % 250}.10"


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """One Prefect test server for the session (it takes 10 to 15 s to start).

    The flows the tests call run in this process, without flow-run heartbeats: a heartbeat
    tells a server that a worker's flow run is still alive, which no test here needs (the
    production-layout test gives its workers their own), and ending a flow run waits up to a
    second for the heartbeat thread to wake up and stop (the fault suite runs 100 and more)."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with (
        prefect_test_harness(server_startup_timeout=180),
        temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}),
    ):
        yield


# ---------------------------------------------------------------- the order files run in

# The files that take longest, longest first; every other file follows in the usual order.
# pytest-xdist (`-n`, pyproject's addopts) hands each worker a whole file at a time in this
# order (`--dist loadfile --no-loadscope-reorder`), so the long ones start at once, side by
# side, and the short ones fill in around them. The order changes when a file runs, not what
# it checks: every file sets up what it needs.
SLOWEST_FIRST = (
    "tests/e2e/test_faults.py",
    "tests/e2e/test_faults_reach.py",
    "tests/e2e/test_production_layout.py",
    "tests/e2e/test_fleet.py",
    "tests/integration/test_alerts.py",
    "tests/e2e/test_inventory.py",
    "tests/integration/test_sandbox_extension.py",
    "tests/e2e/test_tap_readiness.py",
    "tests/integration/test_app_actions.py",
    "tests/e2e/test_provision_cloud.py",
    "tests/integration/test_sign_in.py",
    "tests/integration/test_rewards_flow.py",
    "tests/integration/test_targeted_runs.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {path: i for i, path in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Leave no per-session folder behind (hosts and servers were stopped by their fixtures)."""
    import shutil

    if os.environ.get("GRADIENTLAB_HOME") == str(_SESSION_HOME):
        shutil.rmtree(_SESSION_HOME, ignore_errors=True)
