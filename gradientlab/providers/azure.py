"""Azure VMs through the management SDKs, with deterministic names so a rerun converges.

One resource group per fleet holds what the fleet shares (a virtual network with one subnet and a
network security group that admits SSH from the operator's range only) and, per host, a static
Standard public IP, a NIC and the VM. Every resource is created with `begin_create_or_update`
under a name derived from the fleet and the host, so running `create` twice changes nothing.

Credentials arrive as an `azure.core.credentials.TokenCredential`; the task layer builds it from
the Prefect block named in `credentials_block`, so this module stays free of Prefect."""

from __future__ import annotations

import builtins
import ipaddress
import re
import time
from collections.abc import Callable, Iterable
from email.utils import parsedate_to_datetime
from enum import Enum
from typing import Any, TypeVar
from urllib.parse import urlsplit

from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.core.pipeline import PipelineRequest
from azure.core.pipeline.policies import RetryPolicy, SansIOHTTPPolicy
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.compute import models as compute
from azure.mgmt.network import NetworkManagementClient
from azure.mgmt.network import models as network
from azure.mgmt.resource import ResourceManagementClient
from azure.mgmt.resource.resources.models import ResourceGroup

from gradientlab.config import AzureProvider, HostSpec
from gradientlab.providers.base import (
    FLEET_TAG,
    HOST_KEY_TAG,
    HOST_TAG,
    CapacityError,
    HostRecord,
    PlannedHost,
    ProviderAuthError,
    ProviderError,
    ProviderRateLimited,
    QuotaError,
)
from gradientlab.providers.bootstrap import HostKeyPair, cloud_init_b64

T = TypeVar("T")

VNET_PREFIX = "10.44.0.0/16"
SUBNET_NAME = "default"
SUBNET_PREFIX = "10.44.1.0/24"
SSH_RULE_NAME = "allow-ssh-from-operator"
OS_DISK_TYPE = "StandardSSD_LRS"

# Pay-as-you-go Linux, US regions, USD per hour (B1s: about $7.59 a month).
HOURLY_USD = {
    "Standard_B1ls": 0.0052,
    "Standard_B1s": 0.0104,
    "Standard_B1ms": 0.0207,
    "Standard_B2s": 0.0416,
}
HOURS_PER_MONTH = 730
# New accounts get 750 hours a month of these for 12 months.
FREE_TIER_SIZES = {"Standard_B1s"}

# Error codes ARM puts in `error.code` (or in its `details`).
CAPACITY_CODES = {
    "SkuNotAvailable",
    "AllocationFailed",
    "ZonalAllocationFailed",
    "OverconstrainedAllocationRequest",
    "OverconstrainedZonalAllocationRequest",
}
QUOTA_CODES = {"QuotaExceeded", "PublicIPCountLimitReached", "ResourceQuotaExceeded"}
AUTH_CODES = {
    "AuthorizationFailed",
    "AuthenticationFailed",
    "InvalidAuthenticationToken",
    "InvalidAuthenticationTokenTenant",
    "ExpiredAuthenticationToken",
    "LinkedAuthorizationFailed",
}
NOT_FOUND_CODES = {"ResourceNotFound", "ResourceGroupNotFound", "NotFound"}

POWER_STATES = {
    "running": "running",
    "deallocated": "stopped",
    "stopped": "stopped",
    "starting": "provisioning",
    "stopping": "stopping",
    "deallocating": "stopping",
}


class _PlainHttpToLoopback(SansIOHTTPPolicy):  # type: ignore[type-arg]
    """Lets the bearer policy send its token over http://, installed only for loopback stand-ins."""

    def on_request(self, request: PipelineRequest[Any]) -> None:
        request.context.options["enforce_https"] = False


class _TransientRetry(RetryPolicy):  # type: ignore[type-arg]
    """The SDK's retries for 5xx and dropped connections, sleeping through our own `sleep`.

    A 429 is not retried here: it goes back to the caller as `ProviderRateLimited`, whose task
    retries after `retry_after` instead of holding a worker inside the SDK."""

    def __init__(self, pause: Callable[[float], None], **kwargs: Any) -> None:
        kwargs.setdefault("retry_total", 3)
        super().__init__(**kwargs)
        self._pause = pause

    def is_retry(self, settings: dict[str, Any], response: Any) -> bool:
        if response.http_response.status_code == 429:
            return False
        return bool(super().is_retry(settings, response))

    def sleep(self, settings: dict[str, Any], transport: Any, response: Any = None) -> None:
        delay = self.get_retry_after(response) if response is not None else None
        self._pause(delay if delay is not None else self.get_backoff_time(settings))


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _error_codes(err: HttpResponseError) -> builtins.list[str]:
    codes: builtins.list[str] = []
    pending = [err.error] if err.error is not None else []
    while pending:
        item = pending.pop()
        code = getattr(item, "code", None)
        if code:
            codes.append(str(code))
        pending.extend(getattr(item, "details", None) or [])
    return codes


def _error_message(err: HttpResponseError) -> str:
    if err.error is not None and err.error.message:
        return str(err.error.message)
    return str(err.message or err.reason or "no message")


def _retry_after(err: HttpResponseError) -> float | None:
    headers = getattr(err.response, "headers", None) or {}
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


LRO_TIMEOUT_SECONDS = 900  # a create, delete or power operation; then the caller reruns


def _finish(poller: Any) -> Any:
    """Wait for a long-running operation, but not forever: a rerun picks it up again."""
    poller.wait(timeout=LRO_TIMEOUT_SECONDS)
    if not poller.done():
        raise ProviderError(
            f"azure: an operation is still not done after {LRO_TIMEOUT_SECONDS // 60} minutes "
            f"(status {poller.status()}); rerun to pick it up"
        )
    return poller.result()


def _is_not_found(err: AzureError) -> bool:
    if isinstance(err, ResourceNotFoundError):
        return True
    return isinstance(err, HttpResponseError) and (
        err.status_code == 404 or bool(NOT_FOUND_CODES & set(_error_codes(err)))
    )


class AzureCloudProvider:
    """Hosts as Azure VMs (`Standard_B1s` by default) in one resource group per fleet."""

    kind = "azure"

    def __init__(
        self,
        name: str,
        settings: AzureProvider,
        credential: TokenCredential,
        *,
        fleet_name: str = "gradientlab",
        sleep: Callable[[float], None] = time.sleep,
        polling_interval: float = 5.0,
    ) -> None:
        self.name = name
        self.settings = settings
        self.fleet_name = fleet_name
        self._sleep = sleep
        self._polling_interval = polling_interval
        self._prefix = "gradientlab-" + re.sub(r"[^a-z0-9-]", "-", fleet_name.lower())
        self._rg = settings.resource_group
        self._subnet_id: str | None = None  # set once the shared network is in place

        options: dict[str, Any] = {"polling_interval": polling_interval}
        if settings.endpoint:
            options["base_url"] = settings.endpoint.rstrip("/")
            if settings.endpoint.lower().startswith("http://"):
                if not _is_loopback(settings.endpoint):
                    raise ProviderError(
                        f"azure provider {name}: endpoint {settings.endpoint} is plain HTTP and "
                        "would send the bearer token in clear; only a loopback stand-in may use "
                        "http://"
                    )
                options["per_call_policies"] = [_PlainHttpToLoopback()]

        def client(cls: Callable[..., T]) -> T:
            # each client gets its own retry policy: a policy instance belongs to one pipeline
            return cls(
                credential,
                settings.subscription_id,
                retry_policy=_TransientRetry(sleep),
                **options,
            )

        self.resources = client(ResourceManagementClient)
        self.network = client(NetworkManagementClient)
        self.compute = client(ComputeManagementClient)

    # -- names

    def vm_name(self, host: str) -> str:
        return f"{self._prefix}-{host}"

    def nic_name(self, host: str) -> str:
        return f"{self._prefix}-{host}-nic"

    def ip_name(self, host: str) -> str:
        return f"{self._prefix}-{host}-ip"

    def disk_name(self, host: str) -> str:
        return f"{self._prefix}-{host}-osdisk"

    @property
    def vnet_name(self) -> str:
        return f"{self._prefix}-vnet"

    @property
    def nsg_name(self) -> str:
        return f"{self._prefix}-nsg"

    # -- errors

    def _fail(self, err: AzureError, host: str | None, step: str) -> ProviderError:
        """The ProviderError an operator can act on: which host, which step, what to try."""
        where = f"azure provider {self.name}" + (f", host {host}" if host else "")
        block = self.settings.credentials_block
        if isinstance(err, ClientAuthenticationError) and err.response is None:
            return ProviderAuthError(
                f"{where}: {step}: no token from the credentials in block {block!r}: {err}. "
                "Check the tenant, client id and secret stored there."
            )
        if isinstance(err, ServiceRequestError):
            endpoint = self.settings.endpoint or "https://management.azure.com"
            return ProviderError(f"{where}: {step}: cannot reach {endpoint}: {err}")
        if not isinstance(err, HttpResponseError):
            return ProviderError(f"{where}: {step}: {err}")
        codes = _error_codes(err)
        code = codes[0] if codes else str(err.status_code)
        said = f"{where}: {step}: {code}: {_error_message(err)}"
        if err.status_code == 429:
            retry_after = _retry_after(err)
            return ProviderRateLimited(
                f"{said}. Azure throttled the request; retry after {retry_after or 'a while'} s.",
                retry_after=retry_after,
            )
        if err.status_code in (401, 403) or AUTH_CODES & set(codes):
            return ProviderAuthError(
                f"{said}. Fix the credentials in block {block!r}: the identity needs Contributor "
                f"on subscription {self.settings.subscription_id} or resource group {self._rg}."
            )
        if CAPACITY_CODES & set(codes):
            return CapacityError(
                f"{said}. Azure has no {self.settings.vm_size} capacity in "
                f"{self.settings.location} now; retry later or choose another location or vm_size."
            )
        message = _error_message(err).lower()
        if QUOTA_CODES & set(codes) or (
            "OperationNotAllowed" in codes and ("quota" in message or "limit" in message)
        ):
            return QuotaError(
                f"{said}. Raise the quota (portal: Subscriptions > Usage + quotas) or choose a "
                "smaller vm_size or another location."
            )
        return ProviderError(said)

    def _call(self, host: str | None, step: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except AzureError as err:
            raise self._fail(err, host, step) from err

    def _find(self, host: str | None, step: str, fn: Callable[[], T]) -> T | None:
        """A read that answers None when the resource (or its resource group) does not exist."""
        try:
            return fn()
        except AzureError as err:
            if _is_not_found(err):
                return None
            raise self._fail(err, host, step) from err

    def _delete(self, host: str, step: str, begin: Callable[[str, str], Any], name: str) -> None:
        """Delete and wait; a resource that is already gone counts as deleted."""
        try:
            _finish(begin(self._rg, name))
        except AzureError as err:
            if not _is_not_found(err):
                raise self._fail(err, host, step) from err

    # -- the shared network

    def _ensure_resource_group(self) -> None:
        existing = self._find(
            None, "reading the resource group", lambda: self.resources.resource_groups.get(self._rg)
        )
        tags = dict(existing.tags or {}) if existing is not None else {}
        owner = tags.get(FLEET_TAG)
        if owner is not None and owner != self.fleet_name:
            raise ProviderError(
                f"azure provider {self.name}: resource group {self._rg} belongs to fleet "
                f"{owner!r}; give this fleet its own `resource_group`"
            )
        tags[FLEET_TAG] = self.fleet_name
        # an existing group keeps its location; a different one would be refused
        location = existing.location if existing is not None else self.settings.location
        self._call(
            None,
            "creating the resource group",
            lambda: self.resources.resource_groups.create_or_update(
                self._rg, ResourceGroup(location=location, tags=tags)
            ),
        )

    def _ensure_network(self) -> str:
        """The resource group, NSG and VNet this fleet shares; PUT once per provider object."""
        if self._subnet_id is not None:
            return self._subnet_id
        self._ensure_resource_group()
        tags = {FLEET_TAG: self.fleet_name}
        # Exactly one rule: Azure's default rules already deny every other inbound connection
        # from the internet, and a PUT replaces the whole list, so stray rules are removed.
        ssh_rule = network.SecurityRule(
            name=SSH_RULE_NAME,
            properties=network.SecurityRulePropertiesFormat(
                description="SSH from the operator's range only",
                protocol="Tcp",
                access="Allow",
                direction="Inbound",
                priority=100,
                source_address_prefix=self.settings.operator_cidr,
                source_port_range="*",
                destination_address_prefix="*",
                destination_port_range="22",
            ),
        )
        nsg = self._call(
            None,
            "creating the network security group",
            lambda: _finish(
                self.network.network_security_groups.begin_create_or_update(
                    self._rg,
                    self.nsg_name,
                    network.NetworkSecurityGroup(
                        location=self.settings.location,
                        tags=tags,
                        properties=network.NetworkSecurityGroupPropertiesFormat(
                            security_rules=[ssh_rule]
                        ),
                    ),
                )
            ),
        )
        vnet = self._call(
            None,
            "creating the virtual network",
            lambda: _finish(
                self.network.virtual_networks.begin_create_or_update(
                    self._rg,
                    self.vnet_name,
                    network.VirtualNetwork(
                        location=self.settings.location,
                        tags=tags,
                        properties=network.VirtualNetworkPropertiesFormat(
                            address_space=network.AddressSpace(address_prefixes=[VNET_PREFIX]),
                            subnets=[
                                network.Subnet(
                                    name=SUBNET_NAME,
                                    properties=network.SubnetPropertiesFormat(
                                        address_prefix=SUBNET_PREFIX,
                                        network_security_group=network.NetworkSecurityGroup(
                                            id=nsg.id
                                        ),
                                    ),
                                )
                            ],
                        ),
                    ),
                )
            ),
        )
        subnets = vnet.properties.subnets if vnet.properties else None
        subnet_id = next((s.id for s in subnets or [] if s.name == SUBNET_NAME and s.id), None)
        self._subnet_id = subnet_id or f"{vnet.id}/subnets/{SUBNET_NAME}"
        return self._subnet_id

    # -- one host's resources

    def _vm_body(
        self, spec: HostSpec, authorized_key: str, host_key: HostKeyPair, nic_id: str
    ) -> compute.VirtualMachine:
        user = self.settings.ssh_user
        image = self.settings.image
        return compute.VirtualMachine(
            location=self.settings.location,
            tags={FLEET_TAG: self.fleet_name, HOST_TAG: spec.name, HOST_KEY_TAG: host_key.public},
            properties=compute.VirtualMachineProperties(
                hardware_profile=compute.HardwareProfile(vm_size=self.settings.vm_size),
                storage_profile=compute.StorageProfile(
                    image_reference=compute.ImageReference(
                        publisher=image.publisher,
                        offer=image.offer,
                        sku=image.sku,
                        version=image.version,
                    ),
                    os_disk=compute.OSDisk(
                        name=self.disk_name(spec.name),
                        create_option="FromImage",
                        delete_option="Delete",
                        managed_disk=compute.ManagedDiskParameters(
                            storage_account_type=OS_DISK_TYPE
                        ),
                    ),
                ),
                os_profile=compute.OSProfile(
                    computer_name=spec.name,
                    admin_username=user,
                    custom_data=cloud_init_b64(user, authorized_key, host_key, spec.name),
                    linux_configuration=compute.LinuxConfiguration(
                        disable_password_authentication=True,
                        ssh=compute.SshConfiguration(
                            public_keys=[
                                compute.SshPublicKey(
                                    path=f"/home/{user}/.ssh/authorized_keys",
                                    key_data=authorized_key.strip(),
                                )
                            ]
                        ),
                    ),
                ),
                network_profile=compute.NetworkProfile(
                    network_interfaces=[
                        compute.NetworkInterfaceReference(
                            id=nic_id,
                            properties=compute.NetworkInterfaceReferenceProperties(primary=True),
                        )
                    ]
                ),
            ),
        )

    def _put_public_ip(self, host: str) -> network.PublicIPAddress:
        return self._call(
            host,
            "creating the public IP",
            lambda: _finish(
                self.network.public_ip_addresses.begin_create_or_update(
                    self._rg,
                    self.ip_name(host),
                    network.PublicIPAddress(
                        location=self.settings.location,
                        tags={FLEET_TAG: self.fleet_name, HOST_TAG: host},
                        sku=network.PublicIPAddressSku(name="Standard", tier="Regional"),
                        properties=network.PublicIPAddressPropertiesFormat(
                            public_ip_allocation_method="Static",
                            public_ip_address_version="IPv4",
                        ),
                    ),
                )
            ),
        )

    def _put_nic(self, host: str, subnet_id: str, ip_id: str) -> network.NetworkInterface:
        return self._call(
            host,
            "creating the network interface",
            lambda: _finish(
                self.network.network_interfaces.begin_create_or_update(
                    self._rg,
                    self.nic_name(host),
                    network.NetworkInterface(
                        location=self.settings.location,
                        tags={FLEET_TAG: self.fleet_name, HOST_TAG: host},
                        properties=network.NetworkInterfacePropertiesFormat(
                            ip_configurations=[
                                network.NetworkInterfaceIPConfiguration(
                                    name="ipconfig1",
                                    properties=network.NetworkInterfaceIPConfigurationPropertiesFormat(
                                        primary=True,
                                        private_ip_allocation_method="Dynamic",
                                        subnet=network.Subnet(id=subnet_id),
                                        public_ip_address=network.PublicIPAddress(id=ip_id),
                                    ),
                                )
                            ]
                        ),
                    ),
                )
            ),
        )

    def _read_vm(self, host: str, *, instance_view: bool) -> compute.VirtualMachine | None:
        expand = "instanceView" if instance_view else None
        vm = self._find(
            host,
            "reading the VM",
            lambda: self.compute.virtual_machines.get(self._rg, self.vm_name(host), expand=expand),
        )
        if vm is None:
            return None
        owner = (vm.tags or {}).get(FLEET_TAG)
        if owner != self.fleet_name:
            raise ProviderError(
                f"azure provider {self.name}, host {host}: VM {self.vm_name(host)} exists in "
                f"{self._rg} but is not tagged {FLEET_TAG}={self.fleet_name} (it says {owner!r}); "
                "GradientLab leaves it alone: rename the host or remove that VM"
            )
        return vm

    def _address(self, host: str) -> str | None:
        ip = self._find(
            host,
            "reading the public IP",
            lambda: self.network.public_ip_addresses.get(self._rg, self.ip_name(host)),
        )
        if ip is None or ip.properties is None:
            return None
        return ip.properties.ip_address

    def _wait_for_address(self, host: str) -> str:
        # a static Standard IP is allocated with the resource; allow a little lag all the same
        for _ in range(12):
            address = self._address(host)
            if address:
                return address
            self._sleep(self._polling_interval)
        raise ProviderError(
            f"azure provider {self.name}, host {host}: public IP {self.ip_name(host)} has no "
            "address yet; run create again in a minute"
        )

    def _record(self, vm: compute.VirtualMachine, address: str | None) -> HostRecord:
        tags = vm.tags or {}
        power = _power_state(vm)
        size = _text(vm.hardware_profile.vm_size) if vm.hardware_profile else self.settings.vm_size
        return HostRecord(
            name=tags.get(HOST_TAG) or str(vm.name),
            provider=self.name,
            address=address or "",
            ssh_port=22,
            ssh_user=self.settings.ssh_user,
            host_key=tags.get(HOST_KEY_TAG, ""),
            state=_state(vm, power),
            provider_ref=str(vm.id),
            region=vm.location,
            hourly_cost_usd=HOURLY_USD.get(size, 0.0),
            meta={"systemd": True, "cloud": "azure", "power_state": power},
        )

    def _must(self, name: str) -> compute.VirtualMachine:
        vm = self._read_vm(name, instance_view=False)
        if vm is None:
            raise ProviderError(
                f"azure provider {self.name}: no VM {self.vm_name(name)} in resource group "
                f"{self._rg} (create host {name} first)"
            )
        return vm

    # -- the interface

    def plan(self, spec: HostSpec) -> PlannedHost:
        size = self.settings.vm_size
        hourly = HOURLY_USD.get(size)
        warnings = [
            "cloud data-centre addresses are likely marked Unsupported by Gradient "
            "(they earn nothing)",
            "a Standard static public IP (about $3.65/month) and the OS disk are billed "
            "separately from the VM once free allowances run out",
        ]
        free = size in FREE_TIER_SIZES
        if free:
            warnings.append(
                f"{size}: 750 hours a month are free for 12 months on new Azure accounts; "
                f"after that about ${(hourly or 0) * HOURS_PER_MONTH:.2f}/month"
            )
        if hourly is None:
            warnings.append(f"no price known for {size}; the cost shown is 0")
        exists = self._read_vm(spec.name, instance_view=False) is not None
        return PlannedHost(
            name=spec.name,
            provider=self.name,
            region=self.settings.location,
            action="keep" if exists else "create",
            monthly_cost_usd=round((hourly or 0.0) * HOURS_PER_MONTH, 2),
            free_tier=free,
            warnings=tuple(warnings),
        )

    def create(self, spec: HostSpec, authorized_key: str) -> HostRecord:
        """Create the host, or converge to it: same names, same bodies, the same pinned key.

        An existing VM is kept (Azure refuses to change `customData` after creation, and its
        host key is already pinned in its tag); a stopped one is started. If creating the VM
        fails, what this run created for the host (VM, NIC, IP) is deleted again; the shared
        resource group, VNet and NSG stay."""
        host = spec.name
        subnet_id = self._ensure_network()
        vm = self._read_vm(host, instance_view=False)
        ip_existed = self._address_resource_exists(host)
        nic_existed = self._nic_exists(host)
        try:
            ip = self._put_public_ip(host)
            nic = self._put_nic(host, subnet_id, str(ip.id))
            if vm is None:
                host_key = HostKeyPair.generate()
                body = self._vm_body(spec, authorized_key, host_key, str(nic.id))
                self._call(
                    host,
                    "creating the VM",
                    lambda: _finish(
                        self.compute.virtual_machines.begin_create_or_update(
                            self._rg, self.vm_name(host), body
                        )
                    ),
                )
        except ProviderError as err:
            if vm is None:
                self._undo_create(
                    host, remove_ip=not ip_existed, remove_nic=not nic_existed, err=err
                )
            raise
        address = self._wait_for_address(host)
        current = self._read_vm(host, instance_view=True)
        if current is None:
            raise ProviderError(
                f"azure provider {self.name}, host {host}: VM {self.vm_name(host)} vanished "
                "right after creation; run create again"
            )
        record = self._record(current, address)
        if record.state == "stopped":
            return self.start(host)
        return record

    def _address_resource_exists(self, host: str) -> bool:
        return (
            self._find(
                host,
                "reading the public IP",
                lambda: self.network.public_ip_addresses.get(self._rg, self.ip_name(host)),
            )
            is not None
        )

    def _nic_exists(self, host: str) -> bool:
        return (
            self._find(
                host,
                "reading the network interface",
                lambda: self.network.network_interfaces.get(self._rg, self.nic_name(host)),
            )
            is not None
        )

    def _undo_create(
        self, host: str, *, remove_ip: bool, remove_nic: bool, err: ProviderError
    ) -> None:
        """Delete what this run made for `host` after a failure; never hide the failure itself."""
        steps: builtins.list[tuple[str, Callable[[str, str], Any], str]] = []
        # a VM that failed to provision still exists (state Failed) and holds the NIC
        try:
            vm_made = (
                self._find(
                    host,
                    "reading the VM",
                    lambda: self.compute.virtual_machines.get(self._rg, self.vm_name(host)),
                )
                is not None
            )
        except ProviderError:
            vm_made = True  # unknown: deleting what is not there costs one 204
        if vm_made:
            steps.append(
                (
                    "deleting the failed VM",
                    self.compute.virtual_machines.begin_delete,
                    self.vm_name(host),
                )
            )
            steps.append(
                (
                    "deleting the failed VM's disk",
                    self.compute.disks.begin_delete,
                    self.disk_name(host),
                )
            )
        if remove_nic:
            steps.append(
                (
                    "deleting the network interface",
                    self.network.network_interfaces.begin_delete,
                    self.nic_name(host),
                )
            )
        if remove_ip:
            steps.append(
                (
                    "deleting the public IP",
                    self.network.public_ip_addresses.begin_delete,
                    self.ip_name(host),
                )
            )
        left: builtins.list[str] = []
        for step, begin, resource in steps:
            try:
                self._delete(host, step, begin, resource)
            except ProviderError as cleanup:
                left.append(str(cleanup))
        if left:
            err.args = (
                f"{err}\nCleaning up after it also failed; run terminate {host} to finish: "
                + "; ".join(left),
            )

    def get(self, name: str) -> HostRecord | None:
        vm = self._find_ours(name)
        if vm is None:
            return None
        return self._record(vm, self._address(name))

    def _find_ours(self, name: str) -> compute.VirtualMachine | None:
        vm = self._find(
            name,
            "reading the VM",
            lambda: self.compute.virtual_machines.get(
                self._rg, self.vm_name(name), expand="instanceView"
            ),
        )
        if vm is None or (vm.tags or {}).get(FLEET_TAG) != self.fleet_name:
            return None
        return vm

    def list(self) -> builtins.list[HostRecord]:
        """This fleet's VMs: those in the resource group tagged with this fleet's name."""
        vms = self._find(
            None,
            "listing VMs",
            lambda: builtins.list(self.compute.virtual_machines.list(self._rg)),
        )
        ours = [vm for vm in vms or [] if (vm.tags or {}).get(FLEET_TAG) == self.fleet_name]
        if not ours:
            return []
        ips = self._call(
            None,
            "listing public IPs",
            lambda: builtins.list(self.network.public_ip_addresses.list(self._rg)),
        )
        addresses = {ip.name: ip.properties.ip_address for ip in ips if ip.properties}
        out = []
        for vm in ours:
            host = (vm.tags or {}).get(HOST_TAG) or str(vm.name).removeprefix(self._prefix + "-")
            view = self._instance_view(host, str(vm.name))
            if view is None:
                continue  # deleted between the listing and now
            vm.instance_view = view
            out.append(self._record(vm, addresses.get(self.ip_name(host))))
        return sorted(out, key=lambda r: r.name)

    def _instance_view(self, host: str, vm_name: str) -> compute.VirtualMachineInstanceView | None:
        return self._find(
            host,
            "reading the VM's power state",
            lambda: self.compute.virtual_machines.instance_view(self._rg, vm_name),
        )

    def public_ip(self, name: str) -> str | None:
        return self._address(name)

    def _power(self, name: str, step: str, begin: Callable[[str, str], Any]) -> HostRecord:
        self._must(name)
        self._call(name, step, lambda: _finish(begin(self._rg, self.vm_name(name))))
        record = self.get(name)
        if record is None:
            raise ProviderError(
                f"azure provider {self.name}, host {name}: VM vanished while {step}"
            )
        return record

    def start(self, name: str) -> HostRecord:
        return self._power(name, "starting the VM", self.compute.virtual_machines.begin_start)

    def stop(self, name: str) -> HostRecord:
        """Stop and DEALLOCATE the VM: compute billing stops (disk and static IP still bill).

        The public IP is static, so the address survives; `start` brings the host back. Use
        `power_off` for a stop that keeps the hardware allocated (and billed)."""
        return self._power(
            name, "deallocating the VM", self.compute.virtual_machines.begin_deallocate
        )

    def power_off(self, name: str) -> HostRecord:
        """Power the VM off but keep it allocated: faster to start, and still billed as running."""
        return self._power(
            name, "powering off the VM", self.compute.virtual_machines.begin_power_off
        )

    def reboot(self, name: str) -> HostRecord:
        return self._power(name, "restarting the VM", self.compute.virtual_machines.begin_restart)

    def terminate(self, name: str) -> None:
        """Delete the VM, then its NIC, public IP and OS disk; the shared RG, VNet and NSG stay."""
        # refuses a same-named VM that another fleet owns; a missing VM still gets its leftovers
        self._read_vm(name, instance_view=False)
        vms, nics = self.compute.virtual_machines, self.network.network_interfaces
        ips, disks = self.network.public_ip_addresses, self.compute.disks
        self._delete(name, "deleting the VM", vms.begin_delete, self.vm_name(name))
        self._delete(name, "deleting the network interface", nics.begin_delete, self.nic_name(name))
        self._delete(name, "deleting the public IP", ips.begin_delete, self.ip_name(name))
        self._delete(name, "deleting the OS disk", disks.begin_delete, self.disk_name(name))


def _text(value: Any) -> str:
    """SDK enums (`VirtualMachineSizeTypes.STANDARD_B1S`) as the wire string (`Standard_B1s`)."""
    return str(value.value) if isinstance(value, Enum) else str(value)


def _power_state(vm: compute.VirtualMachine) -> str | None:
    view = vm.instance_view
    statuses: Iterable[Any] = (view.statuses if view is not None else None) or []
    for status in statuses:
        code = str(getattr(status, "code", "") or "")
        if code.startswith("PowerState/"):
            return code.split("/", 1)[1]
    return None


def _state(vm: compute.VirtualMachine, power: str | None) -> str:
    if power is not None:
        return POWER_STATES.get(power, power)
    provisioning = _text(vm.provisioning_state or "")
    if provisioning in ("Creating", "Updating"):
        return "provisioning"
    if provisioning == "Deleting":
        return "terminating"
    if provisioning == "Failed":
        return "failed"
    return "unknown"
