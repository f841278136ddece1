"""The tap-readiness question (the Uptime & taps page): each selected host's latest STUN test in
the selected days with its tests there and its node's taps (`tap_readiness`), a summary per
NAT type (`tap_readiness_summary`) and the CSV; read from rollup_tap_day's running totals."""

from __future__ import annotations

from typing import Any

import pandas as pd
from sqlalchemy import Engine

from gradientlab.store.reads._sql import _copy_csv, _edge_differences, _edge_rows, _frame
from gradientlab.store.reads.filters import FleetFilter, _host_selection
from gradientlab.store.reads.rewards import _node_range
from gradientlab.store.rollups import UNKNOWN_REGION

TAP_READINESS_ORDERS = {"host": "host", "fewest_taps": "taps, host"}
_TAP_COUNTS = ("tests", "blocked_tests", "failed_tests")
_TAP_EDGE = "latest_id, latest_nat_type, latest_udp_reachable, " + ", ".join(
    f"cum_{c}" for c in _TAP_COUNTS
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
