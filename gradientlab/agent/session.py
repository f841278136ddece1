"""Attached work: attach Playwright to the running browser, sign in when needed, read the
popup, detach (a driver left attached costs about 120 MiB)."""

from __future__ import annotations

import contextlib
from typing import Any

from .devtools import devtools_endpoint
from .home import Paths
from .pages import PageChanged, PopupState
from .popup import read_popup
from .signin import dashboard_login, find_extension_id

# ---------------------------------------------------------------- attached work (Playwright)


class LoginFailed(RuntimeError):
    """The popup read Logged out and the sign-in that followed failed: the node's state is
    Logged out (`popup`), and the error says why the sign-in did not work."""

    def __init__(self, popup: dict[str, Any], detail: str) -> None:
        super().__init__(detail)
        self.popup = popup


def attach(paths: Paths, config: dict[str, Any], login: str = "if-needed") -> dict[str, Any]:
    """Attach to the running browser, log in when needed, read the popup, detach.

    login: "if-needed" logs in when the popup says Logged out; "always" logs in first."""
    from playwright.sync_api import sync_playwright

    endpoint = devtools_endpoint(paths)
    if endpoint is None:
        raise RuntimeError("the browser is not running (no DevTools socket)")
    result: dict[str, Any] = {"logged_in_now": False}
    with sync_playwright() as pw:
        browser = pw.chromium.connect_over_cdp(endpoint, timeout=15000)
        try:
            context = browser.contexts[0]
            ext_id = find_extension_id(context, config)
            result["extension_id"] = ext_id
            if login == "always":
                dashboard_login(context, config)
                result["logged_in_now"] = True
            popup = read_popup(context, ext_id)
            if popup.get("status") == PopupState.LOGGED_OUT and login == "if-needed":
                try:
                    dashboard_login(context, config)
                except PageChanged:
                    raise
                except Exception as exc:  # noqa: BLE001 - the node is logged out: say so
                    raise LoginFailed(popup, str(exc)) from exc
                result["logged_in_now"] = True
                popup = read_popup(context, ext_id, wait_for_status=True)
            result["popup"] = popup
            # an open page costs ~40 MiB: leave only the extension's own worker running
            for page in context.pages:
                if page.url in ("about:blank", ""):
                    with contextlib.suppress(Exception):
                        page.close()
        finally:
            browser.close()  # this detaches; Chromium keeps running
    return result
