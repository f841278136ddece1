"""Everything the runner relies on in Gradient's own pages, in one place.

Facts about the real pages (read from the published extension bundle v1.0.16 and from public
login scripts), never from the sandbox: when Gradient changes a page, this file changes and
nothing else. The sandbox imitates these shapes; it must not add anything the runner reads.

- The dashboard (`network.dashboard_url`, https://app.gradient.network/) shows a sign-in form:
  an email field with the placeholder "Enter Email", a password field with "Enter Password";
  Enter in the password field submits. A signed-in browser is sent to /dashboard and stays
  there; a signed-out one that opens /dashboard is sent back to the form. Signing in hands the
  session to the extension (an external message `action: "login"`).
- The extension's popup (`chrome-extension://<id>/popup.html`), when signed in, asks the API
  `GET <api>/sentrynode/get/<clientid>` (envelope `{code, msg, data}`; data carries `active`,
  `connect`, `banned`, `bannedReason`, `ip`, `today`, ...) and `POST <api>/sentrynode/stats/
  <clientid>` (items `id` = UTC day YYYYMMDD, `duration` = uptime, `latency` = taps). Its
  badge reads Excellent, Good, Disconnected or Unsupported. Signed out, it shows a "Log in"
  button and asks nothing. The first run shows a dialog closed with "I got it".
- Seen with the real extension (v1.0.16) in Chromium: the popup is a React page that first
  renders its signed-out face ("Log in", "Sign up", "Learn More") under a loading screen, asks
  the API (`/user/profile`, `/point/stats`, `/sentrynode/stats|latency/list|get/<clientid>`,
  the banner and announcement lists) and its service worker (the MQTT state) when signed in,
  and only then shows the signed-in page, the badge and the "I got it" dialog (a <button>). Its
  "Log in" is a styled <div>, not a button. The badge is the MQTT connection's state (Good or
  Disconnected), Unsupported with the reason when the API says `banned`.
"""

from __future__ import annotations

import re

# ---- the dashboard
EMAIL_PLACEHOLDER = "Enter Email"
PASSWORD_PLACEHOLDER = "Enter Password"
SIGNED_IN_PATH = re.compile(r"/dashboard(?:[/?#]|$)")  # where a signed-in browser lands


# ---- the extension's popup
class PopupState:
    """What the popup says of the node: its badge's words, and Logged out when it shows the
    sign-in button. Declared once here (the host side reads them); the control plane's health
    records, rollups, reads and report use these. Plain strings: the JSON the runner writes and
    the database store them as they are."""

    EXCELLENT = "Excellent"
    GOOD = "Good"
    DISCONNECTED = "Disconnected"
    UNSUPPORTED = "Unsupported"
    LOGGED_OUT = "Logged out"


# the states in which the node is online and earning (the badge says Excellent or Good)
GOOD_STATES = (PopupState.GOOD, PopupState.EXCELLENT)
# the states after which the runner stops re-reading the popup every few seconds
SETTLED_STATES = (*GOOD_STATES, PopupState.UNSUPPORTED, PopupState.LOGGED_OUT)

POPUP_PAGE = "popup.html"
FIRST_RUN_BUTTON = "I got it"
LOGIN_BUTTON = "Log in"  # the text of the sign-in control, shown when it holds no session
# a signed-in popup asks one of these within moments of opening; a signed-out one never does
SIGNED_IN_API = re.compile(r"/(?:sentrynode/|user/profile)")
LOGGED_OUT_GRACE_SECONDS = 3.0
BADGE_TEXTS = (
    PopupState.EXCELLENT,
    PopupState.GOOD,
    PopupState.DISCONNECTED,
    PopupState.UNSUPPORTED,
)
BADGE = re.compile(rf"^\s*({'|'.join(BADGE_TEXTS)})\s*$")
NODE_API = re.compile(r"/sentrynode/get/(?P<clientid>[^/?#]+)")
STATS_API = re.compile(r"/sentrynode/stats/(?P<clientid>[^/?#]+)")

# What a person reads when a page no longer looks like this file says.
POPUP_SHAPE = (
    f"`GET …/sentrynode/get/<id>` answer, status badge ({' / '.join(BADGE_TEXTS)}) "
    f"or {LOGIN_BUTTON!r} button"
)


def status_of(node: dict[str, object] | None, badge: str | None) -> str | None:
    """The node's state from the popup's own `sentrynode/get` answer, else from its badge.

    The answer wins: `banned` is Unsupported whatever the badge says, `connect` says Good
    (Excellent when the badge says so) or Disconnected. Without an answer, or without `connect`
    in it, the badge is read as the extension shows it."""
    if node is not None:
        if node.get("banned") is True:
            return PopupState.UNSUPPORTED
        connect = node.get("connect")
        if isinstance(connect, bool):
            if not connect:
                return PopupState.DISCONNECTED
            return PopupState.EXCELLENT if badge == PopupState.EXCELLENT else PopupState.GOOD
    return badge


class PageChanged(RuntimeError):
    """A Gradient page no longer has what `pages.py` says it has: the extension or the dashboard
    changed. Not a fault a restart fixes; a person updates pages.py."""

    def __init__(self, page: str, missing: str) -> None:
        super().__init__(f"the {page} changed: no {missing} found")
        self.page = page
        self.missing = missing
