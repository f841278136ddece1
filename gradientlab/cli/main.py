"""The `gradientlab` command."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from gradientlab.app_users import AppUsersError
from gradientlab.binding import UnsafeBinding
from gradientlab.cli.fleet_database import READ_WRITE_VAR, FleetDatabaseUnknown, fleet_database
from gradientlab.cli.runs import RunError
from gradientlab.config import FleetFileError, load_fleet
from gradientlab.freshness import STALE_AFTER_PERIODS, age_text, is_stale, stale_after
from gradientlab.gradient.models import POINT_SCALE
from gradientlab.providers.base import ProviderError
from gradientlab.store.roles import RoleSetupError


def fleet_engine(writes: bool) -> Engine:
    """The fleet database's engine, migrated; says on stderr where it came from unless it is
    `DATABASE_URL` itself (stdout stays the command's answer)."""
    from gradientlab.store.database import migrate

    db = fleet_database(writes)
    if db.source != READ_WRITE_VAR and not db.embedded:  # the demo's: expected, said quietly
        print(f"gradientlab: fleet database {db.shown()} ({db.source})", file=sys.stderr)
    engine = db.engine()
    migrate(engine)
    return engine


def _mib(kib: int | None) -> str:
    return "" if kib is None else f"{kib / 1024:.0f}M"


STATUS_SCHEMA = "gradientlab.status/1"
STATUS_QUERY = (
    "SELECT host, provider, address, ip, status, banned_reason, today_points, last_check,"
    " reason, quarantined_at, load1, mem_available_kib, disk_free_kib, browser_pss_kib,"
    " runner_pss_kib, pss_kib, clock_offset_s, health_period_s FROM v_fleet_status ORDER BY host"
)


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.astimezone(UTC).isoformat()


def status_report(engine: Engine, now: datetime) -> dict[str, Any]:
    """The fleet as `status --json` prints it (docs/cli.md): one object per host, raw values
    (points both raw and divided, memory in KiB, ages in seconds), no words to parse."""
    from gradientlab.rules import shared_ips
    from gradientlab.store.fleet import observed_ips

    with engine.connect() as conn:
        rows = conn.execute(text(STATUS_QUERY)).mappings().all()
    good = _good_share_last_days(engine, now.date(), GOOD_SHARE_DAYS)
    hosts = []
    for r in rows:
        age = None if r["last_check"] is None else (now - r["last_check"]).total_seconds()
        browser = r["browser_pss_kib"] if r["browser_pss_kib"] is not None else r["pss_kib"]
        hosts.append(
            {
                "host": r["host"],
                "provider": r["provider"],
                "address": r["address"],
                "node_ip": r["ip"],
                "status": r["status"],
                "banned_reason": r["banned_reason"],
                "reason": r["reason"],
                "stale": age is not None and is_stale(age, r["health_period_s"]),
                "quarantined": r["quarantined_at"] is not None,
                "quarantined_at": _iso(r["quarantined_at"]),
                "today_points": None
                if r["today_points"] is None
                else r["today_points"] / POINT_SCALE,
                "today_points_raw": r["today_points"],
                "last_check": _iso(r["last_check"]),
                "last_check_age_s": None if age is None else round(age, 1),
                "health_period_s": r["health_period_s"],
                f"good_share_{GOOD_SHARE_DAYS}d": good.get(r["host"]),
                "load1": r["load1"],
                "mem_available_kib": r["mem_available_kib"],
                "disk_free_kib": r["disk_free_kib"],
                "browser_pss_kib": browser,
                "runner_pss_kib": r["runner_pss_kib"],
                "clock_offset_s": r["clock_offset_s"],
            }
        )
    return {
        "schema": STATUS_SCHEMA,
        "generated_at": _iso(now),
        "hosts": hosts,
        "shared_ips": [s.warning for s in shared_ips(observed_ips(engine))],
    }


def _print_json(value: object) -> None:
    print(json.dumps(value, indent=2, sort_keys=False, default=str))


def cmd_status(args: argparse.Namespace) -> int:
    engine = fleet_engine(writes=False)
    report = status_report(engine, datetime.now(UTC))
    if args.json:
        _print_json(report)
        return 0
    if not report["hosts"]:
        print("no hosts yet: run `gradientlab demo` or the provision flow")
        return 0
    header = (
        "HOST", "PROVIDER", "ADDRESS", "NODE IP", "STATUS", "TODAY", "LAST CHECK",
        f"GOOD {GOOD_SHARE_DAYS}D", "LOAD", "MEM FREE", "DISK FREE", "BROWSER", "RUNNER", "CLOCK",
    )  # fmt: skip
    table = [header]
    notes = []
    for h in report["hosts"]:
        status = h["status"] or "unknown"
        if h["banned_reason"]:
            status += f" ({h['banned_reason']})"
        checked = h["last_check_age_s"]
        if h["stale"]:
            # the previous run's last word is not the node's state now
            period = stale_after(h["health_period_s"]) / STALE_AFTER_PERIODS
            notes.append(
                f"  {h['host']}: no check for {age_text(checked)}, more than"
                f" {STALE_AFTER_PERIODS} health periods of {period:.0f}s; the last one said"
                f" {status}. Is the health flow running?"
            )
            status = f"stale, {age_text(checked)} old"
        if h["quarantined"]:
            status += " [quarantined]"
        points = "" if h["today_points"] is None else f"{h['today_points']:.2f}"
        last = "never" if checked is None else f"{age_text(checked)} ago"
        share = h[f"good_share_{GOOD_SHARE_DAYS}d"]
        clock = "" if h["clock_offset_s"] is None else f"{h['clock_offset_s']:+.1f}s"
        table.append(
            (
                h["host"],
                h["provider"],
                h["address"] or "",
                h["node_ip"] or "",
                status,
                points,
                last,
                "" if share is None else f"{100 * share:.0f}%",
                "" if h["load1"] is None else f"{h['load1']:.2f}",
                _mib(h["mem_available_kib"]),
                _mib(h["disk_free_kib"]),
                _mib(h["browser_pss_kib"]),
                _mib(h["runner_pss_kib"]),
                clock,
            )  # fmt: skip
        )
        if not h["stale"] and h["status"] not in (None, "Good", "Starting") and h["reason"]:
            notes.append(f"  {h['host']}: {h['reason']}")
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    if notes:
        print()
        print("\n".join(notes))
    if report["shared_ips"]:
        print()
        print("\n".join(f"  warning: {w}" for w in report["shared_ips"]))
    return 0


GOOD_SHARE_DAYS = 7


def _good_share_last_days(engine: Engine, today: date, days: int) -> dict[str, float]:
    """Each host's share of Good checks over the last `days` UTC days, from the daily rollups
    (which outlive the raw samples retention prunes)."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT h.name, sum(r.good_samples) AS good, sum(r.samples) AS samples"
                " FROM rollup_host_day r JOIN hosts h ON h.id = r.host_id"
                " WHERE r.day > CAST(:today AS date) - :days GROUP BY h.name"
            ),
            {"today": today, "days": days},
        )
        return {r.name: round(r.good / r.samples, 4) for r in rows if r.samples}


def cmd_refresh_rollups(args: argparse.Namespace) -> int:
    """Rebuild the daily rollups from the base tables (after rows were written outside the
    flows, e.g. a restore or an import); idempotent."""
    from gradientlab.store.rollups import refresh_rollups

    engine = fleet_engine(writes=True)
    count = refresh_rollups(engine, since=args.since)
    if not count.days:
        print("nothing to roll up: the base tables are empty")
    for family, days in count.days.items():
        print(f"{family}: {days} day(s) rebuilt, {count.rows[family]} row(s)")
    return 0


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a day like 2025-03-14") from None


def cmd_hosts_release(args: argparse.Namespace) -> int:
    """Hand a quarantined host back to automatic recovery, with fresh budgets."""
    from gradientlab.store.fleet import release_host

    engine = fleet_engine(writes=True)
    before = release_host(engine, args.host, datetime.now(UTC))
    if before["quarantined_at"] is None:
        print(f"{args.host} was not quarantined; its recovery budgets start again now")
    else:
        print(
            f"released {args.host} (quarantined since {before['quarantined_at']:%Y-%m-%d %H:%M} "
            f"UTC: {before['quarantine_reason']}); the next health run may recover it again"
        )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Start a deployed flow through Prefect's API and, unless told not to, follow it."""
    from gradientlab.cli import runs
    from gradientlab.cli.progress import Progress

    outcome = runs.start(args.deployment, runs.parameters(args.param))
    if not args.no_wait:
        progress = Progress(outcome.deployment, enabled=not args.no_progress)
        outcome = runs.follow(outcome, progress, poll=args.poll)
    if args.json:
        _print_json(outcome.as_json())
    else:
        print(outcome.line())
    return 0 if args.no_wait or outcome.ok else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from gradientlab.cli.demo import ensure_system_packages, run_demo

    ensure_system_packages()
    return run_demo(stop_after=args.stop_after)


def cmd_check(args: argparse.Namespace) -> int:
    fleet = load_fleet(args.fleet)
    if args.json:
        _print_json(
            {
                "schema": "gradientlab.check/1",
                "fleet_file": str(args.fleet),
                "ok": True,
                "hosts": [h.name for h in fleet.hosts],
                "providers": list(fleet.providers),
            }
        )
        return 0
    print(f"{args.fleet}: ok ({len(fleet.hosts)} hosts, providers: {', '.join(fleet.providers)})")
    return 0


def cmd_hosts_trust(args: argparse.Namespace) -> int:
    """Record the key a host offers now, after showing its fingerprint (one time, explicit)."""
    from gradientlab.providers.ssh import scan_host_key
    from gradientlab.remote.executor import fingerprint
    from gradientlab.store.pins import DbKnownHosts, migrate_file_pins

    fleet = load_fleet(args.fleet)
    spec = fleet.host(args.host)
    if spec.address is None:
        print(f"gradientlab: {args.host} has no address in {args.fleet}", file=sys.stderr)
        return 2
    port = spec.port or 22
    engine = fleet_engine(writes=True)  # before asking anything: the pin must land somewhere
    key = scan_host_key(spec.address, port)
    fp = fingerprint(key)
    print(f"{args.host} ({spec.address}:{port}) offers {key.split()[0]} {fp}")
    if args.fingerprint:
        if args.fingerprint != fp:
            print(f"gradientlab: that is not {args.fingerprint}; nothing recorded", file=sys.stderr)
            return 1
    elif not args.yes:
        if not sys.stdin.isatty():
            print(
                "gradientlab: compare it with the host's own key and pass --fingerprint or "
                "--yes; nothing recorded",
                file=sys.stderr,
            )
            return 1
        answer = input("Does this match the host's own key (ssh-keygen -lf on the host)? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing recorded")
            return 1
    pins = DbKnownHosts(engine)
    for conflict in migrate_file_pins(pins.engine).conflicts:
        print(f"gradientlab: {conflict}", file=sys.stderr)
    pins.set(args.host, spec.address, port, key)
    print(
        f"pinned {fp} for {args.host} in the database every worker reads; every later "
        "connection must offer this key"
    )
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    """Check the fleet file, the account, the clouds, the extension source, STUN and a host."""
    from gradientlab.cli.doctor import run_checks

    def read_block(name: str) -> str:  # only when the fleet file names a Secret block
        from tasks.common import read_secret_block

        return read_secret_block(name)

    def credentials(kind: str, block: str) -> object:
        from deployments.blocks import load_cloud_credentials

        return load_cloud_credentials(kind, block)

    engine = None
    if args.host is not None:
        engine = fleet_engine(writes=False)
    failed = 0
    checks = []
    for check in run_checks(str(args.fleet), args.host, read_block, credentials, engine):
        if args.json:
            checks.append(dataclasses.asdict(check))
        else:
            print(check.line(), flush=True)
        failed += check.status == "fail"
    if args.json:
        _print_json({"schema": "gradientlab.doctor/1", "failed": failed, "checks": checks})
    else:
        print(f"\n{failed} check(s) failed" if failed else "\nall checks passed")
    return 1 if failed else 0


def _read_new_password(name: str) -> str:
    """From the terminal (asked twice, not echoed) or one line of stdin; never from argv."""
    import getpass

    if sys.stdin.isatty():
        first = getpass.getpass(f"Password for {name}: ")
        if getpass.getpass("Again: ") != first:
            raise AppUsersError("the two passwords differ; nothing changed")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def cmd_app_user_add(args: argparse.Namespace) -> int:
    from gradientlab import app_users

    user = app_users.add_user(args.name, args.role, _read_new_password(args.name))
    print(f"{user.name}: {user.role} in {app_users.users_file()}")
    return 0


def cmd_app_user_remove(args: argparse.Namespace) -> int:
    from gradientlab import app_users

    app_users.remove_user(args.name)
    print(f"removed {args.name} from {app_users.users_file()}")
    return 0


def cmd_app_user_list(args: argparse.Namespace) -> int:
    from gradientlab import app_users

    users = app_users.load_users()
    ordered = sorted(users.values(), key=lambda u: u.name)
    if args.json:
        _print_json(
            {
                "schema": "gradientlab.app-users/1",
                "users_file": str(app_users.users_file()),
                "users": [{"name": u.name, "role": u.role} for u in ordered],
            }
        )
        return 0
    if not users:
        print(f"no users in {app_users.users_file()}")
    for user in sorted(users.values(), key=lambda u: u.name):
        print(f"{user.name}\t{user.role}")
    return 0


def cmd_prefect_server(args: argparse.Namespace) -> int:
    """Prefect's server, in the foreground (for a service manager); beyond loopback only with
    its auth string set in the environment."""
    import os

    from gradientlab.binding import PREFECT_SERVER_AUTH_VAR, check_prefect_server_binding

    check_prefect_server_binding(args.host, os.environ.get(PREFECT_SERVER_AUTH_VAR))
    prefect = str(Path(sys.executable).with_name("prefect"))
    argv = [prefect, "server", "start", "--host", args.host, "--port", str(args.port)]
    if args.workers:
        argv += ["--workers", str(args.workers)]
    if args.no_services:
        argv.append("--no-services")
    os.execv(prefect, argv)


def cmd_db_roles(args: argparse.Namespace) -> int:
    """The app's read-only role and the flows' read-write role, on DATABASE_URL's database."""
    from sqlalchemy.engine import make_url

    from gradientlab.store.database import database_url, make_engine
    from gradientlab.store.roles import ensure_roles

    if not os.environ.get(READ_WRITE_VAR):
        raise FleetDatabaseUnknown(
            f"db-roles works as the database's owner: set {READ_WRITE_VAR} to the owner's URL "
            "for this one command (docs/production.md, step 2)"
        )
    app_password = flows_password = None
    if args.passwords:
        app_password = _read_new_password(args.app_role)
        flows_password = _read_new_password(args.flows_role)
    engine = make_engine()
    try:
        setup = ensure_roles(engine, args.app_role, args.flows_role, app_password, flows_password)
    finally:
        engine.dispose()
    for name in setup.migrations_applied:
        print(f"applied {name}")
    for role in (args.app_role, args.flows_role):
        print(f"{role}: {'created' if role in setup.created else 'exists'}, grants set")
    url = make_url(database_url())
    for var, role in (
        ("GRADIENTLAB_APP_DATABASE_URL", args.app_role),
        ("DATABASE_URL", args.flows_role),
    ):
        shown = url.set(username=role, password="PASSWORD" if args.passwords else None)
        print(f"{var}={shown.render_as_string(hide_password=False)}  # for {role}")
    return 0


JSON_HELP = "print one JSON object for scripts (docs/cli.md); errors still go to stderr"
RUN_COMMANDS = {
    "run": "start a deployed flow through Prefect's API and follow it to its end",
    "deploy": "run the deploy deployment (install or update every host) and follow it",
    "provision": "run the provision deployment (a plan unless -p approve=true) and follow it",
    "health": "run the health deployment (check and recover every host) and follow it",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gradientlab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the demo fleet on the local sandbox network")
    demo.add_argument("--stop-after", type=float, default=None, help=argparse.SUPPRESS)
    demo.set_defaults(func=cmd_demo)
    status = sub.add_parser("status", help="fleet table: host, provider, IP, status, points")
    status.add_argument("--json", action="store_true", help=JSON_HELP)
    status.set_defaults(func=cmd_status)
    for name, what in RUN_COMMANDS.items():
        runner = sub.add_parser(name, help=what)
        if name == "run":
            runner.add_argument("deployment", help="a deployment: `rewards`, or `flow/deployment`")
        else:
            runner.set_defaults(deployment=name)
        runner.add_argument(
            "-p", "--param", action="append", default=[], metavar="NAME=VALUE",
            help="a flow parameter (JSON values: approve=true); repeat for more",
        )  # fmt: skip
        runner.add_argument("--no-wait", action="store_true", help="start it and return")
        runner.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
        runner.add_argument("--poll", type=float, default=1.0, help=argparse.SUPPRESS)
        runner.add_argument("--json", action="store_true", help=JSON_HELP)
        runner.set_defaults(func=cmd_run)
    doctor = sub.add_parser(
        "doctor", help="check the account, clouds, extension source, STUN and a host; no changes"
    )
    doctor.add_argument("--fleet", type=Path, default=Path("fleet.yaml"))
    doctor.add_argument("--host", help="also check this host: SSH, Chromium, its node's status")
    doctor.add_argument("--json", action="store_true", help=JSON_HELP)
    doctor.set_defaults(func=cmd_doctor)
    refresh = sub.add_parser(
        "refresh-rollups", help="bring the daily rollups up to date with the base tables"
    )
    refresh.add_argument(
        "--since", type=_day, default=None, help="rebuild from this UTC day (default: all days)"
    )
    refresh.set_defaults(func=cmd_refresh_rollups)
    check = sub.add_parser("check", help="validate a fleet file")
    check.add_argument("fleet", type=Path)
    check.add_argument("--json", action="store_true", help=JSON_HELP)
    check.set_defaults(func=cmd_check)
    hosts = sub.add_parser("hosts", help="pin a host's key, release a quarantined host")
    hosts_sub = hosts.add_subparsers(dest="hosts_command", required=True)
    trust = hosts_sub.add_parser("trust", help="show a host's key fingerprint and pin it")
    trust.add_argument("host")
    trust.add_argument("--fleet", type=Path, default=Path("fleet.yaml"))
    trust.add_argument("--fingerprint", help="pin only if the host offers this SHA256:... key")
    trust.add_argument("--yes", action="store_true", help="pin without asking")
    trust.set_defaults(func=cmd_hosts_trust)
    release = hosts_sub.add_parser(
        "release", help="hand a quarantined host back to automatic recovery"
    )
    release.add_argument("host")
    release.set_defaults(func=cmd_hosts_release)
    app_user = sub.add_parser("app-user", help="who may sign in to the analysis app")
    app_user_sub = app_user.add_subparsers(dest="app_user_command", required=True)
    add = app_user_sub.add_parser(
        "add", help="add a user or change one's role and password (read from a prompt or stdin)"
    )
    add.add_argument("name")
    add.add_argument("--role", choices=("viewer", "operator"), required=True)
    add.set_defaults(func=cmd_app_user_add)
    remove = app_user_sub.add_parser("remove", help="remove a user")
    remove.add_argument("name")
    remove.set_defaults(func=cmd_app_user_remove)
    user_list = app_user_sub.add_parser("list", help="users and their roles")
    user_list.add_argument("--json", action="store_true", help=JSON_HELP)
    user_list.set_defaults(func=cmd_app_user_list)
    server = sub.add_parser(
        "prefect-server",
        help="run Prefect's server; beyond loopback only with PREFECT_SERVER_API_AUTH_STRING set",
    )
    server.add_argument("--host", default=os.environ.get("PREFECT_SERVER_API_HOST", "127.0.0.1"))
    server.add_argument(
        "--port", type=int, default=int(os.environ.get("PREFECT_SERVER_API_PORT", "4200"))
    )
    server.add_argument("--workers", type=int, default=None, help="server processes")
    server.add_argument(
        "--no-services",
        action="store_true",
        help="the API and UI only (Prefect's background services run elsewhere)",
    )
    server.set_defaults(func=cmd_prefect_server)
    db_roles = sub.add_parser(
        "db-roles",
        help="make the app's read-only and the flows' read-write database roles (as the owner)",
    )
    db_roles.add_argument("--app-role", default="gradientlab_app")
    db_roles.add_argument("--flows-role", default="gradientlab_flows")
    db_roles.add_argument(
        "--passwords",
        action="store_true",
        help="set both roles' passwords, read from a prompt or from two lines of stdin",
    )
    db_roles.set_defaults(func=cmd_db_roles)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (
        FleetFileError,
        ProviderError,
        KeyError,
        AppUsersError,
        UnsafeBinding,
        RoleSetupError,
        FleetDatabaseUnknown,
        RunError,
    ) as exc:
        print(f"gradientlab: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
