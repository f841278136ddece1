"""Starting and stopping the processes one machine runs: Prefect's server, the sandbox,
Streamlit and the served flows. Each is stopped by its process id (and its process group)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from gradientlab.paths import PROJECT_ROOT


class ServiceError(RuntimeError):
    pass


@dataclass
class Service:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace: float = 10) -> None:
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def start(name: str, args: list[str], log_dir: Path, env: dict[str, str] | None = None) -> Service:
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=PROJECT_ROOT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    return Service(name, proc, log)


def wait_http(service: Service, url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not service.alive():
            raise ServiceError(f"{service.name} exited at start:\n{service.tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status < 500:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise ServiceError(
        f"{service.name} did not answer {url} within {timeout:.0f}s:\n{service.tail()}"
    )


def prefect_env(home: Path, port: int) -> dict[str, str]:
    return {
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
    }


def start_prefect_server(home: Path, port: int, log_dir: Path) -> Service:
    prefect = str(Path(sys.executable).with_name("prefect"))
    service = start(
        "prefect-server",
        [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        log_dir,
        prefect_env(home, port),
    )
    wait_http(service, f"http://127.0.0.1:{port}/api/health", timeout=180)
    return service


def start_streamlit(port: int, log_dir: Path, env: dict[str, str]) -> Service:
    service = start(
        "streamlit",
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(PROJECT_ROOT / "analysis_app" / "app.py"),
            "--server.address",
            "127.0.0.1",
            "--server.port",
            str(port),
            "--server.headless",
            "true",
            "--browser.gatherUsageStats",
            "false",
        ],
        log_dir,
        env,
    )
    wait_http(service, f"http://127.0.0.1:{port}/_stcore/health", timeout=120)
    return service
