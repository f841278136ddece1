"""prefect.yaml lists the deployments of deployments/table.py (the ones `serve` serves), the same
way: names in order, entrypoints, one-at-a-time limits, the fleet parameter, the default
intervals of the fleet file's `schedules`."""

from __future__ import annotations

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
        intervals = [s["interval"] for s in listed.get("schedules") or []]
        wanted = d.interval_seconds(defaults)
        assert intervals == ([] if wanted is None else [wanted]), d.name


def test_every_entrypoint_is_a_flow() -> None:
    for d in DEPLOYMENTS:
        flow = d.load_flow()
        assert hasattr(flow, "to_deployment"), d.entrypoint
