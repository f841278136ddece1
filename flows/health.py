"""Health: probe every host over SSH, compare with the network's node list, recover, record."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.events import emit_event

from gradientlab.gradient.models import NodeListItem
from gradientlab.health import HealthOutcome
from gradientlab.store.fleet import host_records
from tasks.common import engine, fleet_from
from tasks.hosts import heal_host, record_health, sweep_fleet
from tasks.network import list_network_nodes


@flow(name="health", log_prints=True)
def health(fleet_path: str = "fleet.yaml", recover: bool = True) -> list[HealthOutcome]:
    logger = get_run_logger()
    fleet = fleet_from(fleet_path)
    records = host_records(engine())
    network: list[NodeListItem] = []
    try:
        network = list_network_nodes(fleet)
    except Exception as exc:  # noqa: BLE001 - the SSH side still tells a lot
        logger.warning("the network's node list is unavailable (%s); checking hosts only", exc)
    reports = sweep_fleet(records, network)
    by_name = {r.name: r for r in records}
    needs_work = [r for r in reports if r.status == "Starting" or (recover and r.recoverable)]
    healed = {
        report.host: future.result()
        for report, future in [
            (report, heal_host.submit(fleet, by_name[report.host], report, network, recover))
            for report in needs_work
        ]
    }
    outcomes: list[HealthOutcome] = record_health([healed.get(r.host, (r, r, [])) for r in reports])
    for o in outcomes:
        if o.incident_status == "failed":
            emit_event(
                event="gradientlab.node.recovery-failed",
                resource={
                    "prefect.resource.id": f"gradientlab.host.{o.host}",
                    "prefect.resource.name": o.host,
                },
                payload={"status": o.status, "actions": list(o.actions)},
            )
            logger.error("%s: recovery failed (%s); a person should look", o.host, o.status)
        elif o.incident_status == "recovered":
            logger.info(
                "%s: recovered in %.1fs by %s",
                o.host,
                o.recovery_seconds or 0,
                ", ".join(o.actions) or "the runner",
            )
    create_table_artifact(
        key="fleet-health",
        table=[
            {
                "host": o.host,
                "status": o.status,
                "incident": o.incident_status or "",
                "actions": ", ".join(o.actions),
            }
            for o in outcomes
        ],
        description="Fleet health after the last check",
    )
    return outcomes
