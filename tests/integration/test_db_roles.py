"""The app reads through a read-only role and the flows write through their own, on the real
Postgres: the app's role reads every table and view (the app's own queries included) and can
change nothing; the flows' role writes what the flows write; later tables follow both."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from analysis_app.cached_queries import APP_DATABASE_URL_VAR, current_database_url
from gradientlab.gradient.models import PointDay
from gradientlab.store import reads, rewards
from gradientlab.store.database import migrate
from gradientlab.store.reads import FleetFilter
from gradientlab.store.roles import RoleSetupError, ensure_roles

GRADIENTLAB = str(Path(sys.executable).with_name("gradientlab"))


@pytest.fixture()
def roles(engine: Engine, database_url: str) -> Iterator[tuple[str, str]]:
    """Two roles of this test's own (roles are cluster-wide), dropped afterwards."""
    suffix = uuid.uuid4().hex[:8]
    app, flows = f"gl_app_{suffix}", f"gl_flows_{suffix}"
    yield app, flows
    with engine.begin() as conn:
        for role in (app, flows):
            if conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first():
                conn.exec_driver_sql(f'DROP OWNED BY "{role}"')
                conn.exec_driver_sql(f'DROP ROLE "{role}"')


def engine_as(database_url: str, role: str) -> Engine:
    # trust authentication on 127.0.0.1 here: the role name alone signs in
    url = make_url(database_url).set(username=role, password=None)
    return create_engine(url, pool_pre_ping=True)


def relations(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(
            conn.execute(
                text(
                    "SELECT table_name, table_type FROM information_schema.tables"
                    " WHERE table_schema = 'public'"
                )
            ).all()
        )


def refused(engine: Engine, sql: str) -> bool:
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(sql)
    except DBAPIError as exc:
        reason = str(exc.orig)
        return any(
            why in reason for why in ("permission denied", "must be owner", "read-only transaction")
        )
    return False


def test_the_app_role_reads_everything_and_changes_nothing(
    engine: Engine, database_url: str, roles: tuple[str, str]
) -> None:
    app, flows = roles
    ensure_roles(engine, app, flows)
    app_engine = engine_as(database_url, app)
    try:
        tables = relations(engine)
        assert "v_fleet_status" in tables and "node_daily_points" in tables
        with app_engine.connect() as conn:
            for name in tables:
                conn.exec_driver_sql(f'SELECT * FROM "{name}" LIMIT 1').all()

        # the app's own queries, as its pages run them
        selection = FleetFilter(date(2025, 1, 1), date(2025, 1, 31))
        assert reads.node_totals(app_engine, selection).empty
        assert reads.fleet_now(app_engine).empty
        assert reads.selection_totals(app_engine, selection)["nodes"] == 0
        assert reads.incidents(app_engine, selection).empty
        assert reads.filter_choices(app_engine).empty
        reads.host_costs(app_engine, selection, datetime.now(UTC))

        for name, kind in tables.items():
            if kind != "BASE TABLE":
                continue
            assert refused(app_engine, f'DELETE FROM "{name}"'), name
            assert refused(app_engine, f'UPDATE "{name}" SET {first_column(engine, name)} = NULL')
            assert refused(app_engine, f'TRUNCATE "{name}"'), name
        assert refused(app_engine, "INSERT INTO hosts (name, provider) VALUES ('x', 'local')")
        assert refused(app_engine, "CREATE TABLE app_was_here (x int)")
        # even a session that asks for writing gets no write privilege
        assert refused(
            app_engine,
            "SET TRANSACTION READ WRITE; INSERT INTO hosts (name, provider) VALUES ('x', 'local')",
        )
    finally:
        app_engine.dispose()


def first_column(engine: Engine, table: str) -> str:
    with engine.connect() as conn:
        return str(
            conn.execute(
                text(
                    "SELECT column_name FROM information_schema.columns"
                    " WHERE table_name = :t ORDER BY ordinal_position LIMIT 1"
                ),
                {"t": table},
            ).scalar_one()
        )


def test_the_flows_role_writes_what_flows_write_and_not_the_schema(
    engine: Engine, database_url: str, roles: tuple[str, str]
) -> None:
    app, flows = roles
    ensure_roles(engine, app, flows)
    flows_engine = engine_as(database_url, flows)
    try:
        assert migrate(flows_engine) == []  # every migration applied: it only reads
        # the rewards upsert: a temporary staging table, COPY, then an upsert
        written = rewards.upsert_account_points(
            flows_engine,
            "acct",
            [
                PointDay.model_validate(
                    {"id": "20250102", "node": 100, "referral": 0, "bonus": 0, "boost": 0}
                )
            ],
        )
        assert written.inserted == 1
        with flows_engine.begin() as conn:
            conn.execute(text("INSERT INTO hosts (name, provider) VALUES ('h1', 'local')"))
            conn.execute(text("UPDATE hosts SET provider = 'ssh' WHERE name = 'h1'"))
            conn.execute(text("DELETE FROM hosts WHERE name = 'h1'"))
        assert refused(flows_engine, "CREATE TABLE flows_was_here (x int)")
        assert refused(flows_engine, "DROP TABLE hosts")
    finally:
        flows_engine.dispose()


def test_tables_a_later_migration_makes_follow_both_roles(
    engine: Engine, database_url: str, roles: tuple[str, str]
) -> None:
    app, flows = roles
    ensure_roles(engine, app, flows)
    with engine.begin() as conn:  # as the owner, like the next migration
        conn.exec_driver_sql("CREATE TABLE later_rollup (id serial PRIMARY KEY, n int)")
    app_engine, flows_engine = engine_as(database_url, app), engine_as(database_url, flows)
    try:
        with flows_engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO later_rollup (n) VALUES (1)")
        with app_engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT n FROM later_rollup").scalar_one() == 1
        assert refused(app_engine, "INSERT INTO later_rollup (n) VALUES (2)")
    finally:
        app_engine.dispose()
        flows_engine.dispose()
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE later_rollup")


def test_running_it_again_changes_nothing_and_bad_names_are_refused(
    engine: Engine, roles: tuple[str, str]
) -> None:
    app, flows = roles
    first = ensure_roles(engine, app, flows, app_password="first secret pw")
    again = ensure_roles(engine, app, flows)
    assert first.created == [app, flows] and again.created == []
    with pytest.raises(RoleSetupError, match="role name 'app; DROP TABLE hosts'"):
        ensure_roles(engine, "app; DROP TABLE hosts", flows)
    with pytest.raises(RoleSetupError, match="must differ"):
        ensure_roles(engine, app, app)


def test_the_command_sets_passwords_from_stdin_and_prints_the_urls(
    engine: Engine, database_url: str, roles: tuple[str, str]
) -> None:
    app, flows = roles
    done = subprocess.run(
        [GRADIENTLAB, "db-roles", "--app-role", app, "--flows-role", flows, "--passwords"],
        input="app password 1\nflows password 2\n",
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"{app}: created" in done.stdout
    assert "app password 1" not in done.stdout + done.stderr
    assert f"GRADIENTLAB_APP_DATABASE_URL=postgresql+psycopg2://{app}:PASSWORD@" in done.stdout
    with engine.connect() as conn:
        stored = conn.execute(
            text("SELECT rolpassword FROM pg_authid WHERE rolname = :r"), {"r": app}
        ).scalar_one()
    assert stored.startswith("SCRAM-SHA-256$")


def test_the_app_uses_its_own_url_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://flows@db.example/gradientlab")
    monkeypatch.setenv(APP_DATABASE_URL_VAR, "postgresql://app@db.example/gradientlab")
    assert current_database_url() == "postgresql+psycopg2://app@db.example/gradientlab"
    monkeypatch.delenv(APP_DATABASE_URL_VAR)
    assert current_database_url() == "postgresql+psycopg2://flows@db.example/gradientlab"
