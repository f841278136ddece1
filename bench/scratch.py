"""A scratch database for a benchmark: created on the server DATABASE_URL names (or the
embedded one), migrated, made the process's DATABASE_URL, dropped afterwards."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url


@contextmanager
def scratch_database(prefix: str = "gradientlab_bench") -> Iterator[Engine]:
    from gradientlab.store.database import database_url, make_engine, migrate

    embedded = not os.environ.get("DATABASE_URL")  # then this process starts its own server
    admin = make_url(database_url())
    name = f"{prefix}_{os.getpid()}"
    with create_engine(admin, isolation_level="AUTOCOMMIT").connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin.set(database=name).render_as_string(hide_password=False)
    os.environ["DATABASE_URL"] = url
    engine = make_engine(url)
    try:
        migrate(engine)
        yield engine
    finally:
        engine.dispose()
        with create_engine(admin, isolation_level="AUTOCOMMIT").connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        if embedded:
            from gradientlab.paths import data_dir
            from gradientlab.store.embedded import stop_embedded_postgres

            os.environ.pop("DATABASE_URL", None)
            stop_embedded_postgres(data_dir() / "pgdata")
