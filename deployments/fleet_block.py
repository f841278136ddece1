"""Keep the fleet file in Prefect, so that every worker reads the same one.

    python -m deployments.fleet_block fleet.yaml [--block gradientlab-fleet]

The file is checked first (a mistake is reported with its line and field, and nothing is saved),
then saved as a FleetFile block; rerunning it updates the block. Deployments read it as
`fleet_path: block:gradientlab-fleet` (the default in prefect.yaml)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deployments.blocks import FleetFile
from gradientlab.config import FleetFileError, load_fleet

DEFAULT_BLOCK = "gradientlab-fleet"


def save_fleet_block(path: Path, block: str = DEFAULT_BLOCK) -> int:
    """Check the fleet file and save it as a FleetFile block; returns its number of hosts."""
    fleet = load_fleet(path)
    FleetFile(text=path.read_text(), source=str(path.resolve())).save(block, overwrite=True)
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
