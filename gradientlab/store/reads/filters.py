"""The analyst's selection (`FleetFilter`: UTC days and, when not empty, providers, regions,
hosts), the SQL fragments and bound values it becomes, what there is to select
(`filter_choices`), and the days each source has rows for (`day_bounds`, `host_day_bounds`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

import pandas as pd
from sqlalchemy import Engine

from gradientlab.store.reads._sql import _frame
from gradientlab.store.rollups import UNKNOWN_REGION, UNMANAGED_PROVIDER

DaySource = Literal["points", "stats", "incidents", "checks"]


@dataclass(frozen=True)
class FleetFilter:
    """The analyst's selection: a UTC day range and, when not empty, providers, regions, hosts."""

    start: date
    end: date
    providers: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()


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
