"""`gradientlab doctor`: before anything is provisioned, does the account work, does a host?

Every check reads and changes nothing: the fleet file; the account's sign-in (Firebase REST) and
an API read; each cloud's credentials (a read-only list call); the Web Store's update service
for the extension id; the STUN server from here; and for one host (`--host`): SSH with the
pinned key, its Chromium (a real package, not a snap) and its node's status as the network
reports it. Each result says in words what to fix."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from gradientlab.config import Fleet, FleetFileError, load_fleet

Status = Literal["ok", "warn", "fail", "skip"]
MARK = {"ok": "ok  ", "warn": "warn", "fail": "FAIL", "skip": "skip"}


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"[{MARK[self.status]}] {self.name}: {self.detail}"
        return text + (f"\n         fix: {self.fix}" if self.fix else "")


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:400]


def run_checks(
    fleet_path: str,
    host: str | None = None,
    read_block: Callable[[str], str] | None = None,
    credentials: Callable[[str, str], Any] | None = None,
    engine: Any = None,
) -> Iterator[Check]:
    """The checks in order, each as soon as it is done (a slow one does not hide the rest)."""
    try:
        fleet = load_fleet(fleet_path)
    except (FleetFileError, OSError) as exc:
        yield Check(
            "fleet file", "fail", str(exc), "correct the fleet file (see fleet.example.yaml)"
        )
        return
    yield Check(
        "fleet file",
        "ok",
        f"{fleet_path}: {len(fleet.hosts)} hosts, providers {', '.join(fleet.providers) or '-'}",
    )
    client = None
    for check, made in _account(fleet, read_block):
        client = made or client
        yield check
    yield from _clouds(fleet, credentials)
    yield _web_store(fleet)
    yield _stun(fleet)
    if host is not None:
        yield from _host(fleet, host, client, engine)
    if client is not None:
        client.close()


def _account(fleet: Fleet, read_block: Callable[[str], str] | None) -> Iterator[tuple[Check, Any]]:
    from gradientlab.gradient.errors import GradientError
    from gradientlab.inventory import gradient_client

    email = fleet.account.email
    try:
        client = gradient_client(fleet, read_block)
        profile = client.profile()
    except FleetFileError as exc:
        yield (
            Check("account sign-in", "fail", str(exc), "set the secret the fleet file names"),
            None,
        )
        return
    except GradientError as exc:
        text = str(exc)
        fix = (
            "check account.email and the password the fleet file points at"
            if any(w in text.upper() for w in ("PASSWORD", "EMAIL", "USER", "AUTH", "401", "403"))
            else f"check network.api_base ({fleet.network.api_base}) and network.identity_base"
        )
        yield Check("account sign-in", "fail", f"{email}: {text}", fix), None
        return
    except Exception as exc:  # noqa: BLE001 - any other failure is said as it is
        yield Check("account sign-in", "fail", f"{email}: {_error(exc)}", "see the error"), None
        return
    yield (
        Check(
            "account sign-in",
            "ok",
            f"{email} signed in (Firebase) and read its profile: {profile.name!r}, "
            f"{profile.sentry_active} active Sentry Nodes",
        ),
        client,
    )


def _clouds(fleet: Fleet, credentials: Callable[[str, str], Any] | None) -> Iterator[Check]:
    from gradientlab.inventory import provider_for

    for name, spec in fleet.providers.items():
        kind = getattr(spec, "kind", name)
        if kind not in ("oci", "gcp", "azure"):
            continue
        try:
            hosts = provider_for(fleet, name, credentials).list()
        except Exception as exc:  # noqa: BLE001 - the cloud's own words say what is wrong
            block = getattr(spec, "credentials_block", "?")
            yield Check(
                f"cloud {name} ({kind})",
                "fail",
                _error(exc),
                f"check the credentials in the Prefect block {block!r} and that they may list "
                "instances in the configured project/compartment/subscription",
            )
            continue
        yield Check(
            f"cloud {name} ({kind})",
            "ok",
            f"credentials work (a read-only list: {len(hosts)} GradientLab hosts there now)",
        )


def _web_store(fleet: Fleet) -> Check:
    from gradientlab.webstore import UpdateCheckFailed, published_version

    try:
        published = published_version(fleet.network)
    except (UpdateCheckFailed, ValueError) as exc:
        return Check(
            "extension source",
            "fail",
            str(exc),
            "hosts download the extension from network.extension_source; check it and that "
            "the extension id is right",
        )
    return Check(
        "extension source",
        "ok",
        f"the update service publishes {fleet.network.extension_id} version {published.version}",
    )


def _stun(fleet: Fleet) -> Check:
    from gradientlab.agent.stun import run_test

    server = fleet.network.stun_server
    result = run_test(server)
    if not result.udp_reachable:
        return Check(
            "STUN server",
            "fail",
            f"{server}: {result.error or 'no answer over UDP'} (from this machine)",
            "taps are peer-to-peer over UDP: check network.stun_server and that outgoing UDP "
            "is allowed; each host is tested by poc_taps too",
        )
    return Check(
        "STUN server",
        "ok",
        f"{server} answers over UDP from here: mapped to {result.mapped_address}:"
        f"{result.mapped_port}, NAT type {result.nat_type or 'unknown'}",
    )


def _host_runtime(name: str, ex: Any, python: str | None) -> Iterator[Check]:
    """What deploy needs of the host itself: a python3 that makes the runner's venv (unless one
    with Playwright is there already) and, under systemd, lingering for the node's user."""
    from gradientlab.node.deploy import (
        VENV_PYTHON,
        has_systemd,
        linger_enabled,
        linger_problem,
        python_has_playwright,
        read_host_python,
    )
    from gradientlab.remote.executor import RemoteError

    try:
        ready = [p for p in (python, VENV_PYTHON) if p and python_has_playwright(ex, p)]
        host_python = read_host_python(ex)
        if ready:
            yield Check(f"host {name} Python", "ok", f"the runner's Python: {ready[0]}")
        elif host_python.problem:
            yield Check(f"host {name} Python", "fail", host_python.problem, "see above")
        else:
            found = ".".join(map(str, host_python.version or ()))
            yield Check(
                f"host {name} Python", "ok", f"python3 {found} with venv: deploy makes the venv"
            )
        if has_systemd(ex):
            if linger_enabled(ex):
                yield Check(f"host {name} systemd", "ok", "user units, lingering on")
            else:
                user = ex.run("id -un", timeout=30).stdout.strip() or "the node's user"
                yield Check(
                    f"host {name} systemd",
                    "warn",
                    f"lingering is off for {user}: deploy turns it on if {user} may",
                    linger_problem(user),
                )
    except RemoteError as exc:
        yield Check(f"host {name} Python", "fail", str(exc), "see the error")


def _host(fleet: Fleet, name: str, client: Any, engine: Any) -> Iterator[Check]:
    from gradientlab.inventory import executor_for
    from gradientlab.node.browser import (
        BROWSER_FACTS_SH,
        NoUsableBrowser,
        choose_browser,
        parse_browser_facts,
    )
    from gradientlab.remote.executor import HostKeyMismatch, RemoteError, fingerprint
    from gradientlab.store import fleet as fleet_store

    records = {r.name: r for r in fleet_store.host_records(engine)} if engine is not None else {}
    record = records.get(name)
    if record is None:
        if name not in {h.name for h in fleet.hosts}:
            yield Check(
                f"host {name}",
                "fail",
                f"no host named {name!r} in the fleet file",
                "name a host of the fleet file: " + ", ".join(h.name for h in fleet.hosts),
            )
            return
        yield Check(
            f"host {name}",
            "fail",
            "is in the fleet file but not provisioned yet (no address or pinned key recorded)",
            "run the provision flow (plan, then approve) first",
        )
        return
    where = f"{record.ssh_user}@{record.address}:{record.ssh_port}"
    try:
        ex = executor_for(record)
        ex.run("true", timeout=30)
    except HostKeyMismatch as exc:
        yield Check(
            f"host {name} SSH",
            "fail",
            str(exc),
            "verify the new key out of band; then `gradientlab hosts trust` pins it",
        )
        return
    except RemoteError as exc:
        yield Check(f"host {name} SSH", "fail", f"{where}: {exc}", "see the error")
        return
    key = fingerprint(record.host_key) if record.host_key else "?"
    yield Check(f"host {name} SSH", "ok", f"{where} with the pinned host key {key}")
    try:
        facts = parse_browser_facts(ex.run(BROWSER_FACTS_SH, timeout=30).stdout)
        choice = choose_browser(facts, fleet.runner.chromium)
    except NoUsableBrowser as exc:
        yield Check(f"host {name} Chromium", "fail", str(exc), "see above")
    except RemoteError as exc:
        yield Check(f"host {name} Chromium", "fail", str(exc), "see the error")
    else:
        if choice.path is None:
            yield Check(
                f"host {name} Chromium",
                "ok",
                f"{choice.why}: deploy installs it for GradientLab's user",
            )
        else:
            version = ex.run(f"{choice.path} --version 2>&1", timeout=60)
            if version.ok and "Chromium" in version.stdout:
                yield Check(
                    f"host {name} Chromium", "ok", f"{choice.why}: {version.stdout.strip()}"
                )
            else:
                yield Check(
                    f"host {name} Chromium",
                    "fail",
                    f"{choice.path} does not run: {(version.stdout or version.stderr)[-200:]}",
                    "install Debian's chromium as root, or fix runner.chromium",
                )
    yield from _host_runtime(name, ex, record.meta.get("python"))
    client_id = fleet_store.client_ids(engine).get(name) if engine is not None else None
    if client_id is None:
        yield Check(f"host {name} node", "skip", "no node id recorded yet (deploy, then health)")
        return
    if client is None:
        yield Check(f"host {name} node", "skip", "the account could not sign in")
        return
    try:
        info = client.node(client_id)
    except Exception as exc:  # noqa: BLE001 - said as it is
        yield Check(f"host {name} node", "fail", f"{client_id}: {_error(exc)}", "see the error")
        return
    if info is None:
        yield Check(
            f"host {name} node",
            "fail",
            f"the network does not know node {client_id}",
            "redeploy the node; its extension registers it again",
        )
    elif info.banned:
        yield Check(
            f"host {name} node",
            "warn",
            f"{client_id} is Unsupported: {info.banned_reason or 'no reason given'} (ip {info.ip})",
            "Gradient does not support this address (data centre, proxy, IPv6 or risky); the "
            "node earns nothing there",
        )
    else:
        state = "connected" if info.connect else "not connected"
        status: Status = "ok" if info.connect else "warn"
        yield Check(f"host {name} node", status, f"{client_id} is {state} (ip {info.ip})")
