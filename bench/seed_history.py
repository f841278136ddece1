"""A year of fleet history at scale, written through GradientLab's own store code.

    DATABASE_URL=postgresql+psycopg2://root@127.0.0.1:5432/gradientlab_bench \\
        .venv/bin/python -m bench.seed_history [--hosts 1000] [--days 365] \\
        [--samples 10000000] [--incidents 20000] [--tap-runs-per-day 4] [--seed 7]

Creates the database `DATABASE_URL` names when it does not exist, migrates it, and refuses to
write into one that already has hosts unless `--replace` (which empties the fleet tables first).
Hosts go through `store.fleet.upsert_host`, points and stats through `store.rewards.upsert`
(COPY and merge), status samples, incidents and recovery steps through `store.bulk.copy_rows`
(COPY), tap-readiness tests (one per host per poc_taps run) through `store.bulk.copy_rows`
too, then `store.rollups.refresh_rollups` builds the daily rollups. The history ends at this
machine's clock, so the app's "now" pages show it as current.

Prints one JSON line per figure: rows written and seconds per step."""

from __future__ import annotations

import argparse
import io
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from gradientlab.providers.base import HostRecord
from gradientlab.store import bulk, rewards
from gradientlab.store.database import database_url, make_engine, migrate
from gradientlab.store.fleet import upsert_host
from gradientlab.store.rollups import refresh_rollups

# provider: (share of hosts, regions, USD per hour, share of its nodes the network bans)
PROVIDERS: dict[str, tuple[float, tuple[str | None, ...], float, float]] = {
    "oci": (0.3, ("us-ashburn-1", "eu-frankfurt-1", "ap-tokyo-1"), 0.0, 0.7),
    "gcp": (0.25, ("us-west1", "us-central1", "us-east1"), 0.0084, 0.6),
    "azure": (0.15, ("eastus", "westeurope"), 0.0104, 0.8),
    "static": (0.3, ("home-eu", "home-us", None), 0.0, 0.02),
}
INCIDENT_KINDS = ("BrowserDown", "RunnerDown", "LoggedOut", "Disconnected", "Unreachable")
STEPS = {
    "BrowserDown": ("restart_browser", "reboot_host"),
    "RunnerDown": ("start_runner", "reboot_host"),
    "LoggedOut": ("login", "restart_browser"),
    "Disconnected": ("restart_browser", "login"),
    "Unreachable": ("reboot_host", "alert"),
}
BANNED_REASON = "Data center IP address"
# NAT types a host's tap-readiness tests find, by where it runs: cloud VMs mostly sit behind a
# 1:1 NAT or a firewall, home hosts behind a router that restricts ports or maps per peer.
NAT_MIX: dict[str, dict[str, float]] = {
    "cloud": {"full-cone": 0.45, "firewall": 0.25, "open": 0.15, "port-restricted-cone": 0.1,
              "udp-blocked": 0.05},
    "static": {"port-restricted-cone": 0.5, "symmetric": 0.25, "restricted-cone": 0.12,
               "full-cone": 0.05, "basic-only": 0.03, "udp-blocked": 0.05},
}  # fmt: skip
EI, AD, APD = "endpoint-independent", "address-dependent", "address-and-port-dependent"
# nat_type: (behind_nat, mapping, filtering), as gradientlab/agent/stun.py classifies them
NAT_PARTS: dict[str, tuple[bool | None, str | None, str | None]] = {
    "open": (False, EI, EI),
    "firewall": (False, EI, APD),
    "full-cone": (True, EI, EI),
    "restricted-cone": (True, EI, AD),
    "port-restricted-cone": (True, EI, APD),
    "symmetric": (True, APD, APD),
    "basic-only": (True, None, None),
    "udp-blocked": (None, None, None),
}
STUN_SERVER = "stun.gradient.network:3478"
POINT_SCALE = 100_000
# NULL in a column built with np.where (an object array, as a bare None would make it)
NO_VALUE = np.array(None, dtype=object)


def emit(figure: str, value: float, **extra: Any) -> None:
    print(
        json.dumps({"bench": "seed_history", "figure": figure, "value": round(value, 3), **extra}),
        flush=True,
    )


@contextmanager
def step(figure: str, **extra: Any) -> Iterator[dict[str, Any]]:
    info: dict[str, Any] = {}
    started = time.perf_counter()
    yield info
    emit(figure, time.perf_counter() - started, unit="s", **extra, **info)


def ensure_database(url: str) -> None:
    target = make_url(url)
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        exists = conn.execute(
            text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": target.database}
        ).first()
        if not exists:
            conn.execute(text(f'CREATE DATABASE "{target.database}"'))
    admin.dispose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.seed_history")
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--samples", type=int, default=10_000_000)
    parser.add_argument("--incidents", type=int, default=20_000)
    parser.add_argument(
        "--tap-runs-per-day", type=int, default=4, help="poc_taps runs a day, evenly spaced"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--replace", action="store_true", help="empty the fleet tables first")
    args = parser.parse_args(argv)
    seed_history(
        database_url(),
        args.hosts,
        args.days,
        args.samples,
        args.incidents,
        args.seed,
        args.replace,
        tap_runs_per_day=args.tap_runs_per_day,
    )


def seed_history(
    url: str,
    n_hosts: int,
    n_days: int,
    n_samples: int,
    n_incidents: int,
    seed: int = 7,
    replace: bool = False,
    now: datetime | None = None,
    tap_runs_per_day: int = 4,
) -> None:
    rng = np.random.default_rng(seed)
    now = now or datetime.now(UTC)
    today = now.date()
    first_day = today - timedelta(days=n_days - 1)
    start = datetime.combine(first_day, datetime.min.time(), UTC)
    ensure_database(url)
    engine = make_engine(url)
    migrate(engine)
    with engine.begin() as conn:
        if conn.execute(text("SELECT count(*) FROM hosts")).scalar_one() and not replace:
            raise SystemExit(f"{make_url(url).database} already has hosts; pass --replace")
        conn.execute(
            text(
                "TRUNCATE hosts, nodes, node_status_samples, node_daily_stats,"
                " account_daily_points, node_daily_points, incidents, recovery_actions,"
                " rollup_sample_days, rollup_fleet_day_status, rollup_node_day, rollup_node,"
                " rollup_group_day, rollup_incident_day, rollup_step_day, tap_readiness,"
                " rollup_tap_day"
                " RESTART IDENTITY CASCADE"
            )
        )

    # ---------------------------------------------------------------- hosts and nodes
    names = list(PROVIDERS)
    shares = np.array([PROVIDERS[p][0] for p in names])
    provider_of = rng.choice(len(names), size=n_hosts, p=shares / shares.sum())
    hosts: list[dict[str, Any]] = []
    with step("hosts_s", rows=n_hosts):
        for i in range(n_hosts):
            provider = names[provider_of[i]]
            _, regions, price, banned_share = PROVIDERS[provider]
            name = f"{provider}-{i:04d}"
            region = regions[i % len(regions)]
            hid = upsert_host(
                engine,
                HostRecord(
                    name=name,
                    provider=provider,
                    address=f"10.{i // 250}.{i % 250}.2",
                    ssh_port=22,
                    ssh_user="gradientlab",
                    host_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBenchKey",
                    state="running",
                    provider_ref=f"bench-{i}",
                    region=region,
                    hourly_cost_usd=price,
                ),
            )
            hosts.append(
                {
                    "id": hid,
                    "name": name,
                    "client_id": f"node-{i:04d}",
                    "banned": bool(rng.random() < banned_share),
                    "flaky": float(rng.uniform(0.0, 0.12)),
                    "earn": float(rng.uniform(0.6, 1.0)),
                }
            )
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE hosts SET created_at = :c, updated_at = :c"),
                {"c": start - timedelta(days=1)},
            )
            conn.execute(
                text(
                    "INSERT INTO nodes (host_id, client_id, extension_version, deployed_at)"
                    " VALUES (:id, :client_id, '1.0.16', :at)"
                ),
                [{**h, "at": start} for h in hosts],
            )

    # ---------------------------------------------------------------- points and stats per day
    days = [first_day + timedelta(days=d) for d in range(n_days)]
    point_rows: list[tuple[str, date, int, int]] = []
    stat_rows: list[tuple[str, date, int, int]] = []
    for h in hosts:
        up = np.clip(rng.normal(0.93, 0.1, n_days), 0, 1)
        up[rng.random(n_days) < h["flaky"] / 3] = 0.0  # whole days down
        taps = rng.poisson(12 * h["earn"], n_days)
        for d, day in enumerate(days):
            uptime_s = int(86_400 * up[d])
            day_taps = 0 if h["banned"] or uptime_s == 0 else int(taps[d])
            points = (
                0
                if h["banned"]
                else int((uptime_s / 600 * 0.25 + day_taps * 0.75) * POINT_SCALE * h["earn"])
            )
            point_rows.append((h["client_id"], day, points, day_taps))
            stat_rows.append((h["client_id"], day, uptime_s, day_taps))
    with step("node_points_s", rows=len(point_rows)):
        rewards.upsert(engine, rewards.NODE_POINTS, point_rows)
    with step("node_stats_s", rows=len(stat_rows)):
        rewards.upsert(engine, rewards.NODE_STATS, stat_rows)
    by_day = pd.DataFrame(point_rows, columns=["c", "day", "points", "taps"]).groupby("day")
    account_rows = [
        ("bench@gradientlab.test", day, int(g["points"].sum()),
         int(rng.integers(0, 50)) * POINT_SCALE, int(rng.integers(0, 3) == 0) * 10 * POINT_SCALE, 0)
        for day, g in by_day
    ]  # fmt: skip
    with step("account_points_s", rows=len(account_rows)):
        rewards.upsert(engine, rewards.ACCOUNT_POINTS, account_rows)

    # ---------------------------------------------------------------- status samples
    per_host = max(1, n_samples // n_hosts)
    span = (now - start).total_seconds()
    interval = span / per_host
    written = 0
    with step("status_samples_s", rows=per_host * n_hosts) as info:
        chunk = max(1, 500_000 // per_host)
        for lo in range(0, n_hosts, chunk):
            group = hosts[lo : lo + chunk]
            n = per_host * len(group)
            host_ids = np.repeat([h["id"] for h in group], per_host)
            banned = np.repeat([h["banned"] for h in group], per_host)
            flaky = np.repeat([h["flaky"] for h in group], per_host)
            offsets = (rng.uniform(0, interval, len(group))[:, None]
                       + interval * np.arange(per_host)[None, :]).ravel()  # fmt: skip
            roll = rng.random(n)
            status = np.where(
                banned,
                np.where(roll < flaky, "Disconnected", "Unsupported"),
                np.select(
                    [roll < flaky / 3, roll < flaky / 2, roll < flaky],
                    ["Unreachable", "BrowserDown", "Disconnected"],
                    "Good",
                ),
            )
            reachable = status != "Unreachable"
            browser_pss = pd.array(rng.integers(290_000, 340_000, n), dtype="Int64")
            browser_pss[~reachable] = pd.NA
            mem_available = pd.array(rng.integers(150_000, 450_000, n), dtype="Int64")
            mem_available[~reachable] = pd.NA
            frame = pd.DataFrame(
                {
                    "host_id": host_ids,
                    "sampled_at": pd.Timestamp(start) + pd.to_timedelta(offsets, unit="s"),
                    "status": status,
                    "reachable": reachable,
                    "browser_alive": status != "BrowserDown",
                    "banned": banned,
                    "banned_reason": np.where(banned, BANNED_REASON, ""),
                    "ip": [f"203.0.{i % 250}.{i // 250 + 1}" for i in host_ids],
                    "taps_today": rng.integers(0, 20, n),
                    "uptime_today": rng.integers(0, 86_400, n),
                    "load1": np.where(reachable, np.round(rng.gamma(2.0, 0.2, n), 2), np.nan),
                    "mem_total_kib": 1_000_000,
                    "mem_available_kib": mem_available,
                    "disk_total_kib": 47_000_000,
                    "disk_free_kib": 30_000_000 - np.tile(np.arange(per_host), len(group)) * 1_000,
                    "browser_pss_kib": browser_pss,
                    "runner_pss_kib": rng.integers(35_000, 45_000, n),
                    "health_period_s": 300.0,
                }
            )
            buf = io.StringIO()
            frame.to_csv(buf, header=False, index=False, date_format="%Y-%m-%d %H:%M:%S.%f+00")
            buf.seek(0)
            written += bulk.copy_rows(engine, "node_status_samples", buf, only=list(frame.columns))
        info["written"] = written

    # ---------------------------------------------------------------- incidents and recovery
    incident_rows: list[tuple[Any, ...]] = []
    action_rows: list[tuple[Any, ...]] = []
    open_hosts: set[int] = set()
    detected = np.sort(rng.uniform(0, span - 3600, n_incidents))
    for i in range(n_incidents):
        h = hosts[int(rng.integers(0, n_hosts))]
        kind = INCIDENT_KINDS[int(rng.integers(0, len(INCIDENT_KINDS)))]
        at = start + timedelta(seconds=float(detected[i]))
        chance = rng.random()
        outcome = "recovered" if chance < 0.9 else "failed"
        if i >= n_incidents - 5 and h["id"] not in open_hosts:
            outcome = "open"
            open_hosts.add(h["id"])
        took_s = float(rng.lognormal(4.0, 0.9))
        recovered_at = at + timedelta(seconds=took_s) if outcome == "recovered" else None
        incident_rows.append((i + 1, h["id"], kind, kind, at, outcome, recovered_at,
                              at + timedelta(minutes=10) if outcome == "failed" else None,
                              at + timedelta(minutes=5), 2))  # fmt: skip
        steps = STEPS[kind][: 1 + int(rng.integers(0, 2))] if outcome != "open" else STEPS[kind][:1]
        t = at + timedelta(seconds=2)
        for k, name in enumerate(steps):
            took = max(1.0, took_s / len(steps)) if outcome == "recovered" else 30.0
            ok = outcome == "recovered" and k == len(steps) - 1 if outcome != "open" else None
            action_rows.append((i + 1, name, t, t + timedelta(seconds=took), ok))
            t += timedelta(seconds=took + 1)
    with step("incidents_s", rows=len(incident_rows), actions=len(action_rows)):
        bulk.copy_rows(engine, "incidents", incident_rows, only=bulk.INCIDENT_COLUMNS[:-1])
        bulk.copy_rows(engine, "recovery_actions", action_rows, only=bulk.ACTION_COLUMNS[:-1])

    # ---------------------------------------------------------------- tap readiness
    with step("tap_readiness_s", runs_per_day=tap_runs_per_day) as info:
        info["rows"] = seed_tap_readiness(engine, rng, hosts, start, now, tap_runs_per_day)

    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
    with step("refresh_rollups_s") as info:
        count = refresh_rollups(engine)
        info.update({f"{k}_rows": v for k, v in count.rows.items()})
    # what autovacuum does to a table that has settled: the visibility map lets the running
    # totals' probes read the index alone, and the planner knows the tables' sizes
    with step("vacuum_analyze_s"), engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM (ANALYZE)")
    engine.dispose()


def seed_tap_readiness(
    engine: Any,
    rng: np.random.Generator,
    hosts: list[dict[str, Any]],
    start: datetime,
    now: datetime,
    runs_per_day: int,
) -> int:
    """One STUN test per host per poc_taps run, `runs_per_day` runs a day from `start` to `now`
    (a run stamps every host's test with its start, as tasks/taps.py does). Each host keeps the
    NAT type its provider makes likely; a few tests could not run (SSH down: an error, no
    result) and a few found UDP blocked for a while. Returns the rows written."""
    if runs_per_day <= 0:
        return 0
    every = timedelta(days=1) / runs_per_day
    runs = int((now - start) / every) + 1
    run_at = pd.Timestamp(start) + pd.to_timedelta(np.arange(runs) * every.total_seconds(), "s")
    run_at = run_at[run_at <= pd.Timestamp(now)]
    runs = len(run_at)
    written = 0
    chunk = max(1, 200_000 // max(runs, 1))
    for lo in range(0, len(hosts), chunk):
        group = hosts[lo : lo + chunk]
        n = runs * len(group)
        kinds = []
        for h in group:
            mix = NAT_MIX["static" if h["name"].startswith("static-") else "cloud"]
            kinds.append(rng.choice(list(mix), p=np.array(list(mix.values()))))
        nat = np.repeat(np.array(kinds, dtype=object), runs)
        flaky = np.repeat([h["flaky"] for h in group], runs)
        roll = rng.random(n)
        failed = roll < 0.005 + flaky / 10  # the test did not run: SSH down
        blocked = ~failed & (roll < 0.01 + flaky / 10)  # no UDP answer for a run
        nat = np.where(blocked, "udp-blocked", nat)
        nat = np.where(failed, NO_VALUE, nat)
        host_ids = np.repeat([h["id"] for h in group], runs)
        names = np.repeat(np.array([h["name"] for h in group], dtype=object), runs)
        reachable = pd.array(nat != "udp-blocked", dtype="boolean")
        reachable[failed] = pd.NA
        measured = ~failed & (nat != "udp-blocked")
        parts = [NAT_PARTS.get(k, (None, None, None)) for k in nat]
        behind = pd.array([p[0] for p in parts], dtype="boolean")
        mapped = pd.array(np.where(measured, rng.integers(1024, 65535, n), 0), dtype="Int64")
        mapped[~measured] = pd.NA
        error = np.where(
            failed,
            names + ": no TCP connection within 5s",
            np.where(nat == "udp-blocked", f"no answer from {STUN_SERVER} over UDP", NO_VALUE),
        )
        frame = pd.DataFrame(
            {
                "host_id": host_ids,
                "checked_at": np.tile(run_at.tz_convert(None).to_numpy(), len(group)),
                "run_id": [f"bench-taps-{k}" for k in np.tile(np.arange(runs), len(group))],
                "stun_server": STUN_SERVER,
                "udp_reachable": reachable,
                "local_address": np.where(
                    measured, [f"10.0.{i % 250}.2" for i in host_ids], NO_VALUE
                ),
                "local_port": pd.array(np.where(measured, 40000, 0), dtype="Int64"),
                "mapped_address": np.where(
                    measured, [f"203.0.{i % 250}.{i // 250 + 1}" for i in host_ids], NO_VALUE
                ),
                "mapped_port": mapped,
                "behind_nat": behind,
                "rfc5780": measured & (nat != "basic-only"),
                "mapping": [p[1] for p in parts],
                "filtering": [p[2] for p in parts],
                "nat_type": nat,
                "rtt_ms": np.where(measured, np.round(rng.gamma(3.0, 12.0, n), 1), np.nan),
                "error": error,
            }
        )
        frame.loc[~measured, "local_port"] = pd.NA
        buf = io.StringIO()
        frame.to_csv(buf, header=False, index=False, date_format="%Y-%m-%d %H:%M:%S.%f+00")
        buf.seek(0)
        written += bulk.copy_rows(engine, "tap_readiness", buf, only=list(frame.columns))
    return written


if __name__ == "__main__":
    main()
