"""A failed recovery reaches a person: the health flow's event, the automation, a webhook."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@pytest.fixture()
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - stdlib name
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append(json.loads(body or b"{}"))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()


def test_recovery_failed_event_notifies_through_the_webhook_block(
    prefect_server: None, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.events import emit_event

    from deployments.alerts import AUTOMATION_NAME, EVENT, install

    url, received = webhook
    CustomWebhookNotificationBlock(
        name="ops", url=url, json_data={"text": "{{subject}}: {{body}}"}
    ).save("ops-hook", overwrite=True)
    created = install("ops-hook", "custom-webhook")
    assert created.name == AUTOMATION_NAME
    assert install("ops-hook", "custom-webhook").name == AUTOMATION_NAME  # reinstall replaces

    time.sleep(2)  # the triggers service loads automations
    emit_event(
        event=EVENT,
        resource={
            "prefect.resource.id": "gradientlab.host.node-7",
            "prefect.resource.name": "node-7",
        },
        payload={"status": "Unreachable", "actions": ["reboot_host"]},
    )
    deadline = time.monotonic() + 60
    while not received and time.monotonic() < deadline:
        time.sleep(0.5)
    assert received, "no notification reached the webhook"
    text = received[0]["text"]
    assert "node-7" in text and "Unreachable" in text and "reboot_host" in text
