"""The store on a real Postgres: migrations once each, idempotent upserts, no partial writes."""

from __future__ import annotations

import uuid
from datetime import date

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from gradientlab.gradient.models import NodeDay, PointDay
from gradientlab.store import rewards
from gradientlab.store.database import migrate, migrations
from gradientlab.store.locks import busy_hosts, host_lock


def table(engine: Engine, sql: str) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql))]


def test_migrations_apply_once_and_are_recorded(engine: Engine) -> None:
    assert migrate(engine) == []  # the fixture already applied them
    recorded = table(engine, "SELECT version, name FROM schema_migrations ORDER BY version")
    assert recorded == [(m.version, m.name) for m in migrations()]


def test_account_points_upsert_is_idempotent_and_raw(engine: Engine) -> None:
    days = [
        PointDay(day=date(2026, 11, 1), node=1234567, referral=0, bonus=5, boost=0),
        PointDay(day=date(2026, 11, 2), node=25000, referral=100000, bonus=0, boost=0),
    ]
    first = rewards.upsert_account_points(engine, "a@b.c", days)
    assert (first.inserted, first.updated, first.unchanged) == (2, 0, 0)
    snapshot = table(engine, "SELECT * FROM account_daily_points ORDER BY day")
    assert snapshot[0][2] == 1234567  # raw integer points, never divided

    again = rewards.upsert_account_points(engine, "a@b.c", days)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 2)
    assert table(engine, "SELECT * FROM account_daily_points ORDER BY day") == snapshot

    grown = [
        days[0],
        PointDay(day=date(2026, 11, 2), node=50000, referral=100000, bonus=0, boost=0),
    ]
    third = rewards.upsert_account_points(engine, "a@b.c", grown)
    assert (third.inserted, third.updated, third.unchanged) == (0, 1, 1)
    assert table(engine, "SELECT node FROM account_daily_points ORDER BY day") == [
        (1234567,),
        (50000,),
    ]


def test_node_stats_duplicates_in_one_batch_count_once(engine: Engine) -> None:
    day = NodeDay(day=date(2026, 11, 3), duration=600, taps=2)
    count = rewards.upsert_node_stats(engine, "node-a", [day, day])
    assert count.inserted == 1
    assert table(engine, "SELECT client_id, day, duration, taps FROM node_daily_stats") == [
        ("node-a", date(2026, 11, 3), 600, 2)
    ]


def test_bad_rows_write_nothing(engine: Engine) -> None:
    good = PointDay(day=date(2026, 11, 1), node=10, referral=0, bonus=0, boost=0)
    bad = PointDay(day=date(2026, 11, 2), node=-5, referral=0, bonus=0, boost=0)
    with pytest.raises(ValueError, match=r"/point/stats day 2026-11-02: node is -5"):
        rewards.upsert_account_points(engine, "a@b.c", [good, bad])
    assert table(engine, "SELECT count(*) FROM account_daily_points") == [(0,)]


def test_a_host_lock_held_in_another_database_is_not_this_fleets(
    engine: Engine, database_url: str
) -> None:
    """Advisory locks belong to one database: a deploy of another fleet's host of the same
    name, on the same server (another test session, the demo), never holds this one."""
    url = make_url(database_url)
    other = f"gradientlab_test_other_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{other}"'))
    elsewhere = create_engine(url.set(database=other))
    try:
        with host_lock(elsewhere, "node-1"):
            assert busy_hosts(engine, ["node-1", "node-2"]) == set()
            with host_lock(engine, "node-1"):  # the same name here is free, and then held
                assert busy_hosts(engine, ["node-1", "node-2"]) == {"node-1"}
    finally:
        elsewhere.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{other}" WITH (FORCE)'))
        admin.dispose()
