"""Least privilege in the fleet database: a read-only role for the analysis app, a read-write
role for the flows, both made by `gradientlab db-roles`.

Roles are cluster-wide and need CREATEROLE, so this is a command an operator runs once (and
again after each upgrade) with the database owner's URL, not a migration: a managed Postgres
gives that power to its admin user, not to the user the flows run as. The command applies the
migrations first, as the owner, so that tables and views are owned by the admin and the flows
never need to change the schema (their `migrate()` then only reads `schema_migrations`).

- `gradientlab_app`: CONNECT; SELECT on every table and view, also on those later migrations
  create (ALTER DEFAULT PRIVILEGES); nothing else; its sessions are read-only by default.
- `gradientlab_flows`: CONNECT and TEMPORARY (the rewards upsert stages rows in a temporary
  table); SELECT, INSERT, UPDATE, DELETE, TRUNCATE on every table; the sequences; the same on
  later tables. No DDL on the schema."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, text

from gradientlab.store.database import migrate

APP_ROLE = "gradientlab_app"
FLOWS_ROLE = "gradientlab_flows"
ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
SCHEMA = "public"

APP_TABLE_PRIVILEGES = "SELECT"
FLOWS_TABLE_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE, TRUNCATE"
FLOWS_SEQUENCE_PRIVILEGES = "USAGE, SELECT, UPDATE"


class RoleSetupError(ValueError):
    pass


@dataclass(frozen=True)
class RoleSetup:
    database: str
    created: list[str]
    migrations_applied: list[str]


def _check_role_name(name: str) -> str:
    if not ROLE_NAME.match(name):
        raise RoleSetupError(
            f"role name {name!r}: use lowercase letters, digits and _ (up to 63, not starting "
            "with a digit)"
        )
    return name


def _ensure_role(conn: Connection, role: str, password: str | None) -> bool:
    """Create `role` (LOGIN, no other power) unless it exists; set its password when given.
    The password travels as a bound parameter, never in the statement's text."""
    exists = conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first()
    if not exists:
        conn.exec_driver_sql(
            f'CREATE ROLE "{role}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION'
        )
    if password is not None:
        conn.execute(
            text("SELECT set_config('gradientlab.new_password', :p, true)"), {"p": password}
        )
        conn.execute(  # text() escapes the % that format() needs from the driver
            text(
                "DO $$ BEGIN EXECUTE format('ALTER ROLE %I PASSWORD %L', "
                f"'{role}', current_setting('gradientlab.new_password')); END $$"
            )
        )
        conn.execute(text("SELECT set_config('gradientlab.new_password', '', true)"))
    return not exists


def ensure_roles(
    engine: Engine,
    app_role: str = APP_ROLE,
    flows_role: str = FLOWS_ROLE,
    app_password: str | None = None,
    flows_password: str | None = None,
) -> RoleSetup:
    """Make both roles and their grants on `engine`'s database; safe to run again. `engine`
    connects as the database's owner (or an admin with CREATEROLE)."""
    app, flows = _check_role_name(app_role), _check_role_name(flows_role)
    if app == flows:
        raise RoleSetupError("the app's role and the flows' role must differ")
    applied = migrate(engine)
    with engine.begin() as conn:
        database = conn.execute(text("SELECT current_database()")).scalar_one()
        created = [
            role
            for role, password in ((app, app_password), (flows, flows_password))
            if _ensure_role(conn, role, password)
        ]
        db = '"' + database.replace('"', '""') + '"'
        for statement in (
            f'ALTER ROLE "{app}" SET default_transaction_read_only = on',
            # nobody but the owner creates objects here (the default since Postgres 15)
            f"REVOKE CREATE ON SCHEMA {SCHEMA} FROM PUBLIC",
            f'REVOKE ALL ON DATABASE {db} FROM "{app}"',
            f'GRANT CONNECT ON DATABASE {db} TO "{app}"',
            f'GRANT CONNECT, TEMPORARY ON DATABASE {db} TO "{flows}"',
            f'GRANT USAGE ON SCHEMA {SCHEMA} TO "{app}", "{flows}"',
            f'GRANT {APP_TABLE_PRIVILEGES} ON ALL TABLES IN SCHEMA {SCHEMA} TO "{app}"',
            f'GRANT {FLOWS_TABLE_PRIVILEGES} ON ALL TABLES IN SCHEMA {SCHEMA} TO "{flows}"',
            f'GRANT {FLOWS_SEQUENCE_PRIVILEGES} ON ALL SEQUENCES IN SCHEMA {SCHEMA} TO "{flows}"',
            # what later migrations (run by this same owner) create
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA {SCHEMA} "
            f'GRANT {APP_TABLE_PRIVILEGES} ON TABLES TO "{app}"',
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA {SCHEMA} "
            f'GRANT {FLOWS_TABLE_PRIVILEGES} ON TABLES TO "{flows}"',
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA {SCHEMA} "
            f'GRANT {FLOWS_SEQUENCE_PRIVILEGES} ON SEQUENCES TO "{flows}"',
        ):
            conn.exec_driver_sql(statement)
    return RoleSetup(database, created, applied)
