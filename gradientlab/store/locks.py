"""Per-host locks that every worker sees: deploy and recovery never act on one host at once.

A Postgres advisory lock held by a connection for the length of the work; it is released when
the work ends or when the process holding it dies (the connection closes).

The lock's connection is a connection of its own, outside the engine's pool: a deploy or a
recovery holds its lock for minutes while it asks the pool for connections to record its work,
so locks taken from the pool would let a fleet-wide deploy (more hosts at once than the pool
holds) take every pooled connection and then wait on itself until the pool's timeout."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

LOCK_SPACE = 0x6C61  # "la": GradientLab's advisory lock class


class HostBusy(RuntimeError):
    """Another deploy or recovery holds this host."""


_LOCK_ENGINES: dict[str, Engine] = {}
_LOCK_ENGINES_LOCK = threading.Lock()


def _lock_engine(engine: Engine) -> Engine:
    """An engine for the same database whose connections are opened per lock and closed after
    (no pool): locks never take a connection the work needs."""
    key = engine.url.render_as_string(hide_password=False)
    with _LOCK_ENGINES_LOCK:
        lock_engine = _LOCK_ENGINES.get(key)
        if lock_engine is None:
            lock_engine = _LOCK_ENGINES[key] = create_engine(engine.url, poolclass=NullPool)
        return lock_engine


@contextmanager
def host_lock(engine: Engine, host: str, wait_seconds: float = 0) -> Iterator[None]:
    """Hold `host`'s lock; raise HostBusy when it is still held after `wait_seconds`. The lock
    holds a connection of its own, never one of `engine`'s pool."""
    conn = _lock_engine(engine).connect()
    try:
        deadline = time.monotonic() + wait_seconds
        while True:
            got = conn.execute(
                text("SELECT pg_try_advisory_lock(:space, hashtext(:host))"),
                {"space": LOCK_SPACE, "host": host},
            ).scalar_one()
            conn.commit()
            if got:
                break
            if time.monotonic() >= deadline:
                raise HostBusy(f"{host}: another deploy or recovery is working on this host")
            time.sleep(0.5)
        try:
            yield
        finally:
            conn.execute(
                text("SELECT pg_advisory_unlock(:space, hashtext(:host))"),
                {"space": LOCK_SPACE, "host": host},
            )
            conn.commit()
    finally:
        conn.close()


def busy_hosts(engine: Engine, names: list[str]) -> set[str]:
    """Hosts whose lock someone holds now (a deploy or a recovery on any worker).

    Advisory locks belong to one database, but pg_locks lists the whole server's: only this
    database's count (another fleet's database on the same server may have a host so named)."""
    if not names:
        return set()
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT h.name FROM unnest(CAST(:names AS text[])) AS h(name)"
                " JOIN pg_locks l ON l.locktype = 'advisory' AND l.granted"
                " AND l.classid = :space AND l.objsubid = 2"
                " AND l.objid::bigint = (hashtext(h.name)::bigint & 4294967295)"
                " AND l.database = (SELECT oid FROM pg_database"
                " WHERE datname = current_database())"
            ),
            {"names": names, "space": LOCK_SPACE},
        )
        return {r.name for r in rows}
