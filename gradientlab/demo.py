"""`gradientlab demo`: the whole system on one machine against the sandbox network.

Starts Postgres (embedded unless DATABASE_URL), a Prefect server with its UI, the sandbox, three
local hosts; provisions and deploys them through Prefect flows; serves the flows on sped-up
schedules; starts the Streamlit app; prints the URLs; on Ctrl-C stops every process it started."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from gradientlab import services
from gradientlab.config import load_fleet
from gradientlab.paths import PROJECT_ROOT, data_dir
from gradientlab.store.database import database_url, make_engine, migrate

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


def run_demo(fleet_path: Path = DEMO_FLEET, stop_after: float | None = None) -> int:
    home = data_dir()
    logs = home / "logs"
    fleet = load_fleet(fleet_path)
    password = _demo_password()
    os.environ["GRADIENTLAB_DEMO_PASSWORD"] = password
    started: list[services.Service] = []
    hosts_started = False

    def shutdown(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, shutdown)
    try:
        say(
            "starting PostgreSQL"
            + (
                " (DATABASE_URL)"
                if os.environ.get("DATABASE_URL")
                else " (embedded, in .gradientlab/pgdata)"
            )
        )
        url = database_url()
        os.environ["DATABASE_URL"] = url
        migrate(make_engine(url))

        say(f"starting the Prefect server and UI on http://127.0.0.1:{PREFECT_PORT}")
        prefect_home = home / "prefect"
        env = services.prefect_env(prefect_home, PREFECT_PORT)
        started.append(services.start_prefect_server(prefect_home, PREFECT_PORT, logs))
        os.environ.update(env)

        say(f"starting the sandbox Gradient network on http://127.0.0.1:{SANDBOX_PORT}")
        sandbox_cfg = _sandbox_config(fleet.account.email, password)
        sandbox = services.start(
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
        )
        started.append(sandbox)
        services.wait_http(sandbox, f"http://127.0.0.1:{SANDBOX_PORT}/api/status", timeout=30)

        # Imported late: Prefect reads PREFECT_API_URL when it is first imported.
        from flows.deploy import deploy
        from flows.provision import provision

        say("provision flow: three local hosts, each its own sshd on a loopback address")
        hosts_started = True
        provision(fleet_path=str(fleet_path), approve=True)
        say("deploy flow: runner, extension and Chromium on each host")
        deploy(fleet_path=str(fleet_path))

        say(
            "serving the flows on sped-up schedules (health every "
            f"{fleet.schedules.health_seconds}s, rewards every {fleet.schedules.rewards_seconds}s)"
        )
        started.append(
            services.start(
                "served-flows",
                [sys.executable, "-m", "deployments.serve", "--fleet", str(fleet_path)],
                logs,
                {**env, "DATABASE_URL": url, "GRADIENTLAB_DEMO_PASSWORD": password},
            )
        )
        say(f"starting the analysis app on http://127.0.0.1:{STREAMLIT_PORT}")
        started.append(services.start_streamlit(STREAMLIT_PORT, logs, {"DATABASE_URL": url}))

        print(
            "\n  Prefect UI      http://127.0.0.1:4200\n"
            "  Analysis app    http://127.0.0.1:8501\n"
            f"  Sandbox         http://127.0.0.1:{SANDBOX_PORT}/__sandbox/state\n"
            "  Fleet status    gradientlab status   (in another terminal)\n"
            f"  Logs            {logs}\n\n"
            "  Ctrl-C stops everything the demo started.\n",
            flush=True,
        )
        # Prefect's flow engine replaces signal handlers while flows run in this process, and a
        # shell starts background jobs with Ctrl-C ignored: (re)install ours for the wait.
        signal.signal(signal.SIGTERM, shutdown)
        signal.signal(signal.SIGINT, shutdown)
        deadline = None if stop_after is None else time.monotonic() + stop_after
        while deadline is None or time.monotonic() < deadline:
            for service in started:
                if not service.alive():
                    say(f"{service.name} stopped unexpectedly:\n{service.tail()}")
                    return 1
            time.sleep(1)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        say("stopping everything the demo started")
        for service in reversed(started):
            service.stop()
        if hosts_started:
            _stop_hosts(fleet_path)
        if not os.environ.get("GRADIENTLAB_KEEP_DB") and "host=" in os.environ.get(
            "DATABASE_URL", ""
        ):
            from gradientlab.store.embedded import stop_embedded_postgres

            stop_embedded_postgres(home / "pgdata")
        say("stopped")


def _stop_hosts(fleet_path: Path) -> None:
    from gradientlab.inventory import provider_for

    fleet = load_fleet(fleet_path)
    for host in fleet.hosts:
        try:
            provider_for(fleet, host.provider).stop(host.name)
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
