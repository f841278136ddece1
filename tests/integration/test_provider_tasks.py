"""The provider tasks retry what later can cure, and nothing else: a real Prefect server, a real
credentials block, the real OCI SDK (signing with the block's key) against the OCI stand-in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect import flow
from sqlalchemy import Engine

from gradientlab.config import Fleet, load_fleet
from gradientlab.providers.base import HostRecord, ProviderAuthError, QuotaError
from tests.standins.oci_api import OciStandIn, fleet_file, save_credentials_block

COMPARTMENT = "ocid1.compartment.oc1..aaaaaaaagradientlabtasks"


@pytest.fixture()
def oci_api() -> Iterator[OciStandIn]:
    standin = OciStandIn(COMPARTMENT)
    standin.provisioning_polls = 0  # running at once: no poll waits in these tests
    standin.start()
    yield standin
    standin.stop()


@pytest.fixture()
def fleet(prefect_server: None, engine: Engine, oci_api: OciStandIn, tmp_path: Path) -> Fleet:
    save_credentials_block("oci-tasks")
    path = tmp_path / "fleet.yaml"
    path.write_text(fleet_file("taskstest", "oci-tasks", COMPARTMENT, oci_api.url))
    return load_fleet(str(path))


@flow(name="create-one-host")
def create_one(fleet: Fleet, name: str) -> HostRecord:
    from tasks.hosts import create_host

    return create_host(fleet, name)


def test_refused_credentials_fail_at_once(fleet: Fleet, oci_api: OciStandIn) -> None:
    oci_api.reject_credentials = True
    with pytest.raises(ProviderAuthError, match="oci-tasks"):
        create_one(fleet, "arm-1")
    # one attempt: its first request was refused, and no retry asked again
    assert len(oci_api.requests) == 1


def test_an_exhausted_quota_fails_at_once(fleet: Fleet, oci_api: OciStandIn) -> None:
    oci_api.fail("POST", "/instances", 400, "LimitExceeded", "core count", times=None)
    with pytest.raises(QuotaError):
        create_one(fleet, "arm-1")
    assert len(oci_api.calls("POST", "/instances")) == 3  # one pass over the three ADs


def test_throttling_is_retried_and_the_create_finishes(fleet: Fleet, oci_api: OciStandIn) -> None:
    oci_api.fail(
        "POST", "/instances", 429, "TooManyRequests", "slow down", headers={"Retry-After": "1"}
    )
    record = create_one(fleet, "arm-1")
    assert record.state == "running" and record.address
    launches = oci_api.calls("POST", "/instances")
    assert len(launches) == 2  # the throttled launch, then the retry's
    assert len(oci_api.instances) == 1
