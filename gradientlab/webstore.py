"""The Chrome Web Store's update service: which version of the Sentry Node it publishes now.

The same service deploy downloads the extension from (`network.extension_source`, a
`.../service/update2/crx?response=redirect&...` URL) answers an update check, the request
Chromium itself sends, with an update manifest (`<gupdate><app appid=...><updatecheck
version=... status="ok"/>`). Asked with version 0.0.0.0, it always names the current one."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, urlencode, urlsplit, urlunsplit
from xml.etree import ElementTree

import httpx

from gradientlab.config import NetworkSettings

# Only filters releases by their minimum_chrome_version; a current Chromium major serves all.
PRODVERSION = "146.0.0.0"
MAX_ANSWER_BYTES = 64 * 1024
_NS = "{http://www.google.com/update2/response}"


class UpdateCheckFailed(RuntimeError):
    """The update service did not say which version it publishes (the message says why)."""


@dataclass(frozen=True)
class Published:
    extension_id: str
    version: str
    codebase: str | None = None


def version_key(version: str) -> tuple[int, ...]:
    """ "1.0.16" -> (1, 0, 16, 0): Chrome extension versions are one to four integers."""
    if not re.fullmatch(r"\d+(\.\d+){0,3}", version.strip()):
        raise ValueError(f"{version!r} is not an extension version (1 to 4 integers: 1.0.16)")
    parts = [int(p) for p in version.strip().split(".")]
    return tuple(parts + [0] * (4 - len(parts)))


def is_behind(installed: str | None, published: str) -> bool:
    """True when `installed` is older than `published` (or unknown)."""
    if not installed:
        return True
    return version_key(installed) < version_key(published)


def update_check_url(network: NetworkSettings, prodversion: str = PRODVERSION) -> str:
    """The update check for the fleet's extension id, on the service extension_source names."""
    parts = urlsplit(network.extension_source)
    x = f"id={network.extension_id}&v=0.0.0.0&uc"
    query = urlencode({"prodversion": prodversion, "acceptformat": "crx3", "x": x}, quote_via=quote)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def parse_update_manifest(text: str, extension_id: str, where: str = "") -> Published:
    """The version an update manifest publishes for `extension_id`."""
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as exc:
        raise UpdateCheckFailed(f"{where}: not an update manifest ({exc})") from None
    for app in root.iter(f"{_NS}app"):
        if app.get("appid") != extension_id:
            continue
        check = app.find(f"{_NS}updatecheck")
        if check is None:
            raise UpdateCheckFailed(f"{where}: no updatecheck for {extension_id}")
        status = check.get("status", "")
        version = check.get("version")
        if status != "ok" or not version:
            raise UpdateCheckFailed(
                f"{where}: the service answers status {status!r} for {extension_id}"
                + (f" (app status {app.get('status')!r})" if app.get("status") != "ok" else "")
            )
        version_key(version)  # a version we can compare, or ValueError naming it
        return Published(extension_id, version, check.get("codebase"))
    raise UpdateCheckFailed(f"{where}: the answer does not mention {extension_id}")


def published_version(network: NetworkSettings, timeout: float = 20) -> Published:
    """Ask the update service which version of the fleet's extension it publishes now."""
    url = update_check_url(network)
    where = f"the update service at {urlsplit(url).netloc}"
    try:
        with httpx.Client(timeout=timeout, follow_redirects=True) as client:
            response = client.get(url)
    except httpx.HTTPError as exc:
        raise UpdateCheckFailed(f"{where} did not answer: {type(exc).__name__}: {exc}") from None
    if response.status_code != 200:
        raise UpdateCheckFailed(f"{where} answered HTTP {response.status_code}")
    if len(response.content) > MAX_ANSWER_BYTES:
        raise UpdateCheckFailed(f"{where} answered {len(response.content)} bytes, not a manifest")
    return parse_update_manifest(response.text, network.extension_id, where)
