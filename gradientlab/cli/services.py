"""Starting and stopping the processes one machine runs: Prefect's server, the sandbox,
Streamlit and the served flows. Each is stopped by its process id (and its process group).

A `Ledger` file lists what is running, so that a run that died without stopping them (killed,
or the machine lost power) has its processes found and stopped by the next one."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gradientlab.binding import (
    PREFECT_CLIENT_AUTH_VAR,
    PREFECT_SERVER_AUTH_VAR,
    UnsafeBinding,
    check_prefect_server_binding,
)
from gradientlab.paths import PROJECT_ROOT, data_dir


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


def started_at(pid: int) -> int | None:
    """When the process started (clock ticks since boot): with the pid, a process's identity,
    since a pid is reused once its process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def group_members(pgid: int) -> list[int]:
    """The processes of a process group (a group outlives its leader while members remain)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def stop_group(pgid: int, grace: float = 10) -> None:
    """SIGTERM to a process group, SIGKILL to what is left after `grace` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        deadline = time.monotonic() + wait
        while group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not group_members(pgid):
            return


@dataclass(frozen=True)
class LedgerEntry:
    name: str
    pid: int
    started: int | None  # `started_at(pid)` when it was recorded

    def same_process(self) -> bool:
        return self.started is not None and started_at(self.pid) == self.started

    def leftover_group(self) -> bool:
        """Its process group still has members, and it is not a newer group under a reused id
        (Linux does not reuse an id while a group of that id has members)."""
        leader = started_at(self.pid)
        if leader is not None and leader != self.started:
            return False
        return bool(group_members(self.pid))


class Ledger:
    """What one run started, in a JSON file: its own pid, and each service's process group."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> dict[str, LedgerEntry]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return {
            name: LedgerEntry(name, int(e["pid"]), e.get("started")) for name, e in data.items()
        }

    def _write(self, entries: dict[str, LedgerEntry]) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(
            json.dumps({n: {"pid": e.pid, "started": e.started} for n, e in entries.items()})
        )
        tmp.replace(self.path)

    def add(self, name: str, pid: int) -> None:
        entries = self._read()
        entries[name] = LedgerEntry(name, pid, started_at(pid))
        self._write(entries)

    def remove(self, name: str) -> None:
        entries = self._read()
        if entries.pop(name, None) is not None:
            self._write(entries)

    def owner(self, name: str) -> LedgerEntry | None:
        """The entry `name` when its process still runs (for a run's own pid: is it alive?)."""
        entry = self._read().get(name)
        return entry if entry is not None and entry.same_process() else None

    def stop_leftovers(self, skip: tuple[str, ...] = ()) -> list[str]:
        """Stop each recorded process group still running; returns the names stopped."""
        stopped = []
        for name, entry in self._read().items():
            if name in skip:
                continue
            if entry.leftover_group():
                stop_group(entry.pid)
                stopped.append(name)
            self.remove(name)
        return stopped


OnStart = Callable[["Service"], None]


def start(
    name: str,
    args: list[str],
    log_dir: Path,
    env: dict[str, str] | None = None,
    on_start: OnStart | None = None,
) -> Service:
    """Start `args` in a session of its own (Ctrl-C in the terminal does not reach it);
    `on_start` gets the service as soon as it has a pid."""
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
    service = Service(name, proc, log)
    if on_start is not None:
        on_start(service)
    return service


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


# Prefect's server settings GradientLab always sets (its defaults fail open: CORS "*", CSRF
# off, no credentials on loopback, the block-secret key in its own database)
PREFECT_ENCRYPTION_KEY_VAR = "PREFECT_SERVER_ENCRYPTION_KEY"
PREFECT_CORS_VAR = "PREFECT_SERVER_CORS_ALLOWED_ORIGINS"
PREFECT_CSRF_VAR = "PREFECT_SERVER_CSRF_PROTECTION_ENABLED"
AUTH_STRING_FILE = "prefect-auth-string"
ENCRYPTION_KEY_FILE = "prefect-encryption-key"


def _local_secret(name: str, make: Callable[[], str]) -> str:
    """A secret of this machine's, made once: a 0600 file in GradientLab's data folder (never
    in Prefect's home or database, never on a command line)."""
    path = data_dir() / name
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    value = make()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: theirs is the one
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value


def prefect_auth_string() -> str:
    """The Prefect server's auth string: the operator's (`PREFECT_SERVER_API_AUTH_STRING`), or
    one made for this machine (demo and `serve` on one machine)."""
    return os.environ.get(PREFECT_SERVER_AUTH_VAR) or _local_secret(
        AUTH_STRING_FILE, lambda: f"gradientlab:{secrets.token_urlsafe(32)}"
    )


def auth_string_hint() -> str:
    """Where a person finds the Prefect UI's auth string (never the string itself)."""
    if os.environ.get(PREFECT_SERVER_AUTH_VAR):
        return f"the value of {PREFECT_SERVER_AUTH_VAR}"
    return f"the contents of {data_dir() / AUTH_STRING_FILE}"


def prefect_encryption_key() -> str:
    """The Fernet key Prefect encrypts Secret blocks with: the operator's, or one made for this
    machine. Prefect keeps its own in its database unless told, beside what it encrypts."""
    return os.environ.get(PREFECT_ENCRYPTION_KEY_VAR) or _local_secret(
        ENCRYPTION_KEY_FILE, lambda: base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    )


def _client_host(host: str) -> str:
    # a server on every address is reached here through loopback
    client_host = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
    return f"[{client_host}]" if ":" in client_host else client_host


def ui_origins(host: str, port: int) -> list[str]:
    """The origins the Prefect UI is opened at: its own address, and loopback's two names (an
    SSH tunnel forwards the same port to the operator's own machine)."""
    origins = [f"http://{_client_host(host)}:{port}"]
    for name in ("127.0.0.1", "localhost"):
        if f"http://{name}:{port}" not in origins:
            origins.append(f"http://{name}:{port}")
    return origins


def prefect_env(home: Path, port: int, host: str = "127.0.0.1") -> dict[str, str]:
    """The environment of Prefect's clients on this machine (workers, served flows, the app,
    the CLI) for a server on `host:port`: always with the server's auth string, as
    `PREFECT_API_AUTH_STRING` (unless they have their own). Never on a command line."""
    env = {
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": f"http://{_client_host(host)}:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_API_HOST": host,
        "PREFECT_SERVER_API_PORT": str(port),
    }
    env[PREFECT_CLIENT_AUTH_VAR] = os.environ.get(PREFECT_CLIENT_AUTH_VAR) or prefect_auth_string()
    return env


def prefect_server_env(home: Path, port: int, host: str = "127.0.0.1") -> dict[str, str]:
    """The Prefect server's own environment: its clients' plus what only the server may hold:
    its auth string (always: loopback is no sign-in, any web page the operator opens reaches
    it), CORS for its UI's own origins (Prefect's default is "*"), CSRF protection on, and the
    block-secret encryption key, kept outside Prefect's database."""
    return {
        **prefect_env(home, port, host),
        PREFECT_SERVER_AUTH_VAR: prefect_auth_string(),
        PREFECT_ENCRYPTION_KEY_VAR: prefect_encryption_key(),
        PREFECT_CORS_VAR: ",".join(ui_origins(host, port)),
        PREFECT_CSRF_VAR: "true",
    }


def start_prefect_server(
    home: Path,
    port: int,
    log_dir: Path,
    on_start: OnStart | None = None,
    host: str = "127.0.0.1",
) -> Service:
    """Prefect's server on `host:port`. Beyond loopback only with its auth string set (in this
    process's environment), otherwise `ServiceError` before anything starts."""
    try:
        check_prefect_server_binding(host, os.environ.get(PREFECT_SERVER_AUTH_VAR))
    except UnsafeBinding as exc:
        raise ServiceError(str(exc)) from None
    prefect = str(Path(sys.executable).with_name("prefect"))
    env = prefect_server_env(home, port, host)
    service = start(
        "prefect-server",
        [prefect, "server", "start", "--host", host, "--port", str(port)],
        log_dir,
        env,
        on_start,
    )
    # /api/health answers without credentials, by Prefect's design (for probes)
    wait_http(service, f"{env['PREFECT_API_URL']}/health", timeout=180)
    return service


def start_streamlit(
    port: int,
    log_dir: Path,
    env: dict[str, str],
    on_start: OnStart | None = None,
    script: Path = PROJECT_ROOT / "analysis_app" / "app.py",
) -> Service:
    """Streamlit serving `script` (the analysis app unless told) on 127.0.0.1:`port`."""
    service = start(
        "streamlit",
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(script),
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
        on_start,
    )
    wait_http(service, f"http://127.0.0.1:{port}/_stcore/health", timeout=120)
    return service
