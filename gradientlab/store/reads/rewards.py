"""What the analysis app reads: plain functions from an engine to pandas DataFrames.

Every value reaches SQL as a bound parameter. Points stay raw integers (1 point = 100000)
in the database and in the `*_raw` columns; `to_points` divides them for display.

No query reads a clock: "today" and "now" are the caller's (`today`, `as_of`), so a page counts
on its own clock, once per render, and never on the database server's `now()`.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

import pandas as pd
from sqlalchemy import Engine, text

from gradientlab.store.rollups import UNKNOWN_REGION as UNKNOWN_REGION
from gradientlab.store.rollups import UNMANAGED_PROVIDER as UNMANAGED_PROVIDER
from gradientlab.store.rollups import UNSUPPORTED_STATUSES as UNSUPPORTED_STATUSES

POINT_SCALE = 100_000
# node_daily_stats.duration is read as seconds of uptime.
UPTIME_SECONDS_PER_UNIT = 1
GOOD_STATUSES = ("Good", "Excellent")


DaySource = Literal["points", "stats", "incidents", "checks"]


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
        # plain tuples: pandas builds a frame from them several times faster than from Rows
        rows = [tuple(row) for row in result.fetchall()]
        return pd.DataFrame.from_records(rows, columns=list(result.keys()))


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
    "checks": "SELECT min(day) AS first, max(day) AS last FROM rollup_host_day",
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

    Live hosts, terminated hosts that left points, stats or incidents behind (as rolled up),
    and nodes the network reports that no host owns."""
    return _frame(
        engine,
        """
        SELECT h.name AS host, h.provider, COALESCE(h.region, :unknown) AS region
        FROM hosts h
        WHERE h.state <> 'terminated'
           OR EXISTS (SELECT 1 FROM rollup_node r WHERE r.host_id = h.id)
           OR EXISTS (SELECT 1 FROM rollup_incident_day i WHERE i.host_id = h.id)
        UNION
        SELECT r.client_id, :unmanaged, :unknown
        FROM rollup_node r
        WHERE r.host_id IS NULL
          AND NOT EXISTS (SELECT 1 FROM nodes n WHERE n.client_id = r.client_id)
        ORDER BY host
        """,
        {"unknown": UNKNOWN_REGION, "unmanaged": UNMANAGED_PROVIDER},
    )


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
    `node_daily_points` on those days, as rolled up (rollup_node_day's running totals).
    Columns: host, provider, region, state, client_id, hourly_cost_usd, counted_from, counted_to,
    hours, cost_usd, points_raw, points, usd_per_point (NaN without points), per_point_note."""
    if as_of.tzinfo is None:
        raise ValueError(f"as_of must carry its timezone, got {as_of!r}")
    extra, params = _selection(selection)
    ranged, _ = _node_range(FleetFilter(selection.start, selection.end))
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
            LEFT JOIN ({ranged}) p ON p.client_id = n.client_id
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


TAP_READINESS_ORDERS = {"host": "host", "fewest_taps": "taps, host"}
_TAP_COUNTS = ("tests", "blocked_tests", "failed_tests")
_TAP_EDGE = "latest_id, latest_nat_type, latest_udp_reachable, " + ", ".join(
    f"cum_{c}" for c in _TAP_COUNTS
)


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


def _tap_hosts_sql(selection: FleetFilter) -> tuple[str, dict[str, Any]]:
    """Each selected host with a STUN test in the selected days, from the running totals of
    rollup_tap_day (sql/012): its tests there (the totals on its last day up to the range's
    end minus those before the range's first day), its latest test's id, nat_type and
    udp_reachable, and its node's taps and node-days with stats there (`_node_range`, by host).
    Columns: host_id, host, provider, region, client_id, latest_id, nat_type, udp_reachable,
    tests, blocked_tests, failed_tests, taps, node_days.

    A host tested on the range's last day and on the day before its first (nearly every host:
    poc_taps runs several times a day) is read by two range scans of the primary key, one per
    edge day; only a host missing there is looked up on its own, by its last row before the
    edge (an index-only probe)."""
    extra, params = _host_selection(selection)
    ranged, range_params = _node_range(FleetFilter(selection.start, selection.end))

    def edge(name: str, equal: str, before: str, only_if: str = "") -> str:
        return _edge_rows(
            name, "rollup_tap_day", "host_id", "h.id", _TAP_EDGE, equal, before, only_if
        )

    counts = _edge_differences(_TAP_COUNTS)
    return (
        f"""
        SELECT b.*, COALESCE(x.taps, 0)::bigint AS taps,
               COALESCE(x.node_days, 0)::bigint AS node_days
        FROM (
            SELECT h.id AS host_id, h.name AS host, h.provider,
                   COALESCE(h.region, :unknown) AS region, n.client_id,
                   COALESCE(e0.latest_id, e1.latest_id) AS latest_id,
                   COALESCE(e0.latest_nat_type, e1.latest_nat_type) AS nat_type,
                   COALESCE(e0.latest_udp_reachable, e1.latest_udp_reachable) AS udp_reachable,
                   {counts}
            FROM hosts h
            {edge("e", "CAST(:end AS date)", "<= :end")}
            {
            edge(
                "s",
                "CAST(:start AS date) - 1",
                "< :start",
                "AND :start > (SELECT min(day) FROM rollup_tap_day)",
            )
        }
            LEFT JOIN nodes n ON n.host_id = h.id
            WHERE COALESCE(e0.day, e1.day) >= :start {extra}
        ) b
        LEFT JOIN (
            SELECT host, sum(taps) AS taps, sum(stat_days) AS node_days
            FROM ({ranged}) r
            GROUP BY host
        ) x ON x.host = b.host
        """,
        {**range_params, "unknown": UNKNOWN_REGION, **params},
    )


def _tap_readiness_sql(
    selection: FleetFilter, order: str = "host", paged: bool = False
) -> tuple[str, dict[str, Any]]:
    """Each selected host's latest STUN test in the selected days, its tests there, and its
    node's taps and node-days with stats on those days, in `order`; with `paged`, only the
    page (:limit, :offset) reads its hosts' latest tests."""
    hosts, params = _tap_hosts_sql(selection)
    by = TAP_READINESS_ORDERS[order]
    page = "LIMIT :limit OFFSET :offset" if paged else ""
    return (
        f"""
        SELECT b.host, b.provider, b.region, b.client_id, t.checked_at, t.nat_type,
               t.udp_reachable, t.mapped_address, t.mapped_port, t.behind_nat, t.rfc5780,
               t.mapping, t.filtering, t.stun_server, t.error,
               b.tests, b.blocked_tests, b.failed_tests, b.taps, b.node_days
        FROM (SELECT * FROM ({hosts}) h ORDER BY {by} {page}) b
        JOIN tap_readiness t ON t.id = b.latest_id
        ORDER BY {", ".join(f"b.{c.strip()}" for c in by.split(","))}
        """,
        params,
    )


def tap_readiness(
    engine: Engine,
    selection: FleetFilter,
    limit: int | None = None,
    offset: int = 0,
    order: str = "host",
) -> pd.DataFrame:
    """Each selected host's latest STUN test in the selected days (poc_taps), with how many
    tests it had there and how many found UDP blocked or could not run, and its node's taps
    there: host, provider, region, client_id, checked_at, nat_type, udp_reachable,
    mapped_address, mapped_port, behind_nat, rfc5780, mapping, filtering, stun_server, error,
    tests, blocked_tests, failed_tests, taps, node_days. By host, or `fewest_taps` first;
    with `limit`, one page of them (`tap_readiness_summary` counts them all). Read from
    rollup_tap_day, which the poc_taps flow and `gradientlab refresh-rollups` keep."""
    if order not in TAP_READINESS_ORDERS:
        raise ValueError(
            f"tap readiness is ordered by one of {sorted(TAP_READINESS_ORDERS)}, not {order!r}"
        )
    sql, params = _tap_readiness_sql(selection, order, paged=limit is not None)
    frame = _frame(engine, sql, {**params, "limit": limit, "offset": offset})
    frame["checked_at"] = pd.to_datetime(frame["checked_at"], utc=True)
    return frame


def tap_readiness_summary(engine: Engine, selection: FleetFilter) -> pd.DataFrame:
    """The selected hosts' latest tests per NAT type (NULL where the test did not run): nat_type,
    hosts, udp_blocked, not_run, taps, node_days. Its hosts add up to `tap_readiness`'s rows."""
    sql, params = _tap_hosts_sql(selection)
    return _frame(
        engine,
        f"""
        SELECT nat_type, count(*) AS hosts,
               count(*) FILTER (WHERE udp_reachable IS FALSE) AS udp_blocked,
               count(*) FILTER (WHERE udp_reachable IS NULL) AS not_run,
               sum(taps)::bigint AS taps, sum(node_days)::bigint AS node_days
        FROM ({sql}) s
        GROUP BY nat_type
        ORDER BY hosts DESC, nat_type NULLS LAST
        """,
        params,
    ).astype({c: "int64" for c in ("hosts", "udp_blocked", "not_run", "taps", "node_days")})


def tap_readiness_csv(engine: Engine, selection: FleetFilter) -> bytes:
    """Every selected host's latest test (`tap_readiness`'s columns) as CSV, by host, streamed
    out of Postgres by COPY."""
    sql, params = _tap_readiness_sql(selection)
    return _copy_csv(engine, sql, params)


# ------------------------------------------------------------------ fleet scale, from the rollups
#
# Charts get the rows they draw (per day per provider or region, or the top N nodes and "the
# rest"), tables a page of rows with the totals beside it. Every query here reads the daily
# rollups of sql/009_rollups.sql, which the flows refresh.

Grouping = Literal["provider", "region"]
THE_REST = "the rest"
POINT_KINDS = ("node", "referral", "bonus", "boost")


def _rollup_selection(selection: FleetFilter, alias: str = "") -> tuple[str, dict[str, Any]]:
    """The provider/region/host choices on a rollup that carries host, provider and region."""
    prefix = f"{alias}." if alias else ""
    extra, params = _selection(selection)
    for column in ("provider", "region", "host"):
        extra = extra.replace(f"AND {column} =", f"AND {prefix}{column} =")
    return extra, params


def _host_selection(selection: FleetFilter) -> tuple[str, dict[str, Any]]:
    """The same choices on a rollup keyed by host_id, joined to `hosts h`."""
    clauses: list[str] = []
    params: dict[str, Any] = {}
    if selection.providers:
        clauses.append("AND h.provider = ANY(:providers)")
        params["providers"] = list(selection.providers)
    if selection.regions:
        clauses.append(f"AND COALESCE(h.region, '{UNKNOWN_REGION}') = ANY(:regions)")
        params["regions"] = list(selection.regions)
    if selection.hosts:
        clauses.append("AND h.name = ANY(:hosts)")
        params["hosts"] = list(selection.hosts)
    return " ".join(clauses), params


def _days(selection: FleetFilter) -> dict[str, Any]:
    return {"start": selection.start, "end": selection.end}


def account_points_by_kind(engine: Engine, selection: FleetFilter) -> pd.DataFrame:
    """The account's points per UTC day by kind, as /point/stats gives them: day, kind, points.
    `node` is what the nodes earned (uptime and taps together: the API does not split them)."""
    frame = _frame(
        engine,
        """
        SELECT day, kind, sum(raw)::bigint AS points_raw
        FROM account_daily_points,
             LATERAL (VALUES ('node', node), ('referral', referral), ('bonus', bonus),
                             ('boost', boost)) k(kind, raw)
        WHERE day BETWEEN :start AND :end
        GROUP BY day, kind
        ORDER BY day, kind
        """,
        _days(selection),
    )
    frame["points"] = to_points(frame["points_raw"])
    return frame


def points_by_group(engine: Engine, selection: FleetFilter, group: Grouping) -> pd.DataFrame:
    """Points, taps and uptime per UTC day per provider or region: day, <group>, nodes,
    earning_nodes, points_raw, points, taps, uptime_hours (mean per node with stats)."""
    if selection.hosts:  # rollup_group_day has no host: sum the chosen nodes' days
        extra, params = _rollup_selection(selection)
        source = f"""
            SELECT day, {group}, count(*) AS nodes,
                   count(*) FILTER (WHERE points_raw > 0) AS earning_nodes,
                   sum(points_raw) AS points_raw, COALESCE(sum(taps), 0) AS taps,
                   COALESCE(sum(duration), 0) AS duration, count(duration) AS stat_nodes
            FROM rollup_node_day
            WHERE day BETWEEN :start AND :end {extra}
            GROUP BY day, {group}
        """
    else:
        extra, params = _rollup_selection(selection)
        source = f"""
            SELECT day, {group}, sum(nodes) AS nodes, sum(earning_nodes) AS earning_nodes,
                   sum(points_raw) AS points_raw, sum(taps) AS taps, sum(duration) AS duration,
                   sum(stat_nodes) AS stat_nodes
            FROM rollup_group_day
            WHERE day BETWEEN :start AND :end {extra}
            GROUP BY day, {group}
        """
    frame = _frame(
        engine,
        f"""
        SELECT day, {group}, nodes::int, earning_nodes::int, points_raw::bigint, taps::bigint,
               (duration::float8 * {UPTIME_SECONDS_PER_UNIT} / 3600
                / NULLIF(stat_nodes, 0)) AS uptime_hours
        FROM ({source}) g
        ORDER BY day, {group}
        """,
        {**_days(selection), **params},
    )
    frame.insert(frame.columns.get_loc("points_raw") + 1, "points", to_points(frame["points_raw"]))
    frame["uptime_hours"] = frame["uptime_hours"].astype("float64")
    return frame


_RUNNING = ("points_raw", "days", "zero_days", "taps", "duration", "stat_days")


def _node_range(selection: FleetFilter) -> tuple[str, dict[str, Any]]:
    """Each selected node's totals over the selection's days, from the running totals of
    sql/011: its totals on the last day minus those on the day before the first. Columns:
    client_id, host, provider, region, days, points_raw, zero_days, taps, duration, stat_days;
    only nodes with a row in the days. The filters match a node's host, provider and region
    as its latest day has them.

    A node listed on both edge days (nearly every node) is read by two range scans of the
    primary key, one per edge day; only a node missing there is looked up on its own, by the
    last row before the edge (an index-only probe)."""
    extra, params = _rollup_selection(selection, "n")
    running = ", ".join(f"cum_{c}" for c in _RUNNING)

    def edge(name: str, equal: str, before: str, only_if: str = "") -> str:
        return _edge_rows(
            name, "rollup_node_day", "client_id", "n.client_id", running, equal, before, only_if
        )

    totals = _edge_differences(_RUNNING)
    return (
        f"""
        SELECT * FROM (
            SELECT n.client_id, n.host, n.provider, n.region, {totals}
            FROM rollup_node n
            {edge("e", "CAST(:end AS date)", "<= :end")}
            {edge("s", "CAST(:start AS date) - 1", "< :start", "AND n.first_day < :start")}
            WHERE n.first_day <= :end AND n.last_day >= :start {extra}
        ) ranged
        WHERE days > 0
        """,
        {**_days(selection), **params},
    )


# What ranks nodes per measure, and what counts the nodes that have it on a day.
_MEASURES = {
    "points_raw": ("points_raw", "nodes"),
    "taps": ("taps", "stat_nodes"),
    "duration": ("duration", "stat_nodes"),
}


def top_nodes_per_day(
    engine: Engine, selection: FleetFilter, top: int = 10, measure: str = "points_raw"
) -> pd.DataFrame:
    """The `top` nodes by `measure` over the selection, each per UTC day, and every other node
    summed as "the rest": day, node, value (points for points_raw).

    The top nodes come from the running totals, their days from the index on (host, day), and
    "the rest" is each day's total (rollup_group_day, or the chosen hosts' days) less theirs."""
    if measure not in _MEASURES:
        raise ValueError(f"cannot rank nodes by {measure!r}")
    ranked, params = _node_range(selection)
    counted = _MEASURES[measure][1]
    rows_extra, _ = _rollup_selection(selection)
    if selection.hosts:  # rollup_group_day has no host: the chosen hosts' own days
        day_totals = f"""
            SELECT day, sum({measure}) AS value, count({measure}) AS n
            FROM rollup_node_day
            WHERE day BETWEEN :start AND :end {rows_extra}
            GROUP BY day
        """
    else:
        day_totals = f"""
            SELECT day, sum({measure}) AS value, sum({counted}) AS n
            FROM rollup_group_day
            WHERE day BETWEEN :start AND :end {rows_extra}
            GROUP BY day
        """
    frame = _frame(
        engine,
        f"""
        WITH top AS (
            SELECT host, sum({measure}) AS total FROM ({ranked}) r
            {"" if measure == "points_raw" else "WHERE stat_days > 0"}
            GROUP BY host ORDER BY total DESC, host LIMIT :top
        ), top_days AS (
            SELECT r.day, r.host, sum(r.{measure}) AS value, count(*) AS n
            FROM rollup_node_day r JOIN top t ON t.host = r.host
            WHERE r.day BETWEEN :start AND :end AND r.{measure} IS NOT NULL
            GROUP BY r.day, r.host
        ), top_per_day AS (
            SELECT day, sum(value) AS value, sum(n) AS n FROM top_days GROUP BY day
        )
        SELECT day, host AS node, value::bigint AS value, false AS rest FROM top_days
        UNION ALL
        SELECT a.day, :rest, (COALESCE(a.value, 0) - COALESCE(t.value, 0))::bigint, true
        FROM ({day_totals}) a LEFT JOIN top_per_day t ON t.day = a.day
        WHERE a.n - COALESCE(t.n, 0) > 0
        ORDER BY day, rest, node
        """,
        {**params, "top": top, "rest": THE_REST},
    )
    if measure == "points_raw":
        frame["value"] = to_points(frame["value"])
    return frame


NODE_ORDERS = {
    "best": "points_raw DESC, host",
    "worst": "points_raw ASC, host",
    "most_zero_days": "zero_days DESC, host",
    "host": "host",
}


def node_totals(
    engine: Engine,
    selection: FleetFilter,
    order: str = "best",
    limit: int = 50,
    offset: int = 0,
    with_stats: bool = False,
) -> pd.DataFrame:
    """One page of nodes with their totals over the selection: host, client_id, provider,
    region, days, points_raw, points, zero_days, taps, uptime_hours; `with_stats`: only the
    nodes the network gave uptime and taps for."""
    if order not in NODE_ORDERS:
        raise ValueError(f"nodes are ordered by one of {sorted(NODE_ORDERS)}, not {order!r}")
    ranged, params = _node_range(selection)
    frame = _frame(
        engine,
        f"""
        SELECT host, min(client_id) AS client_id, min(provider) AS provider,
               min(region) AS region, sum(days)::bigint AS days,
               sum(points_raw)::bigint AS points_raw, sum(zero_days)::bigint AS zero_days,
               sum(taps)::bigint AS taps,
               (sum(duration) * {UPTIME_SECONDS_PER_UNIT})::float8 / 3600 AS uptime_hours
        FROM ({ranged}) r
        GROUP BY host
        {"HAVING sum(stat_days) > 0" if with_stats else ""}
        ORDER BY {NODE_ORDERS[order]}
        LIMIT :limit OFFSET :offset
        """,
        {**params, "limit": limit, "offset": offset},
    )
    frame.insert(frame.columns.get_loc("points_raw") + 1, "points", to_points(frame["points_raw"]))
    return frame


def selection_totals(engine: Engine, selection: FleetFilter) -> dict[str, Any]:
    """The totals beside a page of nodes: nodes, node_days, points, zero_days (node-days
    without a point), days_all_zero (days no selected node earned), taps, uptime_hours,
    stat_node_days (node-days with uptime and taps), untapped_nodes (with stats, no tap)."""
    ranged, params = _node_range(selection)
    rows_extra, _ = _rollup_selection(selection)
    per_day = "rollup_node_day" if selection.hosts else "rollup_group_day"
    row = _frame(
        engine,
        f"""
        WITH per_host AS (
            SELECT host, sum(days) AS days, sum(points_raw) AS points_raw,
                   sum(zero_days) AS zero_days, sum(taps) AS taps, sum(duration) AS duration,
                   sum(stat_days) AS stat_days
            FROM ({ranged}) r GROUP BY host
        )
        SELECT count(*) AS nodes, COALESCE(sum(days), 0) AS node_days,
               count(*) FILTER (WHERE stat_days > 0) AS stat_nodes,
               COALESCE(sum(points_raw), 0)::bigint AS points_raw,
               COALESCE(sum(zero_days), 0) AS zero_days,
               COALESCE(sum(taps), 0)::bigint AS taps,
               (COALESCE(sum(duration), 0) * {UPTIME_SECONDS_PER_UNIT})::float8 / 3600
                   AS uptime_hours,
               COALESCE(sum(stat_days), 0) AS stat_node_days,
               count(*) FILTER (WHERE stat_days > 0 AND taps = 0) AS untapped_nodes,
               (SELECT count(*) FROM (SELECT day FROM {per_day}
                                      WHERE day BETWEEN :start AND :end {rows_extra}
                                      GROUP BY day HAVING sum(points_raw) = 0) z)
                   AS days_all_zero
        FROM per_host
        """,
        params,
    ).iloc[0]
    return {
        "nodes": int(row["nodes"]),
        "node_days": int(row["node_days"]),
        "points_raw": int(row["points_raw"]),
        "points": int(row["points_raw"]) / POINT_SCALE,
        "zero_days": int(row["zero_days"]),
        "days_all_zero": int(row["days_all_zero"]),
        "taps": int(row["taps"]),
        "uptime_hours": float(row["uptime_hours"]),
        "stat_node_days": int(row["stat_node_days"]),
        "stat_nodes": int(row["stat_nodes"]),
        "untapped_nodes": int(row["untapped_nodes"]),
    }


def node_days_csv(engine: Engine, selection: FleetFilter) -> bytes:
    """Every node-day of the selection as CSV, streamed out of Postgres by COPY (the download
    under the Rewards and Uptime pages): day, host, client_id, provider, region, points_raw,
    listed_taps, duration, taps."""
    extra, params = _rollup_selection(selection)
    return _copy_csv(
        engine,
        f"""
        SELECT day, host, client_id, provider, region, points_raw, listed_taps, duration, taps
        FROM rollup_node_day
        WHERE day BETWEEN :start AND :end {extra}
        ORDER BY day, host
        """,
        {**_days(selection), **params},
    )


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


# ---- the fleet now


def fleet_now(engine: Engine) -> pd.DataFrame:
    """Each live host's latest check (host_latest_sample, kept by a trigger), its quarantine,
    and its node's points on its latest listed day of the last week."""
    frame = _frame(
        engine,
        """
        SELECT h.name AS host, h.provider, COALESCE(h.region, :unknown) AS region, h.state,
               n.client_id, s.ip, h.address, s.status, s.banned_reason, s.reason,
               s.sampled_at AS last_check, p.last_points_raw AS today_points_raw, s.taps_today,
               n.extension_version, h.quarantined_at, h.quarantine_reason,
               s.load1, s.mem_available_kib, s.disk_free_kib,
               COALESCE(s.browser_pss_kib, s.pss_kib) AS browser_pss_kib, s.health_period_s
        FROM hosts h
        LEFT JOIN nodes n ON n.host_id = h.id
        LEFT JOIN host_latest_sample s ON s.host_id = h.id
        LEFT JOIN rollup_node p  -- the node's latest listed day, if within the last week
            ON p.client_id = n.client_id
           AND p.last_day > (SELECT max(last_day) FROM rollup_node) - 7
        WHERE h.state <> 'terminated'
        ORDER BY h.name
        """,
        {"unknown": UNKNOWN_REGION},
    )
    frame["today_points_raw"] = frame["today_points_raw"].astype("Int64")
    frame["today_points"] = to_points(frame["today_points_raw"].astype("Float64"))
    for column in ("last_check", "quarantined_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    frame["health_period_s"] = frame["health_period_s"].astype("float64")
    return frame


def fleet_status_per_day(engine: Engine, selection: FleetFilter) -> pd.DataFrame:
    """Checks per UTC day by status, per provider: day, status, provider, hosts, samples."""
    extra, params = _rollup_selection(selection)
    return _frame(
        engine,
        f"""
        SELECT day, status, provider, sum(hosts)::int AS hosts, sum(samples)::bigint AS samples
        FROM rollup_fleet_day_status
        WHERE day BETWEEN :start AND :end {extra.replace("AND host =", "AND NULL =")}
        GROUP BY day, status, provider
        ORDER BY day, status, provider
        """,
        {**_days(selection), **params},
    )


# ---- incidents


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


# ---- economics


def status_shares(engine: Engine, selection: FleetFilter) -> pd.DataFrame:
    """Each host's checks in the selected days and the share that found it Unsupported:
    host, samples, unsupported_samples, unsupported_share."""
    extra, params = _host_selection(selection)
    frame = _frame(
        engine,
        f"""
        SELECT h.name AS host, sum(s.samples)::bigint AS samples,
               sum(s.unsupported_samples)::bigint AS unsupported_samples
        FROM rollup_host_day s JOIN hosts h ON h.id = s.host_id
        WHERE s.day BETWEEN :start AND :end {extra}
        GROUP BY h.name
        """,
        {**_days(selection), **params},
    )
    frame["unsupported_samples"] = frame["unsupported_samples"].fillna(0).astype("int64")
    frame["samples"] = frame["samples"].astype("int64")
    frame["unsupported_share"] = (frame["unsupported_samples"] / frame["samples"]).astype("float64")
    return frame


def unsupported_costs(costs: pd.DataFrame, shares: pd.DataFrame) -> pd.DataFrame:
    """What Unsupported nodes cost for nothing: each host's cost in the selection times the
    share of its checks that found it Unsupported (the network pays an Unsupported node
    nothing). Columns: host, provider, region, cost_usd, unsupported_share, wasted_usd, points."""
    frame = costs[["host", "provider", "region", "cost_usd", "points"]].merge(
        shares[["host", "unsupported_share"]], on="host", how="left"
    )
    frame["unsupported_share"] = frame["unsupported_share"].fillna(0.0)
    frame["wasted_usd"] = frame["cost_usd"] * frame["unsupported_share"]
    return frame[frame["unsupported_share"] > 0].sort_values(
        ["wasted_usd", "host"], ascending=[False, True]
    )


# ---- one node


def node_profile(engine: Engine, host: str) -> dict[str, Any] | None:
    """One host or unmanaged node by name: its host row, node, versions and latest check."""
    frame = _frame(
        engine,
        """
        SELECT h.id AS host_id, h.name AS host, h.provider, COALESCE(h.region, :unknown)
                   AS region, h.state, h.address, h.hourly_cost_usd::float8 AS hourly_cost_usd,
               h.created_at, h.updated_at, h.quarantined_at, h.quarantine_reason,
               n.client_id, n.extension_version, n.runner_version, n.browser, n.host_os,
               n.deployed_at, f.status, f.banned_reason, f.reason, f.last_check, f.ip
        FROM hosts h
        LEFT JOIN nodes n ON n.host_id = h.id
        LEFT JOIN v_fleet_status f ON f.host_id = h.id
        WHERE h.name = :host
        UNION ALL
        SELECT NULL, r.client_id, :unmanaged, :unknown, NULL, NULL, 0, NULL, NULL, NULL, NULL,
               r.client_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
        FROM (SELECT DISTINCT client_id FROM rollup_node_day
              WHERE host_id IS NULL AND client_id = :host) r
        WHERE NOT EXISTS (SELECT 1 FROM hosts WHERE name = :host)
        """,
        {"host": host, "unknown": UNKNOWN_REGION, "unmanaged": UNMANAGED_PROVIDER},
    )
    if frame.empty:
        return None
    return dict(frame.iloc[0])


def node_days(engine: Engine, host: str, start: date, end: date) -> pd.DataFrame:
    """A node's points, taps and uptime per UTC day, and its host's checks and metrics:
    day, points, taps, uptime_hours, samples, good_share, load1_avg, mem_available_mib_min,
    disk_free_gib_min, browser_pss_mib_avg, browser_pss_mib_max."""
    frame = _frame(
        engine,
        f"""
        WITH h AS (SELECT id FROM hosts WHERE name = :host)
        SELECT COALESCE(p.day, m.day) AS day, p.points_raw, p.taps,
               p.duration::float8 * {UPTIME_SECONDS_PER_UNIT} / 3600 AS uptime_hours,
               m.samples, m.good_samples::float8 / NULLIF(m.samples, 0) AS good_share,
               m.load1_avg, m.mem_available_kib_min::float8 / 1024 AS mem_available_mib_min,
               m.disk_free_kib_min::float8 / 1048576 AS disk_free_gib_min,
               m.browser_pss_kib_avg::float8 / 1024 AS browser_pss_mib_avg,
               m.browser_pss_kib_max::float8 / 1024 AS browser_pss_mib_max
        FROM (SELECT * FROM rollup_node_day WHERE host = :host
              AND day BETWEEN :start AND :end) p
        FULL JOIN (SELECT * FROM rollup_host_day WHERE host_id = (SELECT id FROM h)
                   AND day BETWEEN :start AND :end) m ON m.day = p.day
        ORDER BY 1
        """,
        {"host": host, "start": start, "end": end},
    )
    frame.insert(1, "points", to_points(frame["points_raw"].astype("Float64")))
    for column in frame.columns[2:]:
        if column not in ("day",):
            frame[column] = frame[column].astype("float64")
    return frame


def node_status_days(engine: Engine, host: str, start: date, end: date) -> pd.DataFrame:
    """A host's checks per UTC day by status: day, status, samples, share."""
    frame = _frame(
        engine,
        """
        SELECT s.day, s.status, s.samples,
               s.samples::float8 / sum(s.samples) OVER (PARTITION BY s.day) AS share
        FROM rollup_host_day_status s JOIN hosts h ON h.id = s.host_id
        WHERE h.name = :host AND s.day BETWEEN :start AND :end
        ORDER BY s.day, s.status
        """,
        {"host": host, "start": start, "end": end},
    )
    frame["share"] = frame["share"].astype("float64")
    return frame


def node_recent_checks(engine: Engine, host: str, since: datetime) -> pd.DataFrame:
    """A host's raw checks since `since` (kept for the retention window): sampled_at, status,
    reason, decision."""
    frame = _frame(
        engine,
        """
        SELECT s.sampled_at, s.status, s.reason, s.decision
        FROM node_status_samples s JOIN hosts h ON h.id = s.host_id
        WHERE h.name = :host AND s.sampled_at >= :since
        ORDER BY s.sampled_at
        """,
        {"host": host, "since": since},
    )
    frame["sampled_at"] = pd.to_datetime(frame["sampled_at"], utc=True)
    return frame


def node_tap_readiness(engine: Engine, host: str, limit: int = 20) -> pd.DataFrame:
    """A host's latest STUN tests, newest first."""
    frame = _frame(
        engine,
        """
        SELECT t.checked_at, t.nat_type, t.udp_reachable, t.mapping, t.filtering,
               t.mapped_address, t.mapped_port, t.rtt_ms, t.error
        FROM hosts h
        CROSS JOIN LATERAL (  -- a backward read of (host_id, checked_at): a year is 1,460 tests
            SELECT * FROM tap_readiness t WHERE t.host_id = h.id
            ORDER BY t.checked_at DESC LIMIT :limit
        ) t
        WHERE h.name = :host
        ORDER BY t.checked_at DESC
        """,
        {"host": host, "limit": limit},
    )
    frame["checked_at"] = pd.to_datetime(frame["checked_at"], utc=True)
    return frame
