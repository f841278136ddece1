"""The app's operator actions on the session's Prefect server: each button asks Prefect for a
run of the deployed flow (never the flow itself), with the host as its parameter, and shows the
run's link; viewers see no button. The release deployment is served by a real runner process,
so its run really ends the quarantine in Postgres. A node page offers the buttons only for a
live host of the fleet (Release only while it is quarantined), and says why a node no host of
ours runs has none."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast
from uuid import UUID

import pytest
import streamlit as st
from sqlalchemy import Engine, text
from streamlit.testing.v1 import AppTest

from analysis_app import components
from gradientlab.store import reads
from tests.conftest import add_host, rows
from tests.integration.test_analysis_app import APP, NOW, seed_fleet

ROOT = Path(__file__).resolve().parents[2]
HANG_GUARD = 180  # seconds for the served release run to finish; never a timing claim


def node_buttons(profile: dict[str, object]) -> None:
    """The part of a node page that carries the actions (run as a script: its annotations
    name builtins only)."""
    from analysis_app.actions import render_node_actions

    render_node_actions(profile)


def live_host(host: str, **fields: Any) -> dict[str, Any]:
    """A node page's profile of a running host of the fleet (`reads.node_profile`'s keys)."""
    return {"host_id": 7, "host": host, "provider": "local", "state": "running",
            "address": "127.0.0.9", "quarantined_at": None, **fields}  # fmt: skip


def page(profile: dict[str, Any]) -> AppTest:
    return AppTest.from_function(node_buttons, args=(profile,), default_timeout=60)


def runs_of(deployment_id: UUID) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
        )


@pytest.fixture()
def prefect_api(prefect_server: None) -> str:
    """The session server's URL (the harness makes it every thread's setting, the page's too)."""
    from prefect.settings import PREFECT_API_URL

    return str(PREFECT_API_URL.value())


def registered(flow: Any, name: str) -> UUID:
    """`flow` registered as the deployment `name` (Prefect's sync API: in a sync context
    `to_deployment` and `apply` return their results, not coroutines)."""
    return cast(UUID, flow.to_deployment(name=name, parameters={"fleet_path": "f.yaml"}).apply())


@pytest.fixture()
def deployments(prefect_api: str) -> Iterator[dict[str, UUID]]:
    """health and deploy registered as `serve` registers them (nobody runs them here: their
    runs stay scheduled, and are deleted after), and release served by a runner process."""
    from prefect.client.orchestration import get_client

    from flows.deploy import deploy
    from flows.health import health

    ids = {"health": registered(health, "health"), "deploy": registered(deploy, "deploy")}
    runner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from prefect import serve; from flows.release import release;"
            " serve(release.to_deployment(name='release'), query_seconds=1)",
        ],
        cwd=ROOT,
        env={**os.environ, "PREFECT_API_URL": prefect_api},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with get_client(sync_client=True) as client:
            deadline = time.monotonic() + HANG_GUARD
            while time.monotonic() < deadline and runner.poll() is None:
                try:
                    ids["release"] = client.read_deployment_by_name("release/release").id
                    break
                except Exception:  # noqa: BLE001 - not registered yet
                    time.sleep(0.5)
        assert "release" in ids, f"the release deployment was never served: {runner.stderr}"
        yield ids
    finally:
        runner.terminate()
        try:
            runner.wait(timeout=30)
        except subprocess.TimeoutExpired:
            runner.kill()
            runner.wait()
        with get_client(sync_client=True) as client:
            for deployment_id in ids.values():
                for run in runs_of(deployment_id):
                    client.delete_flow_run(run.id)
                client.delete_deployment(deployment_id)


def test_viewers_see_no_buttons(monkeypatch: pytest.MonkeyPatch) -> None:
    from analysis_app import auth

    monkeypatch.setattr(auth, "current_role", lambda: "viewer")
    at = page(live_host("edge-1", quarantined_at=NOW)).run()
    assert not at.exception
    assert len(at.button) == 0
    assert not at.caption


def test_operator_buttons_start_runs_with_the_host_and_link_them(
    engine: Engine, deployments: dict[str, UUID], monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.orchestration import get_client

    from analysis_app import auth

    monkeypatch.setattr(auth, "current_role", lambda: "operator")
    monkeypatch.setattr(auth, "current_identity", lambda: "user:alice")
    add_host(engine, "edge-1")
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE hosts SET quarantined_at = now(), quarantine_reason = 'budget spent'"
                " WHERE name = 'edge-1'"
            )
        )
    profile = reads.node_profile(engine, "edge-1")
    assert profile is not None
    at = page(profile).run()
    assert [b.label for b in at.button] == ["Run health", "Deploy", "Release"]

    for i, (action, parameters) in enumerate(
        [
            ("health", {"fleet_path": "f.yaml", "hosts": ["edge-1"]}),
            ("deploy", {"fleet_path": "f.yaml", "hosts": ["edge-1"]}),
            ("release", {"host": "edge-1"}),
        ]
    ):
        at.button[i].click().run()
        assert not at.exception, at.exception
        [run] = runs_of(deployments[action])
        assert run.parameters == parameters
        assert "gradientlab-app" in run.tags
        assert "requested-by:user:alice" in run.tags  # who asked, in the Prefect UI too
        shown = [s.value for s in at.success]
        assert any(
            f"Started {action} for edge-1: flow run [{run.name}]" in s
            and f"/runs/flow-run/{run.id})" in s
            for s in shown
        ), shown
    assert not at.error

    # the served release run ends the quarantine; health and deploy wait for a server
    deadline = time.monotonic() + HANG_GUARD
    with get_client(sync_client=True) as client:
        [released] = runs_of(deployments["release"])
        while time.monotonic() < deadline:
            released = client.read_flow_run(released.id)
            if released.state is not None and released.state.is_final():
                break
            time.sleep(1)
    assert released.state is not None and released.state.is_completed(), released.state
    assert rows(
        engine, "SELECT quarantined_at, released_at IS NOT NULL, released_by FROM hosts"
    ) == [(None, True, "user:alice")]


def test_an_undeployed_flow_is_explained(prefect_api: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from analysis_app import auth

    monkeypatch.setattr(auth, "current_role", lambda: "operator")
    monkeypatch.setattr(auth, "current_identity", lambda: "user:alice")
    at = page(live_host("edge-2")).run()
    at.button[0].click().run()
    assert not at.exception
    [error] = [e.value for e in at.error]
    assert "Could not start health for edge-2" in error
    assert "has no deployment 'health/health'" in error
    assert "python -m deployments.serve" in error


def test_without_a_prefect_server_the_app_says_so() -> None:
    """Rather than start a temporary Prefect server of its own, which serves no flow."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from analysis_app.actions import RELEASE, ActionFailed, start_run

    with (
        temporary_settings(restore_defaults={PREFECT_API_URL}),
        pytest.raises(ActionFailed, match="PREFECT_API_URL is not set: start the app with"),
    ):
        start_run(RELEASE, "edge-3", "user:alice")


def test_buttons_follow_what_the_host_is(monkeypatch: pytest.MonkeyPatch) -> None:
    from analysis_app import auth
    from analysis_app.actions import DEPLOY, HEALTH, RELEASE, node_actions

    monkeypatch.setattr(auth, "current_role", lambda: "operator")
    assert node_actions(live_host("a")) == ((HEALTH, DEPLOY), None)
    quarantined = live_host("a", quarantined_at=NOW)
    assert node_actions(quarantined) == ((HEALTH, DEPLOY, RELEASE), None)
    unmanaged = {"host_id": None, "host": "laptop", "provider": reads.UNMANAGED_PROVIDER,
                 "state": None, "address": None, "quarantined_at": None}  # fmt: skip
    for profile, why in (
        (unmanaged, "No actions for laptop: it is not managed."),
        (live_host("gone", state="terminated"), "No actions for gone: the host is terminated"),
        (live_host("new", state="creating", address=None), "the host is creating and has no"),
    ):
        actions, reason = node_actions(profile)
        assert actions == () and reason is not None and why in reason, reason
        at = page(profile).run()
        assert not at.exception and len(at.button) == 0
        assert [c.value for c in at.caption] == [reason]


@pytest.fixture()
def node_page_as_operator(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The app tests' fleet, the page's clock at their reference time, an operator."""
    from analysis_app import auth

    seed_fleet(engine)
    monkeypatch.setattr(components, "utc_now", lambda: NOW)
    monkeypatch.setattr(auth, "current_role", lambda: "operator")
    st.cache_data.clear()
    yield
    st.cache_data.clear()


@pytest.mark.parametrize(
    ("node", "buttons"),
    [
        ("gcp-west-1", ["Run health", "Deploy"]),
        ("home-pi", ["Run health", "Deploy", "Release"]),  # quarantined
        ("laptop-node", []),  # the network lists it; no host of ours runs it
    ],
)
def test_the_node_page_offers_only_actions_that_can_work(
    node_page_as_operator: None, node: str, buttons: list[str]
) -> None:
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["node"] = node
    at.switch_page("views/node.py").run()

    assert not at.exception, [e.value for e in at.exception]
    assert at.subheader[0].value == node
    assert [b.label for b in at.button] == buttons
    not_managed = [c.value for c in at.caption if "it is not managed" in c.value]
    assert len(not_managed) == (0 if buttons else 1)


def test_an_action_without_a_signed_in_person_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every run the app starts records who asked: without a sign-in, none is started."""
    from analysis_app.actions import RELEASE, ActionFailed, start_run

    with pytest.raises(ActionFailed, match="nobody is signed in"):
        start_run(RELEASE, "edge-3", None)
