"""The whole path, for real: sshd hosts, Chromium with the sandbox extension, Postgres, Prefect.

provision -> deploy -> both nodes Good -> kill a browser -> the health flow records one incident
with its recovery time -> rewards rows -> a second rewards run adds no row -> a 5xx storm makes the
rewards task retry and fail naming the endpoint, with nothing half-written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from tests.conftest import fleet_yaml, terminate_fleet

pytestmark = pytest.mark.e2e

HOSTS = ["e2e-1", "e2e-2"]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fleet_file(
    sandbox: Any, base_address: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("fleet") / "fleet.yaml"
    path.write_text(fleet_yaml(sandbox, HOSTS, base_address))
    yield path
    terminate_fleet(path)


def rows(engine: Engine, sql: str) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql))]


def run_health_until(fleet_file: Path, done: Any, timeout: float = 120) -> list[Any]:
    """Run the health flow until `done(outcomes)`. The deadline is a hang guard, generous on
    purpose, not a timing assertion: how fast the fleet heals is measured in bench/."""
    from flows.health import health

    deadline = time.monotonic() + timeout
    outcomes = health(fleet_path=str(fleet_file))
    while not done(outcomes) and time.monotonic() < deadline:
        time.sleep(2)
        outcomes = health(fleet_path=str(fleet_file))
    return outcomes


def test_fleet_end_to_end(
    prefect_server: None, engine: Engine, sandbox: Any, fleet_file: Path
) -> None:
    from flows.deploy import deploy
    from flows.provision import provision
    from flows.rewards import rewards
    from gradientlab.gradient.throttle import RetryPolicy
    from gradientlab.inventory import executor_for
    from gradientlab.store.fleet import host_records

    # provision: the plan alone creates nothing; approved, two hosts with their keys recorded
    planned = provision(fleet_path=str(fleet_file))
    assert planned["applied"] is False
    assert [r["action"] for r in planned["plan"]] == ["create", "create"]
    assert rows(engine, "SELECT count(*) FROM hosts") == [(0,)]
    assert rows(engine, "SELECT approved FROM provision_plans") == [(False,)]
    provision(fleet_path=str(fleet_file), approve=True)
    hosts = rows(engine, "SELECT name, state, host_key FROM hosts ORDER BY name")
    assert [(h[0], h[1]) for h in hosts] == [("e2e-1", "running"), ("e2e-2", "running")]
    assert all(h[2].startswith("ssh-ed25519 ") for h in hosts)

    # deploy; a second deploy changes nothing
    first = deploy(fleet_path=str(fleet_file))
    assert all(r["changes"] for r in first)
    second = deploy(fleet_path=str(fleet_file))
    assert [r["changes"] for r in second] == [[], []]

    # both nodes report Good, in the database and in the view the app reads
    outcomes = run_health_until(fleet_file, lambda o: all(x.status == "Good" for x in o))
    assert [o.status for o in outcomes] == ["Good", "Good"]
    status = rows(engine, "SELECT host, status, client_id FROM v_fleet_status ORDER BY host")
    assert [(s[0], s[1]) for s in status] == [("e2e-1", "Good"), ("e2e-2", "Good")]
    assert all(s[2] for s in status)
    state = httpx.get(f"{sandbox.url}/__sandbox/state").json()
    assert {s[2] for s in status} <= {n["clientid"] for n in state["nodes"]}

    # kill the browser on one host: the health flow brings it back and records one incident
    record = next(r for r in host_records(engine) if r.name == "e2e-1")
    ex = executor_for(record)
    killed = ex.run("kill -9 $(cat .gradientlab/node/browser.pid) && echo killed")
    assert killed.stdout.strip() == "killed"
    outcomes = run_health_until(
        fleet_file,
        lambda o: (
            all(x.status == "Good" for x in o)
            and rows(engine, "SELECT count(*) FROM incidents WHERE status = 'recovered'")[0][0] >= 1
        ),
    )
    assert [o.status for o in outcomes] == ["Good", "Good"]
    incidents = rows(
        engine,
        "SELECT h.name, i.kind, i.status, extract(epoch FROM i.recovered_at - i.detected_at)"
        " FROM incidents i JOIN hosts h ON h.id = i.host_id",
    )
    assert len(incidents) == 1, incidents
    name, kind, state, seconds = incidents[0]
    assert (name, kind, state) == ("e2e-1", "BrowserDown", "recovered")
    assert float(seconds) > 0  # a recovery time was recorded; how long it takes is bench/'s
    actions = rows(engine, "SELECT step, ok FROM recovery_actions")
    assert actions and all(ok for _, ok in actions)
    # the health flow refreshed the daily rollups the app reads
    assert rows(engine, "SELECT kind, incidents, recovered FROM rollup_incident_day") == [
        ("BrowserDown", 1, 1)
    ]
    assert rows(engine, "SELECT sum(samples) FROM rollup_host_day") == rows(
        engine, "SELECT count(*) FROM node_status_samples"
    )

    # rewards: rows land; a second run adds none
    summary = rewards(fleet_path=str(fleet_file))
    assert summary["account_points"]["days"] >= 1
    tables = ("account_daily_points", "node_daily_stats", "node_daily_points")
    keys = {
        "account_daily_points": "account, day",
        "node_daily_stats": "client_id, day",
        "node_daily_points": "client_id, day",
    }
    before = {t: rows(engine, f"SELECT {keys[t]} FROM {t} ORDER BY {keys[t]}") for t in tables}
    assert all(before.values()), before
    points = rows(engine, "SELECT sum(points) FROM node_daily_points")[0][0]
    assert points > 0  # uptime accrued in raw integer points
    again = rewards(fleet_path=str(fleet_file))
    assert again["account_points"]["inserted"] == 0
    assert again["node_stats"]["inserted"] == 0
    after = {t: rows(engine, f"SELECT {keys[t]} FROM {t} ORDER BY {keys[t]}") for t in tables}
    assert after == before
    # today's points grew between the two runs (each run snapshots them): the rollup has the last
    assert rows(engine, "SELECT sum(points_raw) FROM rollup_node_day") == rows(
        engine, "SELECT sum(points) FROM node_daily_points"
    )

    # a 5xx storm: the task retries, then fails naming the endpoint; nothing half-written.
    # How long the client and Prefect wait between tries is not what this checks (the counts
    # are): here they wait next to nothing, instead of the ~60 s the defaults add up to.
    snapshot = {t: rows(engine, f"SELECT * FROM {t} ORDER BY {keys[t]}") for t in tables}
    httpx.post(
        f"{sandbox.url}/__sandbox/faults",
        json={"kind": "error", "path": "/api/point/stats", "status": 503, "count": 100},
    ).raise_for_status()
    try:
        with pytest.raises(Exception, match="/point/stats") as failure, quick_retries():
            rewards(fleet_path=str(fleet_file))
        left = httpx.get(f"{sandbox.url}/__sandbox/faults").json()["faults"][0]["count"]
    finally:
        httpx.post(f"{sandbox.url}/__sandbox/faults/clear").raise_for_status()
    assert "503" in str(failure.value)
    # the task's first try and three retries, each trying the request the client's bounded times
    assert left == 100 - 4 * RetryPolicy().attempts
    assert {t: rows(engine, f"SELECT * FROM {t} ORDER BY {keys[t]}") for t in tables} == snapshot

    # above health.shard_hosts hosts, a sweep is one flow run per shard, which a served
    # `health-shard` deployment (any worker, in production) runs; the network state once
    sharded = fleet_file.with_name("sharded.yaml")
    sharded.write_text(fleet_file.read_text().replace("health: {", "health: {shard_hosts: 1, ", 1))
    before_samples = dict(rows(engine, SAMPLES_PER_HOST))
    with served_shards(sharded) as shard_runs:
        from flows.health import health

        assert health(fleet_path=str(sharded)) == []  # the dispatcher checks no host itself
        runs = shard_runs()
    assert sorted((r.parameters["shard"], r.state_name) for r in runs) == [
        ("0/2", "Completed"),
        ("1/2", "Completed"),
    ]
    after_samples = dict(rows(engine, SAMPLES_PER_HOST))
    assert {h: after_samples[h] - before_samples[h] for h in HOSTS} == {h: 1 for h in HOSTS}
    assert rows(engine, "SELECT count(*) FROM incidents WHERE host_id IS NULL") == [(0,)]


@contextmanager
def quick_retries() -> Iterator[None]:
    """The rewards flow with the same tries as ever, each retry at once: the account-points
    task's Prefect retries without their delays, the client's retries with a 10 ms backoff."""
    import flows.rewards
    import tasks.network
    from gradientlab.gradient.throttle import RetryPolicy
    from gradientlab.inventory import gradient_client

    def client(*args: Any, **kwargs: Any) -> Any:
        made = gradient_client(*args, **kwargs)
        made.retry = RetryPolicy(backoff=0.01, max_backoff=0.1)
        return made

    task = flows.rewards.ingest_account_points
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            flows.rewards, "ingest_account_points", task.with_options(retry_delay_seconds=0)
        )
        patch.setattr(tasks.network, "gradient_client", client)
        yield


SAMPLES_PER_HOST = (
    "SELECT h.name, count(*) FROM node_status_samples s JOIN hosts h ON h.id = s.host_id"
    " GROUP BY h.name"
)


@contextmanager
def served_shards(fleet_path: Path) -> Iterator[Any]:
    """The `health-shard` deployment served from a process of its own, as a worker would run
    it; yields a function that reads its flow runs."""
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.settings import get_current_settings

    env = {**os.environ, "PREFECT_API_URL": str(get_current_settings().api.url)}
    code = (
        "from flows.health import health; "
        f"health.serve(name='health-shard', parameters={{'fleet_path': {str(fleet_path)!r}}})"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, env=env, start_new_session=True
    )
    try:
        with get_client(sync_client=True) as client:
            deadline = time.monotonic() + 120  # a hang guard, not a timing assertion
            while True:
                try:
                    deployment = client.read_deployment_by_name("health/health-shard")
                    break
                except Exception:  # noqa: BLE001 - not served yet
                    assert process.poll() is None, "the shard deployment's process ended"
                    assert time.monotonic() < deadline, "the shard deployment was not served"
                    time.sleep(0.5)

            def shard_runs() -> list[Any]:
                return client.read_flow_runs(
                    deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))
                )

            yield shard_runs
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)
