"""Who asked for a flow run, as the flows record it (tasks.common.requested_by), on the
session's Prefect server: the app's tag, a parent run, or a direct call."""

from __future__ import annotations

from prefect import flow, tags

from gradientlab.health.events import REQUESTED_BY_TAG
from tasks.common import requested_by


@flow(name="who-asked")
def who_asked() -> str:
    return requested_by()


@flow(name="who-asked-parent")
def parent() -> str:
    return who_asked()


def test_the_apps_tag_names_the_signed_in_person(prefect_server: None) -> None:
    with tags(f"{REQUESTED_BY_TAG}oidc:ops@example.test"):
        assert who_asked() == "oidc:ops@example.test"


def test_a_run_started_by_another_names_that_run(prefect_server: None) -> None:
    assert parent().startswith("flow run ")


def test_a_direct_call_says_so(prefect_server: None) -> None:
    assert who_asked() == "a direct call of the flow"


def test_outside_a_flow_run_there_is_no_one_to_name() -> None:
    assert requested_by() == "a direct call (no flow run)"
