"""The fault suite's fleet, shared by its modules (test_faults.py: faults on the hosts and
nodes; test_faults_reach.py: hosts out of reach and the control plane's own faults): local sshd
hosts, Chromium with the sandbox extension, Postgres, a Prefect server with GradientLab's alert
automations and a webhook.

Each module that imports these fixtures provisions and deploys its own fleet of three hosts
once (module scope), so the two modules run side by side on two test workers; each case breaks
one thing, runs the health flow as the schedule would, asserts, and repairs it."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, create_engine, text

from tests.conftest import SANDBOX_PASSWORD_ENV

HOSTS = ["fault-1", "fault-2", "fault-3"]


def fleet_text(sandbox: Any, base_address: str, status_interval: float = 10) -> str:
    """The fault fleet. Its runners read their popups every `status_interval` seconds (each
    read costs a host about a CPU-second), and every few seconds after a browser start."""
    hosts = "\n".join(f"  - {{name: {h}, provider: local}}" for h in HOSTS)
    return f"""
name: faults
account:
  email: operator@gradientlab.test
  password: {{env: {SANDBOX_PASSWORD_ENV}}}
{sandbox.fleet_network_yaml()}  api_timeout_seconds: 5
providers:
  local: {{kind: local, base_address: {base_address}, ssh_port: 2222}}
hosts:
{hosts}
runner: {{status_interval_seconds: {status_interval}, browser_check_seconds: 0.5}}
health:
  recovery_wait_seconds: 30
  confirm_sweeps: 2
  backoff_seconds: 1
  probe_timeout_seconds: 10
  max_reboot_share: 0.34
"""


# ---------------------------------------------------------------- alerts at a local webhook


class Webhook:
    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hook.received.append(json.loads(body or b"{}"))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def texts(self) -> list[str]:
        return [f"{m.get('subject', '')}: {m.get('body', '')}" for m in self.received]

    def wait_for(self, *needles: str, timeout: float = 60) -> list[str]:
        """The notifications mentioning every needle (hang guard, not a timing)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [t for t in self.texts() if all(n in t for n in needles)]
            if found:
                return found
            time.sleep(0.5)
        return []


# ---------------------------------------------------------------- the fleet


@pytest.fixture(scope="module")
def webhook(prefect_server: None) -> Iterator[Webhook]:
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    from deployments.alerts import install_all

    hook = Webhook()
    CustomWebhookNotificationBlock(
        name="faults", url=hook.url, json_data={"subject": "{{subject}}", "body": "{{body}}"}
    ).save("faults-hook", overwrite=True)
    install_all("faults-hook", "custom-webhook", health_seconds=3600)
    time.sleep(2)  # the triggers service loads automations
    yield hook
    hook.server.shutdown()


@pytest.fixture(scope="module")
def ssh_pool() -> Iterator[None]:
    """The fault modules' SSH connections wait 5 s, not 10, for a TCP connection, a session and
    the SSH banner: a frozen host is waited out that long on every sweep (twice over: the
    kept-open connection, then a new one). What is checked does not depend on how long."""
    import gradientlab.inventory
    import gradientlab.remote.executor
    from gradientlab.remote.executor import ConnectionPool

    pool = ConnectionPool(connect_timeout=5, banner_timeout=5)
    with pytest.MonkeyPatch.context() as patch:
        for module in (gradientlab.remote.executor, gradientlab.inventory):
            patch.setattr(module, "POOL", pool)
        yield
    pool.close_all()


@pytest.fixture(scope="module")
def fleet_file(
    sandbox: Any, base_address: str, tmp_path_factory: pytest.TempPathFactory, ssh_pool: None
) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("faults") / "fleet.yaml"
    path.write_text(fleet_text(sandbox, base_address))
    yield path
    from gradientlab.config import load_fleet
    from gradientlab.inventory import provider_for
    from gradientlab.remote.executor import POOL

    POOL.close_all()
    fleet = load_fleet(path)
    for host in fleet.hosts:
        provider_for(fleet, host.provider).terminate(host.name)


@pytest.fixture(scope="module")
def db(database_url: str) -> Iterator[Engine]:
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


def rows(engine: Engine, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql), params)]


def health(fleet_file: Path) -> dict[str, Any]:
    from flows.health import health as flow

    return {o.host: o for o in flow(fleet_path=str(fleet_file))}


def sweep_until(
    fleet_file: Path, done: Callable[[dict[str, Any]], bool], limit: int = 30, pause: float = 1
) -> dict[str, Any]:
    """Run the health flow as its schedule would until `done` (a hang guard bounds it)."""
    for _ in range(limit):
        outcomes = health(fleet_file)
        if done(outcomes):
            return outcomes
        time.sleep(pause)
    raise AssertionError(f"not reached after {limit} health runs: {outcomes}")


def all_good(outcomes: dict[str, Any]) -> bool:
    return sorted(outcomes) == HOSTS and all(o.status == "Good" for o in outcomes.values())


@pytest.fixture(scope="module")
def fleet(prefect_server: None, webhook: Webhook, fleet_file: Path, db: Engine) -> Path:
    from flows.deploy import deploy
    from flows.provision import provision

    with db.begin() as conn:
        conn.execute(text("TRUNCATE hosts, nodes, node_status_samples, incidents,"
                          " recovery_actions RESTART IDENTITY CASCADE"))  # fmt: skip
    provision(fleet_path=str(fleet_file), approve=True)
    deploy(fleet_path=str(fleet_file))
    sweep_until(fleet_file, all_good)
    return fleet_file


@pytest.fixture()
def clean(fleet: Path, db: Engine, sandbox: Any, webhook: Webhook) -> Path:
    """Start each case from a Good fleet with no history and no alerts."""
    httpx.post(f"{sandbox.url}/__sandbox/faults/clear").raise_for_status()
    sweep_until(fleet, all_good)
    with db.begin() as conn:
        conn.execute(text("TRUNCATE node_status_samples, incidents, recovery_actions"))
        conn.execute(text("UPDATE hosts SET quarantined_at = NULL, released_at = NULL"))
    time.sleep(1)
    webhook.received.clear()
    return fleet


def record(db: Engine, name: str) -> Any:
    from gradientlab.store.fleet import host_records

    return next(r for r in host_records(db) if r.name == name)


def ssh(db: Engine, name: str, command: str) -> str:
    from gradientlab.inventory import executor_for

    return executor_for(record(db, name)).run(command, timeout=60).stdout.strip()


def incidents(db: Engine, name: str) -> list[tuple[str, str]]:
    return [
        (str(k), str(s))
        for k, s in rows(
            db,
            "SELECT i.kind, i.status FROM incidents i JOIN hosts h ON h.id = i.host_id"
            " WHERE h.name = :n ORDER BY i.id",
            n=name,
        )
    ]


def steps(db: Engine, name: str) -> list[str]:
    return [
        str(r[0])
        for r in rows(
            db,
            "SELECT a.step FROM recovery_actions a JOIN incidents i ON i.id = a.incident_id"
            " JOIN hosts h ON h.id = i.host_id WHERE h.name = :n ORDER BY a.id",
            n=name,
        )
    ]


def host_dir(db: Engine, name: str) -> Path:
    return Path(record(db, name).meta["home"]).parent


def sshd_pid(db: Engine, name: str) -> int:
    return int((host_dir(db, name) / "sshd" / "sshd.pid").read_text())


def sshd_tree(root: int) -> list[int]:
    """The sshd listener and every process below it (one per open connection)."""
    out = [root]
    for pid in out:
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
        out.extend(int(p) for p in children.stdout.split())
    return out


def others_untouched(db: Engine, name: str) -> None:
    for other in HOSTS:
        if other != name:
            assert incidents(db, other) == [], other
            assert steps(db, other) == [], other
