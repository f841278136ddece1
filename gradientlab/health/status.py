"""The status vocabulary: every verdict a health check can reach, and every recovery rung.

One place for the words: the CLI, the app, the alerts and the decisions all read them here."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Verdict(StrEnum):
    GOOD = "Good"
    STARTING = "Starting"  # the runner has not read this browser's popup yet
    # the host
    UNREACHABLE = "Unreachable"  # no TCP, no SSH banner, or the probe hung
    PROVISIONING = "Provisioning"  # cloud-init still running, nothing deployed yet
    NOT_DEPLOYED = "NotDeployed"  # the host answers, the node is not installed
    DISK_FULL = "DiskFull"
    MEMORY_LOW = "MemoryLow"
    PROBE_INVALID = "ProbeInvalid"  # the probe answered something that is not a report
    # the control plane's own side: nothing about the host
    KEEPER_FAILED = "KeeperFailed"  # the connection keeper failed or stopped answering
    NOT_CHECKED = "NotChecked"  # the sweep's deadline passed before this host was checked
    # access: GradientLab must not "fix" these by itself
    AUTH_REFUSED = "AuthRefused"
    HOST_KEY_CHANGED = "HostKeyChanged"
    HOST_KEY_INVALID = "HostKeyInvalid"
    # the node on the host
    RUNNER_DOWN = "RunnerDown"
    RUNNER_CRASH_LOOP = "RunnerCrashLoop"
    BROWSER_DOWN = "BrowserDown"
    BROWSER_HUNG = "BrowserHung"  # alive, but the runner has not read its popup for too long
    LOGGED_OUT = "LoggedOut"
    PAGE_CHANGED = "PageChanged"  # the popup or dashboard no longer looks as pages.py says
    DISCONNECTED = "Disconnected"
    # the network's own verdicts: recorded faithfully, never "recovered"
    UNSUPPORTED = "Unsupported"
    SUSPENDED = "Suspended"


class Rung(StrEnum):
    """The recovery ladder, lightest first."""

    RESTART_BROWSER = "restart_browser"
    LOGIN = "login"
    RESTART_RUNNER = "restart_runner"
    DEPLOY = "deploy"
    REBOOT_HOST = "reboot_host"
    REPROVISION = "reprovision"


# rungs that touch the host itself: they need the fault confirmed and count against the brake
HOST_RUNGS = frozenset({Rung.REBOOT_HOST, Rung.REPROVISION})


class Kind(StrEnum):
    """What kind of trouble a verdict is: who can fix it."""

    OK = "ok"
    NODE = "node"  # the runner, the browser or the session: GradientLab's ladder fixes these
    HOST = "host"  # the machine: a reboot may help, a person may have to
    ACCESS = "access"  # SSH refuses us: a person fixes keys or firewall rules
    SECURITY = "security"  # the host key changed: a person verifies it out of band
    NETWORK = "network"  # the Gradient network says so: recorded, never recovered
    EXTENSION = "extension"  # Gradient changed a page the runner reads: a person updates it
    CONTROL = "control"  # GradientLab's own side (its keeper, its sweep): never the host's


@dataclass(frozen=True)
class About:
    kind: Kind
    meaning: str  # one line a person understands
    ladder: tuple[Rung, ...]  # what GradientLab tries, in order; () = nothing it can do


R = Rung
ABOUT: dict[Verdict, About] = {
    Verdict.GOOD: About(Kind.OK, "the node is connected and earning", ()),
    Verdict.STARTING: About(Kind.OK, "the browser has just started; its state is not read yet", ()),
    Verdict.UNREACHABLE: About(
        Kind.HOST,
        "the host does not answer over SSH (down, hung, or its network is)",
        (R.REBOOT_HOST, R.REPROVISION),
    ),
    Verdict.PROVISIONING: About(
        Kind.HOST, "the host is still provisioning (cloud-init running); deploy comes after", ()
    ),
    Verdict.NOT_DEPLOYED: About(
        Kind.HOST, "the host answers but the node is not installed", (R.DEPLOY,)
    ),
    Verdict.DISK_FULL: About(
        Kind.HOST, "the disk where the node lives is full; free space on the host", ()
    ),
    Verdict.MEMORY_LOW: About(
        Kind.HOST,
        "the host is out of memory",
        (R.RESTART_BROWSER, R.REBOOT_HOST),
    ),
    Verdict.PROBE_INVALID: About(
        Kind.HOST, "the health probe's answer could not be read; the install may be damaged", ()
    ),
    Verdict.KEEPER_FAILED: About(
        Kind.CONTROL,
        "GradientLab's connection keeper failed or stopped answering on this worker; nothing is "
        "known about the host (see the keeper's log, restart it)",
        (),
    ),
    Verdict.NOT_CHECKED: About(
        Kind.CONTROL,
        "the sweep's deadline passed before this host was checked; nothing is known about it "
        "from this sweep",
        (),
    ),
    Verdict.AUTH_REFUSED: About(
        Kind.ACCESS,
        "SSH refuses GradientLab's key: check the user's authorized_keys and that SSH is "
        "allowed from the operator's address range (operator_cidr)",
        (),
    ),
    Verdict.HOST_KEY_CHANGED: About(
        Kind.SECURITY,
        "the host offered a different SSH host key than the pinned one; GradientLab will not "
        "connect until a person verifies it",
        (),
    ),
    Verdict.HOST_KEY_INVALID: About(
        Kind.ACCESS,
        "no usable SSH host key is pinned for this host; run `gradientlab hosts trust`",
        (),
    ),
    Verdict.RUNNER_DOWN: About(
        Kind.NODE, "the node runner is not running", (R.RESTART_RUNNER, R.REBOOT_HOST)
    ),
    Verdict.RUNNER_CRASH_LOOP: About(
        Kind.NODE, "the node runner keeps crashing right after it starts; see its last error", ()
    ),
    Verdict.BROWSER_DOWN: About(
        Kind.NODE,
        "the browser is not running",
        (R.RESTART_BROWSER, R.RESTART_RUNNER, R.REBOOT_HOST),
    ),
    Verdict.BROWSER_HUNG: About(
        Kind.NODE,
        "the browser runs but does not answer the runner",
        (R.RESTART_BROWSER, R.RESTART_RUNNER, R.REBOOT_HOST),
    ),
    Verdict.PAGE_CHANGED: About(
        Kind.EXTENSION,
        "the extension's page changed: the runner cannot read the node's state from it; "
        "update gradientlab/agent/pages.py (a restart or reboot would not help)",
        (),
    ),
    Verdict.LOGGED_OUT: About(
        Kind.NODE,
        "the extension is logged out",
        (R.LOGIN, R.RESTART_BROWSER, R.RESTART_RUNNER),
    ),
    Verdict.DISCONNECTED: About(
        Kind.NODE,
        "the extension runs but the network shows the node Disconnected",
        (R.RESTART_BROWSER, R.LOGIN, R.RESTART_RUNNER, R.REBOOT_HOST),
    ),
    Verdict.UNSUPPORTED: About(
        Kind.NETWORK,
        "the network marks this node Unsupported (data-centre, proxy, IPv6 or risky address); "
        "it earns nothing there",
        (),
    ),
    Verdict.SUSPENDED: About(Kind.NETWORK, "the network has suspended this node", ()),
}

HEALTHY = frozenset({Verdict.GOOD, Verdict.STARTING})
NETWORK_VERDICTS = frozenset({Verdict.UNSUPPORTED, Verdict.SUSPENDED})
# verdicts about GradientLab's own side: recorded, never a host incident
CONTROL_VERDICTS = frozenset({Verdict.KEEPER_FAILED, Verdict.NOT_CHECKED})


def about(verdict: Verdict | str) -> About:
    return ABOUT[Verdict(verdict)]
