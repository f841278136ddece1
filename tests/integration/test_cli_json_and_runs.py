"""`--json` for scripts (stable keys, stdout only) on a real Postgres, and `gradientlab run`
(`deploy`, `provision`, `health`) on a real Prefect server: a deployment's run started through
the API, executed as a worker executes it, followed to its end with a progress line on a real
terminal (a pty) and none when stderr is not one."""

from __future__ import annotations

import json
import os
import select
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from prefect import flow, task
from prefect.deployments.runner import RunnerDeployment
from sqlalchemy import Engine

from gradientlab.cli import main as cli
from tests.conftest import add_host

STATUS_HOST_KEYS = {
    "host",
    "provider",
    "address",
    "node_ip",
    "status",
    "banned_reason",
    "reason",
    "stale",
    "quarantined",
    "quarantined_at",
    "today_points",
    "today_points_raw",
    "last_check",
    "last_check_age_s",
    "health_period_s",
    "good_share_7d",
    "load1",
    "mem_available_kib",
    "disk_free_kib",
    "browser_pss_kib",
    "runner_pss_kib",
    "clock_offset_s",
}  # fmt: skip  (docs/cli.md lists the same keys: scripts rely on them)


def test_status_json_is_the_fleet_with_raw_values_and_nothing_else_on_stdout(
    engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["status", "--json"]) == 0
    empty = json.loads(capsys.readouterr().out)
    assert empty["schema"] == "gradientlab.status/1" and empty["hosts"] == []

    full, old = add_host(engine, "full-node"), add_host(engine, "old-node")
    now = datetime.now(UTC)
    from gradientlab.store.fleet import insert_sample as sample
    from gradientlab.store.fleet import quarantine_host

    with engine.begin() as conn:  # as the health flow records them
        common = {"reachable": True, "health_period_s": 60}
        sample(conn, full, {**common, "sampled_at": now, "status": "DiskFull",
                            "reason": "12 MiB free", "disk_free_kib": 12288,
                            "runner_pss_kib": 41000, "clock_offset_s": 3.5})  # fmt: skip
        sample(conn, old, {**common, "sampled_at": now - timedelta(hours=2), "status": "Good",
                           "reason": "the popup reads Good"})  # fmt: skip
        quarantine_host(conn, full, now, "budget spent")
    assert cli.main(["status", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)  # the whole of stdout is one JSON object
    hosts = {h["host"]: h for h in report["hosts"]}
    assert set(hosts) == {"full-node", "old-node"}
    for h in report["hosts"]:
        assert set(h) == STATUS_HOST_KEYS
    f, o = hosts["full-node"], hosts["old-node"]
    assert f["status"] == "DiskFull" and f["reason"] == "12 MiB free" and f["quarantined"]
    assert f["disk_free_kib"] == 12288 and f["clock_offset_s"] == 3.5 and not f["stale"]
    assert o["status"] == "Good" and o["stale"] and o["last_check_age_s"] >= 7200
    assert datetime.fromisoformat(o["last_check"]) < datetime.fromisoformat(report["generated_at"])
    assert report["shared_ips"] == []


def test_doctor_check_and_app_user_list_print_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "fleet.yaml"
    bad.write_text("hosts: [\n")
    assert cli.main(["doctor", "--fleet", str(bad), "--json"]) == 1
    doctor = json.loads(capsys.readouterr().out)
    assert doctor["schema"] == "gradientlab.doctor/1" and doctor["failed"] == 1
    assert doctor["checks"][0]["name"] == "fleet file"
    assert doctor["checks"][0]["status"] == "fail" and doctor["checks"][0]["fix"]

    from gradientlab.cli.demo import DEMO_FLEET

    assert cli.main(["check", str(DEMO_FLEET), "--json"]) == 0
    check = json.loads(capsys.readouterr().out)
    assert check["ok"] is True and check["hosts"] and check["schema"] == "gradientlab.check/1"

    monkeypatch.setenv("GRADIENTLAB_HOME", str(tmp_path / "home"))
    assert cli.main(["app-user", "list", "--json"]) == 0
    users = json.loads(capsys.readouterr().out)
    assert users["schema"] == "gradientlab.app-users/1" and users["users"] == []


# ---------------------------------------------------------------- runs of a deployed flow


@task
def probe_step(i: int) -> int:
    time.sleep(0.4)
    return i


@flow(name="cli-probe")
def cli_probe(steps: int = 3, fail: bool = False) -> int:
    done = sum(probe_step(i) for i in range(steps))
    if fail:
        raise RuntimeError("the probe was told to fail")
    return done


@pytest.fixture(scope="module")
def probe_deployment(prefect_server: None) -> Iterator[str]:
    """The probe flow as a deployment, and a worker for it: a thread that runs each of its
    scheduled flow runs through Prefect's engine, as a process worker's subprocess does."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.flow_engine import run_flow

    deployment = cast(RunnerDeployment, cli_probe.to_deployment(name="cli-probe-deployment"))
    deployment_id = deployment.apply()
    stop = threading.Event()

    def worker() -> None:
        while not stop.is_set():
            with get_client(sync_client=True) as client:
                runs = client.read_flow_runs(
                    deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
                    flow_run_filter=FlowRunFilter(
                        state=FlowRunFilterState(
                            type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])
                        )
                    ),
                )
            for run in runs:
                run_flow(cli_probe, flow_run=run, parameters=run.parameters, return_type="state")
            stop.wait(0.3)

    thread = threading.Thread(target=worker, name="probe-worker", daemon=True)
    thread.start()
    try:
        yield "cli-probe-deployment"
    finally:
        stop.set()
        thread.join(30)


def _read_all(fd: int) -> str:
    chunks = []
    while select.select([fd], [], [], 0.2)[0]:
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks).decode(errors="replace")


def test_run_follows_a_deployment_to_its_end_with_progress_on_a_terminal(
    probe_deployment: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    master, slave = os.openpty()
    terminal = open(slave, "w", closefd=True)  # noqa: SIM115 - closed below
    try:
        monkeypatch.setattr(sys, "stderr", terminal)
        code = cli.main(["run", probe_deployment, "-p", "steps=4", "--json", "--poll", "0.2"])
        terminal.flush()
        shown = _read_all(master)
    finally:
        terminal.close()
        os.close(master)
    out = capsys.readouterr().out
    assert code == 0, (out, shown)
    outcome: dict[str, Any] = json.loads(out)
    assert outcome["schema"] == "gradientlab.run/1"
    assert outcome["deployment"] == f"cli-probe/{probe_deployment}"
    assert outcome["state"] == "COMPLETED" and outcome["task_runs"] == {"completed": 4}
    assert "cli-probe/cli-probe-deployment [" in shown, shown  # the bar, on the terminal
    assert "/4 " in shown or "/3 " in shown or "/2 " in shown
    assert shown.endswith("\r\x1b[K")  # and the line cleared at the end


def test_a_failed_run_exits_1_and_no_progress_reaches_a_pipe(
    probe_deployment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["run", probe_deployment, "-p", "fail=true", "-p", "steps=1", "--poll", "0.2"])
    out, err = capsys.readouterr()
    assert code == 1
    assert out.startswith(f"cli-probe/{probe_deployment}: Failed in ")
    assert "1 completed" in out
    assert "\r" not in err and "[" not in err  # stderr is not a terminal here: no progress


def test_run_names_what_is_wrong_with_the_deployment_or_a_parameter(
    probe_deployment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["deploy", "--no-wait"]) == 2  # no `deploy` deployment on this server
    err = capsys.readouterr().err
    assert "no deployment named 'deploy'" in err and "prefect deploy --all" in err
    assert cli.main(["run", probe_deployment, "-p", "steps"]) == 2
    assert "'steps' is not name=value" in capsys.readouterr().err
    assert cli.main(["run", probe_deployment, "--no-wait", "--json"]) == 0
    started = json.loads(capsys.readouterr().out)
    assert started["state"] in ("SCHEDULED", "PENDING", "RUNNING", "COMPLETED")
