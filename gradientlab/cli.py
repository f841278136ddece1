"""The `gradientlab` command."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import text

from gradientlab.config import FleetFileError, load_fleet


def cmd_status(args: argparse.Namespace) -> int:
    from gradientlab.store.database import make_engine, migrate

    engine = make_engine()
    migrate(engine)
    with engine.connect() as conn:
        rows = (
            conn.execute(
                text(
                    "SELECT host, provider, address, ip, status, banned_reason, today_points, last_check"
                    " FROM v_fleet_status ORDER BY host"
                )
            )
            .mappings()
            .all()
        )
    if not rows:
        print("no hosts yet: run `gradientlab demo` or the provision flow")
        return 0
    header = ("HOST", "PROVIDER", "ADDRESS", "NODE IP", "STATUS", "TODAY", "LAST CHECK")
    table = [header]
    now = datetime.now(UTC)
    for r in rows:
        status = r["status"] or "unknown"
        if r["banned_reason"]:
            status += f" ({r['banned_reason']})"
        points = "" if r["today_points"] is None else f"{r['today_points'] / 100000:.2f}"
        last = "never" if r["last_check"] is None else f"{(now - r['last_check']).seconds}s ago"
        table.append(
            (r["host"], r["provider"], r["address"] or "", r["ip"] or "", status, points, last)
        )
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from gradientlab.demo import ensure_system_packages, run_demo

    ensure_system_packages()
    return run_demo(stop_after=args.stop_after)


def cmd_check(args: argparse.Namespace) -> int:
    fleet = load_fleet(args.fleet)
    print(f"{args.fleet}: ok ({len(fleet.hosts)} hosts, providers: {', '.join(fleet.providers)})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gradientlab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the demo fleet on the local sandbox network")
    demo.add_argument("--stop-after", type=float, default=None, help=argparse.SUPPRESS)
    demo.set_defaults(func=cmd_demo)
    status = sub.add_parser("status", help="fleet table: host, provider, IP, status, points")
    status.set_defaults(func=cmd_status)
    check = sub.add_parser("check", help="validate a fleet file")
    check.add_argument("fleet", type=Path)
    check.set_defaults(func=cmd_check)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except FleetFileError as exc:
        print(f"gradientlab: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
