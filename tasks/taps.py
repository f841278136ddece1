"""Tap readiness: the STUN test on every host, in one task (a fan-out over SSH inside it)."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from gradientlab.config import Fleet
from gradientlab.health.report import utcnow
from gradientlab.inventory import executor_for
from gradientlab.node.readiness import TapCheck, sweep_tap_readiness
from gradientlab.store.fleet import host_records
from gradientlab.store.taps import record_tap_readiness
from tasks.common import engine


@task(name="tap-readiness", cache_policy=NO_CACHE, tags=["ssh"], timeout_seconds=600)
def tap_readiness(fleet: Fleet) -> list[TapCheck]:
    """Test every host against the network's STUN server and store one row per host; a host
    whose test fails is stored with its error and never fails the run."""
    checks = sweep_tap_readiness(
        host_records(engine()), executor_for, fleet.network.stun_server, utcnow()
    )
    record_tap_readiness(engine(), checks, run_id=str(flow_run.id or "") or None)
    logger = get_run_logger()
    for check in checks:
        if check.message:
            logger.warning("%s: tap readiness: %s", check.host, check.message)
    return checks
