"""`gradientlab demo`: the whole system on one machine against the sandbox network.

Starts Postgres (embedded unless DATABASE_URL), a Prefect server with its UI, the sandbox, three
local hosts; provisions and deploys them through Prefect flows; serves the flows on sped-up
schedules; starts the Streamlit app and opens it once, so the operator's first page is warm;
prints the URLs; on Ctrl-C stops every process it started, whatever signals follow. A demo that
died without stopping them (killed, power lost) has them stopped by the next one."""

from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import yaml

from gradientlab.cli import services
from gradientlab.config import load_fleet
from gradientlab.paths import PROJECT_ROOT, data_dir
from gradientlab.store.database import database_url, make_engine, migrate
from gradientlab.store.embedded import embedded_postgres_pid, stop_embedded_postgres

DEMO_FLEET = PROJECT_ROOT / "fleet.demo.yaml"
SANDBOX_PORT = 8765
PREFECT_PORT = 4200
STREAMLIT_PORT = 8501
DEMO_SPEED = 360.0  # four real minutes are one network day: a demo shows days


def say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def _demo_password() -> str:
    """Generated once and kept in a 0600 file of the data folder, never on a command line."""
    path = data_dir() / "demo-password"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(18))
    return path.read_text().strip()


def _demo_app_sign_in(password: str) -> dict[str, str]:
    """The analysis app's sign-in for the demo: explicit, by users, from a users file of the
    demo's own with one operator, `demo`, whose password is the demo's (its 0600 file)."""
    from gradientlab import app_users

    path = data_dir() / "demo-app-users.toml"
    users = app_users.load_users(path)
    current = users.get("demo")
    if current is None or not app_users.password_matches(password, current.password_hash):
        app_users.add_user("demo", "operator", password, path=path)
    return {"GRADIENTLAB_APP_SIGN_IN": "users", app_users.USERS_FILE_VAR: str(path)}


def _sandbox_config(email: str, password: str) -> Path:
    path = data_dir() / "sandbox.yaml"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(
            {
                "accounts": [{"email": email, "password": password, "name": "GradientLab demo"}],
                "speed": DEMO_SPEED,
                "tap_interval_minutes": 20,
                "seed": 7,
            },
            f,
        )
    return path


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Shutdown:
    """Stops what a run started, in order, once, whatever signals arrive meanwhile.

    The first Ctrl-C (or SIGTERM, SIGHUP) ends the run; any later one only says what is still
    being stopped. A step a signal interrupted anyway (one that came before our handler was in
    place) is run again: every step is safe to repeat."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, Callable[[], None]]] = []
        self.done = 0
        self.stopping = False

    def add(self, label: str, step: Callable[[], None]) -> None:
        """Stopping steps run last-added first, like the things they stop were started."""
        self.steps.insert(0, (label, step))

    def on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if not self.stopping:
            self.stopping = True
            raise KeyboardInterrupt
        left = [label for label, _ in self.steps[self.done :]]
        say(
            f"{signal.Signals(signum).name}: still stopping "
            + (", then ".join(left) if left else "nothing")
            + "; the demo exits when that is done"
        )

    def install(self) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, self.on_signal)

    def run(self) -> None:
        """Run the remaining steps; a KeyboardInterrupt anywhere in here resumes them."""
        self.stopping = True
        while True:
            try:
                self.install()
                while self.done < len(self.steps):
                    label, step = self.steps[self.done]
                    try:
                        step()
                    except Exception as exc:  # noqa: BLE001 - keep stopping the rest
                        say(f"could not stop {label}: {exc}")
                    self.done += 1
                return
            except KeyboardInterrupt:
                continue


def run_demo(fleet_path: Path = DEMO_FLEET, stop_after: float | None = None) -> int:
    home = data_dir()
    logs = home / "logs"
    fleet = load_fleet(fleet_path)
    ledger = services.Ledger(home / "demo-processes.json")
    running = ledger.owner("demo")
    if running is not None and running.pid != os.getpid():
        say(
            f"another demo is running (pid {running.pid}); stop it first with Ctrl-C in its "
            f"terminal, or `kill {running.pid}`"
        )
        return 1
    password = _demo_password()
    os.environ["GRADIENTLAB_DEMO_PASSWORD"] = password
    with stopping_everything(ledger) as stopper:
        _stop_leftovers(ledger, fleet_path, home)
        embedded = not os.environ.get("DATABASE_URL")
        say(
            "starting PostgreSQL"
            + (" (embedded, in .gradientlab/pgdata)" if embedded else " (DATABASE_URL)")
        )
        if embedded and not os.environ.get("GRADIENTLAB_KEEP_DB"):
            stopper.add("PostgreSQL", lambda: _stop_embedded_postgres(home))
        url = database_url()
        os.environ["DATABASE_URL"] = url
        migrate(make_engine(url))

        say(f"starting the analysis app on http://127.0.0.1:{STREAMLIT_PORT}")
        app = _start(
            stopper,
            ledger,
            lambda on_start: services.start_streamlit(
                STREAMLIT_PORT,
                logs,
                # the operator's actions ask this Prefect server (started next) to run flows;
                # its visitors sign in (the demo's own users file: one operator, "demo")
                {
                    "DATABASE_URL": url,
                    **services.prefect_env(home / "prefect", PREFECT_PORT),
                    **_demo_app_sign_in(password),
                },
                on_start,
            ),
            "the analysis app",
        )
        # its first page pays for the imports: opened now, it is warm by the time the URLs show
        warming = threading.Thread(
            target=_open_app_once,
            args=(f"http://127.0.0.1:{STREAMLIT_PORT}", stopper),
            name="open-the-app-once",
            daemon=True,
        )
        warming.start()

        say(f"starting the Prefect server and UI on http://127.0.0.1:{PREFECT_PORT}")
        prefect_home = home / "prefect"
        env = services.prefect_env(prefect_home, PREFECT_PORT)
        prefect_server = _start(
            stopper,
            ledger,
            lambda on_start: services.start_prefect_server(
                prefect_home, PREFECT_PORT, logs, on_start
            ),
            "the Prefect server",
        )
        os.environ.update(env)

        say(f"starting the sandbox Gradient network on http://127.0.0.1:{SANDBOX_PORT}")
        sandbox_cfg = _sandbox_config(fleet.account.email, password)
        sandbox = _start(
            stopper,
            ledger,
            lambda on_start: services.start(
                "sandbox",
                [
                    sys.executable,
                    "-m",
                    "gradientlab.sandbox",
                    "--port",
                    str(SANDBOX_PORT),
                    "--config",
                    str(sandbox_cfg),
                ],
                logs,
                on_start=on_start,
            ),
            "the sandbox",
        )
        services.wait_http(sandbox, f"http://127.0.0.1:{SANDBOX_PORT}/api/status", timeout=30)

        # Imported late: Prefect reads PREFECT_API_URL when it is first imported.
        from deployments.abandoned_runs import crash_abandoned_runs
        from flows.deploy import deploy
        from flows.provision import provision

        # a task's "Finished in state Completed()" is for the Prefect UI, not the terminal
        logging.getLogger("prefect.task_runs").setLevel(logging.WARNING)

        # nothing runs flows yet: a run still "running" was a stopped demo's, and would hold
        # its deployment's one slot (every later health run cancelled)
        abandoned = crash_abandoned_runs("the demo that ran it stopped before it finished")
        if abandoned:
            say(f"marked {len(abandoned)} flow runs an earlier demo left unfinished as crashed")

        say("provision flow: three local hosts, each its own sshd on a loopback address")
        stopper.add("the hosts (sshd, runner, Chromium)", lambda: _stop_hosts(fleet_path, []))
        provision(fleet_path=str(fleet_path), approve=True)
        say("deploy flow: runner, extension and Chromium on each host")
        deploy(fleet_path=str(fleet_path))
        # Prefect's flow engine replaces signal handlers while flows run in this process, and a
        # shell starts background jobs with Ctrl-C ignored: (re)install ours.
        stopper.install()

        say(
            "serving the flows on sped-up schedules (health every "
            f"{fleet.schedules.health_seconds}s, rewards every {fleet.schedules.rewards_seconds}s)"
        )
        started = [
            _start(
                stopper,
                ledger,
                lambda on_start: services.start(
                    "served-flows",
                    [sys.executable, "-m", "deployments.serve", "--fleet", str(fleet_path)],
                    logs,
                    {**env, "DATABASE_URL": url, "GRADIENTLAB_DEMO_PASSWORD": password},
                    on_start,
                ),
                "the served flows",
            )
        ]
        started.append(app)
        warming.join()

        print(
            "\n  Prefect UI      http://127.0.0.1:4200\n"
            f"                  (it asks for its auth string: {services.auth_string_hint()})\n"
            "  Analysis app    http://127.0.0.1:8501\n"
            f"                  (sign in as demo, password in {data_dir() / 'demo-password'})\n"
            f"  Sandbox         http://127.0.0.1:{SANDBOX_PORT}/__sandbox/state\n"
            "  Fleet status    gradientlab status   (in another terminal)\n"
            f"  Logs            {logs}\n\n"
            "  Ctrl-C stops everything the demo started.\n",
            flush=True,
        )
        return watch([prefect_server, sandbox, *started], stop_after)
    return 0


@contextmanager
def stopping_everything(ledger: services.Ledger) -> Iterator[Shutdown]:
    """The run's body goes inside: a Ctrl-C (SIGTERM, SIGHUP) ends it, then every stopping step
    it added runs, whatever signals follow."""
    stopper = Shutdown()
    stopper.install()
    try:
        ledger.add("demo", os.getpid())
        yield stopper
    except KeyboardInterrupt:
        pass
    finally:
        say("stopping everything the demo started (a second Ctrl-C says what is left)")
        stopper.run()
        ledger.remove("demo")
        for sig in STOP_SIGNALS:  # all is stopped: a late signal must not kill the exit
            signal.signal(sig, signal.SIG_IGN)
        say("stopped")


def watch(running: list[services.Service], stop_after: float | None = None) -> int:
    """Wait (for a signal, or `stop_after` seconds); 1 as soon as a service dies by itself."""
    deadline = None if stop_after is None else time.monotonic() + stop_after
    while deadline is None or time.monotonic() < deadline:
        for service in running:
            if not service.alive():
                say(f"{service.name} stopped unexpectedly:\n{service.tail()}")
                return 1
        time.sleep(1)
    return 0


def _start(
    stopper: Shutdown,
    ledger: services.Ledger,
    start: Callable[[services.OnStart], services.Service],
    label: str,
) -> services.Service:
    """Start a service with its stopping step in place before it starts and its ledger entry
    written as soon as it has a pid (a Ctrl-C while it warms up still stops it)."""
    box: list[services.Service] = []

    def record(service: services.Service) -> None:
        box.append(service)
        ledger.add(service.name, service.pid)

    def stop() -> None:
        for service in box:
            service.stop()
            ledger.remove(service.name)

    stopper.add(label, stop)
    return start(record)


# the paths st.navigation gives the pages
APP_PAGES = ("", "node", "rewards", "uptime", "incidents", "cost")
# a page whose script has run to its end, title drawn
APP_RENDERED = '[data-testid="stApp"][data-test-script-state="notRunning"] h1'


def _open_app_once(base_url: str, stopper: Shutdown, chromium: str = "/usr/bin/chromium") -> None:
    """Open every page of the app once in a headless Chromium, as the operator will: the app's
    imports and its database connection are warm before the first click."""
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium)
            try:
                page = browser.new_page()
                for path in APP_PAGES:
                    page.goto(f"{base_url}/{path}")
                    page.wait_for_selector(APP_RENDERED, timeout=120_000)
            finally:
                browser.close()
    except PlaywrightError as exc:
        if not stopper.stopping:  # not the browser a Ctrl-C stopped
            say(f"could not open the analysis app ahead of you; its first page may be slow ({exc})")


def _stop_leftovers(ledger: services.Ledger, fleet_path: Path, home: Path) -> None:
    """What a demo that died without stopping left running: its services, its hosts, and the
    embedded Postgres."""
    stopped = ledger.stop_leftovers(skip=("demo",))
    _stop_hosts(fleet_path, stopped, only_running=True)
    if not os.environ.get("DATABASE_URL") and embedded_postgres_pid(home / "pgdata"):
        _stop_embedded_postgres(home)
        stopped.append("PostgreSQL")
    if stopped:
        say(f"stopped what an earlier demo left running: {', '.join(stopped)}")


def _stop_embedded_postgres(home: Path) -> None:
    stop_embedded_postgres(home / "pgdata")


def _stop_hosts(fleet_path: Path, stopped: list[str], only_running: bool = False) -> None:
    """Stop the fleet's local hosts (each one's processes, then its sshd), adding their names
    to `stopped`. `only_running`: those with an sshd or a process of their user running."""
    from gradientlab.inventory import provider_for
    from gradientlab.providers.local import LocalProvider

    fleet = load_fleet(fleet_path)
    for host in fleet.hosts:
        provider = provider_for(fleet, host.provider)
        if not isinstance(provider, LocalProvider):
            continue
        try:
            if only_running and not provider.has_processes(host.name):
                continue
            provider.stop(host.name)
            stopped.append(host.name)
        except Exception as exc:  # noqa: BLE001 - keep stopping the rest
            say(f"{host.name}: could not stop: {exc}")


def ensure_system_packages() -> None:
    """Chromium and OpenSSH from Debian, installed when missing (the demo runs as root)."""
    missing = [
        p
        for p, path in (("chromium", "/usr/bin/chromium"), ("openssh-server", "/usr/sbin/sshd"))
        if not Path(path).exists()
    ]
    if missing:
        say(f"installing {' '.join(missing)} from Debian")
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", *missing],
            check=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
