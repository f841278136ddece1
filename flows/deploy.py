"""Deploy: install or update the Sentry Node on every host. Idempotent."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from gradientlab.store.fleet import host_records
from tasks.common import engine, fleet_from
from tasks.hosts import deploy_host


@flow(name="deploy", log_prints=True)
def deploy(fleet_path: str = "fleet.yaml", hosts: list[str] | None = None) -> list[dict[str, Any]]:
    logger = get_run_logger()
    fleet = fleet_from(fleet_path)
    records = host_records(engine(), hosts)
    if not records:
        logger.warning("no provisioned hosts to deploy to; run the provision flow first")
        return []
    futures = [deploy_host.submit(fleet, r) for r in records]
    results = [f.result() for f in futures]
    create_table_artifact(
        key="deploy-result",
        table=[
            {
                "host": r["host"],
                "changes": "; ".join(r["changes"]) or "none",
                "extension": r["extension_version"],
                "supervisor": r["supervisor"],
                "browser": f"{r['browser']} ({r['browser_source']}, {r['host_os']})",
            }
            for r in results
        ],
        description="What the last deploy changed on each host",
    )
    return results
