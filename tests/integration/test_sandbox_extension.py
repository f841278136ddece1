"""The sandbox extension in a real Chromium: served as a CRX, logged in through the dashboard page,
registered and present over MQTT v5 on a WebSocket (the real extension's protocol), and showing
its status in the popup."""

from __future__ import annotations

import io
import os
import shutil
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gradientlab.agent import pages as agent_pages
from gradientlab.agent import popup as agent_popup
from gradientlab.agent import signin as agent_signin
from gradientlab.sandbox import SANDBOX_EXTENSION_ID, SandboxConfig, SandboxServer
from gradientlab.sandbox.network import Fault, SandboxAccount

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
EMAIL = "runner@example.test"
PASSWORD = "runner-pass"
KEY = "integration-key"

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian chromium")


def unpack_served_crx(url: str, dest: Path) -> Path:
    data = httpx.get(url, timeout=10).content
    assert data[:4] == b"Cr24"
    version, header_size = struct.unpack("<II", data[4:12])
    assert version == 3
    with zipfile.ZipFile(io.BytesIO(data[12 + header_size :])) as zf:
        zf.extractall(dest)
    return dest


def chromium_args(ext_dir: Path) -> list[str]:
    args = [
        "--headless=new",
        f"--disable-extensions-except={ext_dir}",
        f"--load-extension={ext_dir}",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]
    if os.geteuid() == 0:
        args.append("--no-sandbox")
    return args


@pytest.fixture()
def server() -> Iterator[SandboxServer]:
    cfg = SandboxConfig(
        accounts=[SandboxAccount(email=EMAIL, password=PASSWORD, name="Runner")],
        api_key=KEY,
        speed=60,
        extension_heartbeat_seconds=2,
    )
    with SandboxServer(cfg) as srv:
        yield srv


def api_list(server: SandboxServer) -> list[dict[str, object]]:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        auth = c.post(
            "/identitytoolkit/v1/accounts:signInWithPassword",
            params={"key": KEY},
            json={"email": EMAIL, "password": PASSWORD, "returnSecureToken": True},
        ).json()
        body = {"page": 1, "size": 50, "field": "active", "direction": 0, "active": True}
        r = c.post(
            "/api/sentrynode/list",
            headers={"Authorization": f"Bearer {auth['idToken']}"},
            json={**body, "banned": "", "hide": 0},
        )
        envelope = r.json()
        assert envelope["code"] == 200
        rows: list[dict[str, object]] = envelope["data"]
        return rows


def launch(p: Any, tmp_path: Path, ext_dir: Path) -> Any:
    return p.chromium.launch_persistent_context(
        str(tmp_path / "profile"),
        executable_path=CHROMIUM,
        headless=False,  # "--headless=new" is in the args; extensions need it
        args=chromium_args(ext_dir),
    )


def login_config(server: SandboxServer, password: str = PASSWORD) -> dict[str, str]:
    return {"dashboard_url": server.dashboard_login_url, "email": EMAIL, "password": password}


def test_the_dashboard_signs_in_by_placeholder_and_enter(
    server: SandboxServer, tmp_path: Path
) -> None:
    """The sandbox dashboard has the real one's shape, and the runner signs in through it."""
    from playwright.sync_api import expect, sync_playwright

    ext_dir = unpack_served_crx(server.crx_url(), tmp_path / "extension")
    with sync_playwright() as p:
        ctx = launch(p, tmp_path, ext_dir)
        try:
            page = ctx.new_page()
            # signed out, /dashboard sends the browser back to the form
            page.goto(server.dashboard_login_url + "dashboard")
            expect(page.get_by_placeholder("Enter Email")).to_be_visible(timeout=10_000)
            assert not agent_pages.SIGNED_IN_PATH.search(page.url)
            # a wrong password: the form says why and stays
            page.get_by_placeholder("Enter Email").fill(EMAIL)
            page.get_by_placeholder("Enter Password").fill("wrong")
            page.get_by_placeholder("Enter Password").press("Enter")
            expect(page.get_by_role("alert")).to_contain_text("INVALID_PASSWORD", timeout=10_000)
            page.close()
            with pytest.raises(RuntimeError, match="INVALID_PASSWORD"):
                agent_signin.dashboard_login(ctx, login_config(server, "wrong"), timeout=5)

            agent_signin.dashboard_login(ctx, login_config(server))
            # signed in, /dashboard stays
            page = ctx.new_page()
            page.goto(server.dashboard_login_url + "dashboard")
            expect(page.get_by_text("Your Sentry Node extension has your session.")).to_be_visible(
                timeout=10_000
            )
            assert agent_pages.SIGNED_IN_PATH.search(page.url)
            page.close()
        finally:
            ctx.close()


def test_the_runner_reads_the_popup_from_its_own_api_answer(
    server: SandboxServer, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    ext_dir = unpack_served_crx(server.crx_url(), tmp_path / "extension")
    # A dashboard whose extension id matches nothing installed signs in, but hands nothing over.
    stranger = SandboxServer(server.config, extension_id="a" * 32)
    stranger.start()
    try:
        with sync_playwright() as p:
            ctx = launch(p, tmp_path, ext_dir)
            try:
                worker = (
                    ctx.service_workers[0]
                    if ctx.service_workers
                    else ctx.wait_for_event("serviceworker", timeout=20_000)
                )
                assert worker.url.startswith(f"chrome-extension://{SANDBOX_EXTENSION_ID}/")
                ext_id = agent_signin.find_extension_id(ctx, {})
                assert ext_id == SANDBOX_EXTENSION_ID

                agent_signin.dashboard_login(ctx, login_config(stranger))
                popup = agent_popup.read_popup(ctx, ext_id)
                assert popup["status"] == "Logged out"
                assert popup["first_run_dismissed"] is True

                agent_signin.dashboard_login(ctx, login_config(server))
                popup = agent_popup.read_popup(ctx, ext_id, wait_for_status=True)
                assert popup["status"] == "Good", popup
                assert popup["source"] == "api"
                assert popup["connect"] is True
                clientid = popup["node_id"]
                assert len(clientid) >= 16
                assert popup["ip"] == "127.0.0.1"
                assert popup["version"] == "0.1.0"
                assert popup["banned_reason"] is None
                assert isinstance(popup["taps_today"], int)
                assert isinstance(popup["uptime_today"], int)
                assert isinstance(popup["points_today"], int)
                # the first-run dialog stays dismissed
                assert agent_popup.read_popup(ctx, ext_id)["first_run_dismissed"] is False

                # without the API's answer, the badge is read as the extension shows it (after
                # waiting `timeout` for the answer that does not come)
                server.network.add_fault(
                    Fault(kind="error", path="/api/sentrynode/get", status=503)
                )
                popup = agent_popup.read_popup(ctx, ext_id, timeout=5)
                assert (popup["status"], popup["source"]) == ("Good", "badge")
                server.network.clear_faults()

                # an extension whose popup no longer looks as pages.py says: PageChanged
                (ext_dir / "popup.html").write_text("<!doctype html><p>A new look</p>")
                with pytest.raises(agent_pages.PageChanged, match="sentrynode/get"):
                    agent_popup.read_popup(ctx, ext_id, timeout=3)
            finally:
                ctx.close()
    finally:
        stranger.stop()

    # the node registered, connected over MQTT and said its version and that it is online; the
    # browser is gone now, and so is its connection: the network says so at once
    import time

    deadline = time.monotonic() + 10  # the broker logs the close a moment later: poll
    row = next(r for r in api_list(server) if r["name"] == clientid)
    while row["connect"] and time.monotonic() < deadline:
        time.sleep(0.1)
        row = next(r for r in api_list(server) if r["name"] == clientid)
    assert row["connect"] is False and row["banned"] is False
    node = next(n for n in server.network.state()["nodes"] if n["clientid"] == clientid)
    assert node["presence"] == "mqtt" and node["mqttConnections"] >= 1
    assert node["mqttMessages"].get("version", 0) >= 1
    assert node["mqttMessages"].get("online", 0) >= 1
    assert node["version"] == "0.1.0"


def test_popup_logged_out_then_unsupported_on_datacenter_ip(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    cfg = SandboxConfig(
        accounts=[SandboxAccount(email=EMAIL, password=PASSWORD)],
        api_key=KEY,
        datacenter_ranges=["127.0.0.1/32"],  # the browser's address counts as a data centre
        extension_heartbeat_seconds=2,
    )
    with SandboxServer(cfg) as server, sync_playwright() as p:
        ext_dir = unpack_served_crx(server.crx_url(), tmp_path / "extension")
        ctx = launch(p, tmp_path, ext_dir)
        try:
            popup = agent_popup.read_popup(ctx, SANDBOX_EXTENSION_ID)
            assert popup["status"] == "Logged out"
            agent_signin.dashboard_login(ctx, login_config(server))
            popup = agent_popup.read_popup(ctx, SANDBOX_EXTENSION_ID, wait_for_status=True)
            assert popup["status"] == "Unsupported"
            assert popup["banned_reason"] == "Data center IP is not supported"
            assert popup["points_today"] == 0
        finally:
            ctx.close()
