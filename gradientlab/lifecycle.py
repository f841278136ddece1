"""A host's life in the fleet's records: created at its provider, its node deployed, each step
recorded in the database. Plain functions; the Prefect tasks in `tasks/hosts.py` wrap them with
retries and tags, and the health cycle's re-provision rung calls them directly.

Credentials come through the callables the orchestration layer passes in (Prefect blocks there;
anything else in a test or a script), never from here."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from sqlalchemy import Engine

from gradientlab.agent.home import RUNNER_VERSION
from gradientlab.config import Fleet, FleetFileError
from gradientlab.gradient.errors import GradientAuthError
from gradientlab.gradient.webkey import GREP_PATTERN, find_web_api_key
from gradientlab.inventory import (
    BlockReader,
    CredentialsLoader,
    executor_for,
    node_settings,
    provider_for,
)
from gradientlab.node.browser import NoUsableBrowser
from gradientlab.node.deploy import NODE_DIR, DeployResult, deploy_node
from gradientlab.providers.base import HostRecord
from gradientlab.remote.executor import (
    AuthRefused,
    CommandTimeout,
    Executor,
    HostKeyInvalid,
    HostKeyMismatch,
    HostUnreachable,
)
from gradientlab.remote.keys import OperatorKeyUnavailable, operator_public_key
from gradientlab.rules import SecondNodeRefused
from gradientlab.store import fleet as fleet_store
from gradientlab.store.locks import HostBusy
from gradientlab.store.webkeys import record_web_key


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
    """Deploy the node on `record` and record what is installed there, with the web API key
    the deployed extension's bundle carries."""
    ex = executor_for(record)
    result = deploy_node(ex, node_settings(fleet, secrets), record.meta.get("python"))
    key = read_bundle_web_key(ex)
    if key is not None:
        record_web_key(
            engine, fleet.network.extension_id, key, result.extension_version, record.name
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


def read_bundle_web_key(ex: Executor) -> str | None:
    """The Firebase web API key in the extension deployed on this host (None: none found)."""
    found = ex.run(
        f"grep -rhoE {shlex.quote(GREP_PATTERN)} {NODE_DIR}/extension/current/"
        " --include='*.js' 2>/dev/null | head -n 200",
        timeout=60,
    )
    return find_web_api_key([found.stdout]) if found.stdout else None


def plan_deploy(fleet: Fleet, record: HostRecord, secrets: BlockReader) -> DeployResult:
    """What a deploy on `record` would change; nothing is changed or recorded."""
    settings = node_settings(fleet, secrets)
    return deploy_node(executor_for(record), settings, record.meta.get("python"), plan=True)


@dataclass(frozen=True)
class HostOutcome:
    """How one host's step (a deploy) ended, for the run's table: `ok`, or `failed` with why,
    and whether a person must act (else the next deploy or the health flow's recovery, which
    redeploys, takes it up by itself)."""

    host: str
    outcome: str  # "ok" | "failed"
    reason: str = ""
    needs_person: bool = False


# Failures nothing automatic fixes: a rule broken, a host key that is not the pinned one,
# credentials or settings to correct, no usable browser on the host.
NEEDS_PERSON: tuple[type[BaseException], ...] = (
    SecondNodeRefused,
    HostKeyMismatch,
    HostKeyInvalid,
    AuthRefused,
    NoUsableBrowser,
    FleetFileError,
    OperatorKeyUnavailable,
    GradientAuthError,
)
# Failures a later try fixes by itself: a host down or slow for now, another step holding it.
PASSING: tuple[type[BaseException], ...] = (
    HostUnreachable,
    CommandTimeout,
    HostBusy,
    ConnectionError,
    TimeoutError,
)


def failed_outcome(host: str, exc: BaseException) -> HostOutcome:
    """A host's failed step as its own result. Anything not known to pass by itself (a bug,
    an unexpected answer) needs a person too."""
    needs_person = isinstance(exc, NEEDS_PERSON) or not isinstance(exc, PASSING)
    reason = f"{type(exc).__name__}: {exc}"[:500]
    if not needs_person:
        reason += " (passing: the next deploy or the health flow's recovery retries it)"
    return HostOutcome(host, "failed", reason, needs_person)
