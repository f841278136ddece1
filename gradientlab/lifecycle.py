"""A host's life in the fleet's records: created at its provider, its node deployed, each step
recorded in the database. Plain functions; the Prefect tasks in `tasks/hosts.py` wrap them with
retries and tags, and the health cycle's re-provision rung calls them directly.

Credentials come through the callables the orchestration layer passes in (Prefect blocks there;
anything else in a test or a script), never from here."""

from __future__ import annotations

from sqlalchemy import Engine

from gradientlab.agent.home import RUNNER_VERSION
from gradientlab.config import Fleet
from gradientlab.inventory import (
    BlockReader,
    CredentialsLoader,
    executor_for,
    node_settings,
    provider_for,
)
from gradientlab.node.deploy import DeployResult, deploy_node
from gradientlab.providers.base import HostRecord
from gradientlab.remote.keys import operator_public_key
from gradientlab.store import fleet as fleet_store


def create_host(
    engine: Engine, fleet: Fleet, name: str, credentials: CredentialsLoader
) -> HostRecord:
    """Create (or find) host `name` at its provider, with the operator's key, and record it."""
    spec = fleet.host(name)
    record = provider_for(fleet, spec.provider, credentials).create(spec, operator_public_key())
    fleet_store.upsert_host(engine, record)
    return record


def deploy_host(
    engine: Engine, fleet: Fleet, record: HostRecord, secrets: BlockReader
) -> DeployResult:
    """Deploy the node on `record` and record what is installed there."""
    result = deploy_node(
        executor_for(record), node_settings(fleet, secrets), record.meta.get("python")
    )
    fleet_store.record_deploy(
        engine,
        record.name,
        result.extension_id,
        result.extension_version,
        RUNNER_VERSION,
        browser=result.browser,
        browser_source=result.browser_source,
        host_os=result.host_os,
    )
    return result


def plan_deploy(fleet: Fleet, record: HostRecord, secrets: BlockReader) -> DeployResult:
    """What a deploy on `record` would change; nothing is changed or recorded."""
    settings = node_settings(fleet, secrets)
    return deploy_node(executor_for(record), settings, record.meta.get("python"), plan=True)
