"""What the analysis app reads: plain functions from an engine to pandas DataFrames.

Every value reaches SQL as a bound parameter. Points stay raw integers (1 point = 100000)
in the database and in the `*_raw` columns; `to_points` divides them for display.

No query reads a clock: "today" and "now" are the caller's (`today`, `as_of`), so a page counts
on its own clock, once per render, and never on the database server's `now()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

import pandas as pd
from sqlalchemy import Engine, text

POINT_SCALE = 100_000
# node_daily_stats.duration is read as seconds of uptime.
UPTIME_SECONDS_PER_UNIT = 1
GOOD_STATUSES = ("Good", "Excellent")

# Nodes the network lists but GradientLab does not manage still earn: label them, keep them.
UNMANAGED_PROVIDER = "not managed"
UNKNOWN_REGION = "unknown"

DaySource = Literal["points", "stats", "incidents"]


@dataclass(frozen=True)
class FleetFilter:
    """The analyst's selection: a UTC day range and, when not empty, providers, regions, hosts."""

    start: date
    end: date
    providers: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()


def to_points(raw: pd.Series) -> pd.Series:
    """Raw API integers to points, for display only."""
    return raw.astype("float64") / POINT_SCALE


def _frame(engine: Engine, sql: str, params: dict[str, Any] | None = None) -> pd.DataFrame:
    with engine.connect() as conn:
        result = conn.execute(text(sql), params or {})
        return pd.DataFrame(result.fetchall(), columns=list(result.keys()))


def _selection(selection: FleetFilter) -> tuple[str, dict[str, Any]]:
    """Fixed SQL fragments for the provider/region/host choices; the values are bound."""
    clauses: list[str] = []
    params: dict[str, Any] = {}
    if selection.providers:
        clauses.append("AND provider = ANY(:providers)")
        params["providers"] = list(selection.providers)
    if selection.regions:
        clauses.append("AND region = ANY(:regions)")
        params["regions"] = list(selection.regions)
    if selection.hosts:
        clauses.append("AND host = ANY(:hosts)")
        params["hosts"] = list(selection.hosts)
    return " ".join(clauses), params


def _utc_bounds(selection: FleetFilter) -> dict[str, datetime]:
    """The selection's days as a half-open UTC time range."""
    return {
        "since": datetime.combine(selection.start, time.min, UTC),
        "until": datetime.combine(selection.end + timedelta(days=1), time.min, UTC),
    }


_DAY_BOUNDS_SQL: dict[DaySource, str] = {
    "points": "SELECT min(day) AS first, max(day) AS last FROM node_daily_points",
    "stats": "SELECT min(day) AS first, max(day) AS last FROM node_daily_stats",
    "incidents": (
        "SELECT (min(detected_at) AT TIME ZONE 'UTC')::date AS first,"
        " (max(detected_at) AT TIME ZONE 'UTC')::date AS last FROM incidents"
    ),
}


def _bounds(frame: pd.DataFrame) -> tuple[date, date] | None:
    first, last = frame.iloc[0]["first"], frame.iloc[0]["last"]
    if first is None or pd.isna(first):
        return None
    return first, last


def day_bounds(engine: Engine, source: DaySource) -> tuple[date, date] | None:
    """The first and last UTC day with rows in `source`, or None when it is empty."""
    return _bounds(_frame(engine, _DAY_BOUNDS_SQL[source]))


def host_day_bounds(engine: Engine, today: date) -> tuple[date, date] | None:
    """The days hosts can have cost money: from the first host's creation (or first listed
    points) to `today`, the caller's UTC day, or a later day the network already listed
    points for. None when there are no hosts."""
    return _bounds(
        _frame(
            engine,
            """
            SELECT CASE WHEN count(*) > 0
                        THEN LEAST((min(created_at) AT TIME ZONE 'UTC')::date,
                                   (SELECT min(day) FROM node_daily_points)) END AS first,
                   GREATEST(CAST(:today AS date),
                            (SELECT max(day) FROM node_daily_points)) AS last
            FROM hosts
            """,
            {"today": today},
        )
    )


def filter_choices(engine: Engine) -> pd.DataFrame:
    """Every host an analyst can pick, with its provider and region.

    Live hosts, terminated hosts that left points or incidents behind, and nodes the network
    reports that no host owns."""
    return _frame(
        engine,
        """
        SELECT h.name AS host, h.provider, COALESCE(h.region, :unknown) AS region
        FROM hosts h
        WHERE h.state <> 'terminated'
           OR EXISTS (SELECT 1 FROM nodes n JOIN node_daily_points p ON p.client_id = n.client_id
                      WHERE n.host_id = h.id)
           OR EXISTS (SELECT 1 FROM incidents i WHERE i.host_id = h.id)
        UNION
        SELECT p.client_id, :unmanaged, :unknown
        FROM (SELECT DISTINCT client_id FROM node_daily_points
              UNION SELECT DISTINCT client_id FROM node_daily_stats) p
        WHERE NOT EXISTS (SELECT 1 FROM nodes n WHERE n.client_id = p.client_id)
        ORDER BY host
        """,
        {"unknown": UNKNOWN_REGION, "unmanaged": UNMANAGED_PROVIDER},
    )


def node_points(engine: Engine, selection: FleetFilter) -> pd.DataFrame:
    """Points per node per UTC day: day, host, client_id, provider, region, points_raw,
    points, taps."""
    extra, params = _selection(selection)
    frame = _frame(
        engine,
        f"""
        SELECT day, host, client_id, provider, region, points_raw, taps
        FROM (
            SELECT day, client_id, COALESCE(host, client_id) AS host,
                   COALESCE(provider, :unmanaged) AS provider,
                   COALESCE(region, :unknown) AS region,
                   points AS points_raw, taps
            FROM v_node_points_daily
            WHERE day BETWEEN :start AND :end
        ) p
        WHERE true {extra}
        ORDER BY day, host
        """,
        {
            "start": selection.start,
            "end": selection.end,
            "unmanaged": UNMANAGED_PROVIDER,
            "unknown": UNKNOWN_REGION,
            **params,
        },
    )
    frame.insert(frame.columns.get_loc("points_raw") + 1, "points", to_points(frame["points_raw"]))
    return frame


def fleet_status(engine: Engine) -> pd.DataFrame:
    """Each live host's latest check and its node's latest points, from v_fleet_status.

    `today_points_raw` is the node's points on `points_day`, its latest snapshot."""
    frame = _frame(
        engine,
        """
        SELECT f.host, f.provider, COALESCE(f.region, :unknown) AS region, f.state,
               f.client_id, f.ip, f.address, f.status, f.banned_reason, f.last_check,
               f.today_points AS today_points_raw,
               (SELECT max(day) FROM node_daily_points p WHERE p.client_id = f.client_id)
                   AS points_day,
               f.taps_today, f.uptime_today, f.extension_version, f.pss_kib,
               f.health_period_s
        FROM v_fleet_status f
        ORDER BY f.host
        """,
        {"unknown": UNKNOWN_REGION},
    )
    frame["today_points_raw"] = frame["today_points_raw"].astype("Int64")
    frame.insert(
        frame.columns.get_loc("today_points_raw") + 1,
        "today_points",
        to_points(frame["today_points_raw"].astype("Float64")),
    )
    frame["last_check"] = pd.to_datetime(frame["last_check"], utc=True)
    frame["health_period_s"] = frame["health_period_s"].astype("float64")
    return frame


def node_uptime_taps(engine: Engine, selection: FleetFilter) -> pd.DataFrame:
    """The network's per node per day stats: day, host, client_id, provider, region,
    duration, uptime_hours, taps."""
    extra, params = _selection(selection)
    frame = _frame(
        engine,
        f"""
        SELECT day, host, client_id, provider, region, duration, taps
        FROM (
            SELECT s.day, s.client_id, COALESCE(h.name, s.client_id) AS host,
                   COALESCE(h.provider, :unmanaged) AS provider,
                   COALESCE(h.region, :unknown) AS region,
                   s.duration, s.taps
            FROM node_daily_stats s
            LEFT JOIN nodes n ON n.client_id = s.client_id
            LEFT JOIN hosts h ON h.id = n.host_id
            WHERE s.day BETWEEN :start AND :end
        ) s
        WHERE true {extra}
        ORDER BY day, host
        """,
        {
            "start": selection.start,
            "end": selection.end,
            "unmanaged": UNMANAGED_PROVIDER,
            "unknown": UNKNOWN_REGION,
            **params,
        },
    )
    hours = frame["duration"].astype("float64") * UPTIME_SECONDS_PER_UNIT / 3600
    frame.insert(frame.columns.get_loc("duration") + 1, "uptime_hours", hours)
    return frame


def incidents(engine: Engine, selection: FleetFilter) -> pd.DataFrame:
    """Incidents detected in the selection, with recovery time and the steps tried in order."""
    extra, params = _selection(selection)
    frame = _frame(
        engine,
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
        """,
        {**_utc_bounds(selection), "unknown": UNKNOWN_REGION, **params},
    )
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


def _per_point(frame: pd.DataFrame) -> pd.DataFrame:
    """USD per point where there are points; "free" and "no points" say why there is no price."""
    points = to_points(frame["points_raw"])
    cost = frame["cost_usd"].astype("float64")
    frame["points"] = points
    frame["usd_per_point"] = (cost / points.where(points > 0)).astype("float64")
    frame["per_point_note"] = [
        "free" if c == 0 else "no points" if p <= 0 else ""
        for c, p in zip(cost, points, strict=True)
    ]
    return frame


def host_costs(engine: Engine, selection: FleetFilter, as_of: datetime) -> pd.DataFrame:
    """What each host cost in the selection's days and what its node earned there.

    A host costs `hourly_cost_usd` for each hour it existed inside the days: from `created_at`
    (or the first day) to `as_of` (the caller's now, timezone-aware), the end of the last day,
    or, once terminated, its `updated_at`, whichever comes first. Points are its node's
    `node_daily_points` on those days.
    Columns: host, provider, region, state, client_id, hourly_cost_usd, counted_from, counted_to,
    hours, cost_usd, points_raw, points, usd_per_point (NaN without points), per_point_note."""
    if as_of.tzinfo is None:
        raise ValueError(f"as_of must carry its timezone, got {as_of!r}")
    extra, params = _selection(selection)
    frame = _frame(
        engine,
        f"""
        SELECT host, provider, region, state, client_id, hourly_cost_usd,
               CASE WHEN seconds > 0 THEN counted_from END AS counted_from,
               CASE WHEN seconds > 0 THEN counted_to END AS counted_to,
               seconds / 3600 AS hours,
               (hourly_cost_numeric * seconds / 3600)::float8 AS cost_usd,
               points_raw
        FROM (
            SELECT h.name AS host, h.provider, COALESCE(h.region, :unknown) AS region, h.state,
                   n.client_id, h.hourly_cost_usd::float8 AS hourly_cost_usd,
                   h.hourly_cost_usd AS hourly_cost_numeric, w.counted_from, w.counted_to,
                   GREATEST(EXTRACT(EPOCH FROM w.counted_to - w.counted_from), 0) AS seconds,
                   COALESCE(p.points_raw, 0) AS points_raw
            FROM hosts h
            LEFT JOIN nodes n ON n.host_id = h.id
            CROSS JOIN LATERAL (
                SELECT GREATEST(h.created_at, :since) AS counted_from,
                       -- LEAST skips the NULL of a host that is not terminated; a planned
                       -- host does not exist yet, so it ends where it starts.
                       LEAST(:until, :as_of,
                             CASE WHEN h.state = 'terminated' THEN h.updated_at
                                  WHEN h.state = 'planned' THEN h.created_at END)
                           AS counted_to
            ) w
            LEFT JOIN LATERAL (
                SELECT sum(d.points)::bigint AS points_raw
                FROM node_daily_points d
                WHERE d.client_id = n.client_id AND d.day BETWEEN :start AND :end
            ) p ON true
        ) c
        WHERE (seconds > 0 OR points_raw > 0) {extra}
        ORDER BY host
        """,
        {
            **_utc_bounds(selection),
            "as_of": as_of,
            "start": selection.start,
            "end": selection.end,
            "unknown": UNKNOWN_REGION,
            **params,
        },
    )
    for column in ("counted_from", "counted_to"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    for column in ("hourly_cost_usd", "hours", "cost_usd"):
        frame[column] = frame[column].astype("float64")
    frame["points_raw"] = frame["points_raw"].astype("int64")
    return _per_point(frame)


def provider_costs(costs: pd.DataFrame) -> pd.DataFrame:
    """`host_costs` rolled up per provider: hosts, hours, cost_usd, points_raw, points,
    usd_per_point and per_point_note, by the same rules."""
    frame = costs.groupby("provider", as_index=False).agg(
        hosts=("host", "count"),
        hours=("hours", "sum"),
        cost_usd=("cost_usd", "sum"),
        points_raw=("points_raw", "sum"),
    )
    frame["points_raw"] = frame["points_raw"].astype("int64")
    return _per_point(frame)


def tap_readiness(engine: Engine, selection: FleetFilter) -> pd.DataFrame:
    """Each selected host's latest STUN test in the selected days (poc_taps), with how many
    tests it had there and how many found UDP blocked or could not run: host, provider,
    region, client_id, checked_at, nat_type, udp_reachable, mapped_address, mapped_port,
    behind_nat, rfc5780, mapping, filtering, stun_server, error, tests, blocked_tests,
    failed_tests."""
    extra, params = _selection(selection)
    frame = _frame(
        engine,
        f"""
        SELECT * FROM (
            SELECT DISTINCT ON (t.host_id)
                   h.name AS host, h.provider, COALESCE(h.region, :unknown) AS region,
                   n.client_id, t.checked_at, t.nat_type, t.udp_reachable, t.mapped_address,
                   t.mapped_port, t.behind_nat, t.rfc5780, t.mapping, t.filtering,
                   t.stun_server, t.error,
                   count(*) OVER w AS tests,
                   count(*) FILTER (WHERE t.udp_reachable IS FALSE) OVER w AS blocked_tests,
                   count(*) FILTER (WHERE t.udp_reachable IS NULL) OVER w AS failed_tests
            FROM tap_readiness t
            JOIN hosts h ON h.id = t.host_id
            LEFT JOIN nodes n ON n.host_id = t.host_id
            WHERE t.checked_at >= :since AND t.checked_at < :until
            WINDOW w AS (PARTITION BY t.host_id)
            ORDER BY t.host_id, t.checked_at DESC
        ) r
        WHERE true {extra}
        ORDER BY host
        """,
        {**_utc_bounds(selection), "unknown": UNKNOWN_REGION, **params},
    )
    frame["checked_at"] = pd.to_datetime(frame["checked_at"], utc=True)
    return frame


def quarantined_hosts(engine: Engine) -> pd.DataFrame:
    """Live hosts GradientLab has stopped recovering until a person releases them: host,
    provider, region, quarantined_at, quarantine_reason, oldest first."""
    frame = _frame(
        engine,
        """
        SELECT h.name AS host, h.provider, COALESCE(h.region, :unknown) AS region,
               h.quarantined_at, h.quarantine_reason
        FROM hosts h
        WHERE h.quarantined_at IS NOT NULL AND h.state <> 'terminated'
        ORDER BY h.quarantined_at, h.name
        """,
        {"unknown": UNKNOWN_REGION},
    )
    frame["quarantined_at"] = pd.to_datetime(frame["quarantined_at"], utc=True)
    return frame
