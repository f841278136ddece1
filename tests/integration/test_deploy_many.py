"""A deploy of 20 hosts at once, on real local sshd hosts, the session's Prefect server and
Postgres: bounded concurrency, per-host locks that never take the pool's connections, and each
host's failure as that host's result in the run's table.

The hosts are cheap: no browser ever starts. The fleet's `runner.chromium` names a browser
these hosts do not have, so every deploy does its real SSH steps under its host lock and then
fails at the browser check, a failure only a person can fix; one host is stopped (its sshd
down), a failure that passes by itself."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import Engine, create_engine, text

from gradientlab.config import parse_fleet
from gradientlab.inventory import provider_for
from gradientlab.providers.base import HostRecord
from gradientlab.remote.keys import operator_public_key
from gradientlab.store.fleet import upsert_host
from gradientlab.store.locks import host_lock
from tests.conftest import fleet_yaml

HOSTS = [f"many-{i:02d}" for i in range(20)]
NO_BROWSER = "/opt/no-such-chromium/chrome"


@pytest.fixture(scope="module")
def many_hosts(sandbox: Any, base_address: str, tmp_path_factory: Any) -> Iterator[Path]:
    """20 local hosts (sshd each), made at once; the fleet file that lists them."""
    address = base_address.rsplit(".", 1)[0] + ".150"
    text_ = fleet_yaml(sandbox, HOSTS, address).replace(
        "runner: {", f"runner: {{chromium: {NO_BROWSER}, "
    )
    path = tmp_path_factory.mktemp("many") / "fleet.yaml"
    path.write_text(text_)
    fleet = parse_fleet(text_, str(path))
    provider = provider_for(fleet, "local")
    key = operator_public_key()
    records: list[HostRecord] = [provider.create(spec, key) for spec in fleet.hosts]
    assert len(records) == len(HOSTS)
    try:
        yield path
    finally:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(provider.terminate, HOSTS))


def artifact(flow_run_id: UUID, key: str) -> list[dict[str, Any]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    (table,) = [a for a in found if a.key == key]
    data: Any = json.loads(table.data) if isinstance(table.data, str) else table.data
    return list(data)


def test_twenty_hosts_each_get_their_own_outcome_and_the_run_fails_only_for_a_person(
    prefect_server: None, engine: Engine, many_hosts: Path
) -> None:
    from flows.deploy import HOST_WORKERS, deploy
    from gradientlab.providers.local import LocalProvider

    fleet = parse_fleet(many_hosts.read_text(), str(many_hosts))
    provider = provider_for(fleet, "local")
    assert isinstance(provider, LocalProvider)
    for name in HOSTS:
        record = provider.get(name)
        assert record is not None
        upsert_host(engine, record)
    stopped = HOSTS[-1]
    provider.stop(stopped)
    try:
        state = deploy(fleet_path=str(many_hosts), return_state=True)
        assert state.is_failed()  # 19 hosts need a person: their browser is missing
        with pytest.raises(Exception, match="19 of 20 hosts need a person") as caught:
            state.result()
        assert type(caught.value).__name__ == "DeployNeedsPerson"
        run_id = state.state_details.flow_run_id
        assert run_id is not None
        rows = artifact(run_id, "deploy-result")

        # a host that is only down passes by itself: a run over it alone completes
        alone = deploy(fleet_path=str(many_hosts), hosts=[stopped], return_state=True)
        assert alone.is_completed()
        (result,) = alone.result()
        assert result["host"] == stopped and result["outcome"] == "failed"
        assert "HostUnreachable" in result["reason"] and "passing" in result["reason"]
    finally:
        provider.start(stopped)

    by_host = {r["host"]: r for r in rows}
    assert sorted(by_host) == HOSTS  # every host's outcome, the failed ones included
    for name in HOSTS[:-1]:
        assert by_host[name]["outcome"] == "failed: a person must act"
        assert f"no working Chromium at {NO_BROWSER}" in by_host[name]["changes"]
    assert by_host[stopped]["outcome"] == "failed: passing"
    # no host waited on the pool: 20 deploys, each with its lock, never timed out on it
    assert not any("QueuePool" in r["changes"] for r in rows)
    assert len(HOSTS) > HOST_WORKERS
    # every host's lock was released with its deploy (this database's locks only: pg_locks
    # lists the whole server's, and other sessions share it)
    with engine.connect() as conn:
        locks = conn.execute(
            text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
        ).scalar_one()
    assert locks == 0


def test_host_locks_never_take_the_connections_the_work_needs(engine: Engine) -> None:
    """More hosts locked at once than the pool holds, each asking the pool for a connection
    while it holds its lock: with locks on pooled connections this waits out the timeout."""
    tight = create_engine(engine.url, pool_size=2, max_overflow=0, pool_timeout=5)
    held = threading.Barrier(len(HOSTS))

    def work(name: str) -> int:
        with host_lock(tight, name):
            held.wait(timeout=60)  # all 20 locks held at once
            with tight.connect() as conn:
                return int(conn.execute(text("SELECT 1")).scalar_one())

    try:
        with ThreadPoolExecutor(len(HOSTS)) as pool:
            assert list(pool.map(work, HOSTS)) == [1] * len(HOSTS)
    finally:
        tight.dispose()


def test_tag_concurrency_limits_bound_ssh_provider_and_api_tasks(prefect_server: None) -> None:
    from prefect.client.orchestration import get_client

    from deployments.limits import TAG_LIMITS, ensure_tag_limits

    assert set(TAG_LIMITS) == {"ssh", "provider", "gradient-api"}
    try:
        assert ensure_tag_limits() == TAG_LIMITS  # set on the server, read back from it
        assert ensure_tag_limits({"provider": 2})["provider"] == 2  # an update, not a second
        assert ensure_tag_limits() == TAG_LIMITS
    finally:  # the session's other tests run without them
        with get_client(sync_client=True) as client:
            for tag in TAG_LIMITS:
                client.delete_concurrency_limit_by_tag(tag)
