"""The Incidents page's question, what went wrong and how recovery went: the incidents with
the steps tried (a page of them, or as CSV), the steps of given incidents, incidents per
cause and per day, recovery times in bands, and each recovery step's success."""

from __future__ import annotations

from typing import Any

import pandas as pd
from sqlalchemy import Engine

from gradientlab.store.reads._sql import _copy_csv, _frame
from gradientlab.store.reads.filters import (
    FleetFilter,
    _days,
    _host_selection,
    _selection,
    _utc_bounds,
)
from gradientlab.store.rollups import UNKNOWN_REGION


def _incidents_sql(
    selection: FleetFilter, page: str, unresolved: bool = False
) -> tuple[str, dict[str, Any]]:
    extra, params = _selection(selection)
    if unresolved:
        extra += " AND status <> 'recovered'"
    return (
        f"""
        SELECT id, host, provider, region, kind, status, detected_at, recovered_at,
               recovery_seconds, actions, action_count, failed_actions, alerted_at, detail
        FROM (
            SELECT i.id, h.name AS host, h.provider, COALESCE(h.region, :unknown) AS region,
                   i.kind, i.status, i.detected_at, i.recovered_at,
                   EXTRACT(EPOCH FROM i.recovered_at - i.detected_at)::float8
                       AS recovery_seconds,
                   COALESCE(a.actions, '') AS actions,
                   COALESCE(a.action_count, 0) AS action_count,
                   COALESCE(a.failed_actions, 0) AS failed_actions,
                   i.alerted_at, i.detail
            FROM incidents i
            JOIN hosts h ON h.id = i.host_id
            LEFT JOIN LATERAL (
                SELECT string_agg(
                           r.step || CASE WHEN r.ok THEN ' ✓' WHEN NOT r.ok THEN ' ✗' ELSE ' …' END,
                           ' → ' ORDER BY r.started_at, r.id) AS actions,
                       count(*) AS action_count,
                       count(*) FILTER (WHERE r.ok IS FALSE) AS failed_actions
                FROM recovery_actions r WHERE r.incident_id = i.id
            ) a ON true
            WHERE i.detected_at >= :since AND i.detected_at < :until
        ) i
        WHERE true {extra}
        ORDER BY detected_at DESC, id DESC
        {page}
        """,
        {**_utc_bounds(selection), "unknown": UNKNOWN_REGION, **params},
    )


def incidents(
    engine: Engine,
    selection: FleetFilter,
    limit: int | None = None,
    offset: int = 0,
    unresolved: bool = False,
) -> pd.DataFrame:
    """Incidents detected in the selection, newest first, with recovery time and the steps
    tried in order; with `limit`, one page of them; `unresolved`: only those still open or
    that recovery gave up on."""
    page = "" if limit is None else "LIMIT :limit OFFSET :offset"
    sql, params = _incidents_sql(selection, page, unresolved)
    frame = _frame(engine, sql, {**params, "limit": limit, "offset": offset})
    for column in ("detected_at", "recovered_at", "alerted_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    frame["recovery_seconds"] = frame["recovery_seconds"].astype("float64")
    return frame


def recovery_actions(engine: Engine, incident_ids: list[int]) -> pd.DataFrame:
    """The steps taken for the given incidents, in order, with how long each took."""
    frame = _frame(
        engine,
        """
        SELECT r.incident_id, r.step, r.started_at, r.finished_at,
               EXTRACT(EPOCH FROM r.finished_at - r.started_at)::float8 AS seconds,
               r.ok, r.detail
        FROM recovery_actions r
        WHERE r.incident_id = ANY(:ids)
        ORDER BY r.incident_id, r.started_at, r.id
        """,
        {"ids": incident_ids},
    )
    for column in ("started_at", "finished_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    frame["seconds"] = frame["seconds"].astype("float64")
    return frame


def incidents_by_cause(engine: Engine, selection: FleetFilter) -> pd.DataFrame:
    """Incidents detected in the selection per cause (what the health check saw): kind,
    incidents, recovered, failed, open, mean_recovery_s."""
    extra, params = _host_selection(selection)
    join = "JOIN hosts h ON h.id = r.host_id" if extra else ""
    frame = _frame(
        engine,
        f"""
        SELECT r.kind, sum(r.incidents)::int AS incidents, sum(r.recovered)::int AS recovered,
               sum(r.failed)::int AS failed, sum(r.open)::int AS open,
               sum(r.recovery_seconds_sum) / NULLIF(sum(r.recovered), 0) AS mean_recovery_s
        FROM rollup_incident_day r {join}
        WHERE r.day BETWEEN :start AND :end {extra}
        GROUP BY r.kind
        ORDER BY incidents DESC, r.kind
        """,
        {**_days(selection), **params},
    )
    frame["mean_recovery_s"] = frame["mean_recovery_s"].astype("float64")
    return frame


def incidents_per_day(engine: Engine, selection: FleetFilter) -> pd.DataFrame:
    """Incidents per UTC day of detection, per cause: day, kind, incidents."""
    extra, params = _host_selection(selection)
    join = "JOIN hosts h ON h.id = r.host_id" if extra else ""
    return _frame(
        engine,
        f"""
        SELECT r.day, r.kind, sum(r.incidents)::int AS incidents
        FROM rollup_incident_day r {join}
        WHERE r.day BETWEEN :start AND :end {extra}
        GROUP BY r.day, r.kind
        ORDER BY r.day, r.kind
        """,
        {**_days(selection), **params},
    )


# Upper bounds of the recovery-time bands, in seconds, and their labels.
RECOVERY_BANDS: tuple[tuple[float, str], ...] = (
    (30, "under 30 s"),
    (60, "30 s – 1 min"),
    (120, "1 – 2 min"),
    (300, "2 – 5 min"),
    (900, "5 – 15 min"),
    (3600, "15 – 60 min"),
    (float("inf"), "over 1 h"),
)


def recovery_time_bands(engine: Engine, selection: FleetFilter) -> pd.DataFrame:
    """How long recovered incidents took, in bands: band, incidents (every band, in order)."""
    extra, params = _host_selection(selection)
    bounds = [b for b, _ in RECOVERY_BANDS[:-1]]
    counted = _frame(
        engine,
        f"""
        SELECT width_bucket(EXTRACT(EPOCH FROM i.recovered_at - i.detected_at)::float8,
                            CAST(:bounds AS float8[])) AS band, count(*) AS incidents
        FROM incidents i JOIN hosts h ON h.id = i.host_id
        WHERE i.detected_at >= :since AND i.detected_at < :until AND i.status = 'recovered'
          {extra}
        GROUP BY 1
        """,
        {**_utc_bounds(selection), **params, "bounds": bounds},
    )
    found = dict(zip(counted["band"], counted["incidents"], strict=True))
    return pd.DataFrame(
        {
            "band": [label for _, label in RECOVERY_BANDS],
            "incidents": [int(found.get(i, 0)) for i in range(len(RECOVERY_BANDS))],
        }
    )


def recovery_step_success(engine: Engine, selection: FleetFilter) -> pd.DataFrame:
    """Each recovery step's tries in the selection and how many worked: step, tries, ok,
    failed, success_rate (ok over tries that ended), mean_seconds."""
    extra, params = _host_selection(selection)
    join = "JOIN hosts h ON h.id = r.host_id" if extra else ""
    frame = _frame(
        engine,
        f"""
        SELECT r.step, sum(r.tries)::int AS tries, sum(r.ok)::int AS ok,
               sum(r.failed)::int AS failed,
               sum(r.ok)::float8 / NULLIF(sum(r.ok) + sum(r.failed), 0) AS success_rate,
               sum(r.seconds_sum) / NULLIF(sum(r.tries), 0) AS mean_seconds
        FROM rollup_step_day r {join}
        WHERE r.day BETWEEN :start AND :end {extra}
        GROUP BY r.step
        ORDER BY tries DESC, r.step
        """,
        {**_days(selection), **params},
    )
    for column in ("success_rate", "mean_seconds"):
        frame[column] = frame[column].astype("float64")
    return frame


def incidents_csv(engine: Engine, selection: FleetFilter) -> bytes:
    """Every incident of the selection as CSV, streamed out of Postgres by COPY."""
    sql, params = _incidents_sql(selection, "")
    return _copy_csv(engine, sql, params)


def incident_page(
    engine: Engine, selection: FleetFilter, limit: int = 50, offset: int = 0
) -> pd.DataFrame:
    """One page of the selection's incidents, newest first, with their steps in order."""
    return incidents(engine, selection, limit=limit, offset=offset)
