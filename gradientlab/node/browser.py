"""Which Chromium a host runs: a fact read from each host, never one setting for the fleet.

Debian's `chromium` is a real package and GradientLab's first choice. Ubuntu's `chromium` is a
snap: there is no `/usr/bin/chromium`, and a snap cannot read the hidden folders in a home
directory where the extension and profile live. Hosts without a real Chromium package (Ubuntu
and its derivatives, Oracle Linux on OCI, many SSH hosts) get Playwright's Chromium build,
installed for GradientLab's own user (`python -m playwright install chromium`); its system
libraries come from the first-boot script on clouds (`playwright install-deps`, as root) or from
the operator on an SSH host.

Facts are typed: one command (`BROWSER_FACTS_SH`), a parser (`parse_browser_facts`) returning a
dataclass, and a pure decision (`choose_browser`) that unit tests check per OS."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from typing import Literal

DEBIAN_CHROMIUM = "/usr/bin/chromium"

# One shell command: the OS, whether the Debian package's binary is there and real, and where a
# snap would be. JSON lines after the os-release text, so nothing in it needs escaping by hand.
BROWSER_FACTS_SH = r"""
cat /etc/os-release 2>/dev/null
echo '--- gradientlab'
for p in /usr/bin/chromium /usr/bin/chromium-browser /snap/bin/chromium; do
  if [ -e "$p" ]; then
    r=$(readlink -f "$p" 2>/dev/null || echo "$p")
    snap=false
    case "$p" in /snap/*) snap=true ;; esac
    case "$r" in /snap/*|*/bin/snap) snap=true ;; esac
    if [ "$snap" = false ] && [ -f "$r" ] && grep -qs 'snap' "$r" 2>/dev/null \
       && [ "$(head -c 2 "$r")" = '#!' ]; then snap=true; fi
    printf '{"path": "%s", "resolved": "%s", "snap": %s}\n' "$p" "$r" "$snap"
  fi
done
"""

Source = Literal["configured", "package", "playwright"]


@dataclass(frozen=True)
class HostOs:
    """`/etc/os-release`, the fields that decide the browser."""

    id: str = ""
    id_like: tuple[str, ...] = ()
    version_id: str = ""
    pretty_name: str = ""

    @property
    def family(self) -> str:
        """ "debian" (a real chromium package), "ubuntu" (chromium is a snap) or "other"."""
        if self.id == "ubuntu" or "ubuntu" in self.id_like:
            return "ubuntu"
        if self.id == "debian" or "debian" in self.id_like:
            return "debian"
        return "other"

    @property
    def name(self) -> str:
        return self.pretty_name or self.id or "an unknown OS"


@dataclass(frozen=True)
class Candidate:
    path: str
    resolved: str
    snap: bool


@dataclass(frozen=True)
class BrowserFacts:
    os: HostOs
    candidates: tuple[Candidate, ...] = field(default_factory=tuple)

    def real(self, path: str) -> Candidate | None:
        """The candidate at `path` when it is a real binary, not a snap or its wrapper."""
        for c in self.candidates:
            if c.path == path and not c.snap:
                return c
        return None


@dataclass(frozen=True)
class BrowserChoice:
    source: Source
    path: str | None  # None for Playwright's build until it is installed and asked
    why: str


class NoUsableBrowser(ValueError):
    """The host cannot run the node's browser as configured; the message says what to do."""


def parse_os_release(text: str) -> HostOs:
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        try:
            parts = shlex.split(raw)
        except ValueError:
            parts = [raw.strip("\"'")]
        values[key.strip()] = parts[0] if parts else ""
    return HostOs(
        id=values.get("ID", "").lower(),
        id_like=tuple(values.get("ID_LIKE", "").lower().split()),
        version_id=values.get("VERSION_ID", ""),
        pretty_name=values.get("PRETTY_NAME", ""),
    )


def parse_browser_facts(text: str) -> BrowserFacts:
    os_text, _, rest = text.partition("--- gradientlab")
    candidates = []
    for line in rest.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            item = json.loads(line)
            candidates.append(
                Candidate(str(item["path"]), str(item["resolved"]), bool(item["snap"]))
            )
        except (ValueError, KeyError, TypeError):
            continue  # a path with a quote in it: not one of ours
    return BrowserFacts(parse_os_release(os_text), tuple(candidates))


def choose_browser(facts: BrowserFacts, configured: str | None) -> BrowserChoice:
    """The Chromium this host's node runs. Raises NoUsableBrowser with what to do."""
    if configured:
        snap = next((c for c in facts.candidates if c.path == configured and c.snap), None)
        if snap is not None:
            raise NoUsableBrowser(
                f"runner.chromium is {configured}, a snap ({snap.resolved}) on {facts.os.name}: "
                "a snap cannot read the node's folders; remove the setting so that deploy "
                "installs Playwright's Chromium, or point it at a real Chromium binary"
            )
        return BrowserChoice("configured", configured, "runner.chromium in the fleet file")
    if facts.real(DEBIAN_CHROMIUM):
        return BrowserChoice("package", DEBIAN_CHROMIUM, f"the chromium package on {facts.os.name}")
    if facts.os.family == "debian":
        raise NoUsableBrowser(
            f"{facts.os.name} has no {DEBIAN_CHROMIUM}: install Debian's chromium as root "
            "(`apt-get install -y chromium`; the cloud bootstrap does it)"
        )
    why = (
        f"{facts.os.name}: chromium is a snap there"
        if facts.os.family == "ubuntu"
        else f"{facts.os.name} has no real chromium package"
    )
    return BrowserChoice("playwright", None, f"Playwright's Chromium ({why})")


def playwright_path_command(python: str) -> str:
    """Prints where Playwright keeps its Chromium build for the current user (installed or not)."""
    return (
        f"{shlex.quote(python)} -c 'from playwright.sync_api import sync_playwright as s\n"
        "with s() as p: print(p.chromium.executable_path)'"
    )


def playwright_install_command(python: str) -> str:
    """Installs Playwright's Chromium for the current user, no root (idempotent)."""
    return f"{shlex.quote(python)} -m playwright install chromium"
