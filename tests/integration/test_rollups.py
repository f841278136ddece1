"""Daily rollups and retention on a real Postgres: a rollup equals the raw aggregate, a refresh
run twice changes nothing, and pruning never deletes a day that is not rolled up.

Every time derives from `NOW`, the tests' own clock, never the database's `now()`."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from gradientlab.cli import main as cli
from gradientlab.config import FleetFileError, load_fleet
from gradientlab.store.fleet import insert_sample
from gradientlab.store.retention import prune_samples, roll_up_then_prune, unrolled_days
from gradientlab.store.rollups import (
    refresh_after_health,
    refresh_after_ingest,
    refresh_node_days,
    refresh_rollups,
    refresh_tap_days,
)
from tests.conftest import rows

NOW = datetime(2025, 6, 20, 12, 0, tzinfo=UTC)
TODAY = NOW.date()
ROLLUP_TABLES = (
    "rollup_host_day",
    "rollup_host_day_status",
    "rollup_fleet_day_status",
    "rollup_sample_days",
    "rollup_node_day",
    "rollup_node",
    "rollup_group_day",
    "rollup_incident_day",
    "rollup_step_day",
    "rollup_tap_day",
)


def seed(engine: Engine) -> None:
    """Three hosts (one without region), a node no host owns, 4 days of checks, points, stats,
    and incidents with their recovery steps."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO hosts (id, name, provider, region, state) VALUES"
                " (1, 'oci-1', 'oci', 'us-ashburn-1', 'running'),"
                " (2, 'gcp-1', 'gcp', 'us-west1', 'running'),"
                " (3, 'pi', 'static', NULL, 'running')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO nodes (host_id, client_id) VALUES (1, 'n-oci'), (2, 'n-gcp'),"
                " (3, 'n-pi')"
            )
        )
        statuses = ["Good", "Good", "Disconnected", "Unsupported"]
        for day in range(4):
            for host in (1, 2, 3):
                for i in range(6):  # every 4 hours
                    at = (
                        NOW - timedelta(days=3 - day) - timedelta(hours=11) + timedelta(hours=4 * i)
                    )
                    insert_sample(
                        conn,
                        host,
                        {
                            "sampled_at": at,
                            "status": statuses[(host + i + day) % 4],
                            "reachable": i != 5,
                            "load1": 0.5 * i,
                            "mem_available_kib": 100_000 + 1000 * i,
                            "browser_pss_kib": 300_000 + host,
                        },
                    )
        conn.execute(
            text(
                "INSERT INTO node_daily_points (client_id, day, points, taps)"
                " VALUES (:c, :d, :p, :t)"
            ),
            [
                {"c": c, "d": TODAY - timedelta(days=k), "p": p * (k + 1), "t": k}
                for k in range(4)
                for c, p in (
                    ("n-oci", 0),
                    ("n-gcp", 250_000),
                    ("n-pi", 1_000_000),
                    ("n-laptop", 50_000),
                )
            ],  # fmt: skip
        )
        conn.execute(
            text(
                "INSERT INTO node_daily_stats (client_id, day, duration, taps)"
                " VALUES (:c, :d, :u, :t)"
            ),
            [
                {"c": c, "d": TODAY - timedelta(days=k), "u": 3600 * (k + 2), "t": 2 * k}
                for k in range(3)
                for c in ("n-gcp", "n-pi", "n-stats-only")
            ],
        )
        conn.execute(
            text(
                "INSERT INTO incidents (id, host_id, kind, detected_at, status, recovered_at)"
                " VALUES (1, 1, 'BrowserDown', :d1, 'recovered', :r1),"
                " (2, 1, 'BrowserDown', :d2, 'recovered', :r2),"
                " (3, 2, 'LoggedOut', :d2, 'failed', NULL),"
                " (4, 3, 'Unreachable', :d3, 'open', NULL),"
                " (5, NULL, 'NetworkDown', :d3, 'recovered', :r3)"
            ),
            {
                "d1": NOW - timedelta(days=2),
                "r1": NOW - timedelta(days=2) + timedelta(seconds=40),
                "d2": NOW - timedelta(days=1),
                "r2": NOW - timedelta(days=1) + timedelta(seconds=100),
                "d3": NOW - timedelta(hours=1),
                "r3": NOW - timedelta(minutes=30),
            },
        )
        conn.execute(
            text(
                "INSERT INTO recovery_actions (incident_id, step, started_at, finished_at, ok)"
                " VALUES (1, 'restart_browser', :a, :a + interval '5 s', true),"
                " (2, 'restart_browser', :b, :b + interval '7 s', false),"
                " (2, 'reboot_host', :b + interval '10 s', :b + interval '90 s', true),"
                " (3, 'login', :b, :b + interval '3 s', false)"
            ),
            {"a": NOW - timedelta(days=2), "b": NOW - timedelta(days=1)},
        )


@pytest.fixture()
def seeded(engine: Engine) -> Engine:
    seed(engine)
    return engine


def snapshot(engine: Engine) -> dict[str, list[str]]:
    """Every rollup row, less the time each was refreshed."""
    return {
        t: sorted(
            map(repr, rows(engine, f"SELECT * FROM {t}" if t != "rollup_sample_days"
                           else "SELECT day, samples, pruned_at FROM rollup_sample_days"))
        )
        for t in ROLLUP_TABLES
    }  # fmt: skip


def test_host_day_rollup_equals_the_raw_aggregate(seeded: Engine) -> None:
    refresh_rollups(seeded)
    rolled = rows(
        seeded,
        "SELECT host_id, day, samples, good_samples, unsupported_samples, reachable_samples,"
        " load1_max,"
        " mem_available_kib_min, browser_pss_kib_max FROM rollup_host_day ORDER BY 1, 2",
    )
    raw = rows(
        seeded,
        "SELECT host_id, (sampled_at AT TIME ZONE 'UTC')::date, count(*),"
        " count(*) FILTER (WHERE status IN ('Good', 'Excellent')),"
        " count(*) FILTER (WHERE status IN ('Unsupported', 'Suspended')),"
        " count(*) FILTER (WHERE reachable), max(load1), min(mem_available_kib),"
        " max(browser_pss_kib)"
        " FROM node_status_samples GROUP BY 1, 2 ORDER BY 1, 2",
    )
    assert rolled == raw
    assert len(rolled) == 12  # 3 hosts x 4 days
    by_status = rows(
        seeded,
        "SELECT host_id, day, status, samples FROM rollup_host_day_status ORDER BY 1, 2, 3",
    )
    assert by_status == rows(
        seeded,
        "SELECT host_id, (sampled_at AT TIME ZONE 'UTC')::date, status, count(*)"
        " FROM node_status_samples GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
    )
    fleet = rows(
        seeded,
        "SELECT provider, region, sum(samples) FROM rollup_fleet_day_status"
        " GROUP BY 1, 2 ORDER BY 1, 2",
    )
    assert fleet == [
        ("gcp", "us-west1", 24),
        ("oci", "us-ashburn-1", 24),
        ("static", "unknown", 24),
    ]


def test_node_day_rollups_equal_points_and_stats(seeded: Engine) -> None:
    refresh_rollups(seeded)
    per_node = dict(
        rows(seeded, "SELECT client_id, sum(points_raw) FROM rollup_node_day GROUP BY 1")
    )
    assert per_node == dict(
        rows(seeded, "SELECT client_id, sum(points) FROM node_daily_points GROUP BY 1")
    ) | {"n-stats-only": 0}
    labels = dict(
        (c, (h, p, r))
        for c, h, p, r in rows(
            seeded, "SELECT DISTINCT client_id, host, provider, region FROM rollup_node_day"
        )
    )
    assert labels["n-pi"] == ("pi", "static", "unknown")
    assert labels["n-laptop"] == ("n-laptop", "not managed", "unknown")
    groups = rows(
        seeded,
        "SELECT provider, sum(points_raw), sum(taps), sum(duration), sum(nodes)"
        " FROM rollup_group_day GROUP BY 1 ORDER BY 1",
    )
    assert groups == [
        ("gcp", 2_500_000, 6, 32_400, 4),
        ("not managed", 500_000, 6, 32_400, 7),  # n-laptop 4 days, n-stats-only 3
        ("oci", 0, 0, 0, 4),
        ("static", 10_000_000, 6, 32_400, 4),
    ]
    earning = rows(seeded, "SELECT sum(earning_nodes) FROM rollup_group_day")
    assert earning == [(12,)]  # n-gcp, n-pi and n-laptop on 4 days each


def test_incident_and_step_rollups(seeded: Engine) -> None:
    refresh_rollups(seeded)
    incidents = rows(
        seeded,
        "SELECT host_id, kind, incidents, recovered, failed, open, recovery_seconds_sum"
        " FROM rollup_incident_day ORDER BY day, host_id",
    )
    assert incidents == [
        (1, "BrowserDown", 1, 1, 0, 0, 40.0),
        (1, "BrowserDown", 1, 1, 0, 0, 100.0),
        (2, "LoggedOut", 1, 0, 1, 0, 0.0),
        (0, "NetworkDown", 1, 1, 0, 0, 1800.0),
        (3, "Unreachable", 1, 0, 0, 1, 0.0),
    ]
    steps = rows(
        seeded, "SELECT step, sum(tries), sum(ok), sum(failed) FROM rollup_step_day GROUP BY 1"
    )
    assert sorted(steps) == [("login", 1, 0, 1), ("reboot_host", 1, 1, 0),
                             ("restart_browser", 2, 1, 1)]  # fmt: skip


def test_refreshing_again_duplicates_nothing(seeded: Engine) -> None:
    first = refresh_rollups(seeded)
    before = snapshot(seeded)
    again = refresh_rollups(seeded)
    refresh_rollups(seeded, since=TODAY - timedelta(days=1))
    assert snapshot(seeded) == before
    assert first.rows == again.rows
    assert first.days == {"samples": 4, "nodes": 4, "incidents": 3}


def test_a_health_run_refreshes_the_day_of_an_incident_it_closed(seeded: Engine) -> None:
    refresh_rollups(seeded)
    later = NOW + timedelta(hours=10)  # after the day's last check
    with seeded.begin() as conn:
        conn.execute(
            text("UPDATE incidents SET status = 'recovered', recovered_at = :t WHERE id = 4"),
            {"t": later},
        )
        insert_sample(conn, 3, {"sampled_at": later, "status": "Good", "reachable": True})
    count = refresh_after_health(seeded, later - timedelta(seconds=5), later)
    assert count.days["samples"] >= 1
    assert rows(seeded, "SELECT recovered, open FROM rollup_incident_day WHERE host_id = 3") == [
        (1, 0)
    ]
    assert rows(
        seeded,
        "SELECT samples, last_status FROM rollup_host_day WHERE host_id = 3 AND day = :d".replace(
            ":d", f"'{TODAY}'"
        ),
    ) == [(7, "Good")]


def test_an_ingest_refreshes_only_the_days_it_changed(seeded: Engine) -> None:
    refresh_rollups(seeded)
    with seeded.begin() as conn:
        for table in ("node_daily_points", "node_daily_stats"):  # written by an earlier run
            conn.execute(text(f"UPDATE {table} SET updated_at = now() - interval '3 hours'"))
        started = conn.execute(text("SELECT now()")).scalar_one()  # the upserts' own clock
        conn.execute(
            text(
                "UPDATE node_daily_points SET points = 7, updated_at = now()"
                " WHERE client_id = 'n-oci' AND day = :d"
            ),
            {"d": TODAY - timedelta(days=2)},
        )
    count = refresh_after_ingest(seeded, started)
    assert count.days == {"nodes": 1}
    assert rows(
        seeded,
        "SELECT sum(points_raw), sum(earning_nodes) FROM rollup_group_day WHERE provider = 'oci'",
    ) == [(7, 1)]


RANGE_COLUMNS = (
    "count(*), sum(points_raw), count(*) FILTER (WHERE points_raw = 0), "
    "COALESCE(sum(taps), 0), COALESCE(sum(duration), 0), count(duration)"
)


def assert_running_totals_match_the_rows(engine: Engine) -> None:
    """Every node's totals over every range of days, read from the running totals as the app
    reads them, equal the same sums over its rows; rollup_node names each node's first and
    latest day."""
    from gradientlab.store.reads import FleetFilter
    from gradientlab.store.reads.rewards import _node_range

    first, last = rows(engine, "SELECT min(day), max(day) FROM rollup_node_day")[0]
    span = [first + timedelta(days=i) for i in range((last - first).days + 3)]
    for start in [first - timedelta(days=1), *span]:
        for end in span:
            if end < start:
                continue
            sql, params = _node_range(FleetFilter(start, end))
            got = rows(
                engine,
                "SELECT client_id, days, points_raw, zero_days, taps, duration, stat_days"
                f" FROM ({sql}) r ORDER BY client_id",
                params,
            )
            want = rows(
                engine,
                f"SELECT client_id, {RANGE_COLUMNS} FROM rollup_node_day"
                " WHERE day BETWEEN :s AND :e GROUP BY client_id ORDER BY client_id",
                {"s": start, "e": end},
            )
            assert got == want, (start, end)
    assert rows(
        engine,
        "SELECT client_id, first_day, last_day, last_points_raw FROM rollup_node ORDER BY 1",
    ) == rows(
        engine,
        "SELECT DISTINCT ON (client_id) client_id, min(day) OVER (PARTITION BY client_id),"
        " day, points_raw FROM rollup_node_day ORDER BY client_id, day DESC",
    )


def test_running_totals_follow_every_refresh(seeded: Engine) -> None:
    refresh_rollups(seeded)
    assert_running_totals_match_the_rows(seeded)

    # a past day changes (a late correction) and a node is no longer listed on another: the
    # refresh of those days alone carries the new totals into the days after them
    with seeded.begin() as conn:
        conn.execute(
            text(
                "UPDATE node_daily_points SET points = 123 WHERE client_id = 'n-gcp' AND day = :d"
            ),
            {"d": TODAY - timedelta(days=2)},
        )
        conn.execute(
            text("DELETE FROM node_daily_points WHERE client_id = 'n-pi' AND day = :d"),
            {"d": TODAY - timedelta(days=1)},
        )
        conn.execute(
            text("DELETE FROM node_daily_stats WHERE client_id = 'n-pi' AND day = :d"),
            {"d": TODAY - timedelta(days=1)},
        )
    for day in (TODAY - timedelta(days=2), TODAY - timedelta(days=1)):  # one day at a time
        with seeded.begin() as conn:
            refresh_node_days(conn, day, day)
    assert rows(seeded, "SELECT count(*) FROM rollup_node_day WHERE client_id = 'n-pi'") == [(3,)]
    assert_running_totals_match_the_rows(seeded)

    # a node whose only days are rebuilt without it leaves rollup_node
    with seeded.begin() as conn:
        conn.execute(text("DELETE FROM node_daily_stats WHERE client_id = 'n-stats-only'"))
    refresh_rollups(seeded, since=TODAY - timedelta(days=3))
    assert rows(seeded, "SELECT count(*) FROM rollup_node WHERE client_id = 'n-stats-only'") == [
        (0,)
    ]
    assert_running_totals_match_the_rows(seeded)


# The Uptime page's tap readiness as it was read before rollup_tap_day: every test in the
# range, each host's latest by DISTINCT ON, and its node's taps summed over rollup_node_day.
RAW_TAP_READINESS = """
    WITH latest AS (
        SELECT DISTINCT ON (t.host_id)
               h.name AS host, h.provider, COALESCE(h.region, 'unknown') AS region,
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
    )
    SELECT r.*, COALESCE(x.taps, 0)::bigint AS taps,
           COALESCE(x.node_days, 0)::bigint AS node_days
    FROM (SELECT * FROM latest WHERE provider = ANY(:providers)) r
    LEFT JOIN LATERAL (
        SELECT sum(d.taps) AS taps, count(d.duration) AS node_days
        FROM rollup_node_day d
        WHERE d.host = r.host AND d.day BETWEEN :start AND :end
    ) x ON true
    ORDER BY host
"""
NAT_TYPES = ("full-cone", "symmetric", "udp-blocked", None)


def tap_tests(engine: Engine, host_id: int, days_ago: list[int], hours: tuple[int, ...]) -> None:
    """A test per hour of `hours` on each day `days_ago` before TODAY: NAT types in turn, some
    that found UDP blocked, some that could not run (udp_reachable NULL, an error)."""
    with engine.begin() as conn:
        for k in days_ago:
            for i, hour in enumerate(hours):
                nat = NAT_TYPES[(host_id + k + i) % len(NAT_TYPES)]
                conn.execute(
                    text(
                        "INSERT INTO tap_readiness (host_id, checked_at, stun_server,"
                        " udp_reachable, mapped_address, mapped_port, nat_type, error)"
                        " VALUES (:h, :t, 'stun.example:3478', :u, :m, :p, :n, :e)"
                    ),
                    {
                        "h": host_id,
                        "t": datetime.combine(TODAY - timedelta(days=k), datetime.min.time(), UTC)
                        + timedelta(hours=hour, minutes=host_id),
                        "u": None if nat is None else nat != "udp-blocked",
                        "m": f"198.51.100.{host_id}" if nat not in (None, "udp-blocked") else None,
                        "p": 40000 + k if nat not in (None, "udp-blocked") else None,
                        "n": nat,
                        "e": "no TCP connection" if nat is None else None,
                    },
                )


def plain(frame: Any) -> list[dict[str, Any]]:
    """A frame's rows with every missing value as None, whatever pandas' dtype for it."""
    return [
        {k: None if v is None or v != v else v for k, v in row.items()}  # NaN != NaN
        for row in frame.astype(object).to_dict("records")
    ]


def assert_tap_readiness_matches_the_raw_tests(engine: Engine) -> None:
    """For every range of days around the tests, and with a provider filter: the app's tap
    readiness (rollup_tap_day's running totals, `_node_range` for taps), its pages and its
    summary equal what the raw tests and rollup_node_day give."""
    import pandas as pd

    from gradientlab.store import reads
    from gradientlab.store.reads import FleetFilter
    from gradientlab.store.reads._sql import _frame
    from gradientlab.store.reads.filters import _utc_bounds

    first, last = rows(
        engine,
        "SELECT (min(checked_at) AT TIME ZONE 'UTC')::date,"
        " (max(checked_at) AT TIME ZONE 'UTC')::date FROM tap_readiness",
    )[0]
    span = [first + timedelta(days=i) for i in range(-1, (last - first).days + 2)]
    checked = 0
    for start in span:
        for end in span:
            if end < start:
                continue
            for providers in ((), ("oci", "static")):
                selection = FleetFilter(start, end, providers=providers)
                want = _frame(
                    engine,
                    RAW_TAP_READINESS,
                    {
                        **_utc_bounds(selection),
                        "start": start,
                        "end": end,
                        "providers": list(providers or ("oci", "gcp", "static")),
                    },
                )
                want["checked_at"] = pd.to_datetime(want["checked_at"], utc=True)
                got = reads.tap_readiness(engine, selection)
                assert list(got.columns) == list(want.columns)
                assert plain(got) == plain(want), selection
                checked += len(got)
                by_taps = want.sort_values(["taps", "host"])
                page = reads.tap_readiness(engine, selection, 2, 1, "fewest_taps")
                assert plain(page) == plain(by_taps.iloc[1:3]), selection
                summary = reads.tap_readiness_summary(engine, selection)
                assert summary["hosts"].sum() == len(want)
                for row in summary.to_dict("records"):
                    of_type = want[
                        want["nat_type"].isna()
                        if row["nat_type"] is None or pd.isna(row["nat_type"])
                        else want["nat_type"] == row["nat_type"]
                    ]
                    assert (row["hosts"], row["udp_blocked"], row["not_run"], row["taps"],
                            row["node_days"]) == (
                        len(of_type),
                        int((of_type["udp_reachable"] == False).sum()),  # noqa: E712
                        int(of_type["udp_reachable"].isna().sum()),
                        int(of_type["taps"].sum()),
                        int(of_type["node_days"].sum()),
                    ), (selection, row)  # fmt: skip
    assert checked > 0


def test_tap_readiness_from_the_rollup_equals_the_raw_tests(seeded: Engine) -> None:
    # oci-1 tested on most days (not 2 days ago), gcp-1 only early, pi first and last
    tap_tests(seeded, 1, [4, 3, 1, 0], (1, 9, 17))
    tap_tests(seeded, 2, [3, 2], (2, 14))
    tap_tests(seeded, 3, [4, 0], (23,))
    count = refresh_rollups(seeded)
    assert count.days["taps"] == 5
    assert rows(seeded, "SELECT count(*), sum(tests) FROM rollup_tap_day") == [(8, 18)]
    assert_tap_readiness_matches_the_raw_tests(seeded)

    # a poc_taps run stores its tests and refreshes what it touched (the flow's refresh path)
    started = datetime.combine(TODAY, datetime.min.time(), UTC) + timedelta(hours=20)
    tap_tests(seeded, 2, [0], (20, 21))
    assert refresh_after_ingest(seeded, started).days["taps"] == 1
    # a late test on a past day: refreshing that day carries the totals into the days after
    tap_tests(seeded, 3, [2], (5,))
    with seeded.begin() as conn:
        refresh_tap_days(conn, TODAY - timedelta(days=2), TODAY - timedelta(days=2))
    assert_tap_readiness_matches_the_raw_tests(seeded)
    before = snapshot(seeded)
    refresh_rollups(seeded)
    assert snapshot(seeded) == before  # nothing left for a full refresh to change


def old_samples(engine: Engine, day: date, per_host: int = 3) -> None:
    with engine.begin() as conn:
        for host in (1, 2):
            for i in range(per_host):
                insert_sample(
                    conn,
                    host,
                    {
                        "sampled_at": datetime.combine(day, datetime.min.time(), UTC)
                        + timedelta(hours=1 + i),
                        "status": "Good",
                        "reachable": True,
                    },
                )


def count_samples(engine: Engine, day: date) -> int:
    return rows(
        engine,
        f"SELECT count(*) FROM node_status_samples WHERE (sampled_at AT TIME ZONE 'UTC')::date"
        f" = '{day}'",
    )[0][0]


def test_pruning_keeps_days_not_rolled_up(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO hosts (id, name, provider) VALUES (1, 'a', 'x'), (2, 'b', 'x')")
        )
    old, older = TODAY - timedelta(days=40), TODAY - timedelta(days=41)
    old_samples(engine, older)
    old_samples(engine, old)
    old_samples(engine, TODAY)

    result = prune_samples(engine, keep_days=30, today=TODAY)
    assert result.deleted == 0 and result.unrolled_days == [older, old]
    assert count_samples(engine, older) == 6

    refresh_rollups(engine)
    old_samples(engine, old, per_host=1)  # arrives after the refresh: the day is not rolled up
    assert unrolled_days(engine, TODAY - timedelta(days=30)) == [old]
    result = prune_samples(engine, keep_days=30, today=TODAY)
    assert result.pruned_days == [older] and result.deleted == 6
    assert result.unrolled_days == [old]
    assert count_samples(engine, older) == 0
    assert count_samples(engine, old) == 8
    assert count_samples(engine, TODAY) == 6
    # the rollups of the pruned day stay, and a refresh does not rebuild them from nothing
    refresh_rollups(engine)
    assert rows(engine, f"SELECT sum(samples) FROM rollup_host_day WHERE day = '{older}'") == [(6,)]


def test_the_scheduled_prune_rolls_up_first_and_keeps_each_hosts_latest_sample(
    engine: Engine,
) -> None:
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO hosts (id, name, provider) VALUES (1, 'a', 'x'), (2, 'b', 'x')")
        )
    old = TODAY - timedelta(days=100)
    old_samples(engine, old)
    old_samples(engine, TODAY - timedelta(days=1))
    with engine.begin() as conn:  # host 2 was last checked long ago
        conn.execute(
            text("DELETE FROM node_status_samples WHERE host_id = 2 AND sampled_at > :d"),
            {"d": datetime.combine(old + timedelta(days=1), datetime.min.time(), UTC)},
        )
    result = roll_up_then_prune(engine, keep_days=90, today=TODAY)
    assert result.pruned_days == [old] and result.deleted == 5
    assert rows(engine, "SELECT host_id FROM node_status_samples WHERE sampled_at < :d".replace(
        ":d", f"'{TODAY - timedelta(days=90)}'")) == [(2,)]  # fmt: skip
    assert rows(engine, f"SELECT sum(samples) FROM rollup_host_day WHERE day = '{old}'") == [(6,)]


def test_retention_refuses_a_window_under_a_day(engine: Engine) -> None:
    with pytest.raises(ValueError, match="raw_samples_days must be at least 1"):
        prune_samples(engine, keep_days=0, today=TODAY)


def test_refresh_rollups_command(seeded: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["refresh-rollups"]) == 0
    out = capsys.readouterr().out
    assert "samples: 4 day(s) rebuilt, 12 row(s)" in out
    assert rows(seeded, "SELECT count(*) FROM rollup_node_day") == [(19,)]
    assert cli.main(["refresh-rollups", "--since", str(TODAY)]) == 0
    assert "samples: 1 day(s) rebuilt, 3 row(s)" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["refresh-rollups", "--since", "yesterday"])
    assert "'yesterday' is not a day like 2025-03-14" in capsys.readouterr().err


def test_a_retention_window_under_a_day_is_refused_where_it_is_written(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        "account: {email: a@b.c, password: {env: X}}\n"
        "providers: {local: {kind: local}}\n"
        "retention: {raw_samples_days: 0}\n"
    )
    with pytest.raises(FleetFileError, match=r"fleet.yaml:3: retention.raw_samples_days"):
        load_fleet(fleet)
    fleet.write_text(fleet.read_text().replace("0}", "30}"))
    assert load_fleet(fleet).retention.raw_samples_days == 30


def test_the_prune_history_flow_keeps_the_fleet_files_window(
    engine: Engine, prefect_server: None, tmp_path: Path
) -> None:
    from flows.prune_history import prune_history

    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO hosts (id, name, provider) VALUES (1, 'a', 'x'), (2, 'b', 'x')")
        )
    today = datetime.now(UTC).date()  # the flow prunes by this machine's clock
    old_samples(engine, today - timedelta(days=20))
    old_samples(engine, today - timedelta(days=5))
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        "account: {email: a@b.c, password: {env: X}}\n"
        "providers: {local: {kind: local}}\n"
        "retention: {raw_samples_days: 10}\n"
    )

    summary = prune_history(fleet_path=str(fleet))

    assert summary == {
        "cutoff": str(today - timedelta(days=10)),
        "pruned_days": 1,
        "deleted": 6,
        "unrolled_days": 0,
    }
    assert count_samples(engine, today - timedelta(days=5)) == 6
    assert rows(
        engine, f"SELECT sum(samples) FROM rollup_host_day WHERE day = '{today - timedelta(20)}'"
    ) == [(6,)]


def test_each_hosts_latest_check_follows_every_write(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO hosts (id, name, provider) VALUES (1, 'a', 'x'), (2, 'b', 'x')")
        )
        insert_sample(conn, 1, {"sampled_at": NOW, "status": "Good", "reachable": True})
        # a late row for an earlier moment does not replace a newer check
        insert_sample(
            conn, 1, {"sampled_at": NOW - timedelta(hours=1), "status": "Disconnected",
                      "reachable": True},
        )  # fmt: skip
    old_samples(engine, TODAY - timedelta(days=3))  # several rows in one statement per host

    latest = "SELECT host_id, status, sampled_at FROM host_latest_sample ORDER BY host_id"
    last_old = datetime.combine(TODAY - timedelta(days=3), datetime.min.time(), UTC) + timedelta(
        hours=3
    )
    assert rows(engine, latest) == [(1, "Good", NOW), (2, "Good", last_old)]
    with engine.begin() as conn:  # the latest check goes: the one before it comes back
        conn.execute(text("DELETE FROM node_status_samples WHERE sampled_at = :t"), {"t": NOW})
    assert rows(engine, latest)[0] == (1, "Disconnected", NOW - timedelta(hours=1))
