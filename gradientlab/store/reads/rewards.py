"""The Rewards page's question, what did the fleet earn: the account's points by kind, points,
taps and uptime per provider or region, the top nodes per day, a page of nodes with their
totals and the totals beside it, and every node-day as CSV. `_node_range` (each node's totals
over the days, from the running totals) is what the cost and tap-readiness reads count points
and taps by too."""

from __future__ import annotations

from typing import Any, Literal

import pandas as pd
from sqlalchemy import Engine

from gradientlab.gradient.models import POINT_SCALE
from gradientlab.store.reads._sql import (
    UPTIME_SECONDS_PER_UNIT,
    _copy_csv,
    _edge_differences,
    _edge_rows,
    _frame,
    to_points,
)
from gradientlab.store.reads.filters import FleetFilter, _days, _rollup_selection

# Charts get the rows they draw (per day per provider or region, or the top N nodes and "the
# rest"), tables a page of rows with the totals beside it. Every query here reads the daily
# rollups of sql/009_rollups.sql, which the flows refresh.

Grouping = Literal["provider", "region"]
THE_REST = "the rest"
POINT_KINDS = ("node", "referral", "bonus", "boost")


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


# ---------------------------------------------------------------- is the network paying now

# Online node-time that would earn several points in a season (0.25 points per 10 minutes
# online): below it, zero points say nothing about whether the network pays.
SEASON_EVIDENCE_SECONDS = 2 * 3600
SEASON_WINDOW_DAYS = 3  # the latest days with uptime that decide


def reward_season(engine: Engine) -> dict[str, Any]:
    """Whether the network credits points now, from its own answers: the latest
    SEASON_WINDOW_DAYS days on which it reported uptime for our nodes (/sentrynode/stats), and
    the points it credited on them (/point/stats and the node list). `paying` is False when
    the nodes were online for SEASON_EVIDENCE_SECONDS or more and were credited nothing (as
    Gradient says of Sentry Nodes since Seasons 0 and 1 concluded), True when points were
    credited, None when there is too little uptime to tell. With the window's days, its
    online hours and taps, and the last day any point was credited (None: never)."""
    frame = _frame(
        engine,
        """
        WITH online AS (
            SELECT day, sum(duration)::bigint AS seconds, sum(taps)::bigint AS taps
            FROM node_daily_stats GROUP BY day HAVING sum(duration) > 0
        ), window_days AS (
            SELECT * FROM online ORDER BY day DESC LIMIT :days
        ), credited AS (
            SELECT day, sum(node)::bigint AS points FROM account_daily_points GROUP BY day
            UNION ALL
            SELECT day, sum(points)::bigint FROM node_daily_points GROUP BY day
        )
        SELECT min(w.day) AS first_day, max(w.day) AS last_day,
               coalesce(sum(w.seconds), 0)::bigint AS seconds,
               coalesce(sum(w.taps), 0)::bigint AS taps,
               (SELECT coalesce(sum(c.points), 0)::bigint FROM credited c
                 WHERE c.day IN (SELECT day FROM window_days)) AS points_raw,
               (SELECT max(c.day) FROM credited c WHERE c.points > 0) AS last_paid_day
        FROM window_days w
        """,
        {"days": SEASON_WINDOW_DAYS},
    )
    row = frame.iloc[0]
    seconds = int(row["seconds"])
    points_raw = int(row["points_raw"])
    if points_raw > 0:
        paying: bool | None = True
    elif seconds * UPTIME_SECONDS_PER_UNIT >= SEASON_EVIDENCE_SECONDS:
        paying = False
    else:
        paying = None
    return {
        "paying": paying,
        "first_day": None if pd.isna(row["first_day"]) else row["first_day"],
        "last_day": None if pd.isna(row["last_day"]) else row["last_day"],
        "online_hours": seconds * UPTIME_SECONDS_PER_UNIT / 3600,
        "taps": int(row["taps"]),
        "points_raw": points_raw,
        "last_paid_day": None if pd.isna(row["last_paid_day"]) else row["last_paid_day"],
    }


def season_text(season: dict[str, Any]) -> str | None:
    """What the app and the daily report say when the network pays nothing now; None when it
    pays, or when there is too little uptime to tell."""
    if season["paying"] is not False:
        return None
    first, last = season["first_day"], season["last_day"]
    days = f"{first:%Y-%m-%d}" if first == last else f"{first:%Y-%m-%d} to {last:%Y-%m-%d}"
    paid = season["last_paid_day"]
    since = (
        f"the last points were credited on {paid:%Y-%m-%d}"
        if paid is not None
        else "no point was ever credited to this account"
    )
    return (
        f"The network pays no points now: our nodes were online {season['online_hours']:,.1f} "
        f"node-hours and took {season['taps']:,} taps on {days}, and the network credited 0 "
        f"points for them ({since}). Gradient has concluded Seasons 0 and 1 of the Sentry "
        "Node programme and announced no new one: zero-point days are the network's, not a "
        "fault of the nodes. Rewards are still read, and a new season's points show here."
    )
