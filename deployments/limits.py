"""Tag concurrency limits on the Prefect server: how many task runs with a tag may run at once
across every flow run and worker (`ssh` for per-host SSH work, `provider` for cloud APIs,
`gradient-api` for the network's API). Each flow also bounds its own threads; these bound the
runs together, e.g. a deploy and a fleet-wide recovery at the same time.

    python -m deployments.limits   # once per Prefect server; `deployments.serve` does it too
"""

from __future__ import annotations

import argparse

from prefect.client.orchestration import get_client

TAG_LIMITS: dict[str, int] = {
    # per-host SSH tasks (deploy-node, heal-host, await-good, sweeps): each may hold one pooled
    # database connection at a time, and a flow run's pool holds 5 + 10
    "ssh": 12,
    # cloud API calls (plan, create, terminate): the clouds throttle per account
    "provider": 4,
    # tasks reading the network's API: they share one client and its pace per flow run
    "gradient-api": 8,
}


def ensure_tag_limits(limits: dict[str, int] | None = None) -> dict[str, int]:
    """Create or update each tag's limit on the current Prefect server; what is set now."""
    wanted = TAG_LIMITS if limits is None else limits
    with get_client(sync_client=True) as client:
        for tag, limit in wanted.items():
            client.create_concurrency_limit(tag=tag, concurrency_limit=limit)
        return {tag: client.read_concurrency_limit_by_tag(tag).concurrency_limit for tag in wanted}


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(prog="python -m deployments.limits").parse_args(argv)
    for tag, limit in ensure_tag_limits().items():
        print(f"{tag}: at most {limit} task runs at once")


if __name__ == "__main__":
    main()
