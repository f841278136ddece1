"""The Economics page's question, what did the fleet cost: each host's cost and points in the
selected days (`host_costs`), per provider (`provider_costs`), the share of each host's checks
that found it Unsupported (`status_shares`) and what that cost for nothing
(`unsupported_costs`)."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
from sqlalchemy import Engine

from gradientlab.store.reads._sql import _frame, to_points
from gradientlab.store.reads.filters import (
    FleetFilter,
    _days,
    _host_selection,
    _selection,
    _utc_bounds,
)
from gradientlab.store.reads.rewards import _node_range
from gradientlab.store.rollups import UNKNOWN_REGION


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
