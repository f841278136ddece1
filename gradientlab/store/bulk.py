"""Bulk writes of fleet history with COPY: an import or a restore of months of checks,
incidents and tap-readiness tests, where one INSERT per row would take hours. The flows write
row by row through gradientlab/store/fleet.py and gradientlab/store/taps.py; after a bulk
write, `gradientlab refresh-rollups` brings the daily rollups up to date."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Engine

from gradientlab.store.fleet import SAMPLE_COLUMNS

INCIDENT_COLUMNS = ("id", "host_id", "kind", "last_kind", "detected_at", "status", "recovered_at",
                    "alerted_at", "confirmed_at", "sweeps", "detail")  # fmt: skip
ACTION_COLUMNS = ("incident_id", "step", "started_at", "finished_at", "ok", "detail")
TAP_COLUMNS = ("host_id", "checked_at", "run_id", "stun_server", "udp_reachable", "local_address",
               "local_port", "mapped_address", "mapped_port", "behind_nat", "rfc5780", "mapping",
               "filtering", "nat_type", "rtt_ms", "error", "notes")  # fmt: skip
_TABLES: dict[str, tuple[str, ...]] = {
    "node_status_samples": ("host_id", *SAMPLE_COLUMNS),
    "incidents": INCIDENT_COLUMNS,
    "recovery_actions": ACTION_COLUMNS,
    "tap_readiness": TAP_COLUMNS,
}


def _csv(rows: Iterable[Sequence[Any]]) -> io.StringIO:
    buf = io.StringIO()
    writer = csv.writer(buf)
    for row in rows:
        # None is an empty unquoted field, which COPY ... csv reads as NULL
        writer.writerow(["" if v is None else v for v in row])
    buf.seek(0)
    return buf


def copy_rows(
    engine: Engine,
    table: str,
    rows: Iterable[Sequence[Any]] | io.StringIO,
    only: Sequence[str] | None = None,
) -> int:
    """COPY `rows` into one of the history tables in one transaction: values in the order of
    `columns(table)`, or of `only` (a subset; the others take their defaults). `rows` may
    already be CSV text. Returns the rows written."""
    if table not in _TABLES:
        raise ValueError(f"bulk writes go to {sorted(_TABLES)}, not {table!r}")
    names = tuple(only or _TABLES[table])
    unknown = sorted(set(names) - set(_TABLES[table]))
    if unknown:
        raise ValueError(f"{table} has no bulk-writable column(s) {unknown}")
    data = rows if isinstance(rows, io.StringIO) else _csv(rows)
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.copy_expert(f"COPY {table} ({', '.join(names)}) FROM STDIN WITH (FORMAT csv)", data)
        written = int(cur.rowcount)
        if table == "incidents":  # ids were given: later incidents continue after them
            cur.execute(
                "SELECT setval(pg_get_serial_sequence('incidents', 'id'),"
                " GREATEST((SELECT max(id) FROM incidents), 1))"
            )
        raw.commit()
    except Exception:
        raw.rollback()
        raise
    finally:
        raw.close()
    return written


def columns(table: str) -> tuple[str, ...]:
    """The columns `copy_rows` expects for `table`, in order."""
    return _TABLES[table]
