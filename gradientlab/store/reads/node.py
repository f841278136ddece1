"""The Node page's question, how is this one node doing: its host's profile, its points, taps,
uptime and metrics per day, its checks per day by status, its recent raw checks and its latest
STUN tests."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import pandas as pd
from sqlalchemy import Engine

from gradientlab.store.reads._sql import UPTIME_SECONDS_PER_UNIT, _frame, to_points
from gradientlab.store.rollups import UNKNOWN_REGION, UNMANAGED_PROVIDER


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
