"""The PostgreSQL connection and the numbered schema migrations in `sql/`."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import ProgrammingError

from gradientlab.paths import SQL_DIR, data_dir

MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


class StoreError(RuntimeError):
    """The database could not be reached or its schema is not what this code expects."""


def normalise_url(url: str) -> str:
    """Pin the psycopg2 driver: SQLAlchemy 2.1 defaults `postgresql://` to psycopg 3."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix) :]
    return url


def database_url() -> str:
    """`DATABASE_URL` when set, otherwise the embedded Postgres in the data folder."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return normalise_url(url)
    from gradientlab.store.embedded import embedded_postgres_url

    return embedded_postgres_url(data_dir() / "pgdata")


def make_engine(url: str | None = None) -> Engine:
    return create_engine(normalise_url(url or database_url()), pool_pre_ping=True, future=True)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path


def migrations(sql_dir: Path = SQL_DIR) -> list[Migration]:
    found: list[Migration] = []
    for path in sorted(sql_dir.glob("*.sql")):
        m = MIGRATION_NAME.match(path.name)
        if not m:
            raise StoreError(f"{path}: migration files are named NNN_name.sql")
        found.append(Migration(int(m.group(1)), path.stem, path))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise StoreError(f"{sql_dir}: two migrations share a number: {versions}")
    return found


def migrate(engine: Engine, sql_dir: Path = SQL_DIR) -> list[str]:
    """Apply each migration not yet recorded, each in its own transaction. Returns names applied."""
    wanted = migrations(sql_dir)
    if _all_recorded(engine, [m.version for m in wanted]):
        return []  # one query per process start, not a lock and a query per migration
    applied_now: list[str] = []
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
        )
    for migration in wanted:
        with engine.begin() as conn:
            # Serialise concurrent migrators (demo, flows, tests) on one advisory lock.
            conn.execute(text("SELECT pg_advisory_xact_lock(7171)"))
            done = conn.execute(
                text("SELECT 1 FROM schema_migrations WHERE version = :v"),
                {"v": migration.version},
            ).first()
            if done:
                continue
            conn.exec_driver_sql(migration.path.read_text())
            conn.execute(
                text("INSERT INTO schema_migrations (version, name) VALUES (:v, :n)"),
                {"v": migration.version, "n": migration.name},
            )
            applied_now.append(migration.name)
    return applied_now


def _all_recorded(engine: Engine, versions: list[int]) -> bool:
    """Whether schema_migrations records every one of `versions` (False when it is missing)."""
    try:
        with engine.connect() as conn:
            found = conn.execute(
                text("SELECT count(*) FROM schema_migrations WHERE version = ANY(:v)"),
                {"v": versions},
            ).scalar_one()
    except ProgrammingError:  # no schema_migrations yet: a new database
        return False
    return int(found) == len(versions)
