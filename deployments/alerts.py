"""Alert a person when GradientLab cannot recover a node by itself.

    python -m deployments.alerts --webhook-block ops-webhook
    python -m deployments.alerts --slack-block ops-slack

The health flow emits `gradientlab.node.recovery-failed` (resource `gradientlab.host.<name>`)
when every recovery step failed. This creates (or updates) one Prefect automation that sends a
notification through a notification block you made in the UI (Blocks → + → Slack Webhook,
Discord Webhook, Microsoft Teams Webhook or Custom Webhook). The webhook URL stays in the block.
"""

from __future__ import annotations

import argparse
from datetime import timedelta

from prefect.automations import Automation, EventTrigger, SendNotification
from prefect.blocks.core import Block

AUTOMATION_NAME = "gradientlab: node recovery failed"
EVENT = "gradientlab.node.recovery-failed"

BODY = (
    "GradientLab could not recover {{ event.resource['prefect.resource.name'] }}: "
    "status {{ event.payload.status }} after {{ event.payload.actions | join(', ') }}. "
    "A person should look at the host."
)


def automation(block_document_id: str) -> Automation:
    return Automation(
        name=AUTOMATION_NAME,
        description="Notify a person when the health flow's recovery steps all failed",
        trigger=EventTrigger(
            expect={EVENT},
            match={"prefect.resource.id": "gradientlab.host.*"},
            posture="Reactive",
            threshold=1,
            within=timedelta(0),
        ),
        actions=[
            SendNotification(
                block_document_id=block_document_id,
                subject="GradientLab: a node needs a person",
                body=BODY,
            )
        ],
    )


def install(block_name: str, block_type: str) -> Automation:
    block = Block.load(f"{block_type}/{block_name}")
    block_id = str(block._block_document_id)  # noqa: SLF001 - the id the action needs
    wanted = automation(block_id)
    try:
        existing = Automation.read(name=AUTOMATION_NAME)
    except ValueError:
        existing = None
    if existing is not None:
        existing.delete()
    return wanted.create()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m deployments.alerts")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--webhook-block", help="a Custom Webhook block's name")
    group.add_argument("--slack-block", help="a Slack Webhook block's name")
    group.add_argument("--discord-block", help="a Discord Webhook block's name")
    group.add_argument("--teams-block", help="a Microsoft Teams Webhook block's name")
    args = parser.parse_args(argv)
    for option, block_type in (
        ("webhook_block", "custom-webhook"),
        ("slack_block", "slack-webhook"),
        ("discord_block", "discord-webhook"),
        ("teams_block", "ms-teams-webhook"),
    ):
        name = getattr(args, option)
        if name:
            created = install(name, block_type)
            print(f"automation {created.name!r} ({created.id}) notifies through {name}")


if __name__ == "__main__":
    main()
