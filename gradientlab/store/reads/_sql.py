"""What every read shares: a query to a DataFrame, a query to CSV (Postgres' COPY), the
edge-day joins of the running totals, and raw points to points for display."""

from __future__ import annotations

import io
import re
from typing import Any

import pandas as pd
from sqlalchemy import Engine, text

from gradientlab.gradient.models import POINT_SCALE

# node_daily_stats.duration is read as seconds of uptime.
UPTIME_SECONDS_PER_UNIT = 1


def to_points(raw: pd.Series) -> pd.Series:
    """Raw API integers to points, for display only."""
    return raw.astype("float64") / POINT_SCALE


def _frame(engine: Engine, sql: str, params: dict[str, Any] | None = None) -> pd.DataFrame:
    with engine.connect() as conn:
        result = conn.execute(text(sql), params or {})
        # plain tuples: pandas builds a frame from them several times faster than from Rows
        rows = [tuple(row) for row in result.fetchall()]
        return pd.DataFrame.from_records(rows, columns=list(result.keys()))


def _copy_csv(engine: Engine, sql: str, params: dict[str, Any]) -> bytes:
    """COPY (query) TO STDOUT: Postgres writes the CSV; bound values are rendered by the
    driver, as in every other query here."""
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        # psycopg2 binds %(name)s; the queries here are written with :name
        query = re.sub(r"(?<!:):([a-z_]+)", r"%(\1)s", sql)
        bound = cur.mogrify(query, params).decode()
        out = io.BytesIO()
        cur.copy_expert(f"COPY ({bound}) TO STDOUT WITH (FORMAT csv, HEADER)", out)
        raw.rollback()
        return out.getvalue()
    finally:
        raw.close()


def _edge_rows(
    name: str,
    table: str,
    key: str,
    owner: str,
    columns: str,
    equal: str,
    before: str,
    only_if: str = "",
) -> str:
    """Joins `name`0 and `name`1: a rollup's row for each owner (`owner` = `table`.`key`) on
    one edge day of a range. `name`0 reads the day itself (one range scan of the primary key
    for every owner at once); `name`1, only for an owner with no row that day, its last row
    `before` it (an index-only backward probe). `columns` are read from either."""
    return f"""
        LEFT JOIN (SELECT {key}, day, {columns} FROM {table} WHERE day = {equal}) {name}0
            ON {name}0.{key} = {owner}
        LEFT JOIN LATERAL (
            SELECT r.day, {columns} FROM {table} r
            WHERE {name}0.{key} IS NULL {only_if} AND r.{key} = {owner} AND r.day {before}
            ORDER BY r.day DESC LIMIT 1
        ) {name}1 ON true"""


def _edge_differences(columns: tuple[str, ...]) -> str:
    """Each running total over the range: the end edge's (`e0`, else `e1`) less the start
    edge's (`s0`, else `s1`, else nothing before the range), as `_edge_rows` joins them."""
    return ",\n".join(
        f"COALESCE(e0.cum_{c}, e1.cum_{c}, 0) - COALESCE(s0.cum_{c}, s1.cum_{c}, 0) AS {c}"
        for c in columns
    )
