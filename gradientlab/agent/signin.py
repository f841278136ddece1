"""Sign-in through the dashboard page, which hands the session to the extension."""

from __future__ import annotations

import contextlib
import re
import time
from typing import Any

from . import pages
from .pages import PageChanged


def find_extension_id(context: Any, config: dict[str, Any]) -> str:
    """The loaded extension's id, read from its service worker URL."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for worker in context.service_workers:
            m = re.match(r"chrome-extension://([a-p]{32})/", worker.url)
            if m:
                found = m.group(1)
                wanted = config.get("extension_id")
                if wanted and found != wanted:
                    raise RuntimeError(
                        f"the loaded extension has id {found}, not the configured {wanted}: "
                        "the dashboard could not hand it the session"
                    )
                return found
        with contextlib.suppress(Exception):
            context.wait_for_event("serviceworker", timeout=1000)
    raise RuntimeError("the extension's service worker did not start within 10s")


def _origin(url: str) -> str:
    m = re.match(r"^([a-z][a-z0-9+.-]*://[^/?#]+)", url, re.IGNORECASE)
    return m.group(1) if m else url


def forget_dashboard_session(context: Any, url: str) -> None:
    """Sign the dashboard out in this browser (its cookies and storage), so that signing in
    again shows the form and hands a fresh session to the extension."""
    session = context.new_cdp_session(context.pages[0] if context.pages else context.new_page())
    try:
        session.send(
            "Storage.clearDataForOrigin",
            {
                "origin": _origin(url),
                "storageTypes": "cookies,local_storage,indexeddb,service_workers,cache_storage",
            },
        )
    finally:
        with contextlib.suppress(Exception):
            session.detach()


def dashboard_login(context: Any, config: dict[str, Any], timeout: float = 30) -> None:
    """Sign in on the dashboard as a person does: the email and password fields found by their
    placeholders, Enter to submit, then the signed-in page under /dashboard."""
    url = config["dashboard_url"]
    forget_dashboard_session(context, url)
    page = context.new_page()
    try:
        page.goto(url, wait_until="domcontentloaded", timeout=timeout * 1000)
        email = page.get_by_placeholder(pages.EMAIL_PLACEHOLDER, exact=True)
        password = page.get_by_placeholder(pages.PASSWORD_PLACEHOLDER, exact=True)
        try:
            email.wait_for(state="visible", timeout=timeout * 1000)
        except Exception as exc:  # noqa: BLE001 - Playwright's TimeoutError
            raise PageChanged(
                "dashboard's sign-in page",
                f"field with the placeholder {pages.EMAIL_PLACEHOLDER!r}",
            ) from exc
        email.fill(config["email"])
        if password.count() == 0:
            raise PageChanged(
                "dashboard's sign-in page",
                f"field with the placeholder {pages.PASSWORD_PLACEHOLDER!r}",
            )
        password.fill(config["password"])
        password.press("Enter")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pages.SIGNED_IN_PATH.search(page.url):
                return
            page.wait_for_timeout(250)
        alert = ""
        with contextlib.suppress(Exception):
            alert = " ".join(page.get_by_role("alert").all_inner_texts()).strip()
        raise RuntimeError(
            "dashboard login failed: "
            + (alert or f"still on {page.url} {timeout:.0f}s after submitting the form")
        )
    finally:
        page.close()
