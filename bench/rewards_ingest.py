"""Reward ingestion benchmark: a full idempotent re-ingest of N rows against a raw COPY.

    .venv/bin/python -m bench.rewards_ingest [--rows 1000000] [--repeat 3]

Uses DATABASE_URL (or the embedded Postgres) and a database of its own, dropped at the end.
Prints one JSON line per figure (median seconds)."""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import time
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from gradientlab.store import rewards
from gradientlab.store.database import database_url, make_engine, migrate


def emit(figure: str, value: float, **extra: Any) -> None:
    print(
        json.dumps(
            {"bench": "rewards_ingest", "figure": figure, "value": round(value, 4), **extra}
        ),
        flush=True,
    )


def rows(n: int, bump: int = 0) -> list[tuple[str, str, int, int]]:
    days = 1000
    start = date(2024, 1, 1)
    return [
        (
            f"node-{i // days:05d}",
            (start + timedelta(days=i % days)).isoformat(),
            600 * (i % 144) + bump,
            i % 50,
        )
        for i in range(n)
    ]


def timed(
    fn: Callable[[], object], repeat: int, before: Callable[[], object] | None = None
) -> float:
    times = []
    for _ in range(repeat):
        if before:
            before()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def raw_copy(engine: Engine, data: list[tuple[str, str, int, int]]) -> None:
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        buf = io.StringIO("".join(f"{a},{b},{c},{d}\n" for a, b, c, d in data))
        cur.copy_expert(
            "COPY node_daily_stats (client_id, day, duration, taps) FROM STDIN WITH (FORMAT csv)",
            buf,
        )
        raw.commit()
    finally:
        raw.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    admin = make_url(database_url())
    name = f"gradientlab_bench_{os.getpid()}"
    with create_engine(admin, isolation_level="AUTOCOMMIT").connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine = make_engine(admin.set(database=name).render_as_string(hide_password=False))
    try:
        migrate(engine)
        data = rows(args.rows)

        def truncate() -> None:
            with engine.begin() as conn:
                conn.execute(text("TRUNCATE node_daily_stats"))

        emit(
            "raw_copy_s",
            timed(lambda: raw_copy(engine, data), args.repeat, truncate),
            rows=args.rows,
        )
        emit(
            "first_ingest_s",
            timed(lambda: rewards.upsert(engine, rewards.NODE_STATS, data), args.repeat, truncate),
            rows=args.rows,
        )
        count = rewards.upsert(engine, rewards.NODE_STATS, data)
        assert count.changed == 0, count
        emit(
            "reingest_unchanged_s",
            timed(lambda: rewards.upsert(engine, rewards.NODE_STATS, data), args.repeat),
            rows=args.rows,
        )
        changed = rows(args.rows, bump=1)
        emit(
            "reingest_all_changed_s",
            timed(lambda: rewards.upsert(engine, rewards.NODE_STATS, changed), 1),
            rows=args.rows,
        )
    finally:
        engine.dispose()
        with create_engine(admin, isolation_level="AUTOCOMMIT").connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
