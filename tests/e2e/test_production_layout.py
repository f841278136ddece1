"""The production layout of README's "Production: a control plane on two machines", for real.

A Prefect API server and a separate services process on a PostgreSQL database of their own,
talking through Redis (`prefect-redis`: messaging, cache, causal ordering, concurrency leases,
Docket); one process work pool; `prefect deploy --all` from prefect.yaml; two "machines", each a
worker and a connection keeper with a data folder and Prefect home of its own and no SSH key
file (the key comes from a Secret block, the fleet file from a FleetFile block, host keys from
the hosts table); and two local sshd hosts. The health deployment runs on its schedule and the
rewards deployment on demand; one machine (its worker, its flow run and its keeper) is killed in
the middle of a health run; the run is marked Crashed by the heartbeat automation, and the next
scheduled run completes on the other machine, with one status sample per host per completed run
and no reward row twice."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import psutil
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from gradientlab.paths import PROJECT_ROOT
from tests.conftest import SANDBOX_PASSWORD_ENV, fleet_yaml, rows
from tests.private_services import private_postgres, private_redis

pytestmark = [pytest.mark.e2e, pytest.mark.layout]

HOSTS = ["layout-1", "layout-2"]
POOL = "gradientlab"  # prefect.yaml's work pool
FLEET_BLOCK = "gradientlab-fleet"  # prefect.yaml's fleet_path: block:gradientlab-fleet
KEY_BLOCK = "gradientlab-ssh-key"
HEALTH_EVERY = timedelta(seconds=15)
BIN = Path(sys.executable).parent
# Generous hang guards, not timings: Prefect processes take 30 s or more to start on a loaded
# 2-core machine. How fast things are is measured in bench/.
START_TIMEOUT = 240.0
RUN_TIMEOUT = 240.0


REWARD_DAYS = "SELECT account, day, node FROM account_daily_points ORDER BY account, day"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Processes:
    """Processes this test started, each in its own session, stopped by process id."""

    logs: Path
    started: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    killed: set[str] = field(default_factory=set)

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=str(env.get("GRADIENTLAB_DIR", PROJECT_ROOT)),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.started[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def tree(self, name: str) -> list[int]:
        """The process ids of a process and of everything it started."""
        try:
            root = psutil.Process(self.started[name].pid)
            return [root.pid, *(p.pid for p in root.children(recursive=True))]
        except psutil.NoSuchProcess:
            return []

    def kill_tree(self, name: str) -> list[int]:
        """SIGKILL a process and everything it started (flow runs start sessions of their own),
        as a machine that dies would. Returns the process ids killed."""
        self.killed.add(name)
        tree = self.tree(name)
        for pid in tree:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.started[name].wait(timeout=30)
        return tree

    def stop(self, name: str) -> None:
        self.killed.add(name)
        proc = self.started[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def stop_all(self) -> None:
        for proc in self.started.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.started.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


@dataclass
class ControlPlane:
    api_url: str
    procs: Processes
    machines: dict[str, dict[str, str]]  # machine name -> its environment


def _clean_env() -> dict[str, str]:
    """This process's environment without its Prefect or GradientLab settings.

    Without PYTHONDONTWRITEBYTECODE too, which a machine may set (this one does): with it, each
    of the dozen Python processes here (servers, workers, every flow run) compiles Prefect,
    SQLAlchemy and the rest from source again, 20 to 40 s each on a busy 2-core machine; a
    service machine keeps its compiled files like any Python installation."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFECT_", "GRADIENTLAB_"))
        and k not in ("DATABASE_URL", "PYTHONDONTWRITEBYTECODE")
    }


def _triggers_listening(redis_url: str) -> bool:
    """Whether the services process's automation triggers consume the event stream."""
    import redis

    try:
        groups = redis.Redis.from_url(redis_url).xinfo_groups("events")
    except redis.ResponseError:  # no stream yet
        return False
    return any(g["name"] in (b"reactive-triggers", "reactive-triggers") for g in groups)


def _wait_for(check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(1)
    return None


def _wait_until(what: str, check: Callable[[], Any], timeout: float, procs: Processes) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        for name, proc in procs.started.items():
            if proc.poll() is not None and name not in procs.killed:
                pytest.fail(f"{name} exited ({proc.returncode}):\n{procs.log(name)[-3000:]}")
        time.sleep(1)
    logs = "\n".join(f"--- {n}\n{procs.log(n)[-2000:]}" for n in procs.started)
    pytest.fail(f"timed out waiting for {what}\n{logs}")


@pytest.fixture(scope="module")
def layout_services() -> Iterator[tuple[str, str]]:
    """Prefect's own PostgreSQL (with pg_trgm, for its migrations) and Redis, started for this
    module from Debian's packages: the test needs nothing running on the machine."""
    with private_postgres() as postgres_url, private_redis() as redis_url:
        yield postgres_url, redis_url


@pytest.fixture(scope="module")
def control_plane(
    database_url: str,
    sandbox: Any,
    base_address: str,
    tmp_path_factory: pytest.TempPathFactory,
    layout_services: tuple[str, str],
) -> Iterator[ControlPlane]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from deployments.fleet_block import save_fleet_block
    from deployments.ssh_key import new_private_key, save_key_block
    from deployments.unresponsive_runs import install
    from gradientlab.config import parse_fleet
    from gradientlab.providers.local import LocalProvider
    from gradientlab.remote.executor import POOL as SSH_POOL
    from gradientlab.store.database import make_engine
    from gradientlab.store.fleet import upsert_host

    work = tmp_path_factory.mktemp("layout")
    procs = Processes(work)
    postgres_url, redis_url = layout_services
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    prefect_db = f"prefect_layout_{uuid.uuid4().hex[:10]}"
    port = _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    homes: list[Path] = []
    base = base_address.rsplit(".", 1)[0] + ".180"
    maker = LocalProvider(name="local", base_address=base, ssh_port=2222)
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{prefect_db}"'))
        # the server's settings, as deployments/production.env.example has them
        server_env = _clean_env() | {
            "PREFECT_HOME": str(work / "server-home"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "false",
            "PREFECT_API_DATABASE_CONNECTION_URL": make_url(postgres_url)
            .set(drivername="postgresql+asyncpg", database=prefect_db)
            .render_as_string(hide_password=False),
            "PREFECT_MESSAGING_BROKER": "prefect_redis.messaging",
            "PREFECT_MESSAGING_CACHE": "prefect_redis.messaging",
            "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
            "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
            "PREFECT_SERVER_WORKER_CHANNEL_CLEANUP_QUEUE_STORAGE": "prefect_redis.cleanup_queue",
            "PREFECT_REDIS_MESSAGING_URL": redis_url,
            "PREFECT_REDIS_WORKER_CLEANUP_QUEUE_URL": redis_url,
            "PREFECT_SERVER_DOCKET_URL": redis_url,
            # the test's short schedule gets its runs soon after it is set
            "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5",
            # a loaded machine answers slowly; Prefect's 5 s and 10 s defaults are tight
            "PREFECT_API_DATABASE_CONNECTION_TIMEOUT": "30",
            "PREFECT_API_DATABASE_TIMEOUT": "60",
            "PREFECT_LOGGING_SERVER_LEVEL": "INFO",
        }
        _phase("start")
        migrate = subprocess.run(
            [str(BIN / "prefect"), "server", "database", "upgrade", "-y"],
            env=server_env,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
        )
        assert migrate.returncode == 0, migrate.stdout + migrate.stderr
        server_env["PREFECT_API_DATABASE_MIGRATE_ON_START"] = "false"
        procs.start(
            "prefect-api",
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
            + ["--no-services"],
            server_env,
        )

        # meanwhile, two hosts, recorded with their pinned host keys as provision records them
        key_text = new_private_key()
        from gradientlab.remote.keys import parse_private_key, public_key_line

        public_key = public_key_line(parse_private_key(key_text, "the test key"))
        text_fleet = fleet_yaml(sandbox, HOSTS, base)
        fleet = parse_fleet(text_fleet, "layout fleet")
        engine = make_engine(database_url)
        with engine.begin() as conn:  # the health flow checks every host in the table
            conn.execute(
                text(
                    "TRUNCATE hosts, nodes, node_status_samples, incidents, recovery_actions"
                    " RESTART IDENTITY CASCADE"
                )
            )
        for spec in fleet.hosts:
            upsert_host(engine, maker.create(spec, public_key))
        engine.dispose()
        fleet_file = work / "fleet.yaml"
        fleet_file.write_text(text_fleet)

        def api_up() -> bool:
            try:
                return httpx.get(f"{api_url}/health", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        _wait_until("the Prefect API", api_up, START_TIMEOUT, procs)
        _phase("Prefect API up (database migrated)")
        services = [str(BIN / "prefect"), "server", "services", "start"]
        procs.start("prefect-services", services, server_env)
        if not _wait_for(lambda: _triggers_listening(redis_url), START_TIMEOUT / 2):
            # Prefect's services process keeps running when one of its services fails to start
            # (seen here once, on a machine at load 9): the automations' triggers then never
            # listen. Restart it once, as an operator would; a second failure fails the test.
            _phase("the automations' trigger service did not start; restarting the services")
            procs.stop("prefect-services")
            procs.start("prefect-services-again", services, server_env)
            _wait_until(
                "the automations' trigger service (Redis consumer group reactive-triggers)",
                lambda: _triggers_listening(redis_url),
                START_TIMEOUT / 2,
                procs,
            )
        _phase("services up: the automations' triggers read events from Redis")

        client_env = _clean_env() | {
            "PREFECT_HOME": str(work / "operator-home"),
            "PREFECT_API_URL": api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            from prefect.client.orchestration import get_client
            from prefect.client.schemas.actions import WorkPoolCreate

            with get_client(sync_client=True) as client:
                client.create_work_pool(WorkPoolCreate(name=POOL, type="process"))
            save_key_block(key_text, KEY_BLOCK)
            save_fleet_block(fleet_file, FLEET_BLOCK)
            install(within_seconds=45)
        deployed = subprocess.run(
            [str(BIN / "prefect"), "--no-prompt", "deploy", "--all"],
            cwd=PROJECT_ROOT,
            env=client_env,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
        )
        assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            save_fleet_block(fleet_file, FLEET_BLOCK)  # the schedules, from the fleet file
        _phase("prefect deploy --all done")

        # two machines: a worker and a keeper each, no key file, a data folder of their own
        machines: dict[str, dict[str, str]] = {}
        for n in (1, 2):
            home = Path(tempfile.mkdtemp(prefix=f"gl-m{n}-"))  # short: the keeper's socket
            homes.append(home)
            env = _clean_env() | {
                "PREFECT_HOME": str(home / "prefect"),
                "PREFECT_API_URL": api_url,
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30",
                "PREFECT_WORKER_QUERY_SECONDS": "3",
                "GRADIENTLAB_HOME": str(home),
                "GRADIENTLAB_DIR": str(PROJECT_ROOT),
                "GRADIENTLAB_SSH_KEY_BLOCK": KEY_BLOCK,
                "DATABASE_URL": database_url,
                SANDBOX_PASSWORD_ENV: os.environ[SANDBOX_PASSWORD_ENV],
            }
            machines[f"machine-{n}"] = env
            procs.start(f"machine-{n}-keeper", [sys.executable, "-m", "deployments.keeper"], env)
            procs.start(
                f"machine-{n}-worker",
                [str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--name", f"machine-{n}"],
                env,
            )
        yield ControlPlane(api_url, procs, machines)
    finally:
        procs.stop_all()
        SSH_POOL.close_all()
        for spec_name in HOSTS:
            with contextlib.suppress(Exception):
                maker.terminate(spec_name)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{prefect_db}" WITH (FORCE)'))
        admin.dispose()
        for home in homes:
            shutil.rmtree(home, ignore_errors=True)


def _flow_runs(deployment: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        return list(
            client.read_flow_runs(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment])),
                sort=FlowRunSort.EXPECTED_START_TIME_ASC,
            )
        )


def _state(run: Any) -> str:
    return str(run.state.type.value) if run.state else "-"


def _finished(run_id: Any) -> Callable[[], Any]:
    def check() -> Any:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            run = client.read_flow_run(run_id)
        return run if run.state and run.state.is_final() else None

    return check


_T0 = time.monotonic()


def _phase(what: str) -> None:
    """Where the time goes (shown with -s; never asserted)."""
    print(f"[layout +{time.monotonic() - _T0:5.0f} s] {what}", flush=True)


def _heartbeat_seen(api_url: str, run_id: Any) -> bool:
    """Whether the server has stored a heartbeat of this run (it went through Redis from the
    API process to the services process that persists events)."""
    answer = httpx.post(
        f"{api_url}/events/filter",
        json={
            "filter": {
                "event": {"name": ["prefect.flow-run.heartbeat"]},
                "resource": {"id": [f"prefect.flow-run.{run_id}"]},
            },
            "limit": 1,
        },
        timeout=10,
    )
    answer.raise_for_status()
    return bool(answer.json().get("events"))


def test_layout_survives_a_dead_worker(
    control_plane: ControlPlane, database_url: str, sandbox: Any
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentUpdate
    from prefect.client.schemas.schedules import IntervalSchedule
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    procs, api = control_plane.procs, control_plane.api_url
    engine = create_engine(database_url)
    with temporary_settings(updates={PREFECT_API_URL: api}):
        with get_client(sync_client=True) as client:
            deployments = {d.name: d for d in client.read_deployments()}
            assert set(deployments) >= {
                "provision",
                "deploy",
                "terminate",
                "health",
                "rewards",
                "poc-taps",
                "check-updates",
            }
            # the hosts have no node: check them without recovery, every 15 s; the other
            # schedules stay off (this machine cannot reach the Web Store)
            for name, other in deployments.items():
                if name != "health" and other.schedules:
                    client.pause_deployment(other.id)
            health = deployments["health"]
            client.update_deployment(
                health.id,
                DeploymentUpdate(parameters={**health.parameters, "recover": False}),
            )
            for schedule in health.schedules:
                client.update_deployment_schedule(
                    health.id, schedule.id, schedule=IntervalSchedule(interval=HEALTH_EVERY)
                )

        # rewards on demand, through a worker (the fleet file comes from its block), while the
        # first scheduled health runs come
        # a sync call: the run, not a coroutine
        first = cast(Any, run_deployment("rewards/rewards", timeout=0, as_subflow=False))

        def completed_health() -> list[Any]:
            return [r for r in _flow_runs("health") if _state(r) == "COMPLETED"]

        _wait_until("a scheduled health run to complete", completed_health, RUN_TIMEOUT, procs)
        first = _wait_until("the first rewards run", _finished(first.id), RUN_TIMEOUT, procs)
        assert _state(first) == "COMPLETED", first.state
        reward_rows = rows(engine, REWARD_DAYS)
        assert reward_rows, "the rewards run stored no day"
        _phase("rewards and a first scheduled health run completed")

        # the network's node list now answers slowly: the next health run stays in its first
        # step, long enough to kill the machine that runs it
        httpx.post(
            f"{sandbox.url}/__sandbox/faults",
            json={"kind": "slow", "path": "/api/sentrynode/list", "delay": 45},
        ).raise_for_status()
        done_before = {r.id for r in completed_health()}

        def running_health() -> Any:
            running = [r for r in _flow_runs("health") if _state(r) == "RUNNING"]
            return running[0] if running and _heartbeat_seen(api, running[0].id) else None

        victim = _wait_until("a health run with a heartbeat", running_health, RUN_TIMEOUT, procs)
        _phase(f"health run {victim.name} is running and has sent a heartbeat")
        pid = int(str(victim.infrastructure_pid).rsplit(":", 1)[-1])
        dead = next(
            machine for machine in control_plane.machines if pid in procs.tree(f"{machine}-worker")
        )
        (survivor,) = set(control_plane.machines) - {dead}
        killed = procs.kill_tree(f"{dead}-worker") + procs.kill_tree(f"{dead}-keeper")
        assert pid in killed
        httpx.post(f"{sandbox.url}/__sandbox/faults/clear").raise_for_status()
        _phase(f"killed {dead} (worker, keeper, flow run {victim.name})")
        second = cast(Any, run_deployment("rewards/rewards", timeout=0, as_subflow=False))

        # the server notices the missing heartbeats and marks the run Crashed (freeing the
        # deployment's slot); the next scheduled run completes on the surviving machine
        def crashed() -> bool:
            with get_client(sync_client=True) as client:
                return _state(client.read_flow_run(victim.id)) == "CRASHED"

        _wait_until("the dead machine's run to be marked Crashed", crashed, RUN_TIMEOUT, procs)

        def completed_after_kill() -> list[Any]:
            return [r for r in completed_health() if r.id not in done_before]

        _phase("the dead machine's run is Crashed")
        after = _wait_until("a health run after the kill", completed_after_kill, RUN_TIMEOUT, procs)
        second = _wait_until("the second rewards run", _finished(second.id), RUN_TIMEOUT, procs)
        assert _state(second) == "COMPLETED", second.state
        _phase("a health run and a rewards run completed after the kill")
        survivor_log = procs.log(f"{survivor}-worker")
        assert str(after[0].id) in survivor_log, f"{after[0].name} did not run on {survivor}"
        assert str(second.id) in survivor_log, f"{second.name} did not run on {survivor}"

        # stop the schedule and let what runs finish, then count
        with get_client(sync_client=True) as client:
            client.pause_deployment(health.id)

        def settled() -> list[Any]:
            runs = _flow_runs("health")
            unfinished = [r for r in runs if _state(r) in ("RUNNING", "PENDING")]
            return [] if unfinished else runs

        runs = _wait_until("the health runs to finish", settled, RUN_TIMEOUT, procs)
        _phase("the health schedule is paused and every run has finished")

    completed = [r for r in runs if _state(r) == "COMPLETED"]
    assert _state(next(r for r in runs if r.id == victim.id)) == "CRASHED"
    assert not [r for r in runs if _state(r) == "RUNNING"], "a run was left Running"
    # one sample per host per completed run: none lost with the dead machine, none twice
    per_host = rows(
        engine,
        "SELECT h.name, count(s.id) FROM hosts h LEFT JOIN node_status_samples s"
        " ON s.host_id = h.id GROUP BY h.name ORDER BY h.name",
    )
    assert per_host == [(h, len(completed)) for h in HOSTS], (per_host, len(completed))
    # the rewards rerun added no day and changed no complete one (today's points still grow)
    again = rows(engine, REWARD_DAYS)
    assert [r[:2] for r in again] == [r[:2] for r in reward_rows]
    assert again[:-1] == reward_rows[:-1]
    assert rows(
        engine,
        "SELECT count(*) FROM (SELECT account, day FROM account_daily_points"
        " GROUP BY account, day HAVING count(*) > 1) d",
    ) == [(0,)]
