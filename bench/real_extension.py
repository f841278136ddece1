"""Figures with Gradient's published extension (v1.0.16) under the runner, against the sandbox
speaking the real protocol (register, MQTT v5 presence through mosquitto, the real names).

    .venv/bin/python -m bench.real_extension footprint [--seconds 90] [--flag-set NAME ...]
    .venv/bin/python -m bench.real_extension online [--minutes 60] [--status-interval 300]
    .venv/bin/python -m bench.real_extension recovery [--repeats 5]

One local sshd host (needs root), provisioned and deployed by the flows (a scratch database and
a Prefect test server) with the real extension from ../shared/fixtures (or
GRADIENTLAB_REAL_EXTENSION; without it a `skipped` line), signed in by the runner through the
sandbox dashboard. Prints one JSON line per figure, with the settings used; asserts none.

- footprint: PSS of everything GradientLab runs on the host (the runner's process tree: the
  runner, Chromium, and the Playwright driver while it reads the popup), read from /proc every
  second once the node is Good and connected, for each flag set (flags added to the runner's own
  through `extra_chromium_flags`). Goal: steady state at most 350 MiB.
- online: the node left alone (the runner attaches only every `--status-interval` s), its MQTT
  connection watched at the broker: disconnections counted (each with mosquitto's reason),
  browser exits and popup states the runner saw. Goal: 0. Ctrl-C/SIGTERM prints what ran so far.
- recovery: `kill -9` of the browser at a random moment of the demo's health schedule, with the
  demo's own runner and health settings (fleet.demo.yaml); the health flow every
  `schedules.health_seconds`. Per kill: the incident's recorded recovery (detected → Good, as
  stored), kill → Good as recorded, kill → the runner's first Good popup read, kill → MQTT
  connected again. Goal: recorded recovery under 15 s."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import signal
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_HOME = Path(tempfile.mkdtemp(prefix="gradientlab-bench-"))
os.chmod(BENCH_HOME, 0o755)
os.environ["GRADIENTLAB_HOME"] = str(BENCH_HOME)
os.environ.setdefault("PREFECT_HOME", str(BENCH_HOME / "prefect"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

PASSWORD_ENV = "BENCH_PASSWORD"
NODE = ".gradientlab/node"
# each figure its own loopback range, so that two of them can run side by side
BASE_ADDRESS = {"footprint": "127.0.6.10", "online": "127.0.6.20", "recovery": "127.0.6.30"}

# Chromium flag sets tried for the footprint, on top of the runner's own (browser.py's
# chromium_flags). None spoofs a fingerprint or hides what the browser is.
FLAG_SETS: dict[str, list[str]] = {
    "runner-defaults": [],
    "v8-optimize-for-size": ["--js-flags=--optimize-for-size"],
    "low-end-device-mode": ["--enable-low-end-device-mode"],
    "no-background-features": [
        "--disable-features=Translate,OptimizationHints,MediaRouter,DialMediaRouteProvider,"
        "AutofillServerCommunication,CertificateTransparencyComponentUpdater,BackForwardCache"
    ],
    "no-gpu": ["--disable-gpu", "--disable-software-rasterizer"],
    "combined": [
        "--js-flags=--optimize-for-size",
        "--enable-low-end-device-mode",
        "--disable-features=Translate,OptimizationHints,MediaRouter,DialMediaRouteProvider,"
        "AutofillServerCommunication,CertificateTransparencyComponentUpdater,BackForwardCache",
    ],
    # WebGL stays (SwiftShader); with --disable-software-rasterizer too, pages have no WebGL
    # (the extension's offscreen fingerprint reads the WebGL renderer)
    "disable-gpu-only": ["--disable-gpu"],
    "no-webui-omnibox": ["--disable-features=WebUIOmniboxPopup,WebUIOmniboxAimPopup"],
    "no-gpu+low-end": [
        "--disable-gpu",
        "--disable-software-rasterizer",
        "--enable-low-end-device-mode",
    ],
    "disable-gpu+low-end": ["--disable-gpu", "--enable-low-end-device-mode"],
    # the runner's flags, and the dashboard tab the extension opens on install closed (what a
    # runner that closed every page it does not need would leave)
    "runner-defaults+dashboard-tab-closed": [],
    "disable-gpu+low-end+dashboard-tab-closed": ["--disable-gpu", "--enable-low-end-device-mode"],
}


def emit(figure: str, value: float | None, **extra: Any) -> None:
    shown = None if value is None else round(value, 1)
    line = {"bench": "real_extension", "figure": figure, "value": shown, **extra}
    print(json.dumps(line), flush=True)


def now() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------- the broker's view


class BrokerLog(logging.Handler):
    """mosquitto's connect and close lines for the node, with when they came (the sandbox's
    broker logs each of its lines at debug)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[datetime, str]] = []
        self.guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if not msg.startswith("mosquitto: ") or "sandbox-" in msg:
            return
        line = msg.removeprefix("mosquitto: ")
        if line.startswith(("New client connected", "Client ", "Socket error")):
            with self.guard:
                self.lines.append((now(), line))

    def since(self, at: datetime) -> list[tuple[datetime, str]]:
        with self.guard:
            return [(t, line) for t, line in self.lines if t >= at]

    def sessions(self, at: datetime) -> dict[str, Any]:
        """The node's connection history since ``at``: ``drops``, closes that left it without a
        connection (with mosquitto's reason and the seconds until the next connect), and
        ``takeovers``, a new connection of the same client id that replaced the old one
        (mosquitto closes the old one after; the node is never without a connection)."""
        drops: list[str] = []
        takeovers: list[str] = []
        offline = 0.0
        stale = 0
        down_since: datetime | None = None
        down_line = ""
        for t, line in self.since(at):
            if "already connected, closing old connection" in line:
                stale += 1
                takeovers.append(f"{t:%H:%M:%S}")
            elif line.startswith("New client connected"):
                if down_since is not None:
                    gap = (t - down_since).total_seconds()
                    offline += gap
                    drops.append(f"{down_since:%H:%M:%S} {down_line} (back after {gap:.1f} s)")
                    down_since = None
            elif line.startswith(("Client ", "Socket error")):
                if stale:
                    stale -= 1  # the replaced connection's close
                elif down_since is None:
                    down_since, down_line = t, line
        if down_since is not None:
            drops.append(f"{down_since:%H:%M:%S} {down_line} (not back)")
            offline += (now() - down_since).total_seconds()
        return {"drops": drops, "takeovers": takeovers, "offline_s": round(offline, 1)}


# ---------------------------------------------------------------- the node


@dataclass
class RealNode:
    fleet_file: Path
    sandbox: Any
    authority: Any
    record: Any
    ex: Any
    broker_log: BrokerLog
    engine: Any
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def home(self) -> Path:
        return Path(self.record.meta["home"]) / NODE

    def read_json(self, name: str) -> dict[str, Any]:
        try:
            out: dict[str, Any] = json.loads((self.home / name).read_text())
            return out
        except (OSError, ValueError):
            return {}

    def events(self, since: datetime | None = None) -> list[dict[str, Any]]:
        out = []
        try:
            lines = (self.home / "events.jsonl").read_text().splitlines()
        except OSError:
            return []
        for line in lines:
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if since is None or datetime.fromisoformat(event["at"]) >= since:
                    out.append(event)
        return out

    def node_state(self) -> dict[str, Any]:
        nodes: list[dict[str, Any]] = self.sandbox.network.state()["nodes"]
        return nodes[0] if nodes else {}

    def pid(self, name: str) -> int | None:
        try:
            return int((self.home / name).read_text().strip())
        except (OSError, ValueError):
            return None

    def use_flags(self, flags: list[str]) -> None:
        from gradientlab.sandbox.realnode import onto_real_names

        onto_real_names(
            self.ex, self.record.meta.get("python"), self.sandbox, self.authority, flags
        )

    def wait_good_and_connected(self, timeout: float = 240) -> bool:
        """The runner reads Good from the popup and the broker has the node connected."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            popup = self.read_json("status.json").get("popup") or {}
            if popup.get("status") == "Good" and self.node_state().get("connect") is True:
                return True
            time.sleep(1)
        return False


def fleet_text(sandbox: Any, base_address: str, runner: str, health: str) -> str:
    from gradientlab.sandbox.realnode import real_network_yaml

    return (
        f"account: {{email: a@b.c, password: {{env: {PASSWORD_ENV}}}}}\n"
        + real_network_yaml(sandbox)
        + f"providers: {{bench: {{kind: local, base_address: {base_address}}}}}\n"
        + "hosts: [{name: real-1, provider: bench}]\n"
        + (f"runner: {runner}\n" if runner else "")
        + (f"health: {health}\n" if health else "")
    )


@contextlib.contextmanager
def real_node(figure: str, runner: str, health: str, flags: list[str]) -> Iterator[RealNode]:
    """One local host with the real extension signed in and online (or an exception)."""
    from prefect.testing.utilities import prefect_test_harness

    from bench.scratch import scratch_database
    from gradientlab.config import load_fleet
    from gradientlab.inventory import executor_for, provider_for
    from gradientlab.remote.executor import POOL
    from gradientlab.sandbox.network import SandboxAccount, SandboxConfig
    from gradientlab.sandbox.realnode import find_real_extension, start_real_sandbox
    from gradientlab.store.fleet import host_records

    extension = find_real_extension()
    assert extension is not None  # main() checked
    os.environ[PASSWORD_ENV] = "bench-password"
    broker_log = BrokerLog()
    broker_logger = logging.getLogger("gradientlab.sandbox.broker")
    broker_logger.setLevel(logging.DEBUG)
    broker_logger.addHandler(broker_log)
    sandbox, authority = start_real_sandbox(
        extension,
        BENCH_HOME / "ca",
        SandboxConfig(accounts=[SandboxAccount(email="a@b.c", password="bench-password")], seed=5),
    )
    fleet_file = BENCH_HOME / "fleet.yaml"
    fleet_file.write_text(fleet_text(sandbox, BASE_ADDRESS[figure], runner, health))
    fleet = load_fleet(fleet_file)
    try:
        with scratch_database() as engine, prefect_test_harness(server_startup_timeout=180):
            from flows.deploy import deploy
            from flows.provision import provision

            provision(fleet_path=str(fleet_file), approve=True)
            [deployed] = deploy(fleet_path=str(fleet_file))
            record = next(r for r in host_records(engine) if r.name == "real-1")
            node = RealNode(
                fleet_file, sandbox, authority, record, executor_for(record), broker_log, engine
            )
            node.settings = {
                "extension_version": deployed.get("extension_version"),
                "runner": runner or "defaults",
                "health": health or "defaults",
            }
            started = time.monotonic()
            node.use_flags(flags)
            if not node.wait_good_and_connected():
                raise RuntimeError(
                    f"the node did not come Good and connected: {node.read_json('status.json')}"
                )
            node.settings["first_good_s"] = round(time.monotonic() - started, 1)
            yield node
    finally:
        POOL.close_all()
        provider_for(fleet, "bench").terminate("real-1")
        sandbox.stop()
        broker_logger.removeHandler(broker_log)


# ---------------------------------------------------------------- figure 1: footprint


def footprint_sample(node: RealNode) -> dict[str, int] | None:
    """PSS (KiB) of the runner's whole tree, split as the runner itself splits it."""
    from gradientlab.agent.procs import process_tree, pss_kib

    runner_pid, browser_pid = node.pid("runner.pid"), node.pid("browser.pid")
    if runner_pid is None:
        return None
    tree = process_tree([runner_pid])
    browser = set(process_tree([browser_pid])) if browser_pid in tree else set()
    rest = [p for p in tree if p not in browser]
    total = pss_kib(tree)
    if total is None:
        return None
    return {
        "total": total,
        "browser": pss_kib(sorted(browser)) or 0,
        "runner": pss_kib(rest) or 0,  # the runner, and the Playwright driver while attached
        "processes": len(tree),
    }


def process_kinds(node: RealNode) -> dict[str, float]:
    """PSS (MiB) now by process kind: runner, browser, zygote, utility, renderer, extension."""
    from gradientlab.agent.procs import process_tree, pss_kib

    runner_pid = node.pid("runner.pid")
    out: dict[str, float] = {}
    for pid in process_tree([runner_pid]) if runner_pid else []:
        try:
            # Chromium rewrites its children's command lines as one string: split on spaces too
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").split()
        except OSError:
            continue
        args = [a.decode(errors="replace") for a in argv]
        kind = next((a.removeprefix("--type=") for a in args if a.startswith("--type=")), "")
        if "--extension-process" in args:
            kind = "extension"
        elif not kind:
            kind = "browser" if "chromium" in args[0] else Path(args[-1] or args[0]).name
        out[kind] = round(out.get(kind, 0) + (pss_kib([pid]) or 0) / 1024, 1)
    return out


def browser_targets(node: RealNode) -> list[str]:
    """What the browser holds open (type and address of each DevTools target), read attached
    as the runner attaches (after the window: the driver would count in it)."""
    from playwright.sync_api import sync_playwright

    from gradientlab.agent.devtools import devtools_endpoint
    from gradientlab.agent.home import Paths

    endpoint = devtools_endpoint(Paths(node.home))
    if endpoint is None:
        return []
    with sync_playwright() as pw:
        browser = pw.chromium.connect_over_cdp(endpoint, timeout=30_000)
        try:
            cdp = browser.new_browser_cdp_session()
            infos = cdp.send("Target.getTargets")["targetInfos"]
            return sorted(f"{t['type']} {t['url'][:80]}" for t in infos)
        finally:
            browser.close()


def close_dashboard_tabs(node: RealNode) -> list[str]:
    """Close the pages on the dashboard's origin (the extension opens one when installed)."""
    from playwright.sync_api import sync_playwright

    from gradientlab.agent.devtools import devtools_endpoint
    from gradientlab.agent.home import Paths
    from gradientlab.sandbox.realnames import REAL_DASHBOARD_URL

    origin = REAL_DASHBOARD_URL.removesuffix("/app/")
    endpoint = devtools_endpoint(Paths(node.home))
    closed: list[str] = []
    if endpoint is None:
        return closed
    with sync_playwright() as pw:
        browser = pw.chromium.connect_over_cdp(endpoint, timeout=30_000)
        try:
            for page in browser.contexts[0].pages:
                if page.url.startswith(origin):
                    closed.append(page.url)
                    page.close()
        finally:
            browser.close()
    return closed


def footprint(args: argparse.Namespace) -> None:
    names = args.flag_set or list(FLAG_SETS)
    runner = (
        "{}" if not args.status_interval else f"{{status_interval_seconds: {args.status_interval}}}"
    )
    with real_node("footprint", runner, "", FLAG_SETS[names[0]]) as node:
        for i, name in enumerate(names):
            flags = FLAG_SETS[name]
            if i:
                node.use_flags(flags)
                if not node.wait_good_and_connected():
                    emit("pss_steady_mib", None, flag_set=name, flags=flags, error="not Good")
                    continue
            closed: list[str] = []
            if name.endswith("+dashboard-tab-closed"):
                time.sleep(args.settle)
                closed = _safely(close_dashboard_tabs, node)
            time.sleep(args.settle)
            samples: list[dict[str, int]] = []
            end = time.monotonic() + args.seconds
            while time.monotonic() < end:
                sample = footprint_sample(node)
                if sample:
                    samples.append(sample)
                time.sleep(1)
            kinds = process_kinds(node)
            connected = node.node_state().get("connect") is True
            popup = (node.read_json("status.json").get("popup") or {}).get("status")
            mib = sorted(s["total"] / 1024 for s in samples)
            # steady: the samples without a Playwright driver (the popup reads' attaches)
            detached = [s for s in samples if s["runner"] < 100 * 1024]
            steady = [s["total"] / 1024 for s in detached]

            def median_of(key: str, rows: list[dict[str, int]]) -> float | None:
                return statistics.median(r[key] / 1024 for r in rows) if rows else None

            emit(
                "pss_steady_mib",
                statistics.median(steady) if steady else None,
                target=350,
                flag_set=name,
                flags=flags,
                median_mib=round(statistics.median(mib), 1) if mib else None,
                max_mib=round(max(mib), 1) if mib else None,
                browser_mib=_round(median_of("browser", detached)),
                runner_mib=_round(median_of("runner", detached)),
                processes=statistics.median(s["processes"] for s in samples) if samples else None,
                samples=len(samples),
                seconds=args.seconds,
                by_process_mib=kinds,
                tabs_closed=closed,
                targets=_safely(browser_targets, node),
                still_good=popup == "Good",
                still_connected=connected,
                **node.settings,
            )


def _safely(read: Callable[[RealNode], list[str]], node: RealNode) -> list[str]:
    try:
        return read(node)
    except Exception as exc:  # noqa: BLE001 - a diagnosis, not a figure
        return [f"unread: {exc}"[:200]]


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


# ---------------------------------------------------------------- figure 2: online, detached


def online(args: argparse.Namespace) -> None:
    runner = f"{{status_interval_seconds: {args.status_interval}}}"
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with real_node("online", runner, "", []) as node:
        start = now()
        first = node.node_state()
        connections0 = int(first.get("mqttConnections", 0))
        end = time.monotonic() + args.minutes * 60
        next_report = time.monotonic() + args.report_minutes * 60
        disconnected_samples = samples = 0

        def report(figure: str) -> None:
            history = node.broker_log.sessions(start)
            state = node.node_state()
            events = node.events(start)
            popups = [e["detail"] for e in events if e["kind"] == "popup_status"]
            emit(
                figure,
                len(history["drops"]),
                target=0,
                minutes_run=round((now() - start).total_seconds() / 60, 1),
                minutes_asked=args.minutes,
                mqtt_connections_since=int(state.get("mqttConnections", 0)) - connections0,
                connected_now=state.get("connect"),
                disconnected_samples=disconnected_samples,
                samples=samples,
                drops=history["drops"][:20],
                offline_s=history["offline_s"],
                takeovers=len(history["takeovers"]),
                takeover_times=history["takeovers"][:40],
                browser_exits=sum(1 for e in events if e["kind"] == "browser_exited"),
                popup_states_seen=popups,
                runner_attaches_every_s=args.status_interval,
                mqtt_messages=state.get("mqttMessages"),
                **node.settings,
            )

        while time.monotonic() < end and not stop.is_set():
            samples += 1
            if node.node_state().get("connect") is not True:
                disconnected_samples += 1
            if time.monotonic() >= next_report:
                report("online_progress")
                next_report += args.report_minutes * 60
            stop.wait(10)
        report("online_disconnections")


# ---------------------------------------------------------------- figure 3: a killed browser


def demo_settings() -> tuple[str, str, float]:
    """The runner and health sections of fleet.demo.yaml, and its health schedule."""
    import yaml

    demo = yaml.safe_load((Path(__file__).resolve().parents[1] / "fleet.demo.yaml").read_text())

    def flow(d: dict[str, Any]) -> str:
        return json.dumps(d)  # JSON is YAML

    return flow(demo["runner"]), flow(demo["health"]), float(demo["schedules"]["health_seconds"])


class StatusWatch(threading.Thread):
    """Reads the runner's status.json every 0.2 s: each popup read (when, what it said) and
    each browser start, on the host's clock (this machine's: the host is local)."""

    def __init__(self, node: RealNode) -> None:
        super().__init__(daemon=True)
        self.node = node
        self.seen: dict[str, str] = {}  # popup_read_at -> status
        self.starts: set[str] = set()
        self.done = threading.Event()
        self.start()

    def run(self) -> None:
        while not self.done.wait(0.2):
            status = self.node.read_json("status.json")
            read_at, popup = status.get("popup_read_at"), status.get("popup") or {}
            if read_at:
                self.seen.setdefault(read_at, str(popup.get("status")))
            if status.get("browser_started_at"):
                self.starts.add(status["browser_started_at"])

    def stop(self) -> None:
        self.done.set()
        self.join(5)

    def reads_since(self, at: datetime) -> list[tuple[datetime, str]]:
        reads = sorted((datetime.fromisoformat(t), st) for t, st in self.seen.items())
        return [(t, st) for t, st in reads if t >= at]

    def browser_started_after(self, at: datetime) -> datetime | None:
        starts = sorted(datetime.fromisoformat(t) for t in self.starts)
        return next((t for t in starts if t >= at), None)


def recovery(args: argparse.Namespace) -> None:
    from sqlalchemy import text

    runner, health_yaml, period = demo_settings()
    period = args.period or period
    rng = random.Random(args.seed)
    with real_node("recovery", runner, health_yaml, []) as node:
        from flows.health import health

        def sweep() -> list[Any]:
            return list(health(fleet_path=str(node.fleet_file)))

        def sweeps_until(done: Callable[[list[Any]], bool], limit: float = 300) -> list[Any]:
            deadline = time.monotonic() + limit
            while True:
                started = time.monotonic()
                out = sweep()
                if done(out) or time.monotonic() > deadline:
                    return out
                time.sleep(max(0.0, period - (time.monotonic() - started)))

        sweeps_until(lambda o: [x.status for x in o] == ["Good"])
        results: list[dict[str, Any]] = []
        for rep in range(args.repeats):
            with node.engine.begin() as conn:
                conn.execute(text("TRUNCATE incidents, recovery_actions"))
            # the kill falls at a random moment between two sweeps, as it would in the demo
            swept = time.monotonic()
            sweep()
            time.sleep(max(0.0, rng.uniform(0, period) - (time.monotonic() - swept)))
            watch = StatusWatch(node)
            killed_at = now()
            killed = node.ex.run(f"kill -9 $(cat {NODE}/browser.pid) && echo killed")
            if killed.stdout.strip() != "killed":
                emit("killed_browser_recovery_s", None, error=killed.stderr, repetition=rep)
                continue
            time.sleep(max(0.0, period - (time.monotonic() - swept) % period))
            out = sweeps_until(
                lambda o: [x.status for x in o] == ["Good"] and o[0].incident_status == "recovered"
            )
            recorded_after = (now() - killed_at).total_seconds()
            with node.engine.connect() as conn:
                incidents = [
                    tuple(r)
                    for r in conn.execute(
                        text("SELECT kind, status, detected_at, recovered_at FROM incidents")
                    )
                ]
            row: dict[str, Any] = {
                "repetition": rep,
                "incidents": [(k, s) for k, s, _, _ in incidents],
            }
            if incidents and incidents[0][3] is not None:
                _, _, detected, recovered = incidents[0]
                row["recorded_s"] = (recovered - detected).total_seconds()
                row["kill_to_recorded_good_s"] = (recovered - killed_at).total_seconds()
                row["detected_after_kill_s"] = (detected - killed_at).total_seconds()
            watch.stop()
            reads = watch.reads_since(killed_at)
            # the runner's popup reads after the kill: (seconds after the kill, status)
            row["popup_reads"] = [
                (round((t - killed_at).total_seconds(), 1), st) for t, st in reads
            ]
            good = [t for t, st in reads if st == "Good"]
            if good:
                row["kill_to_first_good_read_s"] = (good[0] - killed_at).total_seconds()
            started = watch.browser_started_after(killed_at)
            if started:
                row["kill_to_browser_started_s"] = (started - killed_at).total_seconds()
            connects = [
                t for t, line in node.broker_log.since(killed_at) if line.startswith("New client")
            ]
            if connects:
                row["kill_to_mqtt_connected_s"] = (connects[0] - killed_at).total_seconds()
            row["flow_recorded_after_s"] = recorded_after
            row["popup_status"] = out[0].status if out else None
            results.append({k: round(v, 1) if isinstance(v, float) else v for k, v in row.items()})
            print(
                json.dumps({"bench": "real_extension", "recovery_repetition": results[-1]}),
                flush=True,
            )

        def stat(key: str) -> dict[str, float | None]:
            vals = [r[key] for r in results if key in r]
            if not vals:
                return {"median": None, "max": None}
            return {"median": round(statistics.median(vals), 1), "max": round(max(vals), 1)}

        recorded = stat("recorded_s")
        emit(
            "killed_browser_recovery_s",
            recorded["median"],
            max=recorded["max"],
            target=15,
            repetitions=len(results),
            kill_to_recorded_good_s=stat("kill_to_recorded_good_s"),
            kill_to_browser_started_s=stat("kill_to_browser_started_s"),
            kill_to_first_good_read_s=stat("kill_to_first_good_read_s"),
            kill_to_mqtt_connected_s=stat("kill_to_mqtt_connected_s"),
            flow_recorded_after_s=stat("flow_recorded_after_s"),
            health_period_s=period,
            **node.settings,
        )


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.real_extension")
    figures = parser.add_subparsers(dest="figure", required=True)
    f1 = figures.add_parser("footprint", help="PSS on the host, per Chromium flag set")
    f1.add_argument("--seconds", type=int, default=90, help="sampling window per flag set")
    f1.add_argument("--settle", type=int, default=30, help="wait after Good before sampling")
    f1.add_argument("--flag-set", action="append", choices=list(FLAG_SETS))
    f1.add_argument("--status-interval", type=float, default=None, help="default: the runner's")
    f2 = figures.add_parser("online", help="time online, the browser detached")
    f2.add_argument("--minutes", type=float, default=60)
    f2.add_argument("--status-interval", type=float, default=300, help="runner popup reads, s")
    f2.add_argument("--report-minutes", type=float, default=10)
    f3 = figures.add_parser("recovery", help="a killed browser, the demo's settings")
    f3.add_argument("--repeats", type=int, default=5)
    f3.add_argument("--period", type=float, default=None, help="default: the demo's schedule")
    f3.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    from gradientlab.sandbox.realnode import find_real_extension, real_extension_candidates

    if find_real_extension() is None:
        where = ", ".join(str(p) for p in real_extension_candidates())
        emit(args.figure, None, skipped=f"Gradient's published extension is not at {where}")
        return
    {"footprint": footprint, "online": online, "recovery": recovery}[args.figure](args)


if __name__ == "__main__":
    main()
