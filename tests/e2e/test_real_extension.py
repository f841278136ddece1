"""Gradient's published extension (v1.0.16, from ../shared/fixtures/) under the runner, against the
sandbox on the real protocol: one local host, deployed by the deploy flow with the real extension
(the store's CRX packed from the fixture folder by the sandbox), signed in by the runner through
the sandbox dashboard on https://app.gradient.network, present over MQTT v5 on
wss://wss.gradient.network. Chromium reaches the sandbox under the real names through
`--host-resolver-rules` (the runner's extra_chromium_flags, set here) and a local CA this test
makes and the host user's NSS database trusts.

register -> Good (the popup's own sentrynode/get answer) -> the health flow records Good -> a
killed browser comes back Good and its incident closes with a recovery time -> a ban reads
Unsupported with its reason -> a signed-out profile is signed in again, on the same node."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from datetime import time as day_time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from tests.conftest import SANDBOX_PASSWORD_ENV, rows, terminate_fleet

pytestmark = pytest.mark.e2e

# ../shared/fixtures beside the checkout (where CI has it too); GRADIENTLAB_REAL_EXTENSION names
# another unpacked copy
_UNPACKED = "gradient-sentry-node-1.0.16"
FIXTURE = Path(
    os.environ.get("GRADIENTLAB_REAL_EXTENSION")
    or next(
        (
            str(p)
            for p in (
                Path(__file__).resolve().parents[3] / "shared" / "fixtures" / _UNPACKED,
                Path("/work/shared/fixtures") / _UNPACKED,
            )
            if (p / "manifest.json").is_file()
        ),
        str(Path(__file__).resolve().parents[3] / "shared" / "fixtures" / _UNPACKED),
    )
)
HOST = "real-1"
BAN_REASON = "Risky IP is not supported"

if not (FIXTURE / "manifest.json").is_file():
    pytest.skip(f"Gradient's published extension is not at {FIXTURE}", allow_module_level=True)


@pytest.fixture(scope="module")
def real_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The sandbox under the real names, serving the fixture as the store's CRX, its sim clock at
    01:00 UTC today at 60x (as conftest's, so no sim midnight falls inside the module)."""
    import os

    from gradientlab.sandbox.network import SandboxAccount, SandboxConfig
    from gradientlab.sandbox.realnames import make_authority, real_names_sandbox

    password = os.environ.setdefault(SANDBOX_PASSWORD_ENV, os.urandom(12).hex())
    authority = make_authority(tmp_path_factory.mktemp("ca"))
    start = datetime.combine(datetime.now(UTC).date(), day_time(hour=1), UTC)
    config = SandboxConfig(
        accounts=[SandboxAccount(email="operator@gradientlab.test", password=password)],
        speed=60,
        start_time=start.timestamp(),
        seed=5,
    )
    server = real_names_sandbox(FIXTURE, authority, config)
    server.start()
    server.authority = authority  # type: ignore[attr-defined]
    yield server
    server.stop()


@pytest.fixture(scope="module")
def fleet_file(
    real_sandbox: Any, base_address: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    from gradientlab.sandbox.realnames import REAL_DASHBOARD_URL
    from tests.conftest import fleet_yaml

    path = tmp_path_factory.mktemp("fleet") / "fleet.yaml"
    text_ = fleet_yaml(real_sandbox, [HOST], base_address)
    # the runner signs in on the dashboard's real origin (the extension takes sessions from no
    # other); the control plane reads the API at the sandbox's own address
    text_ = text_.replace(
        f"dashboard_url: {real_sandbox.dashboard_login_url}", f"dashboard_url: {REAL_DASHBOARD_URL}"
    )
    path.write_text(text_)
    yield path
    terminate_fleet(path)


def health_until(fleet_file: Path, done: Any, timeout: float = 120) -> list[Any]:
    """Run the health flow until `done(outcomes)`; the deadline is a hang guard, not a timing
    assertion (how fast the node heals is bench/real_extension.py's)."""
    from flows.health import health

    deadline = time.monotonic() + timeout
    outcomes = health(fleet_path=str(fleet_file))
    while not done(outcomes) and time.monotonic() < deadline:
        time.sleep(1)
        outcomes = health(fleet_path=str(fleet_file))
    return outcomes


def node_state(server: Any) -> list[dict[str, Any]]:
    nodes: list[dict[str, Any]] = httpx.get(f"{server.url}/__sandbox/state").json()["nodes"]
    return nodes


def connected_node(server: Any, timeout: float = 60) -> dict[str, Any]:
    """The sandbox's one node once its MQTT presence says connected. The popup can read Good a
    moment before the broker's connect reaches the sandbox: wait for it, do not race it."""
    deadline = time.monotonic() + timeout
    while True:
        [node] = node_state(server)
        if node["connect"] is True or time.monotonic() > deadline:
            return node
        time.sleep(0.5)


def sign_out_on_the_dashboard(home: Path) -> None:
    """What a person does on the dashboard: Sign out (the page tells the extension `logout`).
    Attached to the node's browser the way the runner attaches (its DevTools socket)."""
    from playwright.sync_api import sync_playwright

    from gradientlab.agent.devtools import devtools_endpoint
    from gradientlab.agent.home import Paths
    from gradientlab.sandbox.realnames import REAL_DASHBOARD_URL

    endpoint = devtools_endpoint(Paths(home / ".gradientlab" / "node"))
    assert endpoint is not None
    with sync_playwright() as pw:
        browser = pw.chromium.connect_over_cdp(endpoint, timeout=60_000)
        try:
            page = browser.contexts[0].new_page()
            page.goto(REAL_DASHBOARD_URL + "dashboard", wait_until="domcontentloaded")
            page.get_by_role("button", name="Sign out").click(timeout=30_000)
            page.wait_for_url("**/app/", timeout=30_000)
            page.close()
        finally:
            browser.close()


def test_the_real_extension_under_the_runner(
    prefect_server: None, engine: Engine, real_sandbox: Any, fleet_file: Path
) -> None:
    from flows.deploy import deploy
    from flows.provision import provision
    from gradientlab.inventory import executor_for
    from gradientlab.node.deploy import runner_command
    from gradientlab.sandbox.realnames import REAL_EXTENSION_ID, trust_command
    from gradientlab.store.fleet import host_records

    provision(fleet_path=str(fleet_file), approve=True)
    record = next(r for r in host_records(engine) if r.name == HOST)
    ex = executor_for(record)
    # the host user's browser trusts the test's CA (the test's doing, never the product's)
    ca = real_sandbox.authority.ca_pem.read_bytes()
    ex.write_file(".gradientlab-test-ca.pem", ca, 0o644)
    trusted = ex.run(trust_command(".gradientlab-test-ca.pem"))
    assert trusted.ok, trusted.stderr

    [deployed] = deploy(fleet_path=str(fleet_file))
    assert deployed["extension_version"] == "1.0.16", deployed
    assert deployed["extension_id"] == REAL_EXTENSION_ID
    # the runner's browser resolves the real names to the sandbox: extra_chromium_flags in the
    # runner's config, then the runner restarted on it
    config_path = ".gradientlab/node/config.json"
    config = json.loads(ex.read_file(config_path) or b"{}")
    config["extra_chromium_flags"] = [f"--host-resolver-rules={real_sandbox.host_resolver_rules()}"]
    ex.write_file(config_path, json.dumps(config).encode(), 0o600)
    assert ex.run(runner_command(record.meta.get("python"), "stop")).ok
    assert '"started": true' in ex.run(runner_command(record.meta.get("python"), "start")).stdout

    # the extension registers one node, connects over MQTT, and the health flow records Good
    outcomes = health_until(fleet_file, lambda o: [x.status for x in o] == ["Good"])
    assert [o.status for o in outcomes] == ["Good"]
    [(status, client_id)] = rows(engine, "SELECT status, client_id FROM v_fleet_status")
    assert status == "Good"
    node = connected_node(real_sandbox)
    assert node["clientid"] == client_id
    assert node["presence"] == "mqtt" and node["connect"] is True
    assert node["version"] in ("1.0.16", "")  # its version message comes 2 minutes in
    counters = httpx.get(f"{real_sandbox.url}/__sandbox/counters").json()
    assert counters["registers"] == 1
    status_json = json.loads(ex.read_file(".gradientlab/node/status.json") or b"{}")
    popup = status_json.get("popup") or {}
    assert popup.get("source") == "api" and popup.get("version") == "1.0.16", status_json

    # a killed browser: the runner starts another, the extension reconnects on its own
    killed = ex.run("kill -9 $(cat .gradientlab/node/browser.pid) && echo killed")
    assert killed.stdout.strip() == "killed"
    recovered = "SELECT count(*) FROM incidents WHERE status = 'recovered'"
    outcomes = health_until(
        fleet_file,
        lambda o: [x.status for x in o] == ["Good"] and rows(engine, recovered)[0][0] >= 1,
    )
    assert [o.status for o in outcomes] == ["Good"]
    incidents = rows(
        engine,
        "SELECT kind, status, extract(epoch FROM recovered_at - detected_at) FROM incidents",
    )
    assert [(kind, state) for kind, state, _ in incidents] == [("BrowserDown", "recovered")]
    assert float(incidents[0][2]) > 0  # its recovery time; how long it is, bench/ measures

    # the network bans the node: the popup says Unsupported with the reason, and so does the flow
    httpx.post(
        f"{real_sandbox.url}/__sandbox/ban", json={"clientid": client_id, "reason": BAN_REASON}
    ).raise_for_status()
    outcomes = health_until(fleet_file, lambda o: [x.status for x in o] == ["Unsupported"])
    assert [o.status for o in outcomes] == ["Unsupported"]
    assert rows(engine, "SELECT status, banned_reason FROM v_fleet_status") == [
        ("Unsupported", BAN_REASON)
    ]
    httpx.post(
        f"{real_sandbox.url}/__sandbox/ban", json={"clientid": client_id, "reason": None}
    ).raise_for_status()
    outcomes = health_until(fleet_file, lambda o: [x.status for x in o] == ["Good"])
    assert [o.status for o in outcomes] == ["Good"]

    # signed out on the dashboard: the extension forgets its session and drops its connection;
    # the runner signs it in again, and the node is the one it had
    sign_ins = httpx.get(f"{real_sandbox.url}/__sandbox/counters").json()["signIns"]
    sign_out_on_the_dashboard(Path(record.meta["home"]))
    outcomes = health_until(
        fleet_file,
        lambda o: (
            [x.status for x in o] == ["Good"]
            and httpx.get(f"{real_sandbox.url}/__sandbox/counters").json()["signIns"] > sign_ins
        ),
    )
    assert [o.status for o in outcomes] == ["Good"]
    counters = httpx.get(f"{real_sandbox.url}/__sandbox/counters").json()
    assert counters["signIns"] > sign_ins and counters["registers"] == 1
    node = connected_node(real_sandbox)
    assert node["clientid"] == client_id and node["connect"] is True
    assert node["mqttConnections"] >= 3  # first start, after the kill, after the new sign-in
