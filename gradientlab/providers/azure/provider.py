"""Azure hosts: one VM per host (`Standard_B1s` by default) in one resource group per fleet, on
the fleet's network (`network.py`), each with its own IP and NIC (`host.py`), priced by
`pricing.py`. Credentials arrive as an `azure.core.credentials.TokenCredential`; the task layer
builds it from the prefect-azure block (`AzureContainerInstanceCredentials`) named in
`credentials_block`."""

from __future__ import annotations

import builtins
import re
import time
from collections.abc import Callable, Iterable
from enum import Enum
from typing import Any

from azure.core.credentials import TokenCredential
from azure.mgmt.compute import models as compute

from gradientlab.config import AzureSettings, HostSettings
from gradientlab.providers.azure import pricing
from gradientlab.providers.azure.host import HostResources
from gradientlab.providers.azure.network import FleetNetwork
from gradientlab.providers.azure.sdk import ArmApi, finish
from gradientlab.providers.base import (
    FLEET_TAG,
    HOST_KEY_TAG,
    HOST_TAG,
    HostRecord,
    HostState,
    PlannedHost,
    ProviderError,
    ProviderNotFound,
)

POWER_STATES = {
    "running": HostState.RUNNING,
    "deallocated": HostState.STOPPED,
    "stopped": HostState.STOPPED,
    "starting": HostState.PROVISIONING,
    "stopping": HostState.STOPPING,
    "deallocating": HostState.STOPPING,
}


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
    return {
        "Creating": HostState.PROVISIONING,
        "Updating": HostState.PROVISIONING,
        "Deleting": "terminating",
        "Failed": "failed",
    }.get(provisioning, "unknown")


class AzureCloudProvider:
    """Hosts as Azure VMs (`Standard_B1s` by default) in one resource group per fleet."""

    kind = "azure"

    def __init__(
        self,
        name: str,
        settings: AzureSettings,
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
        self._rg = settings.resource_group
        self.api = ArmApi(name, settings, credential, sleep, polling_interval)
        prefix = "gradientlab-" + re.sub(r"[^a-z0-9-]", "-", fleet_name.lower())
        self.fleet_network = FleetNetwork(self.api, settings, fleet_name, prefix)
        self.hosts = HostResources(self.api, settings, fleet_name, prefix)
        self.compute, self.network = self.api.compute, self.api.network

    def vm_name(self, host: str) -> str:
        return self.hosts.names(host).vm

    def ip_name(self, host: str) -> str:
        return self.hosts.names(host).ip

    # -- the Provider protocol

    def plan(self, spec: HostSettings) -> PlannedHost:
        cost = pricing.estimate(self.settings.vm_size)
        exists = self._machine(spec.name, instance_view=False) is not None
        return PlannedHost(
            name=spec.name,
            provider=self.name,
            region=self.settings.location,
            action="keep" if exists else "create",
            monthly_cost_usd=cost.monthly_usd,
            free_tier=cost.free_tier,
            warnings=cost.warnings,
        )

    def create(self, spec: HostSettings, authorized_key: str) -> HostRecord:
        """Create the host, or converge to it: same names, same bodies, the same pinned key.

        An existing VM is kept (Azure refuses to change `customData` after creation, and its
        host key is already pinned in its tag); a stopped one is started. If creating the VM
        fails, what this run created for the host (VM, NIC, IP) is deleted again; the shared
        resource group, VNet and NSG stay."""
        host = spec.name
        subnet_id = self.fleet_network.ensure()
        vm = self._machine(host, instance_view=False)
        ip_existed = self.hosts.public_ip(host) is not None
        nic_existed = self.hosts.nic_exists(host)
        try:
            ip = self.hosts.put_public_ip(host)
            nic = self.hosts.put_nic(host, subnet_id, str(ip.id))
            if vm is None:
                self.hosts.put_vm(spec, authorized_key, str(nic.id))
        except ProviderError as err:
            if vm is None:
                self.hosts.undo_create(
                    host, remove_ip=not ip_existed, remove_nic=not nic_existed, err=err
                )
            raise
        address = self._wait_for_address(host)
        current = self._machine(host, instance_view=True)
        if current is None:
            raise ProviderError(
                f"azure provider {self.name}, host {host}: VM {self.vm_name(host)} vanished "
                "right after creation; run create again"
            )
        record = self._record(current, address)
        if record.state == "stopped":
            return self.start(host)
        return record

    def get(self, name: str) -> HostRecord | None:
        vms = self.compute.virtual_machines
        vm = self.api.find(
            name,
            "reading the VM",
            lambda: vms.get(self._rg, self.vm_name(name), expand="instanceView"),
        )
        if vm is None or (vm.tags or {}).get(FLEET_TAG) != self.fleet_name:
            return None
        return self._record(vm, self._address(name))

    def list(self) -> builtins.list[HostRecord]:
        """This fleet's VMs: those in the resource group tagged with this fleet's name."""
        vms = self.compute.virtual_machines
        found = self.api.find(None, "listing VMs", lambda: builtins.list(vms.list(self._rg)))
        ours = [vm for vm in found or [] if (vm.tags or {}).get(FLEET_TAG) == self.fleet_name]
        if not ours:
            return []
        ips = self.api.call(
            None,
            "listing public IPs",
            lambda: builtins.list(self.network.public_ip_addresses.list(self._rg)),
        )
        addresses = {ip.name: ip.properties.ip_address for ip in ips if ip.properties}
        out = []
        for vm in ours:
            host = (vm.tags or {}).get(HOST_TAG) or str(vm.name).removeprefix(
                self.hosts.prefix + "-"
            )
            view = self._instance_view(host, str(vm.name))
            if view is None:
                continue  # deleted between the listing and now
            vm.instance_view = view
            out.append(self._record(vm, addresses.get(self.ip_name(host))))
        return sorted(out, key=lambda r: r.name)

    def public_ip(self, name: str) -> str | None:
        return self._address(name)

    def _instance_view(self, host: str, vm_name: str) -> compute.VirtualMachineInstanceView | None:
        vms = self.compute.virtual_machines
        return self.api.find(
            host, "reading the VM's power state", lambda: vms.instance_view(self._rg, vm_name)
        )

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
        self._machine(name, instance_view=False)
        self.hosts.delete_all(name)

    # -- VMs and records

    def _machine(self, host: str, *, instance_view: bool) -> compute.VirtualMachine | None:
        """The host's VM, or None; a same-named VM another fleet owns is refused."""
        expand = "instanceView" if instance_view else None
        vms = self.compute.virtual_machines
        vm = self.api.find(
            host, "reading the VM", lambda: vms.get(self._rg, self.vm_name(host), expand=expand)
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

    def _must(self, name: str) -> compute.VirtualMachine:
        vm = self._machine(name, instance_view=False)
        if vm is None:
            raise ProviderNotFound(
                f"azure provider {self.name}: no VM {self.vm_name(name)} in resource group "
                f"{self._rg} (create host {name} first)"
            )
        return vm

    def _power(self, name: str, step: str, begin: Callable[[str, str], Any]) -> HostRecord:
        self._must(name)
        self.api.call(name, step, lambda: finish(begin(self._rg, self.vm_name(name))))
        record = self.get(name)
        if record is None:
            raise ProviderNotFound(
                f"azure provider {self.name}, host {name}: VM vanished while {step}"
            )
        return record

    def _address(self, host: str) -> str | None:
        ip = self.hosts.public_ip(host)
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
            hourly_cost_usd=pricing.hourly_cost(size),
            meta={"systemd": True, "cloud": "azure", "power_state": power},
        )
