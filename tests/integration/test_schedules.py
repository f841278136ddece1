"""The flows' schedules have one source, the fleet file's `schedules`, on a real Prefect server
(the session's test harness): `prefect deploy --all` from this repository's prefect.yaml, then
`deployments.fleet_block` gives each deployment its interval from the fleet file; a later change
of the file reaches the deployments without a redeploy, and a redeploy keeps it."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists
from prefect.settings import get_current_settings

from deployments.table import DEPLOYMENTS, WORK_POOL
from gradientlab.config import ScheduleSettings

ROOT = Path(__file__).resolve().parents[2]
FLEET = """
account: {{email: a@b.c, password: {{env: GRADIENT_PASSWORD}}}}
providers: {{home: {{kind: ssh}}}}
schedules: {{health_seconds: {health}, rewards_seconds: 1800}}
"""


def intervals() -> dict[str, list[int]]:
    """Each of the table's deployments' interval schedules, in seconds, as deployed."""
    out = {}
    with get_client(sync_client=True) as client:
        for d in DEPLOYMENTS:
            deployment = client.read_deployment_by_name(f"{d.load_flow().name}/{d.name}")
            out[d.name] = [
                int(s.schedule.interval.total_seconds())  # type: ignore[union-attr]
                for s in deployment.schedules
            ]
    return out


def prefect_deploy(*args: str) -> None:
    env = {
        **os.environ,
        "PREFECT_API_URL": str(get_current_settings().api.url),
        "GRADIENTLAB_DIR": str(ROOT),
    }
    prefect = Path(sys.executable).parent / "prefect"
    done = subprocess.run(
        [str(prefect), "--no-prompt", "deploy", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_prefect_yaml_and_the_deployed_schedules_follow_the_fleet_file(
    prefect_server: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from deployments.fleet_block import save_fleet_block

    with get_client(sync_client=True) as client, contextlib.suppress(ObjectAlreadyExists):
        client.create_work_pool(WorkPoolCreate(name=WORK_POOL, type="process"))
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET.format(health=120))
    prefect_deploy("--all")
    capsys.readouterr()
    save_fleet_block(fleet, f"fleet-{uuid.uuid4().hex[:6]}")
    said = capsys.readouterr().out
    assert "schedule of health: every 120 s (schedules.health_seconds)" in said
    assert "not deployed yet" not in said

    defaults = ScheduleSettings()
    deployed = intervals()
    assert deployed["health"] == [120] and deployed["rewards"] == [1800]
    assert deployed["poc-taps"] == [defaults.poc_taps_seconds]
    assert deployed["report"] == [defaults.report_seconds]
    assert deployed["provision"] == [] and deployed["health-shard"] == []

    # the operator changes the fleet file and saves it again: the deployments follow at once
    fleet.write_text(FLEET.format(health=60))
    save_fleet_block(fleet, f"fleet-{uuid.uuid4().hex[:6]}")
    said = capsys.readouterr().out
    assert "schedule of health: every 60 s, was 120 s (schedules.health_seconds)" in said
    assert "rewards" not in said  # unchanged
    assert intervals()["health"] == [60] and intervals()["rewards"] == [1800]

    # and a redeploy from prefect.yaml keeps what the fleet file says
    prefect_deploy("--all")
    assert intervals() == {**deployed, "health": [60]}
    with get_client(sync_client=True) as client:
        health = client.read_deployment_by_name("health/health")
    assert health.schedules[0].active is True
    assert health.schedules[0].schedule.interval == timedelta(seconds=60)  # type: ignore[union-attr]
