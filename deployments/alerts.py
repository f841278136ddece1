"""Tell a person what GradientLab saw and what, if anything, they should do about it.

    python -m deployments.alerts --webhook-block ops-webhook --fleet fleet.yaml
    python -m deployments.alerts --slack-block ops-slack --health-seconds 300

The health flow emits Prefect events (`prefect.events.emit_event`); this creates or replaces
one Prefect automation per alert kind, each sending a notification through a notification
block you made in the UI (Blocks → + → Slack Webhook, Discord Webhook, Microsoft Teams Webhook
or Custom Webhook). The webhook URL stays in the block. Automations are named
"gradientlab: …"; running this again replaces them (same names, no duplicates).

    event                                  resource            what the person reads
    gradientlab.incident.opened            gradientlab.host.*  a fault confirmed by two sweeps;
                                                               recovery is under way
    gradientlab.incident.resolved          gradientlab.host.*  the host is Good again
    gradientlab.host.quarantined           gradientlab.host.*  recovery budget spent: fix it, then
                                                               `gradientlab hosts release <host>`
    gradientlab.security.host-key-changed  gradientlab.host.*  SSH host key changed: never
                                                               reconnects, verify out of band
    gradientlab.network.down               gradientlab.fleet.* the Gradient network is down or
                                                               degraded; no per-node recovery
    gradientlab.network.restored           gradientlab.fleet.* the network is back
    gradientlab.fleet.unreachable          gradientlab.fleet.* GradientLab cannot reach its fleet
                                                               (operator_cidr, firewall, keeper);
                                                               no host is touched for it
    gradientlab.fleet.reachable            gradientlab.fleet.* the hosts answer again
    gradientlab.account.login-refused      gradientlab.fleet.* the account's password is refused;
                                                               one alert for the whole account
    gradientlab.account.sign-in-refused    gradientlab.fleet.* the API sign-in is refused: the
                                                               setting to fix (web API key,
                                                               email, password)
    gradientlab.node.unsupported           gradientlab.host.*  the network marks the node
                                                               Unsupported/Banned/Suspended;
                                                               never recovered automatically

A dead-man automation watches the watcher: a proactive trigger expecting one
`prefect.flow-run.Completed` event whose related resource in role `flow` is named `health`
(whatever deployment or process ran it) within three health periods
(`--health-seconds`, by default the fleet file's `schedules.health_seconds`). It notifies when
none came, and again every three periods until a health run completes. Prefect's proactive
triggers need a window of at least 10 s and are evaluated every 5 s, so a health period below
4 s is refused.

The retired `gradientlab.node.recovery-failed` automation ("gradientlab: node recovery
failed") is deleted on install.
"""

from __future__ import annotations

import argparse
from datetime import timedelta
from uuid import UUID

from prefect.automations import Automation, EventTrigger, SendNotification
from prefect.client.orchestration import get_client
from prefect.events.schemas.automations import AutomationCore, Posture
from prefect.exceptions import ObjectNotFound

from gradientlab.health.events import ALERTS_AUTOMATION_PREFIX, FLEET_EVENTS, AlertEvent

PREFIX = ALERTS_AUTOMATION_PREFIX
RETIRED = ("gradientlab: node recovery failed",)

_HOST = "{{ event.resource['prefect.resource.name'] }}"
_FLEET = "{{ event.resource['prefect.resource.name'] }}"
_P = "event.payload"

# event name -> (automation name, subject template, body template)
ALERT_EVENTS: dict[str, tuple[str, str, str]] = {
    AlertEvent.INCIDENT_OPENED: (
        PREFIX + "incident opened",
        f"GradientLab: {_HOST} is faulty ({{{{ {_P}.kind }}}})",
        f"Host {_HOST} (fleet {{{{ {_P}.fleet }}}}) failed two health sweeps in a row: "
        f"{{{{ {_P}.kind }}}}: {{{{ {_P}.reason }}}} (first seen {{{{ {_P}.detected_at }}}}). "
        "GradientLab is running its recovery steps now. Nothing to do yet: a second message "
        "follows when the host is Good again, or when GradientLab gives up and quarantines it.",
    ),
    AlertEvent.INCIDENT_RESOLVED: (
        PREFIX + "incident resolved",
        f"GradientLab: {_HOST} is Good again",
        f"Host {_HOST} is Good again after {{{{ {_P}.recovery_seconds | int }}}} s "
        f"({{{{ {_P}.kind }}}}: {{{{ {_P}.reason }}}}). "
        f"Steps taken: {{{{ {_P}.actions | join(', ') or 'none, it came back by itself' }}}}. "
        "Nothing to do.",
    ),
    AlertEvent.HOST_QUARANTINED: (
        PREFIX + "host quarantined",
        f"GradientLab: {_HOST} quarantined, a person must fix it",
        f"GradientLab spent its recovery budget on host {_HOST} "
        f"({{{{ {_P}.kind }}}}: {{{{ {_P}.reason }}}}; "
        f"tried {{{{ {_P}.actions | join(', ') or 'nothing' }}}}) and now leaves it alone: "
        "no more recovery steps. Log in, find and fix the cause, then run "
        f"`gradientlab hosts release {_HOST}` to hand the host back to GradientLab.",
    ),
    AlertEvent.HOST_KEY_CHANGED: (
        PREFIX + "host key changed",
        f"SECURITY: SSH host key of {_HOST} changed",
        f"The SSH host key offered by {_HOST} at {{{{ {_P}.address }}}} is not the pinned one. "
        f"Pinned: {{{{ {_P}.pinned_fingerprint }}}}. "
        f"Offered: {{{{ {_P}.offered_fingerprint }}}}. "
        "GradientLab will not connect to this host again. Treat this as a security incident: "
        "verify the host's key out of band (the provider's console), and trust the new key "
        "only if you know the machine was rebuilt; otherwise assume the connection is being "
        "intercepted or the host is compromised.",
    ),
    AlertEvent.NETWORK_DOWN: (
        PREFIX + "network down",
        f"GradientLab: the Gradient network is down or degraded (fleet {_FLEET})",
        f"Fleet {_FLEET}: {{{{ {_P}.reason }}}} "
        f"({{{{ {_P}.disconnected }}}} of {{{{ {_P}.checked }}}} nodes disconnected). "
        "This looks like the network, not your hosts: GradientLab pauses per-node recovery "
        "until it is back. Nothing to do on the hosts; a message follows when it is restored.",
    ),
    AlertEvent.NETWORK_RESTORED: (
        PREFIX + "network restored",
        f"GradientLab: the Gradient network is back (fleet {_FLEET})",
        f"Fleet {_FLEET}: the Gradient network is back after "
        f"{{{{ {_P}.down_seconds | int }}}} s ({{{{ {_P}.reason }}}}). "
        "Per-node recovery resumes. Nothing to do.",
    ),
    AlertEvent.FLEET_UNREACHABLE: (
        PREFIX + "fleet unreachable",
        f"GradientLab cannot reach the fleet {_FLEET}",
        f"Fleet {_FLEET}: {{{{ {_P}.reason }}}} ({{{{ {_P}.hosts }}}} hosts). This is "
        "GradientLab's side, not the hosts': its worker's address may have left operator_cidr "
        "(a home IP changed), a firewall may drop outbound SSH, or the connection keeper "
        "failed. No host is rebooted, re-provisioned or quarantined for it; a message follows "
        "when the hosts answer again.",
    ),
    AlertEvent.FLEET_REACHABLE: (
        PREFIX + "fleet reachable",
        f"GradientLab reaches the fleet {_FLEET} again",
        f"Fleet {_FLEET}: {{{{ {_P}.reason }}}} after {{{{ {_P}.down_seconds | int }}}} s. "
        "Per-host recovery resumes. Nothing to do.",
    ),
    AlertEvent.LOGIN_REFUSED: (
        PREFIX + "login refused",
        f"GradientLab: the Gradient account's password is refused (fleet {_FLEET})",
        f"Fleet {_FLEET}: {{{{ {_P}.reason }}}}. Seen on {{{{ {_P}.hosts }}}} hosts; this "
        "message is sent once for the whole account.",
    ),
    AlertEvent.SIGN_IN_REFUSED: (
        PREFIX + "sign-in refused",
        f"GradientLab: the Gradient account's sign-in is refused: fix {{{{ {_P}.setting }}}} "
        f"(fleet {_FLEET})",
        f"Fleet {_FLEET}: Firebase refused the account's API sign-in ({{{{ {_P}.reason }}}}). "
        f"Fix {{{{ {_P}.setting }}}} in the fleet file (a wrong web API key: remove "
        "network.web_api_key, deploy reads it from the extension's bundle). This is the "
        "account's settings, not the network and not your hosts: rewards are not read until "
        "it is fixed.",
    ),
    AlertEvent.NODE_UNSUPPORTED: (
        PREFIX + "node unsupported",
        f"GradientLab: the Gradient network marks {_HOST} {{{{ {_P}.status }}}}",
        f"The Gradient network marks the node on host {_HOST} {{{{ {_P}.status }}}}: "
        f"{{{{ {_P}.reason }}}}. GradientLab never recovers this by itself (restarting would "
        "not help). Check the node in your Gradient account; contact Gradient support if you "
        "think it is a mistake, or retire the host.",
    ),
}

DEAD_MAN_NAME = PREFIX + "health runs stopped"
DEAD_MAN_SUBJECT = "GradientLab: health checks have stopped"
HEALTH_FLOW = "health"
MIN_HEALTH_SECONDS = 4  # a proactive trigger's window must be at least 10 s


def dead_man_body(health_seconds: int) -> str:
    window = 3 * health_seconds
    return (
        f"No `{HEALTH_FLOW}` flow run has completed in the last {window} s (three health "
        f"periods of {health_seconds} s), so nobody is watching the fleet and no other "
        "GradientLab alert will come. Check that `python -m deployments.serve` (or the "
        f"worker) is running and look at the `{HEALTH_FLOW}` flow's recent runs in the "
        f"Prefect UI. This repeats every {window} s until a health run completes."
    )


def _resource_pattern(event: str) -> str:
    return "gradientlab.fleet.*" if event in FLEET_EVENTS else "gradientlab.host.*"


def _notify(block_document_id: UUID, subject: str, body: str) -> SendNotification:
    return SendNotification(block_document_id=block_document_id, subject=subject, body=body)


def automations(block_document_id: UUID, health_seconds: int) -> list[AutomationCore]:
    """Every automation install_all makes, in the order it makes them."""
    if health_seconds < MIN_HEALTH_SECONDS:
        raise ValueError(
            f"health_seconds must be at least {MIN_HEALTH_SECONDS}: Prefect needs a proactive "
            "trigger's window (three health periods) to be at least 10 s"
        )
    made = [
        AutomationCore(
            name=name,
            description=f"Notify a person on the event {event}",
            trigger=EventTrigger(
                expect={event},
                match={"prefect.resource.id": _resource_pattern(event)},
                posture=Posture.Reactive,
                threshold=1,
                within=timedelta(0),
            ),
            actions=[_notify(block_document_id, subject, body)],
        )
        for event, (name, subject, body) in ALERT_EVENTS.items()
    ]
    made.append(
        AutomationCore(
            name=DEAD_MAN_NAME,
            description=(
                f"Notify a person when no `{HEALTH_FLOW}` flow run completed within "
                f"{3 * health_seconds} s (three health periods)"
            ),
            trigger=EventTrigger(
                expect={"prefect.flow-run.Completed"},
                match={"prefect.resource.id": "prefect.flow-run.*"},
                match_related={
                    "prefect.resource.role": "flow",
                    "prefect.resource.name": HEALTH_FLOW,
                },
                posture=Posture.Proactive,
                threshold=1,
                within=timedelta(seconds=3 * health_seconds),
            ),
            actions=[_notify(block_document_id, DEAD_MAN_SUBJECT, dead_man_body(health_seconds))],
        )
    )
    return made


def install_all(block_name: str, block_type: str, health_seconds: int) -> list[Automation]:
    """Create or replace every GradientLab automation (by name), notifying through the block
    `<block_type>/<block_name>`; delete retired ones. Returns them with their ids."""
    installed: list[Automation] = []
    with get_client(sync_client=True) as client:
        try:
            block = client.read_block_document_by_name(
                block_name, block_type, include_secrets=False
            )
        except ObjectNotFound:
            raise ValueError(
                f"no {block_type} block named {block_name!r}: make one in the Prefect UI "
                "(Blocks → +)"
            ) from None
        schema = block.block_schema
        if schema is None or "notify" not in schema.capabilities:
            raise ValueError(f"{block_type}/{block_name} is not a notification block")
        wanted = automations(block.id, health_seconds)
        for name in RETIRED:
            for old in client.read_automations_by_name(name):
                client.delete_automation(old.id)
        for core in wanted:
            existing = client.read_automations_by_name(core.name)
            if existing:
                automation_id = existing[0].id
                client.update_automation(automation_id, core)
                for extra in existing[1:]:  # left by an interrupted or concurrent install
                    client.delete_automation(extra.id)
            else:
                automation_id = client.create_automation(core)
            installed.append(Automation(**core.model_dump(), id=automation_id))
    return installed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m deployments.alerts")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--webhook-block", help="a Custom Webhook block's name")
    group.add_argument("--slack-block", help="a Slack Webhook block's name")
    group.add_argument("--discord-block", help="a Discord Webhook block's name")
    group.add_argument("--teams-block", help="a Microsoft Teams Webhook block's name")
    parser.add_argument(
        "--fleet", default="fleet.yaml", help="where `schedules.health_seconds` comes from"
    )
    parser.add_argument(
        "--health-seconds",
        type=int,
        help="the health flow's period (default: the fleet file's schedules.health_seconds)",
    )
    args = parser.parse_args(argv)
    health_seconds = args.health_seconds
    if health_seconds is None:
        from gradientlab.config import FleetFileError, load_fleet

        try:
            health_seconds = load_fleet(args.fleet).schedules.health_seconds
        except FleetFileError as exc:
            parser.error(f"{exc} (or give --health-seconds)")
    if health_seconds < MIN_HEALTH_SECONDS:
        parser.error(f"--health-seconds must be at least {MIN_HEALTH_SECONDS}")
    for option, block_type in (
        ("webhook_block", "custom-webhook"),
        ("slack_block", "slack-webhook"),
        ("discord_block", "discord-webhook"),
        ("teams_block", "ms-teams-webhook"),
    ):
        name = getattr(args, option)
        if name:
            for created in install_all(name, block_type, health_seconds):
                print(f"automation {created.name!r} ({created.id}) notifies through {name}")


if __name__ == "__main__":
    main()
