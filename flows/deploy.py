"""Deploy: install or update the Sentry Node on every host. Idempotent.

With `rollout`, hosts are deployed one at a time, a canary first, each checked Good before the
next; the first that is not stops the rollout. `check-updates` says which nodes run an older
extension than the Web Store publishes."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from gradientlab.config import Fleet
from gradientlab.health import Verdict
from gradientlab.providers.base import HostRecord
from gradientlab.rules import SecondNodeRefused, one_node_per_device
from gradientlab.store.fleet import deployed_host_keys, host_records, node_extension_versions
from gradientlab.webstore import is_behind
from tasks.common import engine, fleet_from
from tasks.hosts import await_good, deploy_host, extension_published


@flow(name="deploy", log_prints=True)
def deploy(
    fleet_path: str = "fleet.yaml",
    hosts: list[str] | None = None,
    rollout: bool = False,
    canary: str | None = None,
    wait_seconds: float = 180,
    plan: bool = False,
) -> list[dict[str, Any]]:
    """Deploy every host (or `hosts`); `plan` only says what would change, `rollout` goes
    host by host behind a canary."""
    logger = get_run_logger()
    fleet = fleet_from(fleet_path)
    records = host_records(engine(), hosts)
    if not records:
        logger.warning("no provisioned hosts to deploy to; run the provision flow first")
        return []
    refused = one_node_per_device(
        [(r.name, r.host_key) for r in records], deployed_host_keys(engine())
    )
    for why in refused.values():
        logger.error("refused: %s", why)
    allowed = [r for r in records if r.name not in refused]
    stopped: str | None = None
    if plan:
        futures = [deploy_host.submit(fleet, r, plan=True) for r in allowed]
        results = [f.result() for f in futures]
        create_table_artifact(
            key="deploy-plan",
            table=[
                {"host": r["host"], "would change": "; ".join(r["changes"]) or "nothing",
                 "extension": r["extension_version"], "browser": r["browser"]}
                for r in results
            ]
            + [{"host": n, "would change": f"refused: {why}", "extension": None, "browser": None}
               for n, why in sorted(refused.items())],
            description="What a deploy would change on each host (nothing was changed)",
        )  # fmt: skip
        for r in results:
            logger.info("%s: %s", r["host"], "; ".join(r["changes"]) or "nothing to change")
        return results
    if rollout:
        results, stopped = roll_out(fleet, allowed, canary, wait_seconds)
    else:
        futures = [deploy_host.submit(fleet, r) for r in allowed]
        results = [f.result() for f in futures]
    create_table_artifact(
        key="deploy-result",
        table=[
            {
                "host": r["host"],
                "changes": "; ".join(r["changes"]) or "none",
                "extension": r["extension_version"],
                "supervisor": r["supervisor"],
                "browser": f"{r['browser']} ({r['browser_source']}, {r['host_os']})"
                if r.get("browser")
                else None,
                **({"health after": r["health"]} if "health" in r else {}),
            }
            for r in results
        ]
        + [
            {
                "host": name,
                "changes": f"refused: {why}",
                "extension": None,
                "supervisor": None,
                "browser": None,
            }
            for name, why in sorted(refused.items())
        ],  # fmt: skip
        description="What the last deploy changed on each host",
    )
    if refused:
        raise SecondNodeRefused("; ".join(refused[name] for name in sorted(refused)))
    if stopped:
        raise RolloutStopped(stopped)
    return results


class RolloutStopped(RuntimeError):
    """A host was not Good after its deploy: the hosts after it were left as they were."""


def roll_out(
    fleet: Fleet, records: list[HostRecord], canary: str | None, wait_seconds: float
) -> tuple[list[dict[str, Any]], str | None]:
    """Deploy host by host, the canary first, each checked Good before the next one."""
    logger = get_run_logger()
    names = [r.name for r in records]
    if canary is not None and canary not in names:
        raise ValueError(f"canary {canary!r} is not one of the hosts to deploy: {names}")
    first = canary or (names[0] if names else None)
    order = sorted(records, key=lambda r: (r.name != first, r.name))
    results: list[dict[str, Any]] = []
    for i, record in enumerate(order):
        role = "canary" if i == 0 else f"{i + 1}/{len(order)}"
        try:
            result = deploy_host(fleet, record)
        except Exception as exc:  # noqa: BLE001 - the rollout stops here, with why
            why = f"{record.name} ({role}): the deploy failed: {exc}"
        else:
            report = await_good(record, fleet.health, wait_seconds)
            result["health"] = f"{report.status}: {report.reason}"
            results.append(result)
            if report.status == Verdict.GOOD:
                logger.info("%s (%s): extension %s, Good", record.name, role,
                            result["extension_version"])  # fmt: skip
                continue
            why = (
                f"{record.name} ({role}) is {report.status} after its deploy of extension "
                f"{result['extension_version']}: {report.reason}"
            )
        left = [r.name for r in order[i + 1 :]]
        why += f"; the rollout stopped, {len(left)} hosts left as they were"
        why += f" ({', '.join(left)})" if left else ""
        logger.error(why)
        results.extend(
            {"host": n, "changes": ["not attempted: the rollout stopped"],
             "extension_version": None, "supervisor": None}
            for n in left
        )  # fmt: skip
        return results, why
    return results, None


@flow(name="check-updates", log_prints=True)
def check_updates(fleet_path: str = "fleet.yaml") -> dict[str, Any]:
    """Which nodes run an older Sentry Node than the Web Store publishes (read-only)."""
    fleet = fleet_from(fleet_path)
    published = extension_published(fleet)
    installed = node_extension_versions(engine())
    behind = sorted(h for h, v in installed.items() if is_behind(v, published.version))
    create_table_artifact(
        key="extension-versions",
        table=[
            {
                "host": h,
                "installed": v or "unknown",
                "published": published.version,
                "behind": h in behind,
            }
            for h, v in sorted(installed.items())
        ],  # fmt: skip
        description=f"The Web Store publishes {published.version}; {len(behind)} nodes behind"
        + ("; roll it out with the deploy flow, rollout=true" if behind else ""),
    )
    if behind:
        get_run_logger().warning(
            "%d nodes run an older extension than %s: %s", len(behind), published.version,
            ", ".join(behind),
        )  # fmt: skip
    return {"published": published.version, "installed": installed, "behind": behind}
