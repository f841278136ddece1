"""The OCI provider against a local stand-in of OCI's Core and Identity APIs.

The real `oci` SDK clients send every request to the stand-in, which records it; the tests
assert what the provider asked OCI to do, request by request."""

from __future__ import annotations

import base64
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gradientlab.config import HostSettings, OciSettings
from gradientlab.providers.base import (
    FLEET_TAG,
    HOST_KEY_TAG,
    HOST_TAG,
    CapacityError,
    ProviderAuthError,
    ProviderError,
    ProviderRateLimited,
    QuotaError,
)
from gradientlab.providers.oci import UNSUPPORTED_WARNING, OciCloudProvider, credentials_from
from tests.standins.oci_api import ADS, NOT_FOUND, STANDIN_CONFIG, OciStandIn, StandInSigner

COMPARTMENT = "ocid1.compartment.oc1..aaaaaaaagradientlabtest"
OPERATOR = "203.0.113.7/32"
OPERATOR_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOperatorKeyUsedOnlyInTests operator@laptop"
NETWORK = r"/(vcns|internetGateways|routeTables|securityLists|subnets)"
INSTANCE = r"/instances/[^/]+"

Factory = Callable[..., OciCloudProvider]


@pytest.fixture()
def api() -> Iterator[OciStandIn]:
    standin = OciStandIn(COMPARTMENT)
    standin.start()
    yield standin
    standin.stop()


@pytest.fixture()
def sleeps() -> list[float]:
    return []


@pytest.fixture()
def make(api: OciStandIn, sleeps: list[float]) -> Factory:
    def factory(fleet: str = "test", **settings: Any) -> OciCloudProvider:
        timing = {
            k: settings.pop(k)
            for k in ("launch_timeout_seconds", "capacity_passes")
            if k in settings
        }
        values = {
            "kind": "oci",
            "credentials_block": "oci-test",
            "operator_cidr": OPERATOR,
            "compartment_id": COMPARTMENT,
            "endpoint": api.url,
            **settings,
        }
        return OciCloudProvider(
            "oci",
            OciSettings(**values),
            config=dict(STANDIN_CONFIG),
            signer=StandInSigner(),
            fleet_name=fleet,
            sleep=sleeps.append,
            poll_seconds=0.01,
            **timing,
        )

    return factory


def host(name: str, **kw: Any) -> HostSettings:
    return HostSettings(name=name, provider="oci", **kw)


def sequence(api: OciStandIn, since: int = 0) -> list[tuple[str, str]]:
    """The requests as (method, path), instance and VNIC OCIDs shortened to `{id}`."""
    out = []
    for r in api.requests[since:]:
        path = r.path
        for prefix in ("/instances/", "/vnics/", "/securityLists/", "/subnets/", "/routeTables/"):
            if path.startswith(prefix):
                path = prefix + "{id}"
        out.append((r.method, path))
    return out


def launches(api: OciStandIn) -> list[Any]:
    return api.calls("POST", "/instances")


# -------------------------------------------------------------------------- create and network


def test_first_create_builds_the_network_then_launches(make: Factory, api: OciStandIn) -> None:
    record = make().create(host("a"), OPERATOR_KEY)

    assert sequence(api) == [
        ("GET", "/instances"),
        ("GET", "/vcns"),
        ("POST", "/vcns"),
        ("GET", "/internetGateways"),
        ("POST", "/internetGateways"),
        ("GET", "/routeTables"),
        ("POST", "/routeTables"),
        ("GET", "/securityLists"),
        ("POST", "/securityLists"),
        ("GET", "/subnets"),
        ("POST", "/subnets"),
        ("GET", "/images"),
        ("GET", "/availabilityDomains"),
        ("POST", "/instances"),
        ("GET", "/instances/{id}"),  # PROVISIONING
        ("GET", "/instances/{id}"),  # RUNNING
        ("GET", "/vnicAttachments"),
        ("GET", "/vnics/{id}"),
    ]
    vcn = api.calls("POST", "/vcns")[0].body
    assert vcn == {
        "cidrBlocks": ["10.42.0.0/16"],
        "compartmentId": COMPARTMENT,
        "displayName": "gradientlab-test",
        "freeformTags": {FLEET_TAG: "test"},
    }
    assert api.calls("GET", "/vcns")[0].query == {
        "compartmentId": COMPARTMENT,
        "displayName": "gradientlab-test",
    }
    igw = api.calls("POST", "/internetGateways")[0].body
    assert igw["isEnabled"] is True
    igw_id = next(iter(api.network["internetGateways"]))
    routes = api.calls("POST", "/routeTables")[0].body["routeRules"]
    assert [(r["destination"], r["destinationType"], r["networkEntityId"]) for r in routes] == [
        ("0.0.0.0/0", "CIDR_BLOCK", igw_id)
    ]
    assert api.calls("GET", "/availabilityDomains")[0].query == {
        "compartmentId": STANDIN_CONFIG["tenancy"]
    }
    assert record.state == "running"
    assert record.address == "129.213.40.11"
    assert record.ssh_port == 22
    assert record.ssh_user == "gradientlab"
    assert record.provider == "oci"
    assert record.region == "us-ashburn-1"
    assert record.hourly_cost_usd == 0.0
    assert record.provider_ref.startswith("ocid1.instance.")
    assert record.meta == {
        "systemd": True,
        "cloud": "oci",
        "availability_domain": ADS[0],
        "shape": "VM.Standard.E2.1.Micro",
    }


def test_security_list_lets_in_ssh_from_the_operator_only(make: Factory, api: OciStandIn) -> None:
    make().create(host("a"), OPERATOR_KEY)

    rules = api.calls("POST", "/securityLists")[0].body
    assert rules["displayName"] == "gradientlab-test-ssh"
    assert rules["ingressSecurityRules"] == [
        {
            "protocol": "6",
            "source": OPERATOR,
            "sourceType": "CIDR_BLOCK",
            "isStateless": False,
            "tcpOptions": {"destinationPortRange": {"min": 22, "max": 22}},
            "description": "SSH from the operator",
        }
    ]
    assert rules["egressSecurityRules"] == [
        {
            "protocol": "all",
            "destination": "0.0.0.0/0",
            "destinationType": "CIDR_BLOCK",
            "isStateless": False,
            "description": "all outbound",
        }
    ]
    # the subnet carries our list alone, never the VCN's default (SSH from anywhere)
    ours = next(
        sl["id"]
        for sl in api.network["securityLists"].values()
        if sl["displayName"] == "gradientlab-test-ssh"
    )
    vcn = next(iter(api.network["vcns"].values()))
    subnet = api.calls("POST", "/subnets")[0].body
    assert subnet["securityListIds"] == [ours]
    assert vcn["defaultSecurityListId"] not in subnet["securityListIds"]
    assert subnet["cidrBlock"] == "10.42.1.0/24"
    assert subnet["prohibitPublicIpOnVnic"] is False
    assert "availabilityDomain" not in subnet  # regional: every AD can use it
    launch = launches(api)[0].body
    assert launch["createVnicDetails"]["subnetId"] == next(iter(api.network["subnets"]))
    assert launch["createVnicDetails"]["assignPublicIp"] is True


def test_network_is_reused_by_later_creates(make: Factory, api: OciStandIn) -> None:
    make().create(host("a"), OPERATOR_KEY)
    mark = len(api.requests)
    make().create(host("b"), OPERATOR_KEY)  # a new provider object, as in another flow run

    for kind in ("vcns", "internetGateways", "routeTables", "securityLists", "subnets"):
        assert len(api.calls("POST", f"/{kind}")) == 1, kind
    assert not api.calls("PUT", NETWORK + r"/.*")
    assert sequence(api, mark)[:8] == [
        ("GET", "/instances"),
        ("GET", "/vcns"),
        ("GET", "/internetGateways"),
        ("GET", "/routeTables"),
        ("GET", "/securityLists"),
        ("GET", "/subnets"),
        ("GET", "/images"),
        ("GET", "/availabilityDomains"),
    ]
    assert len(api.network["vcns"]) == 1
    assert len(launches(api)) == 2


def test_changed_operator_range_rewrites_the_security_list(make: Factory, api: OciStandIn) -> None:
    make().create(host("a"), OPERATOR_KEY)
    make(operator_cidr="198.51.100.0/24").create(host("b"), OPERATOR_KEY)

    assert len(api.calls("POST", "/securityLists")) == 1
    (update,) = api.calls("PUT", "/securityLists/.*")
    assert [r["source"] for r in update.body["ingressSecurityRules"]] == ["198.51.100.0/24"]
    assert [
        r["tcpOptions"]["destinationPortRange"] for r in update.body["ingressSecurityRules"]
    ] == [{"min": 22, "max": 22}]


def test_create_of_an_existing_host_changes_nothing(make: Factory, api: OciStandIn) -> None:
    first = make().create(host("a"), OPERATOR_KEY)
    mark = len(api.requests)
    again = make().create(host("a"), OPERATOR_KEY)

    assert again == first
    assert all(method == "GET" for method, _ in sequence(api, mark))
    assert len(api.instances) == 1


def test_image_is_the_newest_for_os_version_and_shape(make: Factory, api: OciStandIn) -> None:
    make().create(host("a"), OPERATOR_KEY)

    (lookup,) = api.calls("GET", "/images")
    assert lookup.query == {
        "compartmentId": COMPARTMENT,
        "operatingSystem": "Canonical Ubuntu",
        "operatingSystemVersion": "24.04",
        "shape": "VM.Standard.E2.1.Micro",
        "sortBy": "TIMECREATED",
        "sortOrder": "DESC",
    }
    assert launches(api)[0].body["sourceDetails"] == {
        "sourceType": "image",
        "imageId": "ocid1.image.oc1.iad.image2",
    }


def test_launch_request_tags_user_data_and_host_key(make: Factory, api: OciStandIn) -> None:
    record = make().create(host("a"), OPERATOR_KEY)

    (launch,) = launches(api)
    body = launch.body
    assert body["displayName"] == "gradientlab-test-a"
    assert body["shape"] == "VM.Standard.E2.1.Micro"
    assert "shapeConfig" not in body  # fixed shape
    assert body["compartmentId"] == COMPARTMENT
    assert body["freeformTags"] == {
        FLEET_TAG: "test",
        HOST_TAG: "a",
        HOST_KEY_TAG: record.host_key,
    }
    assert record.host_key.startswith("ssh-ed25519 AAAA")
    assert body["metadata"]["ssh_authorized_keys"] == OPERATOR_KEY
    user_data = base64.b64decode(body["metadata"]["user_data"]).decode()
    assert user_data.startswith("#cloud-config\n")
    cloud = yaml.safe_load(user_data)
    assert cloud["hostname"] == "a"
    assert cloud["users"][1]["name"] == "gradientlab"
    assert cloud["users"][1]["ssh_authorized_keys"] == [OPERATOR_KEY]
    assert cloud["ssh_keys"]["ed25519_public"] == record.host_key
    # the private half in user data is the key whose public half we pin
    private = serialization.load_ssh_private_key(
        cloud["ssh_keys"]["ed25519_private"].encode(), password=None
    )
    public = private.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    assert public.decode() == record.host_key
    # get() and list() read the same pinned key back from the tag
    provider = make()
    got = provider.get("a")
    assert got is not None and got.host_key == record.host_key
    assert [r.host_key for r in provider.list()] == [record.host_key]


def test_a1_flex_sends_its_shape_config_and_an_arm_image(make: Factory, api: OciStandIn) -> None:
    record = make(shape="VM.Standard.A1.Flex", ocpus=2, memory_gbs=12).create(
        host("a"), OPERATOR_KEY
    )

    body = launches(api)[0].body
    assert body["shape"] == "VM.Standard.A1.Flex"
    assert body["shapeConfig"] == {"ocpus": 2.0, "memoryInGBs": 12.0}
    assert api.calls("GET", "/images")[0].query["shape"] == "VM.Standard.A1.Flex"
    assert body["sourceDetails"]["imageId"] == "ocid1.image.oc1.iad.image5"
    assert record.hourly_cost_usd == 0.0  # within the Always Free 4 OCPUs / 24 GB


def test_a1_flex_defaults_to_one_ocpu_and_six_gb(make: Factory, api: OciStandIn) -> None:
    make(shape="VM.Standard.A1.Flex").create(host("a"), OPERATOR_KEY)
    assert launches(api)[0].body["shapeConfig"] == {"ocpus": 1.0, "memoryInGBs": 6.0}


# --------------------------------------------------------------------------------- retry tokens


def test_retry_token_is_deterministic_and_replayed_on_rerun(make: Factory, api: OciStandIn) -> None:
    first = make().create(host("a"), OPERATOR_KEY)
    token = launches(api)[0].headers["opc-retry-token"]
    assert token == make().retry_token("a", ADS[0])
    assert token != make().retry_token("b", ADS[0])
    assert token != make(fleet="other").retry_token("a", ADS[0])
    assert 0 < len(token) <= 64

    # OCI's list lags behind a launch: the rerun does not see the instance and launches again
    api.hidden_from_lists.add(first.provider_ref)
    again = make().create(host("a"), OPERATOR_KEY)

    assert [r.headers["opc-retry-token"] for r in launches(api)] == [token, token]
    assert again.provider_ref == first.provider_ref
    assert again.host_key == first.host_key  # from the instance's tag, not this run's new key
    assert len(api.instances) == 1


def test_recreate_after_terminate_does_not_replay_the_old_launch(
    make: Factory, api: OciStandIn
) -> None:
    provider = make()
    old = provider.create(host("a"), OPERATOR_KEY)
    provider.terminate("a")
    assert provider.get("a") is None  # now TERMINATED

    new = provider.create(host("a"), OPERATOR_KEY)

    first, second, third = launches(api)
    assert second.headers["opc-retry-token"] == first.headers["opc-retry-token"]
    assert third.headers["opc-retry-token"] == provider.retry_token("a", ADS[0], old.provider_ref)
    assert new.provider_ref != old.provider_ref
    assert new.state == "running"


# ------------------------------------------------------------------------------ capacity errors


def capacity_in(*ads: str) -> Callable[[Any], bool]:
    return lambda rec: rec.body["availabilityDomain"] in ads


def test_out_of_capacity_moves_to_the_next_availability_domain(
    make: Factory, api: OciStandIn, sleeps: list[float]
) -> None:
    api.fail(
        "POST",
        "/instances",
        500,
        "InternalError",
        "Out of host capacity.",
        times=None,
        when=capacity_in(ADS[0]),
    )
    record = make(shape="VM.Standard.A1.Flex").create(host("a"), OPERATOR_KEY)

    tried = launches(api)
    assert [r.body["availabilityDomain"] for r in tried] == [ADS[0], ADS[1]]
    assert tried[0].headers["opc-retry-token"] != tried[1].headers["opc-retry-token"]
    assert record.meta["availability_domain"] == ADS[1]
    assert [s for s in sleeps if s >= 1] == []  # no backoff: the second AD answered
    assert len(api.instances) == 1


def test_no_capacity_anywhere_raises_capacity_error_naming_shape_and_ads(
    make: Factory, api: OciStandIn, sleeps: list[float]
) -> None:
    api.fail("POST", "/instances", 500, "InternalError", "Out of host capacity.", times=None)

    with pytest.raises(CapacityError) as caught:
        make(shape="VM.Standard.A1.Flex").create(host("a"), OPERATOR_KEY)

    message = str(caught.value)
    assert "VM.Standard.A1.Flex" in message
    for ad in ADS:
        assert ad in message
    assert [r.body["availabilityDomain"] for r in launches(api)] == list(ADS) * 3
    assert [s for s in sleeps if s >= 1] == [30.0, 60.0]  # backoff between passes
    assert not api.instances
    assert not api.calls("DELETE", INSTANCE)


def test_limit_exceeded_everywhere_is_a_quota_error(
    make: Factory, api: OciStandIn, sleeps: list[float]
) -> None:
    api.fail(
        "POST",
        "/instances",
        400,
        "LimitExceeded",
        "The following service limits were exceeded: standard-e2-micro-core-count.",
        times=None,
    )
    with pytest.raises(QuotaError) as caught:
        make().create(host("a"), OPERATOR_KEY)
    assert "standard-e2-micro-core-count" in str(caught.value)
    assert ADS[2] in str(caught.value)
    assert len(launches(api)) == 3  # one pass over the ADs: waiting does not raise a limit
    assert [s for s in sleeps if s >= 1] == []


def test_other_launch_failures_are_not_retried(make: Factory, api: OciStandIn) -> None:
    api.fail("POST", "/instances", 400, "InvalidParameter", "Invalid metadata", times=None)
    with pytest.raises(ProviderError, match="400 InvalidParameter") as caught:
        make().create(host("a"), OPERATOR_KEY)
    assert type(caught.value) is ProviderError
    assert len(launches(api)) == 1


# ---------------------------------------------------------------------- throttling and auth


def test_throttled_launch_is_rate_limited_with_retry_after(make: Factory, api: OciStandIn) -> None:
    api.fail(
        "POST",
        "/instances",
        429,
        "TooManyRequests",
        "Too many requests for the user",
        headers={"retry-after": "7"},
    )
    with pytest.raises(ProviderRateLimited) as caught:
        make().create(host("a"), OPERATOR_KEY)
    assert caught.value.retry_after == 7.0
    assert len(launches(api)) == 1


def test_refused_credentials_name_the_block(make: Factory, api: OciStandIn) -> None:
    api.reject_credentials = True
    provider = make()
    with pytest.raises(ProviderAuthError, match="'oci-test'"):
        provider.create(host("a"), OPERATOR_KEY)
    with pytest.raises(ProviderAuthError, match="401 NotAuthenticated"):
        provider.get("a")


def test_every_request_is_signed(make: Factory, api: OciStandIn) -> None:
    make().create(host("a"), OPERATOR_KEY)
    assert all("authorization" in r.headers for r in api.requests)


def test_missing_credentials_name_the_block() -> None:
    settings = OciSettings(
        kind="oci",
        credentials_block="oci-prod",
        operator_cidr=OPERATOR,
        compartment_id=COMPARTMENT,
    )
    with pytest.raises(ProviderAuthError, match="'oci-prod'"):
        OciCloudProvider("oci", settings)


def test_unreachable_endpoint_says_so(api: OciStandIn) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = OciSettings(
        kind="oci",
        credentials_block="oci-test",
        operator_cidr=OPERATOR,
        compartment_id=COMPARTMENT,
        endpoint=f"http://127.0.0.1:{port}",
    )
    provider = OciCloudProvider(
        "oci", settings, config=dict(STANDIN_CONFIG), signer=StandInSigner()
    )
    with pytest.raises(ProviderError, match="cannot reach OCI"):
        provider.get("a")


# ------------------------------------------------------------------------- get, list, failures


def test_server_error_on_get_is_raised_not_taken_for_a_lost_host(
    make: Factory, api: OciStandIn
) -> None:
    make().create(host("a"), OPERATOR_KEY)
    api.fail("GET", INSTANCE, 500, "InternalError", "Internal error occurred", times=None)

    with pytest.raises(ProviderError) as caught:
        make().get("a")
    message = str(caught.value)
    assert "500 InternalError" in message and "host a" in message and "retry later" in message
    assert "opc-request-id" in message


def test_throttled_list_is_not_retried_behind_our_back(make: Factory, api: OciStandIn) -> None:
    api.fail("GET", "/instances", 429, "TooManyRequests", "Too many requests", times=None)
    with pytest.raises(ProviderRateLimited):
        make().list()
    assert len(api.calls("GET", "/instances")) == 1  # the SDK's own retries are off


def test_vanished_instance_reads_as_none(make: Factory, api: OciStandIn) -> None:
    make().create(host("a"), OPERATOR_KEY)
    api.fail("GET", INSTANCE, 404, *NOT_FOUND, times=None)

    provider = make()
    assert provider.get("a") is None
    assert provider.public_ip("a") is None
    with pytest.raises(ProviderError, match="no host named 'a'"):
        provider.start("a")


def test_unknown_host_reads_as_none(make: Factory) -> None:
    provider = make()
    assert provider.get("nope") is None
    assert provider.public_ip("nope") is None
    assert provider.list() == []


def test_list_returns_only_this_fleets_live_instances(make: Factory, api: OciStandIn) -> None:
    api.add_instance("someone-elses-vm", {})
    api.add_instance(
        "gradientlab-other-a",
        {FLEET_TAG: "other", HOST_TAG: "a", HOST_KEY_TAG: "ssh-ed25519 AAAAx"},
    )
    api.add_instance(
        "gradientlab-test-old",
        {FLEET_TAG: "test", HOST_TAG: "old", HOST_KEY_TAG: "ssh-ed25519 AAAAy"},
        state="TERMINATED",
    )
    provider = make()
    a = provider.create(host("a"), OPERATOR_KEY)
    b = provider.create(host("b"), OPERATOR_KEY)
    provider.stop("b")

    listed = provider.list()
    assert [(r.name, r.state, r.address) for r in listed] == [
        ("a", "running", a.address),
        ("b", "stopped", b.address),
    ]
    assert provider.public_ip("a") == a.address

    api.page_size = 1  # OCI pages its lists; all pages are read
    assert [r.name for r in provider.list()] == ["a", "b"]


def test_instance_without_its_host_key_tag_pins_no_key(make: Factory, api: OciStandIn) -> None:
    api.add_instance("gradientlab-test-x", {FLEET_TAG: "test", HOST_TAG: "x"})
    record = make().get("x")
    assert record is not None and record.state == "running"
    assert record.host_key == ""  # the SSH layer then refuses it until a key is trusted


def test_wait_failure_after_launch_terminates_what_was_launched(
    make: Factory, api: OciStandIn
) -> None:
    api.provisioning_polls = 10**6  # stuck in PROVISIONING
    with pytest.raises(ProviderError, match="still PROVISIONING") as caught:
        make(launch_timeout_seconds=0.05).create(host("a"), OPERATOR_KEY)

    (launched,) = api.instances
    (delete,) = api.calls("DELETE", INSTANCE)
    assert delete.path == f"/instances/{launched}"
    assert delete.query == {"preserveBootVolume": "false"}
    assert any(launched in note for note in caught.value.__notes__)


def test_throttled_wait_after_launch_also_terminates(make: Factory, api: OciStandIn) -> None:
    api.fail("GET", INSTANCE, 429, "TooManyRequests", "Too many requests", times=None)
    with pytest.raises(ProviderRateLimited):
        make().create(host("a"), OPERATOR_KEY)
    assert len(api.calls("DELETE", INSTANCE)) == 1


# ----------------------------------------------------------------- power actions and terminate


def test_stop_start_reboot_send_instance_actions(make: Factory, api: OciStandIn) -> None:
    provider = make()
    record = provider.create(host("a"), OPERATOR_KEY)

    assert provider.stop("a").state == "stopped"
    assert provider.stop("a").state == "stopped"  # already stopped: no second STOP
    assert provider.start("a").state == "running"
    assert provider.reboot("a").state == "running"

    actions = [(r.path, r.query) for r in api.calls("POST", INSTANCE)]
    path = f"/instances/{record.provider_ref}"
    assert actions == [
        (path, {"action": "STOP"}),
        (path, {"action": "START"}),
        (path, {"action": "SOFTRESET"}),
    ]


def test_create_starts_a_stopped_host(make: Factory, api: OciStandIn) -> None:
    provider = make()
    record = provider.create(host("a"), OPERATOR_KEY)
    provider.stop("a")

    again = provider.create(host("a"), OPERATOR_KEY)

    assert again.state == "running" and again.provider_ref == record.provider_ref
    assert api.calls("POST", INSTANCE)[-1].query == {"action": "START"}
    assert len(launches(api)) == 1


def test_terminate_deletes_the_instance_and_its_boot_volume_only(
    make: Factory, api: OciStandIn
) -> None:
    provider = make()
    a = provider.create(host("a"), OPERATOR_KEY)
    provider.create(host("b"), OPERATOR_KEY)

    provider.terminate("a")

    (delete,) = api.calls("DELETE", r".*")
    assert delete.path == f"/instances/{a.provider_ref}"
    assert delete.query == {"preserveBootVolume": "false"}
    assert [(r.name, r.state) for r in provider.list()] == [("a", "terminated"), ("b", "running")]
    assert provider.get("a") is None
    assert [r.name for r in provider.list()] == ["b"]
    assert len(api.network["vcns"]) == 1  # the shared network stays

    provider.terminate("a")  # idempotent
    provider.terminate("never-made")
    assert len(api.calls("DELETE", r".*")) == 1


# ------------------------------------------------------------------------------------- plan


def test_plan_for_a_free_micro_host(make: Factory) -> None:
    plan = make().plan(host("a"))
    assert plan.action == "create"
    assert plan.free_tier is True
    assert plan.monthly_cost_usd == 0.0
    assert plan.region == "us-ashburn-1"
    assert UNSUPPORTED_WARNING in plan.warnings
    assert "Unsupported" in UNSUPPORTED_WARNING and "earn nothing" in UNSUPPORTED_WARNING


def test_plan_keeps_an_existing_host(make: Factory) -> None:
    provider = make()
    provider.create(host("a"), OPERATOR_KEY)
    plan = provider.plan(host("a"))
    assert plan.action == "keep" and plan.free_tier is True


def test_plan_counts_micro_instances_of_the_whole_compartment(
    make: Factory, api: OciStandIn
) -> None:
    api.add_instance("console-made-1", {})
    api.add_instance("console-made-2", {})
    plan = make().plan(host("a"))
    assert plan.free_tier is False
    assert any("LimitExceeded" in w for w in plan.warnings)


def test_plan_charges_a1_beyond_the_free_allowance(make: Factory, api: OciStandIn) -> None:
    api.add_instance(
        "big-arm", {}, shape="VM.Standard.A1.Flex", shape_config={"ocpus": 3, "memoryInGBs": 18}
    )
    plan = make(shape="VM.Standard.A1.Flex", ocpus=2, memory_gbs=12).plan(host("a"))
    assert plan.free_tier is False
    # 1 OCPU and 6 GB beyond 4 / 24: (0.01 + 6 * 0.0015) * 730
    assert plan.monthly_cost_usd == pytest.approx(13.87)
    assert any("Out of host capacity" in w for w in plan.warnings)

    within = make(shape="VM.Standard.A1.Flex", ocpus=1, memory_gbs=6).plan(host("b"))
    assert within.free_tier is True and within.monthly_cost_usd == 0.0


def test_plan_prices_a_paid_shape(make: Factory) -> None:
    plan = make(shape="VM.Standard.E4.Flex").plan(host("a"))
    assert plan.free_tier is False
    assert plan.monthly_cost_usd == pytest.approx((0.025 + 16 * 0.0015) * 730, abs=0.01)


def test_host_in_another_region_is_refused(make: Factory, api: OciStandIn) -> None:
    with pytest.raises(ProviderError, match="eu-frankfurt-1"):
        make().plan(host("a", region="eu-frankfurt-1"))
    with pytest.raises(ProviderError, match="another oci provider"):
        make().create(host("a", region="eu-frankfurt-1"), OPERATOR_KEY)
    assert not launches(api)


# ------------------------------------------------------------------------ clients and config


def test_every_client_uses_the_configured_endpoint(make: Factory, api: OciStandIn) -> None:
    provider = make()
    for client in (provider.compute, provider.network, provider.identity):
        assert client.base_client.endpoint.startswith(api.url)


def test_without_an_endpoint_the_clients_use_the_region(api: OciStandIn) -> None:
    settings = OciSettings(
        kind="oci",
        credentials_block="oci-test",
        operator_cidr=OPERATOR,
        compartment_id=COMPARTMENT,
        region="eu-frankfurt-1",
    )
    provider = OciCloudProvider(
        "oci", settings, config=dict(STANDIN_CONFIG), signer=StandInSigner()
    )
    assert provider.compute.base_client.endpoint.startswith("https://iaas.eu-frankfurt-1.")
    assert provider.network.base_client.endpoint.startswith("https://iaas.eu-frankfurt-1.")
    assert provider.identity.base_client.endpoint.startswith("https://identity.eu-frankfurt-1.")


def test_credentials_from_a_config_file(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file = tmp_path / "oci_api_key.pem"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    config_file = tmp_path / "config"
    config_file.write_text(
        "[DEFAULT]\n"
        f"user={STANDIN_CONFIG['user']}\n"
        f"fingerprint={STANDIN_CONFIG['fingerprint']}\n"
        f"tenancy={STANDIN_CONFIG['tenancy']}\n"
        "region=us-phoenix-1\n"
        f"key_file={key_file}\n"
    )
    config, signer = credentials_from(str(config_file), "DEFAULT", False)
    assert signer is None and config is not None
    assert config["tenancy"] == STANDIN_CONFIG["tenancy"]
    # a real API-key signer can be built from it; the provider's region wins over the file's
    settings = OciSettings(
        kind="oci",
        credentials_block="oci-test",
        operator_cidr=OPERATOR,
        compartment_id=COMPARTMENT,
    )
    provider = OciCloudProvider("oci", settings, config=config)
    assert "us-ashburn-1" in provider.compute.base_client.endpoint
    assert provider.tenancy_id == STANDIN_CONFIG["tenancy"]

    with pytest.raises(ProviderAuthError, match="NOPE"):
        credentials_from(str(config_file), "NOPE", False)
    with pytest.raises(ProviderAuthError):
        credentials_from(str(tmp_path / "missing"), "DEFAULT", False)
