"""Daily rollups of the fleet's history, kept in the `rollup_*` tables of sql/009_rollups.sql (and
sql/012_tap_readiness_rollup.sql for tap readiness).

Each rollup is rebuilt per UTC day: the day's rows are deleted and inserted again from the base
tables in one transaction, so refreshing twice changes nothing and a late row for a past day is
taken in by refreshing that day. The flows that write base tables refresh the days they touched;
`gradientlab refresh-rollups` (`refresh_rollups`) brings every rollup up to date after rows were
written any other way. A day whose raw samples retention has pruned is never rebuilt from what
is left of them (see gradientlab/store/retention.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import Connection, Engine, text

from gradientlab.agent.pages import GOOD_STATES

# How a node no host of ours owns, and a host without a region, are labelled in the rollups.
UNMANAGED_PROVIDER = "not managed"
UNKNOWN_REGION = "unknown"

UNSUPPORTED_STATUSES = ("Unsupported", "Suspended")
# Recovery steps and incident closures land within this long of the run that touched them.
TOUCH_MARGIN = timedelta(hours=1)


@dataclass
class RefreshCount:
    """Days rebuilt per rollup family, and the rows each now holds for them."""

    days: dict[str, int] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)

    def add(self, family: str, days: int, rows: int) -> None:
        self.days[family] = self.days.get(family, 0) + days
        self.rows[family] = self.rows.get(family, 0) + rows


def utc_start(day: date) -> datetime:
    return datetime.combine(day, time.min, UTC)


def _serialised(conn: Connection, family: str) -> None:
    """One refresh of a rollup family at a time (sharded health runs, a CLI refresh, prune):
    two that rebuilt the same day at once would collide on its keys."""
    conn.execute(text("SELECT pg_advisory_xact_lock(7172, hashtext(:f))"), {"f": family})


def _span(first: date, last: date) -> dict[str, object]:
    return {
        "first": first,
        "last": last,
        "since": utc_start(first),
        "until": utc_start(last + timedelta(days=1)),
    }


# ------------------------------------------------------------------ status samples, per host


def refresh_sample_days(conn: Connection, first: date, last: date) -> int:
    """Rebuild rollup_host_day, rollup_host_day_status and rollup_fleet_day_status for the days
    from `first` to `last`, except days retention has pruned. Returns host-day rows written."""
    if last < first:
        return 0
    _serialised(conn, "samples")
    params = _span(first, last)
    pruned = [
        r.day
        for r in conn.execute(
            text(
                "SELECT day FROM rollup_sample_days"
                " WHERE day BETWEEN :first AND :last AND pruned_at IS NOT NULL"
            ),
            params,
        )
    ]
    params["pruned"] = pruned
    keep = "AND NOT (day = ANY(:pruned))"
    for table in ("rollup_host_day", "rollup_host_day_status", "rollup_fleet_day_status"):
        conn.execute(text(f"DELETE FROM {table} WHERE day BETWEEN :first AND :last {keep}"), params)
    conn.execute(
        text(f"DELETE FROM rollup_sample_days WHERE day BETWEEN :first AND :last {keep}"), params
    )
    # one pass over the raw rows; the statements below read only this temporary table
    conn.execute(
        text(
            """
            CREATE TEMP TABLE rollup_samples_in_days ON COMMIT DROP AS
            SELECT host_id, (sampled_at AT TIME ZONE 'UTC')::date AS day, sampled_at, status,
                   reachable, load1, mem_total_kib, mem_available_kib, disk_total_kib,
                   disk_free_kib, COALESCE(browser_pss_kib, pss_kib) AS browser_pss_kib,
                   runner_pss_kib, taps_today, uptime_today
            FROM node_status_samples
            WHERE sampled_at >= :since AND sampled_at < :until
            """
        ),
        params,
    )
    conn.execute(text("DELETE FROM rollup_samples_in_days WHERE day = ANY(:pruned)"), params)
    written = conn.execute(
        text(
            """
            INSERT INTO rollup_host_day (
                host_id, day, samples, good_samples, unsupported_samples, reachable_samples,
                first_at, last_at,
                last_status, load1_avg, load1_max, mem_total_kib, mem_available_kib_min,
                mem_available_kib_avg, disk_total_kib, disk_free_kib_min, browser_pss_kib_avg,
                browser_pss_kib_max, runner_pss_kib_avg, taps_today_max, uptime_today_max)
            SELECT host_id, day, count(*),
                   count(*) FILTER (WHERE status = ANY(:good)),
                   count(*) FILTER (WHERE status = ANY(:unsupported)),
                   count(*) FILTER (WHERE reachable),
                   min(sampled_at), max(sampled_at),
                   (array_agg(status ORDER BY sampled_at DESC))[1],
                   avg(load1), max(load1), max(mem_total_kib), min(mem_available_kib),
                   avg(mem_available_kib)::bigint, max(disk_total_kib), min(disk_free_kib),
                   avg(browser_pss_kib)::bigint, max(browser_pss_kib),
                   avg(runner_pss_kib)::bigint, max(taps_today), max(uptime_today)
            FROM rollup_samples_in_days
            GROUP BY host_id, day
            ORDER BY day, host_id  -- a day's rows together: the pages read days
            """
        ),
        {"good": list(GOOD_STATES), "unsupported": list(UNSUPPORTED_STATUSES)},
    ).rowcount
    conn.execute(
        text(
            """
            INSERT INTO rollup_host_day_status (host_id, day, status, samples, first_at, last_at)
            SELECT host_id, day, status, count(*), min(sampled_at), max(sampled_at)
            FROM rollup_samples_in_days
            GROUP BY host_id, day, status
            ORDER BY day, host_id
            """
        )
    )
    conn.execute(
        text(
            """
            INSERT INTO rollup_fleet_day_status (day, provider, region, status, hosts, samples)
            SELECT s.day, h.provider, COALESCE(h.region, :unknown), s.status, count(*),
                   sum(s.samples)
            FROM rollup_host_day_status s
            JOIN hosts h ON h.id = s.host_id
            WHERE s.day BETWEEN :first AND :last AND NOT (s.day = ANY(:pruned))
            GROUP BY s.day, h.provider, COALESCE(h.region, :unknown), s.status
            """
        ),
        {**params, "unknown": UNKNOWN_REGION},
    )
    conn.execute(
        text(
            """
            INSERT INTO rollup_sample_days (day, samples)
            SELECT day, count(*) FROM rollup_samples_in_days GROUP BY day
            """
        )
    )
    conn.execute(text("DROP TABLE rollup_samples_in_days"))
    return written


# ------------------------------------------------------------------ points, uptime and taps


@dataclass(frozen=True)
class _Running:
    """A rollup's running totals: its table, the key a total runs along (by day), and each
    total's column with the window expression over rows `{r}` (window `w`) that adds to it."""

    table: str
    key: str
    sums: dict[str, str]

    @property
    def columns(self) -> str:
        return ", ".join(self.sums)

    def over(self, rows: str, base: str) -> str:
        """The running totals over `rows` in window `w`, on top of `base`'s (NULL: none
        before)."""
        return ",\n".join(
            f"COALESCE({base}.{c}, 0) + {e.format(r=rows)}" for c, e in self.sums.items()
        )

    def before(self, keys: str, first: str = ":first") -> str:
        """Each key of `keys` (a query of one column, `key`) with its totals up to `first`:
        its last row before it (NULLs when it has none)."""
        return f"""
            SELECT c.{self.key}, b.*
            FROM ({keys}) c
            LEFT JOIN LATERAL (
                SELECT {self.columns} FROM {self.table} r
                WHERE r.{self.key} = c.{self.key} AND r.day < {first}
                ORDER BY r.day DESC LIMIT 1
            ) b ON true"""

    def carry(self, conn: Connection, last: date) -> None:
        """After a past stretch up to `last` was rebuilt, the rows after it take the new totals
        on (a refresh of the latest days, the usual case, has none)."""
        later = conn.execute(
            text(f"SELECT 1 FROM {self.table} WHERE day > :last LIMIT 1"), {"last": last}
        ).first()
        if later is None:
            return
        new = ", ".join(f"c.{c}" for c in self.sums)
        conn.execute(
            text(
                f"""
                UPDATE {self.table} t
                SET ({self.columns}) = ({new})
                FROM (
                    SELECT a.{self.key}, a.day, {self.over("a", "b")}
                    FROM (SELECT * FROM {self.table} WHERE day > :last) a
                    LEFT JOIN LATERAL (
                        SELECT {self.columns} FROM {self.table} x
                        WHERE x.{self.key} = a.{self.key} AND x.day <= :last
                        ORDER BY x.day DESC LIMIT 1
                    ) b ON true
                    WINDOW w AS (PARTITION BY a.{self.key} ORDER BY a.day)
                ) AS c({self.key}, day, {self.columns})
                WHERE t.{self.key} = c.{self.key} AND t.day = c.day
                  AND ({", ".join(f"t.{c}" for c in self.sums)}) IS DISTINCT FROM ({new})
                """
            ),
            {"last": last},
        )


# A rollup_node_day row's running totals: the node's rows up to and including its day.
_NODE_RUNNING = _Running(
    "rollup_node_day",
    "client_id",
    {
        "cum_points_raw": "sum({r}.points_raw) OVER w",
        "cum_days": "count(*) OVER w",
        "cum_zero_days": "count(*) FILTER (WHERE {r}.points_raw = 0) OVER w",
        "cum_taps": "COALESCE(sum({r}.taps) OVER w, 0)",
        "cum_duration": "COALESCE(sum({r}.duration) OVER w, 0)",
        "cum_stat_days": "count({r}.duration) OVER w",
    },
)


def refresh_node_days(conn: Connection, first: date, last: date) -> int:
    """Rebuild rollup_node_day and rollup_group_day for the days from `first` to `last`, with
    each node's running totals (carried on from its last row before `first`, and carried into
    any rows after `last`), and rollup_node for every node whose rows changed."""
    if last < first:
        return 0
    _serialised(conn, "nodes")
    params = {**_span(first, last), "unmanaged": UNMANAGED_PROVIDER, "unknown": UNKNOWN_REGION}
    conn.execute(text("DELETE FROM rollup_node_day WHERE day BETWEEN :first AND :last"), params)
    conn.execute(text("DELETE FROM rollup_group_day WHERE day BETWEEN :first AND :last"), params)
    written = conn.execute(
        text(
            f"""
            WITH d AS (
                SELECT COALESCE(p.day, s.day) AS day, COALESCE(p.client_id, s.client_id)
                           AS client_id,
                       COALESCE(p.points, 0) AS points_raw, COALESCE(p.taps, 0) AS listed_taps,
                       s.duration, s.taps
                FROM (SELECT * FROM node_daily_points WHERE day BETWEEN :first AND :last) p
                FULL JOIN (SELECT * FROM node_daily_stats WHERE day BETWEEN :first AND :last) s
                    ON s.client_id = p.client_id AND s.day = p.day
            ), before AS (  -- each node's totals up to `first`: its last row before it
                {_NODE_RUNNING.before("SELECT DISTINCT client_id FROM d")}
            )
            INSERT INTO rollup_node_day (day, client_id, host_id, host, provider, region,
                                         points_raw, listed_taps, duration, taps,
                                         {_NODE_RUNNING.columns})
            SELECT d.day, d.client_id, h.id, COALESCE(h.name, d.client_id),
                   COALESCE(h.provider, :unmanaged),
                   CASE WHEN h.id IS NULL THEN :unknown ELSE COALESCE(h.region, :unknown) END,
                   d.points_raw, d.listed_taps, d.duration, d.taps,
                   {_NODE_RUNNING.over("d", "b")}
            FROM d
            JOIN before b ON b.client_id = d.client_id
            LEFT JOIN nodes n ON n.client_id = d.client_id
            LEFT JOIN hosts h ON h.id = n.host_id
            WINDOW w AS (PARTITION BY d.client_id ORDER BY d.day)
            ORDER BY d.day, d.client_id  -- a day's rows together: the pages read days
            """
        ),
        params,
    ).rowcount
    _NODE_RUNNING.carry(conn, last)
    conn.execute(
        text(
            """
            INSERT INTO rollup_group_day (day, provider, region, nodes, earning_nodes,
                                          points_raw, listed_taps, duration, stat_nodes, taps)
            SELECT day, provider, region, count(*), count(*) FILTER (WHERE points_raw > 0),
                   sum(points_raw), sum(listed_taps), COALESCE(sum(duration), 0),
                   count(duration), COALESCE(sum(taps), 0)
            FROM rollup_node_day
            WHERE day BETWEEN :first AND :last
            GROUP BY day, provider, region
            """
        ),
        params,
    )
    _refresh_nodes(conn, first)
    return written


def _refresh_nodes(conn: Connection, first: date) -> None:
    """rollup_node again for every node with rows from `first` on, or that had some."""
    conn.execute(
        text(
            """
            INSERT INTO rollup_node (client_id, host_id, host, provider, region, first_day,
                                     last_day, last_points_raw)
            SELECT t.client_id, l.host_id, l.host, l.provider, l.region, f.day, l.day,
                   l.points_raw
            FROM (SELECT client_id FROM rollup_node WHERE last_day >= :first
                  UNION SELECT DISTINCT client_id FROM rollup_node_day WHERE day >= :first) t
            CROSS JOIN LATERAL (
                SELECT * FROM rollup_node_day r WHERE r.client_id = t.client_id
                ORDER BY r.day DESC LIMIT 1
            ) l
            CROSS JOIN LATERAL (
                SELECT r.day FROM rollup_node_day r WHERE r.client_id = t.client_id
                ORDER BY r.day LIMIT 1
            ) f
            ON CONFLICT (client_id) DO UPDATE SET
                host_id = EXCLUDED.host_id, host = EXCLUDED.host,
                provider = EXCLUDED.provider, region = EXCLUDED.region,
                first_day = EXCLUDED.first_day, last_day = EXCLUDED.last_day,
                last_points_raw = EXCLUDED.last_points_raw
            """
        ),
        {"first": first},
    )
    conn.execute(  # a node whose every row went (its days were rebuilt without it)
        text(
            """
            DELETE FROM rollup_node n
            WHERE n.last_day >= :first
              AND NOT EXISTS (SELECT 1 FROM rollup_node_day r WHERE r.client_id = n.client_id)
            """
        ),
        {"first": first},
    )


# ------------------------------------------------------------------ tap readiness


# A rollup_tap_day row's running totals: the host's tests up to and including its day.
_TAP_RUNNING = _Running(
    "rollup_tap_day",
    "host_id",
    {
        "cum_tests": "sum({r}.tests) OVER w",
        "cum_blocked_tests": "sum({r}.blocked_tests) OVER w",
        "cum_failed_tests": "sum({r}.failed_tests) OVER w",
    },
)


def refresh_tap_days(conn: Connection, first: date, last: date) -> int:
    """Rebuild rollup_tap_day (sql/012) for the days from `first` to `last`: each host's tests
    per UTC day, its last test that day, and its running totals (carried on from its last row
    before `first`, and into any rows after `last`). Returns host-day rows written."""
    if last < first:
        return 0
    _serialised(conn, "taps")
    params = _span(first, last)
    conn.execute(text("DELETE FROM rollup_tap_day WHERE day BETWEEN :first AND :last"), params)
    written = conn.execute(
        text(
            f"""
            WITH t AS MATERIALIZED (
                SELECT id, host_id, (checked_at AT TIME ZONE 'UTC')::date AS day, checked_at,
                       udp_reachable, nat_type
                FROM tap_readiness
                WHERE checked_at >= :since AND checked_at < :until
            ), d AS (
                SELECT host_id, day, count(*) AS tests,
                       count(*) FILTER (WHERE udp_reachable IS FALSE) AS blocked_tests,
                       count(*) FILTER (WHERE udp_reachable IS NULL) AS failed_tests
                FROM t GROUP BY host_id, day
            ), l AS (
                SELECT DISTINCT ON (host_id, day) host_id, day, id, nat_type, udp_reachable
                FROM t ORDER BY host_id, day, checked_at DESC
            ), before AS (  -- each host's totals up to `first`: its last row before it
                {_TAP_RUNNING.before("SELECT DISTINCT host_id FROM d")}
            )
            INSERT INTO rollup_tap_day (host_id, day, tests, blocked_tests, failed_tests,
                                        latest_id, latest_nat_type, latest_udp_reachable,
                                        {_TAP_RUNNING.columns})
            SELECT d.host_id, d.day, d.tests, d.blocked_tests, d.failed_tests, l.id,
                   l.nat_type, l.udp_reachable, {_TAP_RUNNING.over("d", "b")}
            FROM d
            JOIN l ON l.host_id = d.host_id AND l.day = d.day
            JOIN before b ON b.host_id = d.host_id
            WINDOW w AS (PARTITION BY d.host_id ORDER BY d.day)
            ORDER BY d.day, d.host_id  -- a day's rows together: the page reads edge days
            """
        ),
        params,
    ).rowcount
    _TAP_RUNNING.carry(conn, last)
    return written


# ------------------------------------------------------------------ incidents and recovery


def refresh_incident_days(conn: Connection, first: date, last: date) -> int:
    """Rebuild rollup_incident_day (by detection day) and rollup_step_day (by the day a step
    started) for the days from `first` to `last`."""
    if last < first:
        return 0
    _serialised(conn, "incidents")
    params = _span(first, last)
    conn.execute(text("DELETE FROM rollup_incident_day WHERE day BETWEEN :first AND :last"), params)
    conn.execute(text("DELETE FROM rollup_step_day WHERE day BETWEEN :first AND :last"), params)
    written = conn.execute(
        text(
            """
            INSERT INTO rollup_incident_day (day, host_id, kind, incidents, recovered, failed,
                                             open, recovery_seconds_sum, recovery_seconds_max)
            SELECT (detected_at AT TIME ZONE 'UTC')::date, COALESCE(host_id, 0), kind, count(*),
                   count(*) FILTER (WHERE status = 'recovered'),
                   count(*) FILTER (WHERE status = 'failed'),
                   count(*) FILTER (WHERE status = 'open'),
                   COALESCE(sum(EXTRACT(EPOCH FROM recovered_at - detected_at))
                       FILTER (WHERE status = 'recovered'), 0)::float8,
                   max(EXTRACT(EPOCH FROM recovered_at - detected_at))
                       FILTER (WHERE status = 'recovered')::float8
            FROM incidents
            WHERE detected_at >= :since AND detected_at < :until
            GROUP BY 1, 2, 3
            """
        ),
        params,
    ).rowcount
    conn.execute(
        text(
            """
            INSERT INTO rollup_step_day (day, host_id, step, tries, ok, failed, seconds_sum)
            SELECT (r.started_at AT TIME ZONE 'UTC')::date, COALESCE(i.host_id, 0), r.step,
                   count(*), count(*) FILTER (WHERE r.ok), count(*) FILTER (WHERE NOT r.ok),
                   COALESCE(sum(EXTRACT(EPOCH FROM r.finished_at - r.started_at)), 0)::float8
            FROM recovery_actions r
            JOIN incidents i ON i.id = r.incident_id
            WHERE r.started_at >= :since AND r.started_at < :until
            GROUP BY 1, 2, 3
            """
        ),
        params,
    )
    return written


def _days(conn: Connection, sql: str, params: dict[str, object] | None = None) -> list[date]:
    return sorted({r[0] for r in conn.execute(text(sql), params or {}) if r[0] is not None})


def _runs(days: list[date]) -> list[tuple[date, date]]:
    """Consecutive days as (first, last) runs, so a refresh reads each stretch once."""
    runs: list[tuple[date, date]] = []
    for day in sorted(set(days)):
        if runs and day == runs[-1][1] + timedelta(days=1):
            runs[-1] = (runs[-1][0], day)
        else:
            runs.append((day, day))
    return runs


# ------------------------------------------------------------------ what the callers use


# Each rollup family: the first and last UTC day its base tables have rows for, and its refresh.
_FAMILIES: tuple[tuple[str, str, Callable[[Connection, date, date], int]], ...] = (
    (
        "samples",
        "SELECT (min(sampled_at) AT TIME ZONE 'UTC')::date,"
        " (max(sampled_at) AT TIME ZONE 'UTC')::date FROM node_status_samples",
        refresh_sample_days,
    ),
    (
        "nodes",
        "SELECT min(day), max(day) FROM (SELECT day FROM node_daily_points"
        " UNION ALL SELECT day FROM node_daily_stats) d",
        refresh_node_days,
    ),
    (
        "incidents",
        "SELECT (min(t) AT TIME ZONE 'UTC')::date, (max(t) AT TIME ZONE 'UTC')::date"
        " FROM (SELECT min(detected_at) AS t FROM incidents"
        " UNION ALL SELECT max(detected_at) FROM incidents"
        " UNION ALL SELECT min(started_at) FROM recovery_actions"
        " UNION ALL SELECT max(started_at) FROM recovery_actions) b",
        refresh_incident_days,
    ),
    (
        "taps",
        "SELECT (min(checked_at) AT TIME ZONE 'UTC')::date,"
        " (max(checked_at) AT TIME ZONE 'UTC')::date FROM tap_readiness",
        refresh_tap_days,
    ),
)


def refresh_rollups(engine: Engine, since: date | None = None) -> RefreshCount:
    """Bring every rollup up to date: rebuild each day from `since` (default: the first day any
    base table has rows for) to the last day any has. Idempotent; one transaction per family."""
    count = RefreshCount()
    for family, bounds, refresh in _FAMILIES:
        with engine.begin() as conn:
            first, last = conn.execute(text(bounds)).one()
            if first is not None:
                start = max(first, since) if since else first
                count.add(family, max((last - start).days + 1, 0), refresh(conn, start, last))
    return count


def refresh_after_health(engine: Engine, since: datetime, until: datetime) -> RefreshCount:
    """The rollups a health run touched, having written from `since` to `until`: its checks'
    days, and the days of every incident it could have opened, changed or closed (every open
    incident, and those the rollups still count as open)."""
    count = RefreshCount()
    since = since - TOUCH_MARGIN
    first, last = since.astimezone(UTC).date(), until.astimezone(UTC).date()
    with engine.begin() as conn:
        count.add("samples", (last - first).days + 1, refresh_sample_days(conn, first, last))
    with engine.begin() as conn:
        days = _days(
            conn,
            """
            SELECT (detected_at AT TIME ZONE 'UTC')::date FROM incidents
            WHERE status = 'open' OR detected_at >= :since OR recovered_at >= :since
               OR alerted_at >= :since OR confirmed_at >= :since
            UNION SELECT day FROM rollup_incident_day WHERE open > 0
            UNION SELECT (started_at AT TIME ZONE 'UTC')::date FROM recovery_actions
            WHERE started_at >= :since OR finished_at >= :since
            """,
            {"since": since},
        )
        for a, b in _runs(days):
            count.add("incidents", (b - a).days + 1, refresh_incident_days(conn, a, b))
    return count


def refresh_after_ingest(engine: Engine, since: datetime) -> RefreshCount:
    """The rollups of points, uptime and taps for the days a rewards or poc-taps run changed
    rows of since `since` (the upserts stamp `updated_at` only on rows that changed), and of
    tap readiness for the days of the tests checked since `since` (a poc-taps run's)."""
    count = RefreshCount()
    touched = (
        (
            "nodes",
            "SELECT day FROM node_daily_points WHERE updated_at >= :since"
            " UNION SELECT day FROM node_daily_stats WHERE updated_at >= :since",
            refresh_node_days,
        ),
        (
            "taps",
            "SELECT DISTINCT (checked_at AT TIME ZONE 'UTC')::date FROM tap_readiness"
            " WHERE checked_at >= :since",
            refresh_tap_days,
        ),
    )
    for family, sql, refresh in touched:
        with engine.begin() as conn:
            for a, b in _runs(_days(conn, sql, {"since": since - TOUCH_MARGIN})):
                count.add(family, (b - a).days + 1, refresh(conn, a, b))
    return count
