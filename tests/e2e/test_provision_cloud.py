"""The provision flow on a cloud, as far as it goes without an account: Prefect flow, a real
credentials block, the real OCI SDK (signing with the block's key) against the OCI stand-in; and
its approval: what is applied is exactly the plan an operator reviewed.

The operator's path is the Prefect UI: a run of the provision deployment (the UI's Run, or its
Custom run with `approve_plan`), executed as a worker executes it (`prefect flow-run execute`, a
process of its own, from this checkout as prefect.yaml's pull step says), so the run is a
deployment run as in production."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.settings import get_current_settings
from sqlalchemy import Engine, text

from gradientlab.plan import PlanRefused
from tests.standins.oci_api import OciStandIn, fleet_file, save_credentials_block

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
COMPARTMENT = "ocid1.compartment.oc1..aaaaaaaagradientlabflow"
CREATES = "/instances"


@pytest.fixture()
def oci_api() -> Iterator[OciStandIn]:
    standin = OciStandIn(COMPARTMENT)
    standin.start()
    yield standin
    standin.stop()


def test_provision_plans_then_applies_on_oci(
    prefect_server: None, engine: Engine, oci_api: OciStandIn, tmp_path: Path
) -> None:
    from flows.provision import provision

    save_credentials_block("oci-standin")
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(fleet_file("flowtest", "oci-standin", COMPARTMENT, oci_api.url))
    plan = provision(fleet_path=str(fleet))
    assert plan["applied"] is False
    [row] = plan["plan"]
    assert (row["host"], row["action"], row["free_tier"]) == ("arm-1", "create", True)
    assert "Unsupported" in row["warnings"]
    assert oci_api.calls("POST", "/instances") == []  # a plan creates nothing

    applied = provision(fleet_path=str(fleet), approve=True)
    assert applied["applied"] is True
    assert len(oci_api.calls("POST", "/instances")) == 1
    with engine.connect() as conn:
        host = conn.execute(
            text("SELECT provider, state, host_key, provider_ref FROM hosts WHERE name = 'arm-1'")
        ).one()
        stored = conn.execute(
            text("SELECT approved, result FROM provision_plans ORDER BY id")
        ).all()
    assert host.provider == "oracle" and host.state == "running"
    assert host.host_key.startswith("ssh-ed25519 ")
    assert host.provider_ref.startswith("ocid1.instance")
    assert [s.approved for s in stored] == [False, True]
    assert stored[1].result[0]["host"] == "arm-1"

    provision(fleet_path=str(fleet), approve=True)  # a rerun converges: no second VM
    assert len(oci_api.calls("POST", "/instances")) == 1


@pytest.fixture()
def fleet(oci_api: OciStandIn, tmp_path: Path) -> Path:
    block = f"oci-approve-{uuid.uuid4().hex[:6]}"
    save_credentials_block(block)
    path = tmp_path / "fleet.yaml"
    path.write_text(fleet_file("approvetest", block, COMPARTMENT, oci_api.url))
    return path


def provision_deployment() -> UUID:
    """The provision deployment as prefect.yaml makes it: its entrypoint, run from this checkout
    (prefect.yaml's set_working_directory pull step), with the flow's parameter schema (the
    form the UI's Custom run shows)."""
    from prefect.utilities.callables import parameter_schema

    from flows.provision import provision

    with get_client(sync_client=True) as client:
        flow_id = client.create_flow(provision)
        return client.create_deployment(
            flow_id=flow_id,
            name=f"provision-{uuid.uuid4().hex[:6]}",
            entrypoint="flows/provision.py:provision",
            pull_steps=[
                {"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}
            ],
            parameter_openapi_schema=parameter_schema(provision).model_dump_for_openapi(),
            enforce_parameter_schema=True,
        )


def run_deployment(deployment_id: UUID, parameters: dict[str, Any]) -> FlowRun:
    """What the UI's Run (with these parameters) and a worker do: a flow run of the deployment,
    executed in a process of its own. Returns the run once it has ended."""
    with get_client(sync_client=True) as client:
        run = client.create_flow_run_from_deployment(deployment_id, parameters=parameters)
    env = {**os.environ, "PREFECT_API_URL": str(get_current_settings().api.url)}
    prefect = Path(sys.executable).parent / "prefect"
    done = subprocess.run(
        [str(prefect), "flow-run", "execute", str(run.id)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    with get_client(sync_client=True) as client:
        ended = client.read_flow_run(run.id)
    assert ended.state is not None and ended.state.is_final(), done.stdout + done.stderr
    return ended


def plan_of_run(engine: Engine, run: FlowRun) -> Any:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT * FROM provision_plans WHERE flow_run_id = :r"), {"r": str(run.id)}
        ).one()


def plan_row(engine: Engine, plan_id: int) -> Any:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT * FROM provision_plans WHERE id = :i"), {"i": plan_id}
        ).one()


def host_rows(engine: Engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text("SELECT name, state FROM hosts"))]


def markdown_of(run: FlowRun, key: str) -> str:
    with get_client(sync_client=True) as client:
        [artifact] = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])),
        )
    return str(artifact.data)


def test_the_ui_applies_the_reviewed_plan_once(
    prefect_server: None, engine: Engine, oci_api: OciStandIn, fleet: Path
) -> None:
    deployment = provision_deployment()

    # the operator's Run: a plan, with its id and how to approve it, and nothing created
    review = run_deployment(deployment, {"fleet_path": str(fleet)})
    assert review.state is not None and review.state.type == StateType.COMPLETED
    plan = plan_of_run(engine, review)
    assert plan.hosts == ["arm-1"] and len(plan.digest) == 64 and plan.approved is False
    note = markdown_of(review, "provision-warnings")
    assert f"`approve_plan` = **{plan.id}**" in note and plan.digest[:12] in note
    assert oci_api.calls("POST", CREATES) == []

    # approve=true from the UI is not an approval of what was reviewed: refused, nothing made
    unreviewed = run_deployment(deployment, {"fleet_path": str(fleet), "approve": True})
    assert unreviewed.state is not None and unreviewed.state.type == StateType.FAILED
    assert "approve_plan=" in (unreviewed.state.message or "")
    assert oci_api.calls("POST", CREATES) == [] and host_rows(engine) == []

    # the Custom run naming the reviewed plan applies it
    approval = run_deployment(deployment, {"fleet_path": str(fleet), "approve_plan": plan.id})
    assert approval.state is not None and approval.state.type == StateType.COMPLETED
    assert len(oci_api.calls("POST", CREATES)) == 1
    assert host_rows(engine) == [("arm-1", "running")]
    applied = plan_row(engine, plan.id)
    assert applied.approved is True and applied.applied_at is not None
    assert applied.approved_flow_run_id == str(approval.id)
    assert applied.result[0]["host"] == "arm-1"

    # approving it a second time does nothing, and succeeds
    again = run_deployment(deployment, {"fleet_path": str(fleet), "approve_plan": plan.id})
    assert again.state is not None and again.state.type == StateType.COMPLETED
    assert len(oci_api.calls("POST", CREATES)) == 1
    assert plan_row(engine, plan.id).approved_flow_run_id == str(approval.id)
    assert plan_row(engine, plan.id).applied_at == applied.applied_at


def test_a_fleet_file_changed_after_the_review_is_refused_and_nothing_is_created(
    prefect_server: None, engine: Engine, oci_api: OciStandIn, fleet: Path
) -> None:
    from flows.provision import provision

    reviewed = provision(fleet_path=str(fleet))["plan_id"]
    fleet.write_text(fleet.read_text().replace("203.0.113.0/24", "198.51.100.0/24"))

    with pytest.raises(PlanRefused) as refused:
        provision(fleet_path=str(fleet), approve_plan=reviewed)
    message = str(refused.value)
    assert f"plan {reviewed} was not applied and nothing was created" in message
    assert "operator_cidr '203.0.113.0/24' -> '198.51.100.0/24'" in message
    current = reviewed + 1
    assert f"approve_plan={current}" in message
    assert oci_api.calls("POST", CREATES) == [] and host_rows(engine) == []
    assert plan_row(engine, reviewed).approved is False
    assert plan_row(engine, reviewed).applied_at is None

    # the current plan the refusal stored is the one to review and approve
    assert provision(fleet_path=str(fleet), approve_plan=current)["applied"] is True
    assert len(oci_api.calls("POST", CREATES)) == 1
    # and the older plan, superseded, is never applied after it
    with pytest.raises(PlanRefused, match=f"superseded: plan {current}"):
        provision(fleet_path=str(fleet), approve_plan=reviewed)
    assert len(oci_api.calls("POST", CREATES)) == 1


def test_stale_unknown_and_mismatched_approvals_are_refused(
    prefect_server: None, engine: Engine, oci_api: OciStandIn, fleet: Path
) -> None:
    from flows.provision import provision

    plan_id = provision(fleet_path=str(fleet))["plan_id"]
    with pytest.raises(PlanRefused, match="there is no provision plan 999"):
        provision(fleet_path=str(fleet), approve_plan=999)
    with pytest.raises(PlanRefused, match=f"plan {plan_id} covers arm-1, not arm-2"):
        provision(fleet_path=str(fleet), hosts=["arm-2"], approve_plan=plan_id)
    with engine.begin() as conn:
        conn.execute(text("UPDATE provision_plans SET created_at = now() - interval '25 hours'"))
    with pytest.raises(PlanRefused, match=f"plan {plan_id} is 25 h old"):
        provision(fleet_path=str(fleet), approve_plan=plan_id)
    assert oci_api.calls("POST", CREATES) == [] and host_rows(engine) == []


def test_one_run_at_a_time_applies_a_plan_and_a_failed_apply_is_not_applied(
    engine: Engine,
) -> None:
    from gradientlab.plan import load_plan, plan_lock, record_applied, store_plan

    body = {"fleet": "f", "hosts": [{"name": "a"}, {"name": "b"}], "warnings": [], "specs": {}}
    plan_id = store_plan(engine, "fleet.yaml", body, None)
    # another worker's approval of the same plan, at once
    with plan_lock(engine, plan_id) as first, plan_lock(engine, plan_id) as second:
        assert (first, second) == (True, False)
    with plan_lock(engine, plan_id) as again:
        assert again is True

    record_applied(
        engine, plan_id, [{"host": "a", "state": "running"}, {"host": "b", "state": "failed"}]
    )
    assert load_plan(engine, plan_id).applied_at is None  # approving it again retries b
    assert load_plan(engine, plan_id).result[1]["state"] == "failed"
    record_applied(
        engine, plan_id, [{"host": "a", "state": "running"}, {"host": "b", "state": "running"}]
    )
    assert load_plan(engine, plan_id).applied_at is not None
