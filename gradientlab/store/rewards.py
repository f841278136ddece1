"""Idempotent, incremental ingestion of rewards and node statistics.

Rows are COPYed into a temporary staging table, then merged with one INSERT ... ON CONFLICT that
updates only rows whose values changed. Re-ingesting the same data changes nothing; a batch is one
transaction, so a failure leaves nothing half-written. A table with a ``day`` key can keep past
days grow-only: a value read for a day that has ended never lowers what is stored."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Engine, text

from gradientlab.gradient.models import NodeDay, PointDay


@dataclass(frozen=True)
class UpsertCount:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0

    @property
    def changed(self) -> int:
        return self.inserted + self.updated

    def __add__(self, other: UpsertCount) -> UpsertCount:
        return UpsertCount(
            self.inserted + other.inserted,
            self.updated + other.updated,
            self.unchanged + other.unchanged,
        )


@dataclass(frozen=True)
class Table:
    name: str
    keys: tuple[str, ...]
    values: tuple[str, ...]
    types: dict[str, str]


ACCOUNT_POINTS = Table(
    "account_daily_points",
    ("account", "day"),
    ("node", "referral", "bonus", "boost"),
    {
        "account": "text",
        "day": "date",
        "node": "bigint",
        "referral": "bigint",
        "bonus": "bigint",
        "boost": "bigint",
    },
)
NODE_STATS = Table(
    "node_daily_stats",
    ("client_id", "day"),
    ("duration", "taps"),
    {"client_id": "text", "day": "date", "duration": "bigint", "taps": "bigint"},
)
NODE_POINTS = Table(
    "node_daily_points",
    ("client_id", "day"),
    ("points", "taps"),
    {"client_id": "text", "day": "date", "points": "bigint", "taps": "bigint"},
)


def _copy_rows(rows: Iterable[Sequence[Any]]) -> io.StringIO:
    buf = io.StringIO()
    writer = csv.writer(buf)
    for row in rows:
        writer.writerow(row)
    buf.seek(0)
    return buf


def upsert(
    engine: Engine,
    table: Table,
    rows: Iterable[Sequence[Any]],
    *,
    grow_only_before: date | None = None,
) -> UpsertCount:
    """Merge ``rows`` (keys then values, in the table's order) into ``table``. With
    ``grow_only_before``, a row whose ``day`` is earlier only ever raises stored values."""
    cols = table.keys + table.values
    staging = f"staging_{table.name}"
    col_defs = ", ".join(f"{c} {table.types[c]} NOT NULL" for c in cols)
    col_list = ", ".join(cols)
    changed_where = (
        f"({', '.join(f'{table.name}.{c}' for c in table.values)}) IS DISTINCT FROM "
        f"({', '.join(f'EXCLUDED.{c}' for c in table.values)})"
    )
    keys = ", ".join(table.keys)
    join_on = " AND ".join(f"t.{k} = s.{k}" for k in table.keys)
    differs = (
        f"({', '.join(f't.{c}' for c in table.values)}) IS DISTINCT FROM "
        f"({', '.join(f's.{c}' for c in table.values)})"
    )
    new_value = {c: f"EXCLUDED.{c}" for c in table.values}
    params: dict[str, Any] = {}
    if grow_only_before is not None:
        if "day" not in table.keys:
            raise ValueError(f"{table.name} has no day key; past days cannot be grow-only")
        params["cut"] = grow_only_before
        grows = " OR ".join(f"s.{c} > t.{c}" for c in table.values)
        differs = f"CASE WHEN s.day < %(cut)s THEN ({grows}) ELSE {differs} END"
        new_value = {
            c: f"CASE WHEN {table.name}.day < %(cut)s THEN GREATEST({table.name}.{c}, "
            f"EXCLUDED.{c}) ELSE EXCLUDED.{c} END"
            for c in table.values
        }
    # Rows equal to what is stored are dropped by an anti-join before the INSERT: ON CONFLICT
    # would lock and check each of them one by one, which is what makes re-ingests slow.
    merge = f"""
        WITH merged AS (
            INSERT INTO {table.name} ({col_list})
            SELECT {", ".join(f"s.{c}" for c in cols)}
            FROM (SELECT DISTINCT ON ({keys}) {col_list} FROM {staging} ORDER BY {keys}) s
            LEFT JOIN {table.name} t ON {join_on}
            WHERE t.{table.keys[0]} IS NULL OR {differs}
            ON CONFLICT ({keys}) DO UPDATE SET
                {", ".join(f"{c} = {new_value[c]}" for c in table.values)}, updated_at = now()
            WHERE {changed_where}
            RETURNING (xmax = 0) AS inserted
        )
        SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted),
               (SELECT count(DISTINCT ({keys})) FROM {staging})
        FROM merged
    """
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute(f"CREATE TEMP TABLE {staging} ({col_defs}) ON COMMIT DROP")
        cur.copy_expert(
            f"COPY {staging} ({col_list}) FROM STDIN WITH (FORMAT csv)", _copy_rows(rows)
        )
        cur.execute(f"ANALYZE {staging}")  # a temp table has no statistics until asked
        cur.execute(merge, params or None)
        counts = cur.fetchone()
        assert counts is not None
        inserted, updated, total = counts
        raw.commit()
    except Exception:
        raw.rollback()
        raise
    finally:
        raw.close()
    return UpsertCount(int(inserted), int(updated), int(total) - int(inserted) - int(updated))


def _check_points(where: str, **values: int) -> None:
    for name, value in values.items():
        if value < 0:
            raise ValueError(f"{where}: {name} is {value}; points are never negative")


def upsert_account_points(engine: Engine, account: str, days: list[PointDay]) -> UpsertCount:
    for d in days:
        _check_points(
            f"/point/stats day {d.day}",
            node=d.node,
            referral=d.referral,
            bonus=d.bonus,
            boost=d.boost,
        )
    return upsert(
        engine,
        ACCOUNT_POINTS,
        ((account, d.day.isoformat(), d.node, d.referral, d.bonus, d.boost) for d in days),
    )


def upsert_node_stats(engine: Engine, client_id: str, days: list[NodeDay]) -> UpsertCount:
    return upsert_many_node_stats(engine, {client_id: days})


def upsert_many_node_stats(engine: Engine, by_node: Mapping[str, list[NodeDay]]) -> UpsertCount:
    """Days of many nodes in one transaction (a fleet of 10,000 is a few batches, not 10,000)."""
    for client_id, days in by_node.items():
        for d in days:
            _check_points(
                f"/sentrynode/stats/{client_id} day {d.day}", duration=d.duration, taps=d.taps
            )
    return upsert(
        engine,
        NODE_STATS,
        (
            (client_id, d.day.isoformat(), d.duration, d.taps)
            for client_id, days in by_node.items()
            for d in days
        ),
    )


def upsert_node_points(
    engine: Engine, day: date, items: list[tuple[str, int, int]], *, today: date | None = None
) -> UpsertCount:
    """(client_id, points today, taps today) as the node list shows them on ``day``.

    ``today`` is the network's day now: when ``day`` is earlier (the list was read across
    midnight) its values only raise what is stored, so a new day's near-zero "today" never
    overwrites the day before. Days before ``day`` are never lowered either way."""
    for client_id, pts, taps in items:
        _check_points(f"/sentrynode/list node {client_id}", today=pts, taps=taps)
    return upsert(
        engine,
        NODE_POINTS,
        ((c, day.isoformat(), p, t) for c, p, t in items),
        grow_only_before=today or day,
    )


def latest_node_stat_days(engine: Engine) -> dict[str, date]:
    """The newest day stored per node: where an incremental ingest of that node resumes."""
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT client_id, max(day) AS day FROM node_daily_stats GROUP BY client_id")
        )
        return {r.client_id: r.day for r in rows}


def latest_account_day(engine: Engine, account: str) -> date | None:
    """The newest day of ``account``'s points stored, or None before the first ingest."""
    with engine.connect() as conn:
        value = conn.execute(
            text("SELECT max(day) FROM account_daily_points WHERE account = :a"), {"a": account}
        ).scalar()
    return value if isinstance(value, date) else None


def record_unknown_nodes(
    engine: Engine, unknown: Mapping[str, str], known: Iterable[str], at: datetime
) -> None:
    """Node ids the network answered 404 for (id -> endpoint), and ids it knows (again)."""
    known_ids = sorted(set(known) - set(unknown))
    with engine.begin() as conn:
        if known_ids:
            conn.execute(
                text("DELETE FROM network_unknown_nodes WHERE client_id = ANY(:ids)"),
                {"ids": known_ids},
            )
        if unknown:
            conn.execute(
                text(
                    "INSERT INTO network_unknown_nodes (client_id, endpoint, first_seen, last_seen)"
                    " VALUES (:id, :endpoint, :at, :at)"
                    " ON CONFLICT (client_id) DO UPDATE SET endpoint = EXCLUDED.endpoint,"
                    " last_seen = EXCLUDED.last_seen, times = network_unknown_nodes.times + 1"
                ),
                [{"id": i, "endpoint": e, "at": at} for i, e in sorted(unknown.items())],
            )


def unknown_nodes(engine: Engine) -> dict[str, int]:
    """Node ids the network does not know, with how many times a run found them unknown."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT client_id, times FROM network_unknown_nodes"))
        return {r.client_id: r.times for r in rows}


def taps_per_node_day(engine: Engine, since: date) -> list[dict[str, str]]:
    """Taps per node per day as the network reported them, from `since` on, newest day first;
    each value as text (the poc_taps flow's table)."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT h.name AS host, s.client_id, s.day, s.taps FROM node_daily_stats s"
                " LEFT JOIN nodes n ON n.client_id = s.client_id"
                " LEFT JOIN hosts h ON h.id = n.host_id"
                " WHERE s.day >= CAST(:since AS date) ORDER BY s.day DESC, host"
            ),
            {"since": since},
        )
        return [{k: str(v) for k, v in r._mapping.items()} for r in rows]
