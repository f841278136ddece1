"""Deploy: install or update the Sentry Node on every host. Idempotent."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from gradientlab.rules import SecondNodeRefused, one_node_per_device
from gradientlab.store.fleet import deployed_host_keys, host_records
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
    refused = one_node_per_device(
        [(r.name, r.host_key) for r in records], deployed_host_keys(engine())
    )
    for why in refused.values():
        logger.error("refused: %s", why)
    futures = [deploy_host.submit(fleet, r) for r in records if r.name not in refused]
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
        ]
        + [
            {
                "host": name,
                "changes": f"refused: {why}",
                "extension": None,
                "supervisor": None,
                "browser": None,
            }
            for name, why in sorted(refused.items())
        ],  # fmt: skip
        description="What the last deploy changed on each host",
    )
    if refused:
        raise SecondNodeRefused("; ".join(refused[name] for name in sorted(refused)))
    return results
