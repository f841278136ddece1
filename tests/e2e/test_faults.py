"""The unhappy paths of a real fleet, on its hosts and nodes, for real: local sshd hosts,
Chromium with the sandbox extension, Postgres, a Prefect server with GradientLab's alert
automations and a webhook (the fleet: tests/e2e/faults.py).

One fleet of three hosts is provisioned and deployed once; each case breaks one thing, runs the
health flow as the schedule would, and asserts the verdict, what was done or withheld, exactly
one incident, the number of reboots, and the alerts a person received. Then it repairs the fault
and the fleet is Good again before the next case. Hosts out of reach and the control plane's
own faults are in test_faults_reach.py, on a fleet of its own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from tests.e2e.faults import (
    HOSTS,
    Webhook,
    all_good,
    fleet_text,
    health,
    host_dir,
    incidents,
    others_untouched,
    record,
    rows,
    ssh,
    sshd_pid,
    steps,
    sweep_until,
)

pytestmark = pytest.mark.e2e


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
