"""The unhappy paths of a real fleet, for real: local sshd hosts, Chromium with the sandbox
extension, Postgres, a Prefect server with GradientLab's alert automations and a webhook.

One fleet of three hosts is provisioned and deployed once; each case breaks one thing, runs the
health flow as the schedule would, and asserts the verdict, what was done or withheld, exactly
one incident, the number of reboots, and the alerts a person received. Then it repairs the fault
and the fleet is Good again before the next case."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
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

pytestmark = pytest.mark.e2e

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


@pytest.fixture(scope="module", autouse=True)
def ssh_pool() -> Iterator[None]:
    """This module's SSH connections wait 5 s, not 10, for a TCP connection, a session and
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
    sandbox: Any, base_address: str, tmp_path_factory: pytest.TempPathFactory
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


# ---------------------------------------------------------------- node faults


def test_a_killed_browser_is_restarted_and_recorded_without_paging(
    clean: Path, db: Engine, webhook: Webhook
) -> None:
    assert ssh(db, "fault-1", "kill -9 $(cat .gradientlab/node/browser.pid) && echo ok") == "ok"
    # the runner restarts it by itself (in seconds): the next sweep finds it repaired, from the
    # runner's log, however slow this machine is today
    deadline = time.monotonic() + 120  # a hang guard
    while True:
        tail = ssh(db, "fault-1", "tail -n 30 .gradientlab/node/events.jsonl").splitlines()
        kinds = [json.loads(line).get("kind") for line in tail if line.startswith("{")]
        exits = [i for i, k in enumerate(kinds) if k == "browser_exited"]
        if exits and "browser_started" in kinds[exits[-1] :]:
            break
        assert time.monotonic() < deadline, "the runner did not restart the browser"
        time.sleep(0.5)
    sweep_until(
        clean, lambda o: all_good(o) and incidents(db, "fault-1") == [("BrowserDown", "recovered")]
    )
    assert steps(db, "fault-1") == ["runner_restarted_browser"]
    others_untouched(db, "fault-1")
    time.sleep(3)
    assert webhook.texts() == []  # repaired within a sweep: nobody is paged


def test_a_killed_runner_is_started_again(clean: Path, db: Engine, webhook: Webhook) -> None:
    assert ssh(db, "fault-2", "kill -9 $(cat .gradientlab/node/runner.pid) && echo ok") == "ok"
    first = health(clean)["fault-2"]
    assert first.status in ("RunnerDown", "Good")
    sweep_until(clean, all_good)
    assert incidents(db, "fault-2") == [("RunnerDown", "recovered")]
    assert "restart_runner" in steps(db, "fault-2")
    assert "reboot_host" not in steps(db, "fault-2")
    others_untouched(db, "fault-2")
    time.sleep(3)
    assert webhook.texts() == []


def test_a_crash_looping_runner_is_a_verdict_not_a_reboot(
    clean: Path, db: Engine, webhook: Webhook
) -> None:
    from flows.deploy import deploy

    ssh(db, "fault-3", "printf '{not json' > .gradientlab/node/config.json")
    ssh(db, "fault-3", "cd .gradientlab/node && kill -9 $(cat runner.pid) $(cat browser.pid)")
    out = sweep_until(clean, lambda o: o["fault-3"].status == "RunnerCrashLoop", limit=12)
    assert "crash" in out["fault-3"].reason and "JSON" in out["fault-3"].reason, out["fault-3"]
    for _ in range(2):  # and it stays that way, with nothing more done
        assert health(clean)["fault-3"].status == "RunnerCrashLoop"
    assert "reboot_host" not in steps(db, "fault-3")
    assert set(steps(db, "fault-3")) == {"restart_runner"}
    assert len(incidents(db, "fault-3")) == 1
    assert len(webhook.wait_for("fault-3 is faulty")) == 1
    # the operator fixes it: a deploy writes the config again
    deploy(fleet_path=str(clean))
    sweep_until(clean, all_good)
    assert incidents(db, "fault-3") == [("RunnerDown", "recovered")]
    assert len(webhook.wait_for("fault-3 is Good again")) == 1
    others_untouched(db, "fault-3")


# ---------------------------------------------------------------- host faults


@pytest.mark.parametrize("how", ["frozen", "stopped"])
def test_an_unreachable_host_is_rebooted_once_confirmed(
    how: str, clean: Path, db: Engine, webhook: Webhook
) -> None:
    # every sshd process of the host, the connection GradientLab keeps open included: a hung
    # machine, or one whose sshd died
    pids = sshd_tree(sshd_pid(db, "fault-1"))
    for pid in pids:
        os.kill(pid, signal.SIGSTOP if how == "frozen" else signal.SIGKILL)
    try:
        first = health(clean)["fault-1"]
        assert first.status == "Unreachable"
        if how == "frozen":
            assert "banner" in first.reason or "no answer" in first.reason, first.reason
        else:
            assert "refused" in first.reason, first.reason
        assert first.actions == () and "confirm" in first.decision  # one sweep is not enough
        second = health(clean)["fault-1"]
        assert second.actions and second.actions[-1] == "reboot_host"
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        from gradientlab.config import load_fleet
        from gradientlab.inventory import provider_for

        provider_for(load_fleet(clean), "local").start("fault-1")  # no-op when it runs
    sweep_until(clean, all_good)
    assert incidents(db, "fault-1") == [("Unreachable", "recovered")]
    assert steps(db, "fault-1").count("reboot_host") == 1
    assert len(webhook.wait_for("fault-1 is faulty (Unreachable)")) == 1
    assert len(webhook.wait_for("fault-1 is Good again")) == 1
    others_untouched(db, "fault-1")


def test_a_changed_host_key_is_a_security_alert_and_never_a_reboot(
    clean: Path, db: Engine, webhook: Webhook, tmp_path: Path
) -> None:
    key = host_dir(db, "fault-2") / "sshd" / "ssh_host_ed25519_key"
    saved = tmp_path / "saved"
    saved.write_bytes(key.read_bytes())
    (tmp_path / "saved.pub").write_bytes(key.with_suffix(".pub").read_bytes())
    key.unlink()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    os.kill(sshd_pid(db, "fault-2"), signal.SIGHUP)  # sshd re-reads its keys
    from gradientlab.remote.executor import POOL

    POOL.close_all()  # a new connection meets the new key
    try:
        for _ in range(3):
            out = health(clean)["fault-2"]
            assert out.status == "HostKeyChanged", out
            assert out.actions == ()
        assert "SHA256:" in out.reason
        alerts = webhook.wait_for("SSH host key of fault-2 changed", "SHA256:")
        assert len(alerts) == 1
    finally:
        key.write_bytes(saved.read_bytes())
        key.with_suffix(".pub").write_bytes((tmp_path / "saved.pub").read_bytes())
        os.kill(sshd_pid(db, "fault-2"), signal.SIGHUP)
        time.sleep(0.5)
    sweep_until(clean, all_good)
    assert incidents(db, "fault-2") == [("HostKeyChanged", "recovered")]
    assert steps(db, "fault-2") == []
    others_untouched(db, "fault-2")


def test_a_refused_operator_key_says_which_key_and_is_never_a_reboot(
    clean: Path, db: Engine, webhook: Webhook
) -> None:
    from gradientlab.remote.executor import POOL

    keys = Path(record(db, "fault-3").meta["home"]) / ".ssh" / "authorized_keys"
    saved = keys.read_bytes()
    keys.write_bytes(b"")
    POOL.close_all()
    try:
        for _ in range(3):
            out = health(clean)["fault-3"]
            assert out.status == "AuthRefused", out
            assert out.actions == ()
        assert "operator_cidr" in out.reason or "authorized_keys" in out.reason
        assert len(webhook.wait_for("fault-3 is faulty (AuthRefused)")) == 1
    finally:
        keys.write_bytes(saved)
    sweep_until(clean, all_good)
    assert incidents(db, "fault-3") == [("AuthRefused", "recovered")]
    assert steps(db, "fault-3") == []
    assert len(webhook.wait_for("fault-3 is Good again")) == 1


def test_a_full_disk_is_alerted_with_the_figure_and_not_rebooted(
    clean: Path, db: Engine, webhook: Webhook, tmp_path: Path
) -> None:
    rec = record(db, "fault-1")
    node = Path(rec.meta["home"]) / ".gradientlab" / "node"
    ssh(db, "fault-1", f"{rec.meta['python']} .gradientlab/node/runner.py stop")
    used = int(subprocess.run(["du", "-sk", str(node)], capture_output=True, text=True,
                              check=True).stdout.split()[0])  # fmt: skip
    size_kib = used + 8 * 1024
    saved = tmp_path / "node"
    subprocess.run(["cp", "-a", str(node), str(saved)], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k,mode=0700", "tmpfs",
                    str(node)], check=True)  # fmt: skip
    try:
        # the node's files, on a filesystem with no room left
        subprocess.run(["cp", "-a", f"{saved}/.", f"{node}/"], check=True)
        subprocess.run(["chown", "-R", f"{rec.ssh_user}:{rec.ssh_user}", str(node)], check=True)
        subprocess.run(["sh", "-c", f"dd if=/dev/zero of={node}/fill bs=1M 2>/dev/null; true"])
        ssh(db, "fault-1", f"{rec.meta['python']} .gradientlab/node/runner.py start")
        for _ in range(3):
            out = health(clean)["fault-1"]
            assert out.status == "DiskFull", out
            assert "MiB free" in out.reason
            assert "reboot_host" not in out.actions
        assert len(webhook.wait_for("fault-1 is faulty (DiskFull)", "MiB free")) == 1
    finally:
        ssh(db, "fault-1", f"{rec.meta['python']} .gradientlab/node/runner.py stop")
        subprocess.run(["umount", "-l", str(node)], check=False)
    ssh(db, "fault-1", f"{rec.meta['python']} .gradientlab/node/runner.py start")
    sweep_until(clean, all_good)
    assert incidents(db, "fault-1") == [("DiskFull", "recovered")]
    assert "reboot_host" not in steps(db, "fault-1")


# ---------------------------------------------------------------- deploy and health at once


def test_deploy_and_health_at_once_never_act_on_one_host_together(
    clean: Path, db: Engine, sandbox: Any, base_address: str, webhook: Webhook
) -> None:
    from flows.deploy import deploy

    changed = clean.with_name("fleet-changed.yaml")  # a config change restarts every runner
    changed.write_text(fleet_text(sandbox, base_address, status_interval=11))
    result: dict[str, Any] = {}

    def deploying() -> None:
        result["deploy"] = deploy(fleet_path=str(changed))

    thread = threading.Thread(target=deploying)
    thread.start()
    outcomes = []
    while thread.is_alive():
        outcomes.append(health(clean))
    thread.join()
    assert all(r["changes"] for r in result["deploy"])
    assert outcomes, "the health flow ran while the deploy did"
    sweep_until(changed, all_good)
    for name in HOSTS:
        assert steps(db, name) == [], name  # no recovery ran under a deploy
        assert incidents(db, name) == [], name
    assert webhook.texts() == []
    clean.write_text(changed.read_text())  # the fleet file now says what is deployed


# ---------------------------------------------------------------- the network


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "error", "path": "/api/", "status": 503},
        {"kind": "slow", "path": "/api/", "delay": 8},
    ],
    ids=["5xx", "frozen"],
)
def test_a_network_outage_is_one_fleet_alert_and_no_reboot(
    fault: dict[str, Any], clean: Path, db: Engine, sandbox: Any, webhook: Webhook
) -> None:
    httpx.post(f"{sandbox.url}/__sandbox/faults", json=fault).raise_for_status()
    try:
        for _ in range(3):  # two periods and more of an outage
            outcomes = health(clean)
            assert all(not o.actions or set(o.actions) <= {"restart_browser", "restart_runner"}
                       for o in outcomes.values())  # fmt: skip
        assert len(webhook.wait_for("network is down or degraded (fleet faults)")) == 1
    finally:
        httpx.post(f"{sandbox.url}/__sandbox/faults/clear").raise_for_status()
    sweep_until(clean, all_good)
    assert rows(db, "SELECT kind, status FROM incidents WHERE host_id IS NULL") == [
        ("NetworkDown", "recovered")
    ]
    for name in HOSTS:
        assert "reboot_host" not in steps(db, name)
        assert "login" not in steps(db, name)
    assert len(webhook.wait_for("network is back (fleet faults)")) == 1
    assert not any("is faulty" in t for t in webhook.texts())  # no host was paged for it


def test_a_banned_node_is_recorded_with_the_reason_and_alerted_once(
    clean: Path, db: Engine, sandbox: Any, webhook: Webhook
) -> None:
    client = rows(
        db, "SELECT n.client_id FROM nodes n JOIN hosts h ON h.id = n.host_id WHERE h.name = :n",
        n="fault-2",
    )[0][0]  # fmt: skip
    ban = {"clientid": client, "reason": "Risky IP (review)"}
    httpx.post(f"{sandbox.url}/__sandbox/ban", json=ban).raise_for_status()
    try:
        sweep_until(
            clean,
            lambda o: o["fault-2"].status == "Unsupported" and "Risky IP" in o["fault-2"].reason,
            limit=20,
        )
        for _ in range(2):
            again = health(clean)["fault-2"]
            assert again.status == "Unsupported" and again.actions == ()
        assert len(webhook.wait_for("marks fault-2 Unsupported", "Risky IP")) == 1
    finally:
        httpx.post(
            f"{sandbox.url}/__sandbox/ban", json={"clientid": client, "reason": None}
        ).raise_for_status()
    sweep_until(clean, all_good)
    assert incidents(db, "fault-2") == [("Unsupported", "recovered")]
    assert steps(db, "fault-2") == []
    others_untouched(db, "fault-2")


def test_a_recovery_task_that_raises_is_that_hosts_outcome_not_the_runs(
    clean: Path, db: Engine, webhook: Webhook
) -> None:
    """The operator removed a host's provider from the fleet file: its recovery cannot even
    start. The run still completes, that host's check is recorded with why, the others too."""
    with db.begin() as conn:
        conn.execute(text("UPDATE hosts SET provider = 'removed' WHERE name = 'fault-2'"))
    try:
        ssh(db, "fault-2", "kill -9 $(cat .gradientlab/node/runner.pid) && echo ok")
        out = health(clean)
        assert sorted(out) == HOSTS
        assert out["fault-2"].status == "RunnerDown"
        assert "recovery task failed" in out["fault-2"].decision
        assert "removed" in out["fault-2"].decision
        assert out["fault-1"].status == out["fault-3"].status == "Good"
    finally:
        with db.begin() as conn:
            conn.execute(text("UPDATE hosts SET provider = 'local' WHERE name = 'fault-2'"))
    sweep_until(clean, all_good)
    assert incidents(db, "fault-2") == [("RunnerDown", "recovered")]


# ---------------------------------------------------------------- extension releases


def installed_versions(db: Engine) -> dict[str, str]:
    return dict(rows(db, "SELECT host, extension_version FROM v_fleet_status"))  # type: ignore[arg-type]


def test_a_release_rolls_out_canary_first_and_a_bad_one_stops_at_the_canary(
    clean: Path, db: Engine, sandbox: Any, webhook: Webhook
) -> None:
    """The Web Store publishes a release whose popup changed: check-updates says who is
    behind; the rollout deploys the canary, finds it cannot read the node, and stops there.
    The canary is PageChanged: alerted once, nothing restarted or rebooted. A fixed release
    then rolls out to every host, each Good before the next, and the canary recovers."""
    from flows.deploy import RolloutStopped, check_updates, deploy

    before = installed_versions(db)
    assert set(before.values()) == {"0.1.0"}
    try:
        httpx.post(
            f"{sandbox.url}/__sandbox/release", json={"version": "0.2.0", "broken_popup": True}
        ).raise_for_status()
        report = check_updates(fleet_path=str(clean))
        assert report["published"] == "0.2.0" and report["behind"] == HOSTS

        with pytest.raises(RolloutStopped, match="fault-2 \\(canary\\) is PageChanged") as stop:
            deploy(fleet_path=str(clean), rollout=True, canary="fault-2", wait_seconds=120)
        assert "2 hosts left as they were (fault-1, fault-3)" in str(stop.value)
        assert installed_versions(db) == {
            "fault-1": "0.1.0",
            "fault-2": "0.2.0",
            "fault-3": "0.1.0",
        }
        for host in ("fault-1", "fault-3"):  # untouched on the host too
            assert '"version": "0.1.0"' in ssh(
                db, host, "cat .gradientlab/node/extension/current/manifest.json"
            ).replace('":"', '": "')
        # the canary's runner reads its browser fine but not the new popup: a verdict of its
        # own, alerted once; restarting the browser or rebooting would change nothing
        out = sweep_until(clean, lambda o: o["fault-2"].status == "PageChanged", limit=10)
        assert "popup changed" in out["fault-2"].reason, out["fault-2"]
        assert "sentrynode/get" in out["fault-2"].reason
        for _ in range(2):
            again = health(clean)["fault-2"]
            assert again.status == "PageChanged" and again.actions == (), again
        assert len(webhook.wait_for("fault-2 is faulty", "PageChanged")) == 1

        httpx.post(f"{sandbox.url}/__sandbox/release", json={"version": "0.2.1"}).raise_for_status()
        results = deploy(fleet_path=str(clean), rollout=True, canary="fault-2", wait_seconds=120)
        assert [r["host"] for r in results] == ["fault-2", "fault-1", "fault-3"]
        assert all(r["health"].startswith("Good") for r in results), results
        assert set(installed_versions(db).values()) == {"0.2.1"}
        assert check_updates(fleet_path=str(clean))["behind"] == []
    finally:
        httpx.post(f"{sandbox.url}/__sandbox/release", json={}).raise_for_status()
    sweep_until(clean, all_good)
    assert incidents(db, "fault-2") == [("PageChanged", "recovered")]
    assert steps(db, "fault-2") == []  # nothing was tried: the fixed release repaired it


# ---------------------------------------------------------------- the control plane's own faults


@contextlib.contextmanager
def nft_table(body: str) -> Iterator[str]:
    """An nftables table of this test's own (named after this process), deleted on the way
    out whatever happens."""
    name = f"gradientlab_test_{os.getpid()}"
    subprocess.run(["nft", "-f", "-"], input=f"table ip {name} {{\n{body}\n}}\n", text=True,
                   check=True)  # fmt: skip
    try:
        yield name
    finally:
        subprocess.run(["nft", "delete", "table", "ip", name], check=False)


def fleet_rows(db: Engine) -> list[tuple[str, str]]:
    return [
        (str(k), str(s))
        for k, s in rows(db, "SELECT kind, status FROM incidents WHERE host_id IS NULL ORDER BY id")
    ]


def quarantined(db: Engine) -> int:
    return int(rows(db, "SELECT count(*) FROM hosts WHERE quarantined_at IS NOT NULL")[0][0])


def host_steps(db: Engine, *step_names: str) -> int:
    return int(
        rows(db, "SELECT count(*) FROM recovery_actions WHERE step = ANY(:s)", s=list(step_names))[
            0
        ][0]
    )


def variant(fleet: Path, name: str, **health: Any) -> Path:
    """The fault fleet's file with some health settings changed."""
    from gradientlab.config import load_fleet

    current = load_fleet(fleet).health
    text = fleet.read_text()
    for key, value in health.items():
        line = f"\n  {key}: {value}"
        text, given = re.subn(rf"\n  {key}: [^\n]*", line, text)
        if not given:
            anchor = f"\n  max_reboot_share: {current.max_reboot_share}"
            assert anchor in text, "the fleet file's health block moved"
            text = text.replace(anchor, anchor + line)
    assert load_fleet_text(text).health.model_dump() == {
        **current.model_dump(),
        **health,
    }
    path = fleet.with_name(name)
    path.write_text(text)
    return path


def load_fleet_text(text: str) -> Any:
    from gradientlab.config import parse_fleet

    return parse_fleet(text)


def assert_cut_off_and_back(
    clean: Path, db: Engine, webhook: Webhook, cut: Callable[[], Any], *needles: str
) -> None:
    """Two sweeps while GradientLab is cut off from its fleet: no host touched, paged or
    quarantined, one fleet alert; then `cut()` ends it, and one message says it is over."""
    assert fleet_rows(db) == [("FleetUnreachable", "open")]
    assert len(webhook.wait_for("cannot reach the fleet faults", *needles)) == 1
    assert host_steps(db, "reboot_host", "reprovision") == 0
    assert quarantined(db) == 0
    for name in HOSTS:
        assert incidents(db, name) == [], name  # not one host incident for it
    cut()
    sweep_until(clean, all_good)
    assert fleet_rows(db) == [("FleetUnreachable", "recovered")]
    assert len(webhook.wait_for("reaches the fleet faults again")) == 1
    assert not any("is faulty" in t for t in webhook.texts())
    assert len([t for t in webhook.texts() if "cannot reach the fleet" in t]) == 1


def test_ssh_blocked_on_the_control_planes_side_is_one_fleet_incident_and_no_reboot(
    clean: Path, db: Engine, webhook: Webhook
) -> None:
    """A firewall rule on this machine (the control plane's side) refuses its SSH to every
    host: the hosts are fine, GradientLab is cut off. One fleet incident, no host action."""
    addresses = ", ".join(record(db, h).address for h in HOSTS)
    rule = (
        "chain out { type filter hook output priority 0;\n"
        f"ip daddr {{ {addresses} }} tcp dport 2222 reject with tcp reset;\n}}"
    )
    with nft_table(rule) as table:
        for _ in range(2):  # confirmed on the second sweep, as a host fault would be
            out = health(clean)
            assert {o.status for o in out.values()} == {"Unreachable"}, out
            for o in out.values():
                assert o.actions == () and "not this host's fault" in o.decision, o
                assert "cannot reach the fleet from" in o.reason, o

        def unblock() -> None:
            subprocess.run(["nft", "delete", "table", "ip", table], check=True)

        assert_cut_off_and_back(clean, db, webhook, unblock, "operator_cidr", "3 hosts")


@pytest.fixture()
def keeper(fleet: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[subprocess.Popen[bytes]]:
    """A connection keeper of this test's own, which the health flow's SSH goes through."""
    from gradientlab.remote.keeper import start_keeper, stop_keeper
    from gradientlab.remote.wire import KEEPER_ENV

    monkeypatch.setenv(KEEPER_ENV, f"/tmp/gradientlab-test-keeper-{os.getpid()}.sock")
    proc = start_keeper(exit_with=os.getpid())
    assert proc is not None, "a keeper already answered on this test's socket"
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
        stop_keeper(proc)


def keeper_requests() -> int:
    from gradientlab.remote.keeper_client import keeper_stats

    return int(keeper_stats(Path(os.environ["GRADIENTLAB_KEEPER"]))["requests"])


def test_a_stopped_keeper_is_one_fleet_incident_not_three_unreachable_hosts(
    clean: Path,
    db: Engine,
    webhook: Webhook,
    keeper: subprocess.Popen[bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import gradientlab.remote.keeper_client

    assert all_good(health(clean)) and keeper_requests() >= len(HOSTS)  # through the keeper
    # the keeper stops answering (SIGSTOP: alive, its socket there, nothing read from it);
    # each call gives up after the probe's deadline and a margin of 1 s instead of 120
    monkeypatch.setattr(gradientlab.remote.keeper_client, "KEEPER_MARGIN", 1.0)
    quick = variant(clean, "fleet-quick-probe.yaml", probe_timeout_seconds=2)
    os.kill(keeper.pid, signal.SIGSTOP)
    try:
        for _ in range(2):
            out = health(quick)
            assert {o.status for o in out.values()} == {"KeeperFailed"}, out
            assert all(o.actions == () for o in out.values())
            assert all("keeper" in o.reason for o in out.values())
    finally:
        os.kill(keeper.pid, signal.SIGCONT)
    assert_cut_off_and_back(clean, db, webhook, lambda: None, "keeper failed")


def test_a_host_answering_a_huge_or_deeply_nested_status_is_that_hosts_verdict(
    clean: Path, db: Engine, webhook: Webhook, keeper: subprocess.Popen[bytes]
) -> None:
    """Through the keeper (whose answers have a 1 MiB header cap): a status.json of 2 MiB,
    then one nested 200,000 deep. The sweep completes, the other hosts are Good, and the host
    is ProbeInvalid with why: never Unreachable, never a reboot."""
    rec = record(db, "fault-2")
    python = rec.meta["python"]
    status = Path(rec.meta["home"]) / ".gradientlab" / "node" / "status.json"
    ssh(db, "fault-2", f"{python} .gradientlab/node/runner.py stop")  # it rewrites the file
    try:
        status.write_text('{"popup": {"status": "Good", "note": "' + "x" * (2 << 20) + '"}}')
        out = health(clean)
        assert out["fault-2"].status == "ProbeInvalid" and "KiB cap" in out["fault-2"].reason
        assert out["fault-1"].status == out["fault-3"].status == "Good"
        status.write_text("[" * 200_000 + "]" * 200_000)
        out = health(clean)
        assert out["fault-2"].status == "ProbeInvalid", out["fault-2"]
        assert "no readable report" in out["fault-2"].reason
        assert out["fault-1"].status == out["fault-3"].status == "Good"
        assert steps(db, "fault-2") == []
        assert len(webhook.wait_for("fault-2 is faulty (ProbeInvalid)")) == 1
    finally:
        status.unlink(missing_ok=True)
        ssh(db, "fault-2", f"{python} .gradientlab/node/runner.py start")
    sweep_until(clean, all_good)
    assert incidents(db, "fault-2") == [("ProbeInvalid", "recovered")]
    assert steps(db, "fault-2") == []
    others_untouched(db, "fault-2")


class SilentListener:
    """One TCP listener that accepts every connection and never says a word (no SSH banner);
    an nftables rule sends port 22 of a whole loopback range to it."""

    def __init__(self) -> None:
        import socket

        self.sock = socket.create_server(("127.0.0.1", 0), backlog=512)
        self.port = self.sock.getsockname()[1]
        self.held: list[Any] = []
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.stopping = True
        self.sock.close()
        for conn in self.held:
            conn.close()


def test_a_hundred_hosts_that_never_send_a_banner_stop_neither_the_sweep_nor_the_fleet(
    clean: Path, db: Engine, webhook: Webhook, base_address: str
) -> None:
    """100 hosts answer TCP and then nothing (a firewall or a hung network on the way), in a
    sweep with a deadline: the sweep ends on time, the hosts it did not get to are recorded
    "not checked", the real hosts are Good, and it is one fleet incident with nothing
    rebooted or quarantined."""
    from gradientlab.providers.base import HostRecord
    from gradientlab.store.fleet import upsert_host

    prefix = base_address.rsplit(".", 1)[0]  # this session's own /24: hosts .10 up
    key = record(db, "fault-1").host_key
    silent = [f"silent-{i:03d}" for i in range(100)]
    listener = SilentListener()
    rule = (
        "chain out { type nat hook output priority -100;\n"
        f"ip daddr {prefix}.100-{prefix}.199 tcp dport 22 dnat to 127.0.0.1:{listener.port};\n}}"
    )
    # the sweep stops checking after 7 s: the silent hosts' banner wait is 5 s, 20 at a time
    bounded = variant(clean, "fleet-deadline.yaml", sweep_deadline_seconds=7)

    def remove() -> None:
        with db.begin() as conn:
            conn.execute(text("DELETE FROM hosts WHERE name LIKE 'silent-%'"))

    try:
        with nft_table(rule):
            for i, name in enumerate(silent):
                upsert_host(db, HostRecord(name, "local", f"{prefix}.{100 + i}", 22, "gradient",
                                           key, "running", name))  # fmt: skip
            for _ in range(2):
                out = health(bounded)
                assert sorted(out) == sorted(HOSTS + silent)  # every host has its record
                assert all(out[h].status == "Good" for h in HOSTS), [out[h] for h in HOSTS]
                seen = {h: out[h].status for h in silent}
                assert set(seen.values()) == {"Unreachable", "NotChecked"}, seen
                assert all("banner" in out[h].reason for h in silent if seen[h] == "Unreachable")
                assert all("deadline" in out[h].reason for h in silent if seen[h] == "NotChecked")
                assert all(o.actions == () for o in out.values())
            assert quarantined(db) == 0 and host_steps(db, "reboot_host", "reprovision") == 0
            host_incidents = rows(db, "SELECT count(*) FROM incidents WHERE host_id IS NOT NULL")
            assert host_incidents == [(0,)]
            assert len(webhook.wait_for("cannot reach the fleet faults")) == 1
    finally:
        remove()
        listener.close()
    assert_cut_off_and_back(clean, db, webhook, lambda: None)
