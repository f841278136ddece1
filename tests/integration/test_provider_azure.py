"""The azure provider's real SDK clients against a local stand-in for Azure Resource Manager.

Every test asserts the requests the provider sent (method, path, api-version, JSON body), so the
resource names, the NSG rule, the VM body and the order of deletions are pinned here."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from azure.core.exceptions import ClientAuthenticationError

from gradientlab.config import AzureSettings, HostSettings
from gradientlab.providers.azure import AzureCloudProvider
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
from gradientlab.providers.bootstrap import HostKeyPair
from tests.standins.azure_api import AzureStandIn, Call, FakeCredential

SUB = "00000000-1111-2222-3333-444444444444"
RG = "gl-test"
CIDR = "203.0.113.0/24"
BASE = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers"
VM_TYPE = "Microsoft.Compute/virtualMachines"
OPERATOR_KEY = HostKeyPair.generate().public + " operator@laptop"


@pytest.fixture
def arm() -> Iterator[AzureStandIn]:
    standin = AzureStandIn(SUB).start()
    try:
        yield standin
    finally:
        standin.stop()


def _settings(arm: AzureStandIn, **overrides: Any) -> AzureSettings:
    fields: dict[str, Any] = {
        "kind": "azure",
        "credentials_block": "azure-gradientlab",
        "operator_cidr": CIDR,
        "endpoint": arm.url,
        "subscription_id": SUB,
        "resource_group": RG,
        **overrides,
    }
    return AzureSettings.model_validate(fields)


@pytest.fixture
def slept() -> list[float]:
    return []


@pytest.fixture
def make(arm: AzureStandIn, slept: list[float]) -> Callable[..., AzureCloudProvider]:
    def make(fleet: str = "alpha", credential: Any = None, **overrides: Any) -> AzureCloudProvider:
        return AzureCloudProvider(
            "azure-east",
            _settings(arm, **overrides),
            credential or FakeCredential(),
            fleet_name=fleet,
            sleep=slept.append,
            polling_interval=0,
        )

    return make


@pytest.fixture
def provider(make: Callable[..., AzureCloudProvider]) -> AzureCloudProvider:
    return make()


def spec(name: str = "node1") -> HostSettings:
    return HostSettings(name=name, provider="azure-east")


def puts(arm: AzureStandIn, since: int = 0) -> list[Call]:
    return arm.calls_of("PUT", since)


def paths(calls: list[Call]) -> list[str]:
    return [c.path for c in calls]


def host_paths(fleet: str, host: str) -> dict[str, str]:
    prefix = f"gradientlab-{fleet}-{host}"
    return {
        "ip": f"{BASE}/Microsoft.Network/publicIPAddresses/{prefix}-ip",
        "nic": f"{BASE}/Microsoft.Network/networkInterfaces/{prefix}-nic",
        "vm": f"{BASE}/{VM_TYPE}/{prefix}",
        "disk": f"{BASE}/Microsoft.Compute/disks/{prefix}-osdisk",
    }


def shared_paths(fleet: str) -> list[str]:
    return [
        f"/subscriptions/{SUB}/resourcegroups/{RG}",
        f"{BASE}/Microsoft.Network/networkSecurityGroups/gradientlab-{fleet}-nsg",
        f"{BASE}/Microsoft.Network/virtualNetworks/gradientlab-{fleet}-vnet",
    ]


# -- create


def test_create_puts_shared_network_then_the_host_under_deterministic_names(
    arm: AzureStandIn, provider: AzureCloudProvider
) -> None:
    record = provider.create(spec(), OPERATOR_KEY)

    h = host_paths("alpha", "node1")
    assert paths(puts(arm)) == [*shared_paths("alpha"), h["ip"], h["nic"], h["vm"]]
    assert all(c.api_version for c in arm.calls), "every request names its api-version"
    rg, nsg, vnet, ip, nic, _vm = puts(arm)
    assert rg.body == {"location": "eastus", "tags": {FLEET_TAG: "alpha"}}
    assert vnet.body["properties"]["addressSpace"] == {"addressPrefixes": ["10.44.0.0/16"]}
    (subnet,) = vnet.body["properties"]["subnets"]
    assert subnet["name"] == "default"
    assert subnet["properties"]["networkSecurityGroup"]["id"] == nsg.path
    assert ip.body["sku"] == {"name": "Standard", "tier": "Regional"}
    assert ip.body["properties"] == {
        "publicIPAllocationMethod": "Static",
        "publicIPAddressVersion": "IPv4",
    }
    assert ip.body["tags"] == {FLEET_TAG: "alpha", HOST_TAG: "node1"}
    (config,) = nic.body["properties"]["ipConfigurations"]
    assert config["properties"]["subnet"]["id"] == f"{vnet.path}/subnets/default"
    assert config["properties"]["publicIPAddress"]["id"] == ip.path

    assert record.name == "node1"
    assert record.provider == "azure-east"
    assert record.address == arm.resources[h["ip"].lower()]["properties"]["ipAddress"]
    assert record.ssh_port == 22
    assert record.ssh_user == "gradientlab"
    assert record.state == "running"
    assert record.provider_ref == h["vm"]
    assert record.region == "eastus"
    assert record.hourly_cost_usd == pytest.approx(0.0104)
    assert record.meta["systemd"] is True and record.meta["cloud"] == "azure"
    assert record.host_key.startswith("ssh-ed25519 ")


def test_the_nsg_admits_exactly_ssh_from_the_operator_range(
    arm: AzureStandIn, provider: AzureCloudProvider
) -> None:
    provider.create(spec(), OPERATOR_KEY)

    (nsg,) = [c for c in puts(arm) if "networkSecurityGroups" in c.path]
    assert nsg.body["properties"]["securityRules"] == [
        {
            "name": "allow-ssh-from-operator",
            "properties": {
                "description": "SSH from the operator's range only",
                "protocol": "Tcp",
                "access": "Allow",
                "direction": "Inbound",
                "priority": 100,
                "sourceAddressPrefix": CIDR,
                "sourcePortRange": "*",
                "destinationAddressPrefix": "*",
                "destinationPortRange": "22",
            },
        }
    ]


def test_the_vm_body_pins_size_image_login_and_the_generated_host_key(
    arm: AzureStandIn, provider: AzureCloudProvider
) -> None:
    record = provider.create(spec(), OPERATOR_KEY)

    (vm,) = [c for c in puts(arm) if VM_TYPE in c.path]
    props = vm.body["properties"]
    assert vm.body["location"] == "eastus"
    assert vm.body["tags"] == {
        FLEET_TAG: "alpha",
        HOST_TAG: "node1",
        HOST_KEY_TAG: record.host_key,
    }
    assert props["hardwareProfile"] == {"vmSize": "Standard_B1s"}
    assert props["storageProfile"]["imageReference"] == {
        "publisher": "Debian",
        "offer": "debian-12",
        "sku": "12-gen2",
        "version": "latest",
    }
    os_disk = props["storageProfile"]["osDisk"]
    assert os_disk["name"] == "gradientlab-alpha-node1-osdisk"
    assert os_disk["createOption"] == "FromImage"
    assert os_disk["deleteOption"] == "Delete"
    assert props["networkProfile"]["networkInterfaces"] == [
        {"id": host_paths("alpha", "node1")["nic"], "properties": {"primary": True}}
    ]
    os_profile = props["osProfile"]
    assert os_profile["computerName"] == "node1"
    assert os_profile["adminUsername"] == "gradientlab"
    assert "adminPassword" not in os_profile
    linux = os_profile["linuxConfiguration"]
    assert linux["disablePasswordAuthentication"] is True
    assert linux["ssh"]["publicKeys"] == [
        {"path": "/home/gradientlab/.ssh/authorized_keys", "keyData": OPERATOR_KEY}
    ]
    user_data = base64.b64decode(os_profile["customData"]).decode()
    assert user_data.startswith("#cloud-config\n")
    cloud_config = yaml.safe_load(user_data)
    assert cloud_config["ssh_keys"]["ed25519_public"] == record.host_key
    assert "OPENSSH PRIVATE KEY" in cloud_config["ssh_keys"]["ed25519_private"]
    assert cloud_config["users"][1]["name"] == "gradientlab"
    assert cloud_config["users"][1]["ssh_authorized_keys"] == [OPERATOR_KEY]
    assert cloud_config["hostname"] == "node1"


def test_a_second_host_reuses_the_shared_network(
    arm: AzureStandIn, provider: AzureCloudProvider
) -> None:
    provider.create(spec("node1"), OPERATOR_KEY)
    mark = arm.mark()
    provider.create(spec("node2"), OPERATOR_KEY)

    h = host_paths("alpha", "node2")
    assert paths(puts(arm, mark)) == [h["ip"], h["nic"], h["vm"]]
    assert {r.name for r in provider.list()} == {"node1", "node2"}


def test_a_rerun_converges_on_the_same_resources_and_the_same_host_key(
    arm: AzureStandIn, make: Callable[..., AzureCloudProvider]
) -> None:
    first = make().create(spec(), OPERATOR_KEY)
    first_puts = puts(arm)
    mark = arm.mark()

    again = make().create(spec(), OPERATOR_KEY)  # a new run: a new provider object

    rerun_puts = puts(arm, mark)
    # the same PUTs with the same bodies; the existing VM is kept, not re-PUT, because Azure
    # refuses a new customData and its pinned host key lives in the VM's tag
    expected = [c for c in first_puts if VM_TYPE not in c.path]
    assert [(c.path, c.body) for c in rerun_puts] == [(c.path, c.body) for c in expected]
    assert again.host_key == first.host_key
    assert again.address == first.address
    assert again.provider_ref == first.provider_ref
    assert make().get("node1") == again


def test_create_starts_an_existing_deallocated_host(
    arm: AzureStandIn, provider: AzureCloudProvider
) -> None:
    first = provider.create(spec(), OPERATOR_KEY)
    provider.stop("node1")
    mark = arm.mark()

    again = provider.create(spec(), OPERATOR_KEY)

    assert [c.resource for c in arm.calls_of("POST", mark)] == ["start"]
    assert again.state == "running"
    assert again.host_key == first.host_key


def test_a_vm_of_another_fleet_under_our_name_is_left_alone(
    arm: AzureStandIn, provider: AzureCloudProvider
) -> None:
    provider.create(spec("node1"), OPERATOR_KEY)
    vm_id = host_paths("alpha", "node1")["vm"]
    arm.resources[vm_id.lower()]["tags"][FLEET_TAG] = "beta"

    with pytest.raises(ProviderError, match="not tagged"):
        provider.create(spec("node1"), OPERATOR_KEY)
    with pytest.raises(ProviderError, match="not tagged"):
        provider.terminate("node1")
    assert arm.has(vm_id)
    assert provider.get("node1") is None


def test_a_resource_group_owned_by_another_fleet_is_refused(
    arm: AzureStandIn, make: Callable[..., AzureCloudProvider]
) -> None:
    make(fleet="beta").create(spec(), OPERATOR_KEY)
    mark = arm.mark()

    with pytest.raises(ProviderError, match="belongs to fleet 'beta'"):
        make(fleet="alpha").create(spec(), OPERATOR_KEY)
    assert puts(arm, mark) == []


# -- plan


def test_plan_says_create_then_keep_with_cost_and_warnings(
    provider: AzureCloudProvider,
) -> None:
    plan = provider.plan(spec())
    assert plan.action == "create"
    assert plan.provider == "azure-east"
    assert plan.region == "eastus"
    assert plan.monthly_cost_usd == pytest.approx(7.59, abs=0.01)
    assert plan.free_tier is True
    assert any("750 hours" in w for w in plan.warnings)
    assert (
        "cloud data-centre addresses are likely marked Unsupported by Gradient (they earn nothing)"
    ) in plan.warnings

    provider.create(spec(), OPERATOR_KEY)
    assert provider.plan(spec()).action == "keep"


def test_plan_for_a_size_without_free_tier(make: Callable[..., AzureCloudProvider]) -> None:
    plan = make(vm_size="Standard_B2s").plan(spec())
    assert plan.free_tier is False
    assert plan.monthly_cost_usd == pytest.approx(30.37, abs=0.01)


# -- reading


def test_get_list_and_public_ip(arm: AzureStandIn, provider: AzureCloudProvider) -> None:
    created = provider.create(spec("node1"), OPERATOR_KEY)
    assert provider.get("node1") == created
    assert provider.public_ip("node1") == created.address
    assert provider.get("absent") is None
    assert provider.public_ip("absent") is None
    vm_get = [c for c in arm.calls_of("GET") if c.path == created.provider_ref][-1]
    assert vm_get.query["$expand"] == "instanceView"


def test_get_answers_none_when_the_vm_vanished(
    arm: AzureStandIn, provider: AzureCloudProvider
) -> None:
    created = provider.create(spec(), OPERATOR_KEY)
    arm.forget(created.provider_ref)

    assert provider.get("node1") is None
    assert provider.list() == []


def test_nothing_exists_before_the_first_create(
    arm: AzureStandIn, provider: AzureCloudProvider
) -> None:
    assert provider.list() == []  # the resource group itself is missing
    assert provider.get("node1") is None
    assert provider.plan(spec()).action == "create"
    assert puts(arm) == []


def test_list_returns_only_this_fleets_tagged_vms(
    arm: AzureStandIn, provider: AzureCloudProvider
) -> None:
    provider.create(spec("node1"), OPERATOR_KEY)
    foreign = {
        "name": "",
        "type": VM_TYPE,
        "location": "eastus",
        "properties": {"provisioningState": "Succeeded", "hardwareProfile": {"vmSize": "B1s"}},
    }
    untagged = f"{BASE}/{VM_TYPE}/someone-elses-vm"
    other_fleet = f"{BASE}/{VM_TYPE}/gradientlab-beta-node1"
    arm.seed(untagged, {**foreign, "name": "someone-elses-vm"})
    arm.seed(
        other_fleet,
        {**foreign, "name": "gradientlab-beta-node1", "tags": {FLEET_TAG: "beta", HOST_TAG: "x"}},
    )

    records = provider.list()

    assert [r.name for r in records] == ["node1"]
    assert records[0].state == "running"
    assert records[0].host_key
    assert records[0] == provider.get("node1")


# -- power


def test_stop_deallocates_power_off_keeps_the_allocation_start_and_reboot(
    arm: AzureStandIn, provider: AzureCloudProvider
) -> None:
    created = provider.create(spec(), OPERATOR_KEY)
    vm = created.provider_ref
    mark = arm.mark()

    stopped = provider.stop("node1")
    assert stopped.state == "stopped"
    assert stopped.meta["power_state"] == "deallocated"
    assert stopped.address == created.address  # static IP survives deallocation
    started = provider.start("node1")
    assert started.state == "running"
    rebooted = provider.reboot("node1")
    assert rebooted.state == "running"
    off = provider.power_off("node1")
    assert off.state == "stopped"
    assert off.meta["power_state"] == "stopped"

    assert paths(arm.calls_of("POST", mark)) == [
        f"{vm}/deallocate",
        f"{vm}/start",
        f"{vm}/restart",
        f"{vm}/powerOff",
    ]


def test_power_actions_on_a_missing_host_say_so(provider: AzureCloudProvider) -> None:
    provider.create(spec("node1"), OPERATOR_KEY)
    with pytest.raises(ProviderError, match="create host ghost first"):
        provider.stop("ghost")


# -- terminate


def test_terminate_deletes_the_hosts_resources_only(
    arm: AzureStandIn, provider: AzureCloudProvider
) -> None:
    provider.create(spec("node1"), OPERATOR_KEY)
    provider.create(spec("node2"), OPERATOR_KEY)
    mark = arm.mark()

    provider.terminate("node1")

    h = host_paths("alpha", "node1")
    assert paths(arm.calls_of("DELETE", mark)) == [h["vm"], h["nic"], h["ip"], h["disk"]]
    for path in h.values():
        assert not arm.has(path)
    for path in shared_paths("alpha"):
        assert arm.has(path)
    assert provider.get("node1") is None
    assert [r.name for r in provider.list()] == ["node2"]

    provider.terminate("node1")  # again: nothing left, nothing fails


# -- failures


def test_allocation_failure_is_a_capacity_error_and_removes_what_this_run_made(
    arm: AzureStandIn, provider: AzureCloudProvider
) -> None:
    arm.fail(
        "PUT",
        f"/{VM_TYPE}/",
        200,
        "AllocationFailed",
        "Allocation failed. We do not have sufficient capacity for the requested VM size.",
        in_operation=True,
    )
    with pytest.raises(CapacityError, match="AllocationFailed") as caught:
        provider.create(spec(), OPERATOR_KEY)
    assert "node1" in str(caught.value)

    h = host_paths("alpha", "node1")
    deletes = paths(arm.calls_of("DELETE"))
    assert deletes == [h["vm"], h["disk"], h["nic"], h["ip"]]
    for path in h.values():
        assert not arm.has(path)
    for path in shared_paths("alpha"):
        assert arm.has(path)

    # the next attempt starts clean and succeeds
    assert provider.create(spec(), OPERATOR_KEY).state == "running"


def test_a_failed_rerun_keeps_the_ip_and_nic_an_earlier_run_made(
    arm: AzureStandIn, provider: AzureCloudProvider
) -> None:
    created = provider.create(spec(), OPERATOR_KEY)
    arm.forget(created.provider_ref)  # the VM is lost; its IP and NIC remain
    arm.fail("PUT", f"/{VM_TYPE}/", 200, "ZonalAllocationFailed", in_operation=True)
    mark = arm.mark()

    with pytest.raises(CapacityError):
        provider.create(spec(), OPERATOR_KEY)

    h = host_paths("alpha", "node1")
    assert paths(arm.calls_of("DELETE", mark)) == [h["vm"], h["disk"]]
    assert arm.has(h["ip"]) and arm.has(h["nic"])


def test_sku_not_available_is_a_capacity_error(
    arm: AzureStandIn, provider: AzureCloudProvider
) -> None:
    arm.fail("PUT", f"/{VM_TYPE}/", 409, "SkuNotAvailable", "Standard_B1s is not available.")
    with pytest.raises(CapacityError, match="another location or vm_size"):
        provider.create(spec(), OPERATOR_KEY)
    assert not arm.has(host_paths("alpha", "node1")["ip"])


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("QuotaExceeded", "Operation results in exceeding quota limits of Core."),
        (
            "OperationNotAllowed",
            "Operation could not be completed as it results in exceeding approved "
            "standardBSFamily Cores quota.",
        ),
    ],
)
def test_quota_refusals_are_quota_errors(
    arm: AzureStandIn, provider: AzureCloudProvider, code: str, message: str
) -> None:
    arm.fail("PUT", f"/{VM_TYPE}/", 409, code, message)
    with pytest.raises(QuotaError, match="Usage \\+ quotas"):
        provider.create(spec(), OPERATOR_KEY)


def test_throttling_is_rate_limited_with_retry_after(
    arm: AzureStandIn, provider: AzureCloudProvider, slept: list[float]
) -> None:
    arm.fail("PUT", f"/{VM_TYPE}/", 429, "TooManyRequests", headers={"Retry-After": "17"})
    with pytest.raises(ProviderRateLimited) as caught:
        provider.create(spec(), OPERATOR_KEY)
    assert caught.value.retry_after == 17
    assert slept == []  # not slept through inside the SDK: the caller decides
    assert len([c for c in puts(arm) if VM_TYPE in c.path]) == 1
    h = host_paths("alpha", "node1")
    assert not arm.has(h["ip"]) and not arm.has(h["nic"])  # this run's leftovers are gone


def test_forbidden_is_an_auth_error_naming_the_block(
    arm: AzureStandIn, provider: AzureCloudProvider
) -> None:
    arm.fail(
        "GET",
        f"/resourcegroups/{RG.lower()}",
        403,
        "AuthorizationFailed",
        "The client does not have authorization to perform action "
        "'Microsoft.Resources/subscriptions/resourcegroups/read'.",
    )
    with pytest.raises(ProviderAuthError, match="azure-gradientlab"):
        provider.create(spec(), OPERATOR_KEY)


def test_a_credential_that_cannot_get_a_token_is_an_auth_error(
    make: Callable[..., AzureCloudProvider],
) -> None:
    broken = FakeCredential(ClientAuthenticationError("AADSTS7000215: Invalid client secret"))
    with pytest.raises(ProviderAuthError, match="azure-gradientlab.*AADSTS7000215"):
        make(credential=broken).list()


def test_transient_server_errors_are_retried_through_the_injected_sleep(
    arm: AzureStandIn, provider: AzureCloudProvider, slept: list[float]
) -> None:
    arm.fail("GET", "/providers/microsoft.compute/virtualmachines", 503, "ServerBusy", times=2)
    assert provider.list() == []
    assert len(slept) == 2


def test_a_plain_http_endpoint_must_be_loopback(arm: AzureStandIn) -> None:
    settings = _settings(arm, endpoint="http://arm.example.net")
    with pytest.raises(ProviderError, match="loopback"):
        AzureCloudProvider("azure-east", settings, FakeCredential(), polling_interval=0)
