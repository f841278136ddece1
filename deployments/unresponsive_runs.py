"""Flow runs whose worker died, marked Crashed by the server itself.

    python -m deployments.unresponsive_runs [--within 90]

With several workers no one process knows that a run is abandoned (the demo's
`abandoned_runs` may crash every unfinished run only because it is the only runner). Instead,
each flow run sends a heartbeat (`PREFECT_FLOWS_HEARTBEAT_FREQUENCY=30` on every worker) and
this installs the automation Prefect's docs describe: a run that has sent a heartbeat and then
neither another one nor a final state within `--within` seconds is set Crashed. Leaving
Running frees its deployment's concurrency slot at once, so with CANCEL_NEW the next scheduled
run is not cancelled for the dead one (its slot's lease would otherwise hold for 300 s).
Rerunning it updates the automation in place."""

from __future__ import annotations

import argparse
from datetime import timedelta

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

NAME = "gradientlab: crash flow runs whose heartbeats stopped"
HEARTBEAT = "prefect.flow-run.heartbeat"
FINAL = ["Completed", "Failed", "Cancelled", "Crashed"]


def automation(within_seconds: float) -> AutomationCore:
    return AutomationCore(
        name=NAME,
        description=(
            f"A flow run that sent a heartbeat, then nothing for {within_seconds:g} s, is "
            "marked Crashed: its worker (or machine) died."
        ),
        trigger=EventTrigger(
            after={HEARTBEAT},
            expect={HEARTBEAT, *(f"prefect.flow-run.{state}" for state in FINAL)},
            match={"prefect.resource.id": "prefect.flow-run.*"},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=within_seconds),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"no heartbeat for {within_seconds:g} s: its worker stopped",
            )
        ],
    )


def install(within_seconds: float = 90) -> str:
    """Create or update the automation; returns its id."""
    core = automation(within_seconds)
    with get_client(sync_client=True) as client:
        existing = client.read_automations_by_name(NAME)
        if existing:
            client.update_automation(existing[0].id, core)
            for extra in existing[1:]:
                client.delete_automation(extra.id)
            return str(existing[0].id)
        return str(client.create_automation(core))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m deployments.unresponsive_runs")
    parser.add_argument(
        "--within",
        type=float,
        default=90,
        help="seconds without a heartbeat before a run is Crashed (three heartbeats of 30 s)",
    )
    args = parser.parse_args(argv)
    if args.within < 60:
        parser.error("--within must be at least 60 s: heartbeats come every 30 s at the most")
    print(f"automation {NAME!r} ({install(args.within)}): after {args.within:g} s")


if __name__ == "__main__":
    main()
