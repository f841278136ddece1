"""The Fleet now page's question, is the fleet up right now: each live host's latest check
(`fleet_now`), and the checks per UTC day by status (`fleet_status_per_day`)."""

from __future__ import annotations

import pandas as pd
from sqlalchemy import Engine

from gradientlab.store.reads._sql import _frame, to_points
from gradientlab.store.reads.filters import FleetFilter, _days, _rollup_selection
from gradientlab.store.rollups import UNKNOWN_REGION


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
