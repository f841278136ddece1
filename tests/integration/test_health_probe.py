"""The health probe (PROBE_SH) run by /bin/sh on this machine against node folders as a runner
keeps them, then judged as the health flow judges it."""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gradientlab.agent import home as agent_home
from gradientlab.health import Verdict, judge, observe
from gradientlab.remote.executor import LocalExecutor
from tests.unit.test_health_judge import CHECKED, POLICY, item, popup, status_file


def cloud_init_may_run() -> bool:
    return shutil.which("cloud-init") is not None or Path("/run/cloud-init").exists()


def test_the_real_probe_of_an_empty_home_is_not_deployed(tmp_path: Path) -> None:
    obs = observe("n", lambda: LocalExecutor("n", tmp_path), CHECKED)  # run by /bin/sh
    assert obs.failure is None, obs.error
    report = judge(obs, None, POLICY)
    host = obs.data.get("host") if obs.data else None
    cloud_init = host.get("cloud_init") if isinstance(host, dict) else None
    if cloud_init == "running":
        assert cloud_init_may_run()  # only a machine with cloud-init reports it running
        assert report.status == Verdict.PROVISIONING
    else:
        assert report.status == Verdict.NOT_DEPLOYED
    assert report.reachable is True


def fake_node(home: Path) -> agent_home.EventLog:
    """A node folder as a deployed, running runner keeps it; the live pids are this process."""
    paths = agent_home.Paths(home / ".gradientlab" / "node")
    paths.home.mkdir(parents=True)
    paths.config.write_text("{}")
    paths.runner_pid.write_text(str(os.getpid()))
    paths.browser_pid.write_text(str(os.getpid()))
    agent_home.write_json_atomic(
        paths.status,
        status_file(
            popup_fields=popup(),
            # the real probe reads this machine's clock: the runner read its popup just now
            browser_started_at=datetime.now(UTC) - timedelta(seconds=20),
            popup_read_at=datetime.now(UTC),
            pss_kib=250_000,
            runner_pss_kib=50_000,
            browser_pss_kib=200_000,
        ),
    )
    log = agent_home.EventLog(paths.events)
    log.add("browser_started", "pid 4200")
    log.add("popup_status", "Good")
    return log


def test_the_real_probe_of_a_running_node_is_good(tmp_path: Path) -> None:
    log = fake_node(tmp_path)
    obs = observe("n", lambda: LocalExecutor("n", tmp_path), CHECKED)
    assert obs.failure is None, obs.error
    report = judge(obs, item(), POLICY, cursor=1, events_id=log.log_id())
    assert report.status == Verdict.GOOD, report.reason
    assert report.runner_alive is True and report.browser_alive is True
    assert [e["kind"] for e in report.events] == ["popup_status"]
    assert report.pss_kib == 250_000
    assert report.metrics.runner_pss_kib == 50_000
    assert report.metrics.browser_pss_kib == 200_000
    assert obs.data is not None
    if "events_id" in obs.data:
        assert report.events_id == log.log_id()
    if obs.data.get("probe_version") == "sh2":  # the probe that also reports the host
        m = report.metrics
        assert m.mem_total_kib and m.mem_total_kib > 0
        assert m.mem_available_kib is not None
        assert m.disk_total_kib and m.disk_total_kib > 0
        assert m.disk_free_kib is not None
        assert m.load1 is not None
        assert m.clock_offset_s is not None


def test_the_real_probe_of_a_stopped_runner_is_runner_down(tmp_path: Path) -> None:
    fake_node(tmp_path)
    home = tmp_path / ".gradientlab" / "node"
    (home / "runner.pid").write_text("not a pid")
    report = judge(observe("n", lambda: LocalExecutor("n", tmp_path), CHECKED), None, POLICY)
    assert report.status == Verdict.RUNNER_DOWN
    assert report.browser_alive is False  # not checked without a runner


def test_the_real_probe_survives_an_event_line_cut_short(tmp_path: Path) -> None:
    home = tmp_path / ".gradientlab" / "node"
    home.mkdir(parents=True)
    (home / "events.jsonl").write_text('{"id": 1, "kind": "runner_started"}\n{"id": 2, "ki')
    obs = observe("n", lambda: LocalExecutor("n", tmp_path), CHECKED)
    assert obs.data is not None, obs.error
    assert [e["id"] for e in obs.data["events"]] == [1]
    assert obs.data["runner_alive"] is False
    assert judge(obs, None, POLICY).status == Verdict.NOT_DEPLOYED  # no config.json


def test_the_real_probe_counts_a_killed_unreaped_runner_as_down(tmp_path: Path) -> None:
    """A runner killed with -9 stays a zombie until its parent reaps it (on some machines
    PID 1 does so late): `kill -0` still answers, the probe must not call it alive."""
    import subprocess
    import time

    fake_node(tmp_path)
    zombie = subprocess.Popen(["sleep", "0"])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # until it has exited (and is not reaped)
            with open(f"/proc/{zombie.pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
            time.sleep(0.05)
        (tmp_path / ".gradientlab" / "node" / "runner.pid").write_text(str(zombie.pid))
        obs = observe("n", lambda: LocalExecutor("n", tmp_path), CHECKED)
        assert obs.data is not None and obs.data["runner_alive"] is False
        assert judge(obs, item(), POLICY).status == Verdict.RUNNER_DOWN
    finally:
        zombie.wait()
