"""The analysis app as a person opens it: `streamlit run` in its own process, each page loaded
in headless Chromium, a figure read off the page. The fleet is seeded around this machine's
clock, as the flows would have written it, and its rollups refreshed."""

from __future__ import annotations

import socket
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from gradientlab.cli import services
from gradientlab.cli.demo import APP_RENDERED
from tests.integration.test_analysis_app import RAW_POINTS, seed_fleet

CHROMIUM = "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def app(engine: Engine, database_url: str) -> Iterator[str]:
    seed_fleet(engine, now=datetime.now(UTC))
    port = free_port()
    logs = Path(tempfile.mkdtemp(prefix="gradientlab-test-app-"))
    service = services.start_streamlit(port, logs, {"DATABASE_URL": database_url})
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        service.stop()


def metric(page: Any, label: str) -> str:
    """The value of the metric labelled `label`, once the page's script has finished."""
    page.wait_for_selector(APP_RENDERED, timeout=120_000)
    box = page.locator('[data-testid="stMetric"]').filter(has_text=label).first
    return str(box.locator('[data-testid="stMetricValue"]').inner_text(timeout=60_000)).strip()


def test_every_page_shows_its_figures_in_a_browser(app: str) -> None:
    from playwright.sync_api import sync_playwright

    ours = sum(RAW_POINTS["node-gcp"]) + sum(RAW_POINTS["node-pi"]) + sum(RAW_POINTS["node-oci"])
    everyone = sum(sum(v) for v in RAW_POINTS.values())
    expected = {
        "": ("Quarantined", "1"),
        "node?node=home-pi": ("Incidents", "1"),
        "rewards": ("Points", f"{everyone / 100_000:,.2f}"),
        "uptime": ("Taps", f"{3 * (12 + 30):,}"),
        "incidents": ("Incidents", "2"),
        "cost": ("Points", f"{ours / 100_000:,.2f}"),
    }
    read: dict[str, str] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM)
        try:
            page = browser.new_page()
            for path, (label, _) in expected.items():
                page.goto(f"{app}/{path}")
                read[path] = metric(page, label)
        finally:
            browser.close()
    assert read == {path: value for path, (_, value) in expected.items()}
