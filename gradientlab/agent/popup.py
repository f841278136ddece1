"""Reading the extension's popup: the API answer it shows, sturdier than its text."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from . import pages
from .pages import GOOD_STATES, PageChanged, PopupState

ANSWERED_STATES = (*GOOD_STATES, PopupState.UNSUPPORTED)


def _envelope_data(response: Any) -> Any:
    """`data` of a `{code, msg, data}` answer with code 200, else None."""
    try:
        body = response.json()
    except Exception:  # noqa: BLE001 - not JSON: not an answer we can read
        return None
    if isinstance(body, dict) and body.get("code") == 200:
        return body.get("data")
    return None


def _refused(response: Any) -> bool:
    """An answer that refuses the caller's session: HTTP 401/403, or an envelope's code 401."""
    if response.status in (401, 403):
        return True
    try:
        body = response.json()
    except Exception:  # noqa: BLE001 - not JSON: not a refusal we can read
        return False
    return isinstance(body, dict) and body.get("code") in (401, 403)


def _today_of(stats: Any) -> dict[str, Any]:
    """Today's item of a `sentrynode/stats` answer: the newest day it lists."""
    days = (
        [d for d in stats if isinstance(d, dict) and d.get("id")] if isinstance(stats, list) else []
    )
    return max(days, key=lambda d: str(d["id"])) if days else {}


def _number(value: Any) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def read_popup(
    context: Any, ext_id: str, wait_for_status: bool = False, timeout: float = 15
) -> dict[str, Any]:
    """Open the popup and read the node's state from the popup's own API answers (a response
    listener on `sentrynode/get` and `sentrynode/stats`), falling back on its badge text.

    Raises PageChanged when none of what pages.py describes shows up."""
    page = context.new_page()
    seen: dict[str, Any] = {}

    def on_response(response: Any) -> None:
        url = response.url
        if pages.SIGNED_IN_API.search(url) and _refused(response):
            # a session the network ended (a password change revokes every one): the popup
            # asked as a signed-in one, was refused, and now shows its "Log in"
            seen["refused"] = True
        for key, pattern in (("node", pages.NODE_API), ("stats", pages.STATS_API)):
            m = pattern.search(url)
            if m:
                data = _envelope_data(response)
                if data is not None:
                    seen[key] = data
                    seen["clientid"] = m.group("clientid")

    def on_request(request: Any) -> None:
        if pages.SIGNED_IN_API.search(request.url):
            seen["asked"] = True

    page.on("request", on_request)
    page.on("response", on_response)
    try:
        deadline = time.monotonic() + (20 if wait_for_status else 0)
        popup = _read_popup_once(page, ext_id, seen, timeout)
        # just after a sign-in the popup may still read signed out or Disconnected for a moment;
        # Good and Unsupported (a ban) are answers that waiting would not change
        while wait_for_status and popup.get("status") not in ANSWERED_STATES:
            if time.monotonic() > deadline:
                break
            time.sleep(1)
            seen.clear()
            seen["dismissed"] = popup.get("first_run_dismissed", False)
            popup = _read_popup_once(page, ext_id, seen, timeout)
        return popup
    finally:
        page.close()


def _read_popup_once(
    page: Any, ext_id: str, seen: dict[str, Any], timeout: float
) -> dict[str, Any]:
    page.goto(f"chrome-extension://{ext_id}/{pages.POPUP_PAGE}", timeout=timeout * 1000)
    button = page.get_by_role("button", name=pages.FIRST_RUN_BUTTON)

    def first_run_shown() -> bool:
        with contextlib.suppress(Exception):
            return bool(button.count() and button.first.is_visible())
        return False

    def dismiss_first_run() -> None:
        # the dialog shows once the popup has its data (the real one's after its API answers)
        if first_run_shown():
            with contextlib.suppress(Exception):
                button.first.click(timeout=2000)
                seen["dismissed"] = True

    badge_text = page.get_by_text(pages.BADGE)
    # the real popup's "Log in" is a styled <div>, and it also shows under the loading screen of
    # a signed-in popup for a moment: Logged out is "Log in" on screen while the popup asks the
    # API nothing of a signed-in user for LOGGED_OUT_GRACE_SECONDS
    login = page.get_by_text(pages.LOGIN_BUTTON, exact=True)
    badge: str | None = None
    logged_out = False
    login_since: float | None = None
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if "node" in seen:
            break
        dismiss_first_run()
        shown = False
        with contextlib.suppress(Exception):
            shown = bool(login.count() and login.first.is_visible())
        now = time.monotonic()
        if shown and (not seen.get("asked") or seen.get("refused")):
            login_since = login_since if login_since is not None else now
            if now - login_since >= pages.LOGGED_OUT_GRACE_SECONDS:
                logged_out = True
                break
        else:
            login_since = None
        page.wait_for_timeout(200)
    # the badge, today's stats and the first-run dialog follow the node's answer in a moment
    settle = time.monotonic() + (3 if "node" in seen else 0)
    while time.monotonic() < settle and ("stats" not in seen or badge is None or first_run_shown()):
        dismiss_first_run()
        badge = _badge(badge_text)
        page.wait_for_timeout(200)
    badge = badge or _badge(badge_text)
    dismissed = bool(seen.get("dismissed"))
    node = seen.get("node") if isinstance(seen.get("node"), dict) else None
    version = None
    with contextlib.suppress(Exception):
        version = page.evaluate("chrome.runtime.getManifest().version")
    popup: dict[str, Any] = {"first_run_dismissed": dismissed, "version": version}
    if logged_out and node is None:
        popup.update(status=PopupState.LOGGED_OUT, source="page")
        return popup
    status = pages.status_of(node, badge)
    if status is None:
        raise PageChanged("extension's popup", pages.POPUP_SHAPE)
    today = _today_of(seen.get("stats"))
    popup.update(
        status=status,
        source="api" if node is not None else "badge",
        badge=badge,
        node_id=seen.get("clientid"),
    )
    if node is not None:
        popup.update(
            ip=node.get("ip") or None,
            banned_reason=(node.get("bannedReason") or None) if node.get("banned") else None,
            points_today=_number(node.get("today")),
            connect=node.get("connect") if isinstance(node.get("connect"), bool) else None,
        )
    if today:
        popup.update(
            taps_today=_number(today.get("latency")), uptime_today=_number(today.get("duration"))
        )
    return popup


def _badge(locator: Any) -> str | None:
    with contextlib.suppress(Exception):
        for text in locator.all_inner_texts():
            m = pages.BADGE.match(text)
            if m:
                return m.group(1)
    return None
