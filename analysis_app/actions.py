"""Operator actions from the app: check one node, deploy one node, release a quarantined host.

Each starts a run of a deployed flow through Prefect's API (`run_deployment`), never by
importing the flow: the run is recorded, scheduled by Prefect beside the others (a health run
that finds one going is cancelled, as scheduled ones are), and executed by whatever serves the
deployments (`python -m deployments.serve` or a worker). The page shows a link to the run in
the Prefect UI. Only operators see the buttons (`auth.current_role()`); viewers see nothing."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast
from uuid import UUID

import pandas as pd
import streamlit as st

from analysis_app import auth
from gradientlab.health.events import REQUESTED_BY_TAG
from gradientlab.store.reads import UNMANAGED_PROVIDER

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

TAGS = ("gradientlab-app",)


@dataclass(frozen=True)
class Action:
    """A button: which deployment it runs, and the parameters for one host."""

    key: str
    label: str
    icon: str
    deployment: str  # "<flow name>/<deployment name>"
    help: str
    parameters: Callable[[str], dict[str, Any]]  # the run's parameters for one host


def _hosts(host: str) -> dict[str, Any]:
    return {"hosts": [host]}


def _host(host: str) -> dict[str, Any]:
    return {"host": host}


HEALTH = Action(
    "health",
    "Run health",
    ":material/stethoscope:",
    "health/health",
    "Check this node now, and recover it if it needs it (the health flow, for this host only;"
    " cancelled, like a scheduled run, when another health run is going)",
    _hosts,
)
DEPLOY = Action(
    "deploy",
    "Deploy",
    ":material/upload:",
    "deploy/deploy",
    "Install or update the Sentry Node on this host (the deploy flow; changes only what differs)",
    _hosts,
)
RELEASE = Action(
    "release",
    "Release",
    ":material/lock_open:",
    "release/release",
    "Hand this quarantined host back to automatic recovery, with fresh budgets",
    _host,
)


@dataclass(frozen=True)
class StartedRun:
    action: str
    host: str
    flow_run_id: UUID
    name: str
    url: str | None


class ActionFailed(RuntimeError):
    """A run could not be started; the message says why and what to do."""


def prefect_api_url() -> str:
    """The Prefect server the app asks; without one, Prefect would start a temporary server of
    its own that serves no flows, so the app refuses instead."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise ActionFailed(
            "PREFECT_API_URL is not set: start the app with it pointing at the Prefect server "
            "that serves the flows (the demo's is http://127.0.0.1:4200/api)"
        )
    return str(url)


def run_url(flow_run_id: UUID) -> str | None:
    """The run's page in the Prefect UI (`PREFECT_UI_URL`, or the API URL's server)."""
    from prefect.utilities.urls import url_for

    return url_for("flow-run", obj_id=flow_run_id) or None


def start_run(action: Action, host: str, identity: str | None = None) -> StartedRun:
    """Ask Prefect for a run of `action`'s deployment for `host`, recorded as asked for by
    `identity` (the signed-in operator); returns without waiting."""
    import httpx
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    if not host:
        raise ActionFailed("no host given")
    if not identity:
        raise ActionFailed("nobody is signed in: an action records who asked for it")
    api = prefect_api_url()
    try:
        run = cast(  # a sync call from the page's script: the run, not a coroutine
            "FlowRun",
            run_deployment(
                name=action.deployment,
                parameters=action.parameters(host),
                timeout=0,
                tags=[*TAGS, f"{REQUESTED_BY_TAG}{identity}"],
            ),
        )
    except ObjectNotFound:
        raise ActionFailed(
            f"the Prefect server at {api} has no deployment {action.deployment!r}: "
            "serve the flows (`python -m deployments.serve --fleet fleet.yaml`) or deploy them "
            "(`prefect deploy --all`), then try again"
        ) from None
    except httpx.HTTPError as exc:
        raise ActionFailed(
            f"cannot reach the Prefect server at {api} ({exc}): check that it runs "
            "and that PREFECT_API_URL points at it"
        ) from None
    return StartedRun(action.key, host, run.id, run.name, run_url(run.id))


def _state_key(action: Action, host: str) -> str:
    return f"gradientlab-action-{action.key}-{host}"


def _button(action: Action, host: str) -> None:
    if st.button(action.label, key=f"{_state_key(action, host)}-button", icon=action.icon,
                 help=action.help):  # fmt: skip
        try:
            st.session_state[_state_key(action, host)] = start_run(
                action, host, auth.current_identity()
            )
        except ActionFailed as exc:
            st.session_state[_state_key(action, host)] = exc


def _show(action: Action, host: str) -> None:
    """What the last click of this button started, with its link, or why it could not."""
    started = st.session_state.get(_state_key(action, host))
    if isinstance(started, ActionFailed):
        st.error(f"Could not start {action.key} for {host}: {started}", icon=":material/error:")
    elif isinstance(started, StartedRun):
        where = f"[{started.name}]({started.url})" if started.url else f"`{started.name}`"
        st.success(
            f"Started {action.key} for {host}: flow run {where} in the Prefect UI.",
            icon=":material/rocket_launch:",
        )


def _given(value: Any) -> bool:
    return value is not None and not (not isinstance(value, str) and pd.isna(value))


# Hosts the flows cannot reach yet or any more (as `store.fleet.host_records` leaves them out).
UNREACHABLE_STATES = ("terminated", "creating")


def node_actions(profile: Mapping[str, Any]) -> tuple[tuple[Action, ...], str | None]:
    """The buttons a node's page offers (`profile` as `reads.node_profile` reads it), and why
    there are none: health and deploy for a live host of the fleet, release too while it is
    quarantined; nothing for a node no host of ours runs, or a host gone or not made yet."""
    host, state = profile["host"], profile.get("state")
    if profile.get("provider") == UNMANAGED_PROVIDER or not _given(profile.get("host_id")):
        return (), (
            f"No actions for {host}: it is not managed. The network lists this node under the "
            "account, but no host of this fleet runs it, so there is nothing to check, deploy "
            "or release from here."
        )
    if state == "terminated":
        return (), f"No actions for {host}: the host is terminated, nothing runs there any more."
    if state in UNREACHABLE_STATES or not _given(profile.get("address")):
        return (), (
            f"No actions for {host} yet: the host is {state or 'not created'} and has no "
            "address to reach; the provision flow finishes it."
        )
    quarantined = _given(profile.get("quarantined_at"))
    return ((HEALTH, DEPLOY, RELEASE) if quarantined else (HEALTH, DEPLOY)), None


def render_node_actions(profile: Mapping[str, Any]) -> None:
    """Operator buttons for one node's host (`profile` as `reads.node_profile` reads it):
    run health for it, deploy it, release it while quarantined; for a node without them, a
    caption saying why. Nothing for viewers."""
    if auth.current_role() != "operator":
        return
    actions, why_none = node_actions(profile)
    if why_none:
        st.caption(why_none)
        return
    host = str(profile["host"])
    for column, action in zip(st.columns(len(actions)), actions, strict=True):
        with column:
            _button(action, host)
    for action in actions:
        _show(action, host)


def render_release_action(host_name: str) -> None:
    """An operator's button to release a quarantined host (for the quarantine table).
    Nothing for viewers."""
    if auth.current_role() != "operator":
        return
    _button(RELEASE, host_name)
    _show(RELEASE, host_name)
