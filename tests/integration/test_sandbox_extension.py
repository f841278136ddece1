"""The sandbox extension in a real Chromium: served as a CRX, logged in through the dashboard page,
heartbeating, and showing its status in the popup."""

from __future__ import annotations

import io
import os
import shutil
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gradientlab.sandbox import SANDBOX_EXTENSION_ID, SandboxConfig, SandboxServer
from gradientlab.sandbox.network import SandboxAccount

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


def test_login_heartbeat_and_popup(server: SandboxServer, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    ext_dir = unpack_served_crx(server.crx_url(), tmp_path / "extension")
    assert (ext_dir / "manifest.json").is_file()

    # A dashboard whose extension id matches nothing installed: the page must say so.
    stranger = SandboxServer(server.config, extension_id="a" * 32)
    stranger.start()
    try:
        with sync_playwright() as p:
            ctx = p.chromium.launch_persistent_context(
                str(tmp_path / "profile"),
                executable_path=CHROMIUM,
                headless=False,  # "--headless=new" is in the args; extensions need it
                args=chromium_args(ext_dir),
            )
            try:
                worker = (
                    ctx.service_workers[0]
                    if ctx.service_workers
                    else ctx.wait_for_event("serviceworker", timeout=20_000)
                )
                assert worker.url.startswith(f"chrome-extension://{SANDBOX_EXTENSION_ID}/")

                page = ctx.new_page()
                page.goto(f"{stranger.url}/dashboard/login")
                page.fill("input[name=email]", EMAIL)
                page.fill("input[name=password]", PASSWORD)
                page.click("button[type=submit]")
                status = page.locator("#login-status")
                expect(status).to_have_attribute("data-state", "error", timeout=10_000)
                expect(status).to_contain_text("extension not reachable")

                page.goto(server.dashboard_login_url)
                page.fill("input[name=email]", EMAIL)
                page.fill("input[name=password]", "wrong")
                page.click("button[type=submit]")
                expect(status).to_have_attribute("data-state", "error", timeout=10_000)
                expect(status).to_contain_text("INVALID_PASSWORD")

                page.fill("input[name=password]", PASSWORD)
                page.click("button[type=submit]")
                page.wait_for_selector("#login-status[data-state=ok]", timeout=10_000)
                expect(status).to_have_text("Logged in")
                page.close()

                popup = ctx.new_page()
                popup.goto(f"chrome-extension://{SANDBOX_EXTENSION_ID}/popup.html")
                expect(popup.locator("#first-run")).to_be_visible()
                popup.get_by_role("button", name="I got it").click()
                expect(popup.locator("#first-run")).to_be_hidden()
                popup.wait_for_selector('body[data-ready="1"]', timeout=15_000)
                expect(popup.locator("#status")).to_have_text("Good", timeout=15_000)
                clientid = (popup.text_content("#node-id") or "").strip()
                assert len(clientid) >= 16
                expect(popup.locator("#ip")).to_have_text("127.0.0.1")
                expect(popup.locator("#version")).to_have_text("0.1.0")
                expect(popup.locator("#banned-reason")).to_have_text("")
                expect(popup.locator("#error")).to_have_text("")
                for field in ("#taps-today", "#uptime-today", "#points-today"):
                    assert (popup.text_content(field) or "").strip().isdigit(), field

                # The first-run dialog stays dismissed on the next open.
                popup.reload()
                popup.wait_for_selector('body[data-ready="1"]', timeout=15_000)
                expect(popup.locator("#first-run")).to_be_hidden()
                expect(popup.locator("#status")).to_have_text("Good", timeout=15_000)
                popup.close()
            finally:
                ctx.close()
    finally:
        stranger.stop()

    rows = api_list(server)
    row = next(r for r in rows if r["name"] == clientid)
    assert row["connect"] is True and row["banned"] is False
    node = next(n for n in server.network.state()["nodes"] if n["clientid"] == clientid)
    assert node["version"] == "0.1.0"


def test_popup_logged_out_then_unsupported_on_datacenter_ip(tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    cfg = SandboxConfig(
        accounts=[SandboxAccount(email=EMAIL, password=PASSWORD)],
        api_key=KEY,
        datacenter_ranges=["127.0.0.1/32"],  # the browser's address counts as a data centre
        extension_heartbeat_seconds=2,
    )
    with SandboxServer(cfg) as server, sync_playwright() as p:
        ext_dir = unpack_served_crx(server.crx_url(), tmp_path / "extension")
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=CHROMIUM,
            headless=False,
            args=chromium_args(ext_dir),
        )
        try:
            popup = ctx.new_page()
            popup.goto(f"chrome-extension://{SANDBOX_EXTENSION_ID}/popup.html")
            popup.wait_for_selector('body[data-ready="1"]', timeout=15_000)
            expect(popup.locator("#status")).to_have_text("Logged out")
            expect(popup.locator("#first-run")).to_be_visible()

            page = ctx.new_page()
            page.goto(server.dashboard_login_url)
            page.fill("input[name=email]", EMAIL)
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_selector("#login-status[data-state=ok]", timeout=10_000)

            popup.reload()
            expect(popup.locator("#status")).to_have_text("Unsupported", timeout=15_000)
            expect(popup.locator("#banned-reason")).to_have_text("Data center IP is not supported")
            expect(popup.locator("#points-today")).to_have_text("0")
        finally:
            ctx.close()
