"""The provision flow on a cloud, as far as it goes without an account: Prefect flow, a real
credentials block, the real OCI SDK (signing with the block's key) against the OCI stand-in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from tests.standins.oci_api import OciStandIn, fleet_file, save_credentials_block

pytestmark = pytest.mark.e2e
COMPARTMENT = "ocid1.compartment.oc1..aaaaaaaagradientlabflow"


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
