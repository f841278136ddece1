"""prefect.yaml lists the deployments of deployments/table.py (the ones `serve` serves), the same
way: names in order, entrypoints, one-at-a-time limits, the fleet parameter; and its intervals
are never written in it (`schedules: null`, which `prefect deploy` reads as "keep"): the fleet
file's `schedules` is their one source (`deployments.fleet_block` applies it, `serve` reads it)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from deployments.table import DEPLOYMENTS, WORK_POOL
from gradientlab.config import ScheduleSettings

ROOT = Path(__file__).resolve().parents[2]


def yaml_deployments() -> list[dict[str, Any]]:
    return list(yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"])


def test_prefect_yaml_lists_the_tables_deployments_in_order() -> None:
    assert [d["name"] for d in yaml_deployments()] == [d.name for d in DEPLOYMENTS]


def test_each_deployment_is_the_same_in_both() -> None:
    defaults = ScheduleSettings()
    for listed, d in zip(yaml_deployments(), DEPLOYMENTS, strict=True):
        assert listed["entrypoint"] == d.entrypoint, d.name
        assert listed["work_pool"]["name"] == WORK_POOL, d.name
        limit = listed.get("concurrency_limit")
        assert (limit == {"limit": 1, "collision_strategy": "CANCEL_NEW"}) == d.one_at_a_time
        assert ("fleet_path" in (listed.get("parameters") or {})) == d.fleet_parameter, d.name
        if d.interval_seconds(defaults) is None:
            assert "schedules" not in listed, d.name
        else:  # present and null: a redeploy keeps what fleet_block set
            assert "schedules" in listed and listed["schedules"] is None, d.name


def test_every_schedule_field_is_some_deployments_interval() -> None:
    """A `schedules` field no deployment reads would be a setting that changes nothing."""
    used = {d.schedule for d in DEPLOYMENTS if d.schedule}
    assert used == set(ScheduleSettings.model_fields)


def test_prefect_yaml_writes_no_schedule_of_its_own() -> None:
    text = (ROOT / "prefect.yaml").read_text()
    assert re.findall(r"\b(interval|cron|rrule):", text) == []


def test_every_entrypoint_is_a_flow() -> None:
    for d in DEPLOYMENTS:
        flow = d.load_flow()
        assert hasattr(flow, "to_deployment"), d.entrypoint
