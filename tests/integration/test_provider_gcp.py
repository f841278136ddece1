"""The Google Cloud provider against a local Compute Engine stand-in, through the real SDK clients.

Every test asserts what `google-cloud-compute` actually put on the wire (path, query, JSON body),
so the requests are the ones a real project would receive."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from google.auth.credentials import AnonymousCredentials

from gradientlab.config import GcpSettings, HostSettings
from gradientlab.providers.base import (
    CapacityError,
    ProviderAuthError,
    ProviderError,
    ProviderNotFound,
    ProviderRateLimited,
    QuotaError,
)
from gradientlab.providers.gcp import DATA_CENTRE_WARNING, GcpCloudProvider, gce_name
from tests.standins.gcp_api import ComputeStandIn

PROJECT = "demo-project"
ZONE = "us-central1-a"
CIDR = "198.51.100.0/24"
OPERATOR_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOperatorKeyForTests op@laptop"
INSTANCES = f"/compute/v1/projects/{PROJECT}/zones/{ZONE}/instances"
FIREWALLS = f"/compute/v1/projects/{PROJECT}/global/firewalls"
IMAGE_FAMILY = "/compute/v1/projects/debian-cloud/global/images/family/debian-12"

Factory = Callable[..., GcpCloudProvider]


@pytest.fixture
def api() -> Iterator[tuple[ComputeStandIn, str]]:
    standin = ComputeStandIn()
    with standin.serve() as url:
        yield standin, url


@pytest.fixture
def standin(api: tuple[ComputeStandIn, str]) -> ComputeStandIn:
    return api[0]


@pytest.fixture
def make(api: tuple[ComputeStandIn, str]) -> Iterator[Factory]:
    _, url = api
    sleeps: list[float] = []

    def factory(**settings: Any) -> GcpCloudProvider:
        fleet = settings.pop("fleet_name", "lab")
        defaults = {
            "credentials_block": "gcp-lab-creds",
            "operator_cidr": CIDR,
            "project": PROJECT,
            "endpoint": url,
            "zone": ZONE,
        }
        spec = GcpSettings(kind="gcp", **{**defaults, **settings})
        return GcpCloudProvider(
            "gcp",
            spec,
            AnonymousCredentials(),
            fleet_name=fleet,
            sleep=sleeps.append,
            poll_seconds=2.5,
        )

    factory.sleeps = sleeps  # type: ignore[attr-defined]
    yield factory


def host(name: str = "alpha", **kw: Any) -> HostSettings:
    return HostSettings(name=name, provider="gcp", **kw)


def metadata_of(body: dict[str, Any]) -> dict[str, str]:
    return {item["key"]: item["value"] for item in body["metadata"]["items"]}


# -- create


def test_create_sends_the_exact_requests(standin: ComputeStandIn, make: Factory) -> None:
    provider = make()
    record = provider.create(host(), OPERATOR_KEY)

    # the image comes from its family, not from a hard-coded name
    assert [r.path for r in standin.calls("GET", "/images/")] == [IMAGE_FAMILY]

    allow, deny = [r.body for r in standin.calls("POST", f"^{FIREWALLS}$")]
    assert allow["name"] == "gradientlab-lab-ssh"
    assert allow["sourceRanges"] == [CIDR]
    assert allow["allowed"] == [{"IPProtocol": "tcp", "ports": ["22"]}]
    assert allow["targetTags"] == ["gradientlab-lab"]
    assert allow["direction"] == "INGRESS"
    assert allow["network"] == "global/networks/default"
    assert allow["priority"] == 1000
    assert "denied" not in allow
    # ...and a deny just below it, so the default network's allow-ssh-from-anywhere never applies
    assert deny["name"] == "gradientlab-lab-ssh-deny"
    assert deny["sourceRanges"] == ["0.0.0.0/0"]
    assert deny["denied"] == [{"IPProtocol": "tcp", "ports": ["22"]}]
    assert deny["targetTags"] == ["gradientlab-lab"]
    assert deny["priority"] == 1001
    assert "allowed" not in deny

    (insert,) = standin.calls("POST", f"^{INSTANCES}$")
    body = insert.body
    assert insert.query["requestId"] == provider.request_id("alpha")
    assert uuid.UUID(insert.query["requestId"]).version == 5
    assert body["name"] == "gradientlab-lab-alpha"
    assert body["machineType"] == f"zones/{ZONE}/machineTypes/e2-micro"
    assert body["labels"] == {"gradientlab-fleet": "lab", "gradientlab-host": "alpha"}
    assert body["tags"] == {"items": ["gradientlab-lab"]}
    (disk,) = body["disks"]
    assert disk["boot"] is True and disk["autoDelete"] is True
    params = disk["initializeParams"]
    assert params["sourceImage"] == standin.images[("debian-cloud", "debian-12")]["selfLink"]
    assert params["diskSizeGb"] == "10"
    assert params["diskType"] == f"zones/{ZONE}/diskTypes/pd-standard"
    (nic,) = body["networkInterfaces"]
    assert nic["network"] == "global/networks/default"
    assert nic["accessConfigs"] == [
        {"name": "External NAT", "type": "ONE_TO_ONE_NAT", "networkTier": "PREMIUM"}
    ]
    assert "serviceAccounts" not in body
    items = metadata_of(body)
    assert set(items) == {"ssh-keys", "user-data", "gradientlab-host-key", "enable-oslogin"}
    assert items["ssh-keys"] == f"gradientlab:{OPERATOR_KEY}"
    assert items["enable-oslogin"] == "FALSE"
    assert items["gradientlab-host-key"] == record.host_key
    assert record.host_key.startswith("ssh-ed25519 ")
    user_data = items["user-data"]
    assert user_data.startswith("#cloud-config\n")
    cloud_config = yaml.safe_load(user_data)
    assert cloud_config["ssh_keys"]["ed25519_public"] == record.host_key
    assert "PRIVATE KEY" in cloud_config["ssh_keys"]["ed25519_private"]
    assert cloud_config["users"][1]["name"] == "gradientlab"
    assert cloud_config["users"][1]["ssh_authorized_keys"] == [OPERATOR_KEY]
    # the guest agent must neither replace the pinned host key nor make the user a sudoer
    (agent_config,) = cloud_config["write_files"]
    assert agent_config["path"] == "/etc/default/instance_configs.cfg"
    assert "set_host_keys = false" in agent_config["content"]
    assert "accounts_daemon = false" in agent_config["content"]

    instance = standin.instances[(PROJECT, ZONE, "gradientlab-lab-alpha")]
    assert record.name == "alpha"
    assert record.provider == "gcp"
    assert record.address == instance["networkInterfaces"][0]["accessConfigs"][0]["natIP"]
    assert record.state == "running"
    assert record.ssh_port == 22 and record.ssh_user == "gradientlab"
    assert record.provider_ref == instance["selfLink"]
    assert record.region == "us-central1"
    assert record.hourly_cost_usd == 0.0
    assert record.meta["systemd"] is True
    assert record.meta["cloud"] == "gcp" and record.meta["zone"] == ZONE


def test_rerun_reuses_the_firewall_and_the_instance(standin: ComputeStandIn, make: Factory) -> None:
    first = make().create(host(), OPERATOR_KEY)
    before = len(standin.requests)
    again = make().create(host(), OPERATOR_KEY)

    rerun = standin.requests[before:]
    assert [r.method for r in rerun] == ["GET", "GET", "GET"]  # two rules, one instance
    assert again == first  # same address, same pinned host key from the instance's metadata
    assert len(standin.calls("POST", f"^{FIREWALLS}$")) == 2


def test_a_second_host_shares_the_fleet_firewall(standin: ComputeStandIn, make: Factory) -> None:
    provider = make()
    provider.create(host("alpha"), OPERATOR_KEY)
    beta = provider.create(host("beta"), OPERATOR_KEY)
    assert len(standin.calls("POST", f"^{FIREWALLS}$")) == 2
    assert beta.address and beta.address != provider.get("alpha").address  # type: ignore[union-attr]
    inserts = standin.calls("POST", f"^{INSTANCES}$")
    assert inserts[0].query["requestId"] != inserts[1].query["requestId"]


def test_a_drifted_firewall_rule_is_converged(standin: ComputeStandIn, make: Factory) -> None:
    make().create(host(), OPERATOR_KEY)
    standin.firewalls[(PROJECT, "gradientlab-lab-ssh")]["sourceRanges"] = ["0.0.0.0/0"]
    make().create(host(), OPERATOR_KEY)

    (update,) = standin.calls("PUT", f"{FIREWALLS}/")
    assert update.path == f"{FIREWALLS}/gradientlab-lab-ssh"
    assert update.body["sourceRanges"] == [CIDR]
    assert standin.firewalls[(PROJECT, "gradientlab-lab-ssh")]["sourceRanges"] == [CIDR]


def test_a_stray_source_tag_is_removed(standin: ComputeStandIn, make: Factory) -> None:
    make().create(host(), OPERATOR_KEY)
    standin.firewalls[(PROJECT, "gradientlab-lab-ssh")]["sourceTags"] = ["bastion"]
    make().create(host(), OPERATOR_KEY)
    (update,) = standin.calls("PUT", f"{FIREWALLS}/")
    assert "sourceTags" not in update.body
    assert "sourceTags" not in standin.firewalls[(PROJECT, "gradientlab-lab-ssh")]
    make().create(host(), OPERATOR_KEY)
    assert len(standin.calls("PUT")) == 1


def test_a_rule_made_meanwhile_is_reused(standin: ComputeStandIn, make: Factory) -> None:
    make().create(host("alpha"), OPERATOR_KEY)
    # another host's run created the rule between this run's look and its insert
    standin.fail("GET", f"{FIREWALLS}/gradientlab-lab-ssh$", 404, "notFound")
    make().create(host("beta"), OPERATOR_KEY)
    assert len(standin.calls("POST", f"^{FIREWALLS}$")) == 3  # the third answered 409
    assert len(standin.firewalls) == 2 and not standin.calls("PUT")


def test_a_disabled_firewall_rule_is_enabled(standin: ComputeStandIn, make: Factory) -> None:
    make().create(host(), OPERATOR_KEY)
    standin.firewalls[(PROJECT, "gradientlab-lab-ssh-deny")]["disabled"] = True
    make().create(host(), OPERATOR_KEY)
    (update,) = standin.calls("PUT", f"{FIREWALLS}/")
    assert update.path.endswith("/gradientlab-lab-ssh-deny") and update.body["disabled"] is False
    assert standin.firewalls[(PROJECT, "gradientlab-lab-ssh-deny")]["disabled"] is False


def test_a_rule_on_another_network_is_refused(standin: ComputeStandIn, make: Factory) -> None:
    make().create(host(), OPERATOR_KEY)
    with pytest.raises(ProviderError, match="is on network 'default', not 'lab-net'"):
        make(network="lab-net").create(host(), OPERATOR_KEY)
    assert not standin.calls("PUT")


def test_a_new_operator_range_moves_the_rule(standin: ComputeStandIn, make: Factory) -> None:
    make().create(host(), OPERATOR_KEY)
    make(operator_cidr="192.0.2.7/32").create(host(), OPERATOR_KEY)
    (update,) = standin.calls("PUT", f"{FIREWALLS}/")
    assert update.body["sourceRanges"] == ["192.0.2.7/32"]


def test_request_id_is_the_same_on_a_rerun(standin: ComputeStandIn, make: Factory) -> None:
    standin.fail("POST", f"^{INSTANCES}$", 429, "rateLimitExceeded", headers={"Retry-After": "7"})
    with pytest.raises(ProviderRateLimited) as caught:
        make().create(host(), OPERATOR_KEY)
    assert caught.value.retry_after == 7.0
    record = make().create(host(), OPERATOR_KEY)

    first, second = standin.calls("POST", f"^{INSTANCES}$")
    assert first.query["requestId"] == second.query["requestId"]
    assert record.state == "running"


def test_a_lost_insert_answer_converges_on_the_instance(
    standin: ComputeStandIn, make: Factory
) -> None:
    # the insert ran but its answer never arrived; the rerun finds the instance and its key
    standin.fail("POST", f"^{INSTANCES}$", 503, "backendError", after=True)
    with pytest.raises(ProviderError):
        make().create(host(), OPERATOR_KEY)
    (sent,) = standin.calls("POST", f"^{INSTANCES}$")
    record = make().create(host(), OPERATOR_KEY)

    assert len(standin.calls("POST", f"^{INSTANCES}$")) == 1
    assert record.host_key == metadata_of(sent.body)["gradientlab-host-key"]


def test_a_409_on_insert_converges(standin: ComputeStandIn, make: Factory) -> None:
    make().create(host(), OPERATOR_KEY)
    original = standin.instances[(PROJECT, ZONE, "gradientlab-lab-alpha")]
    # another run inserted it between our look and our insert
    standin.fail("GET", f"{INSTANCES}/gradientlab-lab-alpha$", 404, "notFound")
    standin.request_ids.clear()
    record = make().create(host(), OPERATOR_KEY)

    assert len(standin.calls("POST", f"^{INSTANCES}$")) == 2
    assert record.provider_ref == original["selfLink"]
    assert record.host_key == metadata_of(original)["gradientlab-host-key"]


def test_recreating_a_terminated_host_gets_past_the_old_request_id(
    standin: ComputeStandIn, make: Factory
) -> None:
    provider = make()
    first = provider.create(host(), OPERATOR_KEY)
    provider.terminate("alpha")
    assert provider.get("alpha") is None
    second = provider.create(host(), OPERATOR_KEY)

    ids = [r.query["requestId"] for r in standin.calls("POST", f"^{INSTANCES}$")]
    assert ids[0] == ids[1]  # Compute Engine answered the old operation...
    assert ids[2] != ids[0]  # ...so the next id is derived from it, deterministically
    old_op = standin.request_ids[ids[0]]
    assert ids[2] == provider.request_id("alpha", after=old_op)
    assert second.state == "running" and second.host_key != first.host_key


def test_an_old_failed_operation_does_not_block_a_retry(
    standin: ComputeStandIn, make: Factory
) -> None:
    standin.fail_next_insert("ZONE_RESOURCE_POOL_EXHAUSTED")
    with pytest.raises(CapacityError):
        make().create(host(), OPERATOR_KEY)
    # an hour later Compute Engine still returns that failed operation for the same request id
    for op in standin.operations.values():
        op["insertTime"] = (datetime.now(UTC) - timedelta(minutes=30)).isoformat()
    record = make().create(host(), OPERATOR_KEY)

    ids = [r.query["requestId"] for r in standin.calls("POST", f"^{INSTANCES}$")]
    assert len(ids) == 3 and ids[0] == ids[1] != ids[2]
    assert record.state == "running"


def test_operations_are_waited_on(standin: ComputeStandIn, make: Factory) -> None:
    standin.polls_before_done = 3
    provider = make()
    record = provider.create(host(), OPERATOR_KEY)

    waits = standin.calls("POST", "/operations/.*/wait$")
    zone_waits = [r for r in waits if "/zones/" in r.path]
    assert len(zone_waits) == 3
    assert all(
        r.path.startswith(f"/compute/v1/projects/{PROJECT}/zones/{ZONE}/operations/")
        for r in zone_waits
    )
    assert len(waits) - len(zone_waits) == 6  # two firewall inserts, three waits each
    assert make.sleeps == [2.5] * 6  # type: ignore[attr-defined]
    assert record.state == "running"


# -- errors


def test_zone_capacity_is_a_capacity_error(standin: ComputeStandIn, make: Factory) -> None:
    standin.fail_next_insert(
        "ZONE_RESOURCE_POOL_EXHAUSTED",
        "The zone 'projects/demo-project/zones/us-central1-a' does not have "
        "enough resources available to fulfill the request.",
    )
    with pytest.raises(CapacityError) as caught:
        make().create(host(), OPERATOR_KEY)
    assert ZONE in str(caught.value) and "ZONE_RESOURCE_POOL_EXHAUSTED" in str(caught.value)
    assert not standin.calls("DELETE")


def test_a_failed_insert_removes_what_it_left(standin: ComputeStandIn, make: Factory) -> None:
    standin.fail_next_insert("ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS", leave_instance=True)
    with pytest.raises(CapacityError):
        make().create(host(), OPERATOR_KEY)
    (delete,) = standin.calls("DELETE")
    assert delete.path == f"{INSTANCES}/gradientlab-lab-alpha"
    assert not standin.instances
    assert len(standin.firewalls) == 2  # shared by the fleet's hosts: kept


def test_quota_in_the_operation_is_a_quota_error(standin: ComputeStandIn, make: Factory) -> None:
    standin.fail_next_insert(
        "QUOTA_EXCEEDED", "Quota 'CPUS' exceeded.  Limit: 0.0", http_status=403
    )
    with pytest.raises(QuotaError, match="CPUS"):
        make().create(host(), OPERATOR_KEY)


def test_quota_on_the_call_is_a_quota_error(standin: ComputeStandIn, make: Factory) -> None:
    standin.fail(
        "POST",
        f"^{INSTANCES}$",
        403,
        "quotaExceeded",
        "Quota 'IN_USE_ADDRESSES' exceeded. Limit: 0.0 in region us-central1.",
    )
    with pytest.raises(QuotaError, match="IN_USE_ADDRESSES"):
        make().create(host(), OPERATOR_KEY)


def test_429_is_rate_limited(standin: ComputeStandIn, make: Factory) -> None:
    standin.fail("GET", "/firewalls/", 429, "tooManyRequests")
    with pytest.raises(ProviderRateLimited) as caught:
        make().create(host(), OPERATOR_KEY)
    assert caught.value.retry_after is None


def test_a_403_rate_limit_is_not_an_auth_error(standin: ComputeStandIn, make: Factory) -> None:
    standin.fail(
        "GET",
        "/instances/",
        403,
        "rateLimitExceeded",
        "Quota exceeded for quota metric 'Read requests' of service compute.googleapis.com",
    )
    with pytest.raises(ProviderRateLimited):
        make().get("alpha")


def test_403_names_the_credentials_block(standin: ComputeStandIn, make: Factory) -> None:
    standin.fail(
        "GET",
        "/firewalls/",
        403,
        "forbidden",
        "Required 'compute.firewalls.get' permission for 'projects/demo-project'",
    )
    with pytest.raises(ProviderAuthError) as caught:
        make().create(host(), OPERATOR_KEY)
    assert "gcp-lab-creds" in str(caught.value)
    assert "compute.firewalls.get" in str(caught.value)
    assert not standin.calls("POST")


def test_401_is_an_auth_error(standin: ComputeStandIn, make: Factory) -> None:
    standin.fail("GET", "/instances", 401, "authError", "Invalid Credentials")
    with pytest.raises(ProviderAuthError, match="gcp-lab-creds"):
        make().list()


def test_another_error_is_a_provider_error(standin: ComputeStandIn, make: Factory) -> None:
    standin.images.clear()
    with pytest.raises(ProviderError, match="image family debian-12") as caught:
        make().create(host(), OPERATOR_KEY)
    # a missing image family is a 404: not found, and trying again will not make it appear
    assert type(caught.value) is ProviderNotFound
    assert not caught.value.retryable


def test_an_unreachable_endpoint_says_so(make: Factory) -> None:
    provider = make(endpoint="http://127.0.0.1:9")
    with pytest.raises(ProviderError, match="could not reach http://127.0.0.1:9"):
        provider.get("alpha")


# -- reading


def test_a_vanished_instance_reads_as_none(standin: ComputeStandIn, make: Factory) -> None:
    provider = make()
    provider.create(host(), OPERATOR_KEY)
    standin.instances.clear()
    assert provider.get("alpha") is None
    assert provider.public_ip("alpha") is None
    provider.terminate("alpha")  # nothing to do, no error
    assert not standin.calls("DELETE")
    with pytest.raises(ProviderError, match="no host named 'alpha'"):
        provider.start("alpha")


def test_list_uses_the_fleet_label(standin: ComputeStandIn, make: Factory) -> None:
    make().create(host("alpha"), OPERATOR_KEY)
    make().create(host("beta"), OPERATOR_KEY)
    make(fleet_name="other").create(host("gamma"), OPERATOR_KEY)
    standin.put_instance(PROJECT, ZONE, {"name": "someone-elses-vm"})

    records = make().list()
    (listing,) = standin.calls("GET", f"^{INSTANCES}$")
    assert listing.query["filter"] == "labels.gradientlab-fleet=lab"
    assert [r.name for r in records] == ["alpha", "beta"]
    assert all(r.meta["cloud"] == "gcp" for r in records)


def test_an_instance_that_is_not_ours_is_left_alone(standin: ComputeStandIn, make: Factory) -> None:
    standin.put_instance(PROJECT, ZONE, {"name": "gradientlab-lab-alpha"})
    provider = make()
    assert provider.get("alpha") is None
    assert any("not GradientLab's" in w for w in provider.plan(host()).warnings)
    with pytest.raises(ProviderError, match="not GradientLab's"):
        provider.create(host(), OPERATOR_KEY)
    with pytest.raises(ProviderError, match="not GradientLab's"):
        provider.terminate("alpha")
    assert not standin.calls("POST", f"^{INSTANCES}") and not standin.calls("DELETE")


def test_states_map_to_gradientlab_states(standin: ComputeStandIn, make: Factory) -> None:
    provider = make()
    provider.create(host(), OPERATOR_KEY)
    instance = standin.instances[(PROJECT, ZONE, "gradientlab-lab-alpha")]
    for status, state in [
        ("RUNNING", "running"),
        ("TERMINATED", "stopped"),
        ("STOPPED", "stopped"),
        ("SUSPENDED", "stopped"),
        ("PROVISIONING", "provisioning"),
        ("STAGING", "provisioning"),
    ]:
        instance["status"] = status
        assert provider.get("alpha").state == state  # type: ignore[union-attr]


# -- lifecycle


def test_stop_start_reboot_terminate(standin: ComputeStandIn, make: Factory) -> None:
    provider = make()
    created = provider.create(host(), OPERATOR_KEY)

    stopped = provider.stop("alpha")
    assert stopped.state == "stopped" and stopped.address == ""
    assert provider.stop("alpha").state == "stopped"
    started = provider.start("alpha")
    assert started.state == "running" and started.address not in ("", created.address)
    assert started.host_key == created.host_key
    provider.start("alpha")
    assert provider.reboot("alpha").state == "running"
    assert [r.path.rsplit("/", 1)[1] for r in standin.calls("POST", f"{INSTANCES}/")] == [
        "stop",
        "start",
        "reset",
    ]

    provider.terminate("alpha")
    assert standin.calls("DELETE")[0].path == f"{INSTANCES}/gradientlab-lab-alpha"
    assert provider.get("alpha") is None
    assert len(standin.firewalls) == 2


def test_reboot_of_a_stopped_host_starts_it(standin: ComputeStandIn, make: Factory) -> None:
    provider = make()
    provider.create(host(), OPERATOR_KEY)
    provider.stop("alpha")
    assert provider.reboot("alpha").state == "running"
    assert not standin.calls("POST", "/reset$")


def test_create_starts_a_stopped_host(standin: ComputeStandIn, make: Factory) -> None:
    provider = make()
    provider.create(host(), OPERATOR_KEY)
    provider.stop("alpha")
    assert provider.create(host(), OPERATOR_KEY).state == "running"
    assert len(standin.calls("POST", f"^{INSTANCES}$")) == 1
    assert standin.calls("POST", "/start$")


def test_a_provisioning_instance_is_waited_for(standin: ComputeStandIn, make: Factory) -> None:
    provider = make()
    provider.create(host(), OPERATOR_KEY)
    instance = standin.instances[(PROJECT, ZONE, "gradientlab-lab-alpha")]
    instance["status"] = "STAGING"
    gets = 0
    original = standin.handle

    def handle(method: str, path: str, query: dict[str, str], body: Any) -> Any:
        nonlocal gets
        if method == "GET" and path.endswith("/gradientlab-lab-alpha"):
            gets += 1
            if gets == 3:
                instance["status"] = "RUNNING"
        return original(method, path, query, body)

    standin.handle = handle  # type: ignore[method-assign]
    assert provider.create(host(), OPERATOR_KEY).state == "running"
    assert make.sleeps == [2.5, 2.5]  # type: ignore[attr-defined]


# -- planning


def test_plan_in_a_free_region(make: Factory) -> None:
    plan = make().plan(host())
    assert plan.action == "create"
    assert plan.free_tier is True
    assert plan.monthly_cost_usd == 0.0
    assert plan.region == "us-central1"
    assert DATA_CENTRE_WARNING in plan.warnings
    assert not any("outside" in w for w in plan.warnings)


def test_plan_outside_the_free_regions(make: Factory) -> None:
    plan = make(zone="europe-west1-b").plan(host())
    assert plan.free_tier is False
    assert 6.0 <= plan.monthly_cost_usd <= 7.0
    assert plan.region == "europe-west1"
    assert any("europe-west1-b is outside" in w for w in plan.warnings)
    assert DATA_CENTRE_WARNING in plan.warnings


def test_plan_keeps_an_existing_host_and_bills_a_second(make: Factory) -> None:
    provider = make()
    provider.create(host("alpha"), OPERATOR_KEY)
    assert provider.plan(host("alpha")).action == "keep"
    second = provider.plan(host("beta"))
    assert second.action == "create" and second.free_tier is False
    assert 6.0 <= second.monthly_cost_usd <= 7.0
    assert any("alpha already uses the free e2-micro" in w for w in second.warnings)


def test_plan_and_create_refuse_another_zone(standin: ComputeStandIn, make: Factory) -> None:
    provider = make()
    assert any("add a gcp provider" in w for w in provider.plan(host(region="asia-east1")).warnings)
    assert provider.plan(host(region="us-central1")).free_tier is True
    with pytest.raises(ProviderError, match="asia-east1"):
        provider.create(host(region="asia-east1"), OPERATOR_KEY)
    assert not standin.calls("POST")


# -- names


def test_names_are_valid_compute_engine_names(make: Factory) -> None:
    assert gce_name("gradientlab", "lab", "alpha") == "gradientlab-lab-alpha"
    long = gce_name("gradientlab", "f" * 31, "h" * 31)
    assert len(long) <= 63 and long.startswith("gradientlab-fff")
    assert long == gce_name("gradientlab", "f" * 31, "h" * 31)
    assert long != gce_name("gradientlab", "f" * 31, "h" * 30 + "i")
    trailing = gce_name("gradientlab", "lab", "alpha-")
    assert not trailing.endswith("-")
    with pytest.raises(ProviderError, match="zone"):
        make(zone="us-central1")
