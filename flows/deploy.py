"""Deploy: install or update the Sentry Node on every host. Idempotent.

Each host's deploy is that host's result: the run deploys the others whatever one host does,
publishes a table of every host's outcome, and fails only when a person must act (a rule
broken, a host key or a setting to fix, a fault nothing retries by itself); a host that is down
for now is reported and left to the next deploy or the health flow's recovery. At most
`HOST_WORKERS` hosts are deployed at once (each holds its host lock on a connection of its own
and one pooled connection at a time, well inside the pool's 5 + 10).

With `rollout`, hosts are deployed one at a time, a canary first, each checked Good before the
next; the first that is not stops the rollout. `check-updates` says which nodes run an older
extension than the Web Store publishes."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.futures import PrefectFuture
from prefect.task_runners import ThreadPoolTaskRunner

from gradientlab.config import Fleet
from gradientlab.health import Verdict
from gradientlab.lifecycle import HostOutcome, failed_outcome
from gradientlab.providers.base import HostRecord
from gradientlab.rules import SecondNodeRefused, one_node_per_device
from gradientlab.store.fleet import deployed_host_keys, host_records, node_extension_versions
from gradientlab.webstore import is_behind
from tasks.common import engine, fleet_from, requested_by
from tasks.hosts import await_good, deploy_host, extension_published

HOST_WORKERS = 8
"""Hosts deployed at once by one run (the `ssh` tag's concurrency limit bounds all runs)."""


class DeployNeedsPerson(RuntimeError):
    """Some hosts' deploys failed in a way only a person can fix; the message names each."""


def _gather(
    records: list[HostRecord], futures: list[PrefectFuture[dict[str, Any]]]
) -> tuple[list[dict[str, Any]], list[HostOutcome]]:
    """Every host's result: a deploy's answer, or its failure as that host's outcome."""
    results: list[dict[str, Any]] = []
    failures: list[HostOutcome] = []
    for record, future in zip(records, futures, strict=True):
        try:
            results.append(future.result())
        except Exception as exc:  # noqa: BLE001 - one host's failure is that host's result
            failures.append(failed_outcome(record.name, exc))
    return results, failures


def _failure_rows(failures: list[HostOutcome]) -> list[dict[str, Any]]:
    return [
        {
            "host": f.host,
            "outcome": "failed: a person must act" if f.needs_person else "failed: passing",
            "changes": f.reason,
            "extension": None,
            "supervisor": None,
            "browser": None,
        }
        for f in failures
    ]


@flow(
    name="deploy",
    log_prints=True,
    task_runner=ThreadPoolTaskRunner(max_workers=HOST_WORKERS),  # type: ignore[arg-type]
)
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
    logger.info(
        "deploy of %s, requested by %s", ", ".join(hosts) if hosts else "every host", requested_by()
    )
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
        results, unknown = _gather(allowed, futures)
        create_table_artifact(
            key="deploy-plan",
            table=[
                {"host": r["host"], "would change": "; ".join(r["changes"]) or "nothing",
                 "extension": r["extension_version"], "browser": r["browser"]}
                for r in results
            ]
            + [{"host": n, "would change": f"refused: {why}", "extension": None, "browser": None}
               for n, why in sorted(refused.items())]
            + [{"host": f.host, "would change": f"cannot tell: {f.reason}", "extension": None,
                "browser": None} for f in unknown],
            description="What a deploy would change on each host (nothing was changed)",
        )  # fmt: skip
        for r in results:
            logger.info("%s: %s", r["host"], "; ".join(r["changes"]) or "nothing to change")
        for f in unknown:
            logger.error("%s: cannot tell what a deploy would change: %s", f.host, f.reason)
        return results
    failures: list[HostOutcome] = []
    if rollout:
        results, stopped = roll_out(fleet, allowed, canary, wait_seconds)
    else:
        futures = [deploy_host.submit(fleet, r) for r in allowed]
        results, failures = _gather(allowed, futures)
    create_table_artifact(
        key="deploy-result",
        table=[
            {
                "host": r["host"],
                "outcome": "ok",
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
                "outcome": "refused: a person must act",
                "changes": f"refused: {why}",
                "extension": None,
                "supervisor": None,
                "browser": None,
            }
            for name, why in sorted(refused.items())
        ]
        + _failure_rows(failures),  # fmt: skip
        description=f"What the last deploy did on each host: {len(results)} deployed, "
        f"{len(failures)} failed ({sum(f.needs_person for f in failures)} need a person), "
        f"{len(refused)} refused",
    )
    for f in failures:
        (logger.error if f.needs_person else logger.warning)("%s: %s", f.host, f.reason)
    if refused:
        raise SecondNodeRefused("; ".join(refused[name] for name in sorted(refused)))
    if stopped:
        raise RolloutStopped(stopped)
    must_act = [f for f in failures if f.needs_person]
    if must_act:
        raise DeployNeedsPerson(
            f"{len(must_act)} of {len(records)} hosts need a person (the others were "
            "deployed or will be retried): " + "; ".join(f"{f.host}: {f.reason}" for f in must_act)
        )
    return results + [
        {"host": f.host, "outcome": "failed", "reason": f.reason, "changes": []} for f in failures
    ]


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
