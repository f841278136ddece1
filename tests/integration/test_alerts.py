"""Every alert reaches a person: the health flow's events, the automations, a webhook.

A real Prefect test server runs the automations; a local HTTP server stands in for Slack."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

HANG_GUARD = 90  # seconds; a generous deadline for anything to arrive, never a timing claim

Webhook = tuple[str, list[dict[str, Any]]]


@pytest.fixture()
def webhook() -> Iterator[Webhook]:
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


@pytest.fixture()
def ops_hook(prefect_server: None, webhook: Webhook) -> Iterator[Webhook]:
    """A Custom Webhook block `ops-hook` posting to the local webhook; no GradientLab
    automation is left behind to notify a dead webhook later in the session."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    url, received = webhook
    CustomWebhookNotificationBlock(
        name="ops",
        url=url,
        json_data={"text": "{{subject}}: {{body}}"},
        headers={},
        cookies={},
    ).save("ops-hook", overwrite=True)
    yield webhook
    for automation in _gradientlab_automations():
        _delete(automation.id)


def _gradientlab_automations() -> list[Any]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return [a for a in client.read_automations() if a.name.startswith("gradientlab: ")]


def _delete(automation_id: Any) -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.delete_automation(automation_id)


def _texts(received: list[dict[str, Any]], marker: str) -> list[str]:
    return [m["text"] for m in list(received) if marker in m.get("text", "")]


def _wait_until(done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + HANG_GUARD
    while not done() and time.monotonic() < deadline:
        time.sleep(0.5)


def _host(name: str) -> dict[str, str]:
    return {"prefect.resource.id": f"gradientlab.host.{name}", "prefect.resource.name": name}


def _fleet(name: str) -> dict[str, str]:
    return {"prefect.resource.id": f"gradientlab.fleet.{name}", "prefect.resource.name": name}


# (event, resource, payload, what the message must say); every resource name is distinct
EVENTS: list[tuple[str, dict[str, str], dict[str, Any], list[str]]] = [
    (
        "gradientlab.incident.opened",
        _host("edge-amber"),
        {
            "kind": "runner_down",
            "reason": "the runner process is not running",
            "detected_at": "2025-03-01T10:15:00+00:00",
            "fleet": "lab-east",
        },
        ["runner_down", "the runner process is not running", "2025-03-01T10:15:00", "lab-east"],
    ),
    (
        "gradientlab.incident.resolved",
        _host("edge-birch"),
        {
            "kind": "unreachable",
            "reason": "no SSH answer",
            "recovery_seconds": 184.6,
            "actions": ["restart_runner", "reboot_host"],
        },
        ["Good again", "184 s", "restart_runner, reboot_host", "unreachable"],
    ),
    (
        "gradientlab.host.quarantined",
        _host("edge-cedar"),
        {
            "kind": "disconnected",
            "reason": "the node stays Disconnected",
            "actions": ["restart_runner", "redeploy", "reboot_host"],
        },
        [
            "quarantined",
            "gradientlab hosts release edge-cedar",
            "restart_runner, redeploy, reboot_host",
            "the node stays Disconnected",
        ],
    ),
    (
        "gradientlab.security.host-key-changed",
        _host("edge-delta"),
        {
            "address": "203.0.113.24",
            "pinned_fingerprint": "SHA256:pinnedpinnedpinnedpinnedpinnedpinnedpinned0",
            "offered_fingerprint": "SHA256:offeredofferedofferedofferedofferedoffered1",
        },
        [
            "SECURITY",
            "203.0.113.24",
            "SHA256:pinnedpinnedpinnedpinnedpinnedpinnedpinned0",
            "SHA256:offeredofferedofferedofferedofferedoffered1",
            "out of band",
        ],
    ),
    (
        "gradientlab.network.down",
        _fleet("lab-west"),
        {"reason": "most nodes disconnected at once", "disconnected": 9, "checked": 10},
        ["down or degraded", "most nodes disconnected at once", "9 of 10"],
    ),
    (
        "gradientlab.network.restored",
        _fleet("lab-north"),
        {"reason": "nodes connected again", "down_seconds": 1260},
        ["back", "1260 s", "nodes connected again"],
    ),
    (
        "gradientlab.fleet.unreachable",
        _fleet("lab-cut"),
        {
            "reason": "GradientLab cannot reach the fleet from worker-7: 12 of 12 checked hosts"
            " fail at TCP, SSH banner or login at once",
            "hosts": 12,
        },
        ["cannot reach the fleet", "worker-7", "12 hosts", "operator_cidr", "No host is"],
    ),
    (
        "gradientlab.fleet.reachable",
        _fleet("lab-back"),
        {"reason": "GradientLab reaches its hosts again", "down_seconds": 900},
        ["again", "900 s"],
    ),
    (
        "gradientlab.account.login-refused",
        _fleet("lab-account"),
        {"reason": "the Gradient account's password is refused (INVALID_PASSWORD)", "hosts": 4},
        ["password is refused", "INVALID_PASSWORD", "4 hosts", "once for the whole account"],
    ),
    (
        "gradientlab.account.sign-in-refused",
        _fleet("lab-sign-in"),
        {
            "setting": "network.web_api_key",
            "reason": "API key not valid. Please pass a valid API key.",
            "endpoint": "POST /v1/accounts:signInWithPassword",
        },
        ["fix network.web_api_key", "API key not valid", "not the network"],
    ),
    (
        "gradientlab.node.unsupported",
        _host("edge-ember"),
        {"status": "Banned", "reason": "the network banned this node"},
        ["Banned", "the network banned this node", "never recovers"],
    ),
]


def test_every_alert_reaches_the_webhook_once_and_reinstalling_replaces(
    ops_hook: Webhook,
) -> None:
    from prefect.automations import AutomationCore, EventTrigger, SendNotification
    from prefect.client.orchestration import get_client
    from prefect.events import emit_event

    from deployments.alerts import ALERT_EVENTS, DEAD_MAN_NAME, RETIRED, install_all

    _, received = ops_hook
    assert {e for e, *_ in EVENTS} == set(ALERT_EVENTS)

    # the retired automation from an older install
    with get_client(sync_client=True) as client:
        block = client.read_block_document_by_name("ops-hook", "custom-webhook")
        client.create_automation(
            AutomationCore(
                name=RETIRED[0],
                trigger=EventTrigger(expect={"gradientlab.node.recovery-failed"}),
                actions=[SendNotification(block_document_id=block.id, subject="old", body="old")],
            )
        )

    first = install_all("ops-hook", "custom-webhook", health_seconds=3600)
    second = install_all("ops-hook", "custom-webhook", health_seconds=3600)
    expected = {name for name, _, _ in ALERT_EVENTS.values()} | {DEAD_MAN_NAME}
    assert {a.name for a in first} == {a.name for a in second} == expected
    assert all(a.name.startswith("gradientlab: ") for a in first)
    assert [a.id for a in first] == [a.id for a in second]  # replaced in place
    on_server = sorted(a.name for a in _gradientlab_automations())
    assert on_server == sorted(expected)  # no duplicates, the retired one is gone

    time.sleep(2)  # the triggers service loads the automations
    for event, resource, payload, _ in EVENTS:
        emit_event(event=event, resource=resource, payload=payload)

    markers = [resource["prefect.resource.name"] for _, resource, _, _ in EVENTS]
    _wait_until(lambda: all(_texts(received, m) for m in markers))
    time.sleep(3)  # room for a duplicate to show up
    for event, resource, _, facts in EVENTS:
        texts = _texts(received, resource["prefect.resource.name"])
        assert len(texts) == 1, f"{event}: {len(texts)} notifications: {texts}"
        missing = [fact for fact in facts if fact not in texts[0]]
        assert not missing, f"{event}: {missing} not in {texts[0]!r}"
    assert len(received) == len(EVENTS), [m["text"] for m in received]


def test_dead_man_fires_when_no_health_run_completes(ops_hook: Webhook) -> None:
    from prefect import flow

    from deployments.alerts import DEAD_MAN_SUBJECT, install_all

    _, received = ops_hook

    @flow(name="health")
    def health() -> None:
        pass

    # health period 4 s: the proactive window is 12 s (Prefect's minimum is 10 s); the
    # triggers service evaluates proactive triggers every 5 s, so the first window opens
    # within about 5 s of installing and is judged within about 5 s of its end
    install_all("ops-hook", "custom-webhook", health_seconds=4)

    # while health runs keep completing (one every ~2 s), a whole window ends without the alert
    quiet_until = time.monotonic() + 25
    while time.monotonic() < quiet_until:
        health()
        assert not _texts(received, DEAD_MAN_SUBJECT), "dead-man fired while health ran"
        time.sleep(1)

    # then health stops: the alert comes
    _wait_until(lambda: bool(_texts(received, DEAD_MAN_SUBJECT)))
    texts = _texts(received, DEAD_MAN_SUBJECT)
    assert texts, "no dead-man notification reached the webhook"
    assert "No `health` flow run has completed in the last 12 s" in texts[0]
    assert "deployments.serve" in texts[0]
