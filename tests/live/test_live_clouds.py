"""Live tests against real cloud accounts. Skipped unless the operator opts in.

    GRADIENTLAB_LIVE_OCI=fleet-oci.yaml make test        (likewise _GCP, _AZURE)

The fleet file names one host on that cloud and a credentials block registered on the Prefect
server `PREFECT_API_URL` points at. The test plans, creates the host, checks that it answers SSH
with its pinned key, and terminates it. It costs what one small VM costs for a few minutes."""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.live


@pytest.mark.parametrize("cloud", ["OCI", "GCP", "AZURE"])
def test_a_host_is_created_reached_and_terminated(cloud: str) -> None:
    fleet_path = os.environ.get(f"GRADIENTLAB_LIVE_{cloud}")
    if not fleet_path:
        pytest.skip(f"set GRADIENTLAB_LIVE_{cloud} to a fleet file to run against {cloud}")
    from deployments.blocks import load_cloud_credentials
    from gradientlab.config import load_fleet
    from gradientlab.inventory import executor_for, provider_for
    from gradientlab.remote.keys import operator_public_key

    fleet = load_fleet(fleet_path)
    spec = fleet.hosts[0]
    provider = provider_for(fleet, spec.provider, load_cloud_credentials)
    assert provider.plan(spec).action in ("create", "keep")
    record = provider.create(spec, operator_public_key())
    try:
        assert record.host_key.startswith("ssh-ed25519 ")
        result = executor_for(record).run(
            "cloud-init status --wait >/dev/null; echo ok", timeout=900
        )
        assert result.stdout.strip() == "ok"
    finally:
        provider.terminate(spec.name)
    gone = provider.get(spec.name)
    assert gone is None or gone.state == "terminated"
