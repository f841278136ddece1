"""Keep the fleet file in Prefect, so that every worker reads the same one.

    python -m deployments.fleet_block fleet.yaml [--block gradientlab-fleet]

The file is checked first (a mistake is reported with its line and field, and nothing is saved),
then saved as a FleetFile block; rerunning it updates the block. Deployments read it as
`fleet_path: block:gradientlab-fleet` (the default in prefect.yaml). Its `schedules` become the
deployed deployments' intervals (deployments/schedules.py): run it after `prefect deploy --all`,
and again after every change to the file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deployments.blocks import FleetFile
from deployments.schedules import publish_schedules
from gradientlab.config import FleetFileError, load_fleet

DEFAULT_BLOCK = "gradientlab-fleet"


def save_fleet_block(path: Path, block: str = DEFAULT_BLOCK) -> int:
    """Check the fleet file, save it as a FleetFile block and apply its schedules; returns its
    number of hosts."""
    fleet = load_fleet(path)
    FleetFile(text=path.read_text(), source=str(path.resolve())).save(block, overwrite=True)
    schedules = publish_schedules(fleet.schedules)
    for change in schedules.changed:
        print(f"schedule of {change}")
    if schedules.not_deployed:
        print(
            f"not deployed yet, so not scheduled: {', '.join(schedules.not_deployed)}; run "
            "this again after `prefect deploy --all`"
        )
    return len(fleet.hosts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployments.fleet_block")
    parser.add_argument("fleet", type=Path, help="the fleet file to keep in Prefect")
    parser.add_argument("--block", default=DEFAULT_BLOCK, help="the block's name")
    args = parser.parse_args(argv)
    try:
        hosts = save_fleet_block(args.fleet, args.block)
    except FleetFileError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"saved {args.fleet} ({hosts} hosts) as block:{args.block}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
