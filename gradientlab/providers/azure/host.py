"""One host's Azure resources, named from the fleet and the host so a rerun converges: a static
Standard public IP, a NIC on the fleet's subnet, and the VM (with its OS disk), each put with
`begin_create_or_update`; and taking away what a failed create left behind."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from azure.mgmt.compute import models as compute
from azure.mgmt.network import models as network

from gradientlab.config import AzureSettings, HostSettings
from gradientlab.providers.azure.sdk import ArmApi, finish
from gradientlab.providers.base import FLEET_TAG, HOST_KEY_TAG, HOST_TAG, ProviderError
from gradientlab.providers.bootstrap import HostKeyPair, cloud_init_b64

OS_DISK_TYPE = "StandardSSD_LRS"


@dataclass(frozen=True)
class Names:
    """Every name of one host's resources."""

    vm: str
    nic: str
    ip: str
    disk: str

    @classmethod
    def of(cls, prefix: str, host: str) -> Names:
        base = f"{prefix}-{host}"
        return cls(vm=base, nic=f"{base}-nic", ip=f"{base}-ip", disk=f"{base}-osdisk")


def vm_body(
    settings: AzureSettings,
    fleet: str,
    names: Names,
    spec: HostSettings,
    authorized_key: str,
    host_key: HostKeyPair,
    nic_id: str,
) -> compute.VirtualMachine:
    user, image = settings.ssh_user, settings.image
    ssh_key = compute.SshPublicKey(
        path=f"/home/{user}/.ssh/authorized_keys", key_data=authorized_key.strip()
    )
    return compute.VirtualMachine(
        location=settings.location,
        tags={FLEET_TAG: fleet, HOST_TAG: spec.name, HOST_KEY_TAG: host_key.public},
        properties=compute.VirtualMachineProperties(
            hardware_profile=compute.HardwareProfile(vm_size=settings.vm_size),
            storage_profile=compute.StorageProfile(
                image_reference=compute.ImageReference(
                    publisher=image.publisher,
                    offer=image.offer,
                    sku=image.sku,
                    version=image.version,
                ),
                os_disk=compute.OSDisk(
                    name=names.disk,
                    create_option="FromImage",
                    delete_option="Delete",
                    managed_disk=compute.ManagedDiskParameters(storage_account_type=OS_DISK_TYPE),
                ),
            ),
            os_profile=compute.OSProfile(
                computer_name=spec.name,
                admin_username=user,
                custom_data=cloud_init_b64(user, authorized_key, host_key, spec.name),
                linux_configuration=compute.LinuxConfiguration(
                    disable_password_authentication=True,
                    ssh=compute.SshConfiguration(public_keys=[ssh_key]),
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


class HostResources:
    """Putting, reading and deleting the resources of the fleet's hosts."""

    def __init__(self, api: ArmApi, settings: AzureSettings, fleet: str, prefix: str) -> None:
        self.api = api
        self.settings = settings
        self.fleet = fleet
        self.prefix = prefix

    def names(self, host: str) -> Names:
        return Names.of(self.prefix, host)

    def _tags(self, host: str) -> dict[str, str]:
        return {FLEET_TAG: self.fleet, HOST_TAG: host}

    def public_ip(self, host: str) -> network.PublicIPAddress | None:
        ips = self.api.network.public_ip_addresses
        name = self.names(host).ip
        return self.api.find(host, "reading the public IP", lambda: ips.get(self.api.rg, name))

    def nic_exists(self, host: str) -> bool:
        nics = self.api.network.network_interfaces
        name = self.names(host).nic
        found = self.api.find(
            host, "reading the network interface", lambda: nics.get(self.api.rg, name)
        )
        return found is not None

    def put_public_ip(self, host: str) -> network.PublicIPAddress:
        wanted = network.PublicIPAddress(
            location=self.settings.location,
            tags=self._tags(host),
            sku=network.PublicIPAddressSku(name="Standard", tier="Regional"),
            properties=network.PublicIPAddressPropertiesFormat(
                public_ip_allocation_method="Static", public_ip_address_version="IPv4"
            ),
        )
        ips, name = self.api.network.public_ip_addresses, self.names(host).ip
        return self.api.call(
            host,
            "creating the public IP",
            lambda: finish(ips.begin_create_or_update(self.api.rg, name, wanted)),
        )

    def put_nic(self, host: str, subnet_id: str, ip_id: str) -> network.NetworkInterface:
        config = network.NetworkInterfaceIPConfiguration(
            name="ipconfig1",
            properties=network.NetworkInterfaceIPConfigurationPropertiesFormat(
                primary=True,
                private_ip_allocation_method="Dynamic",
                subnet=network.Subnet(id=subnet_id),
                public_ip_address=network.PublicIPAddress(id=ip_id),
            ),
        )
        wanted = network.NetworkInterface(
            location=self.settings.location,
            tags=self._tags(host),
            properties=network.NetworkInterfacePropertiesFormat(ip_configurations=[config]),
        )
        nics, name = self.api.network.network_interfaces, self.names(host).nic
        return self.api.call(
            host,
            "creating the network interface",
            lambda: finish(nics.begin_create_or_update(self.api.rg, name, wanted)),
        )

    def put_vm(self, spec: HostSettings, authorized_key: str, nic_id: str) -> None:
        names = self.names(spec.name)
        body = vm_body(
            self.settings, self.fleet, names, spec, authorized_key, HostKeyPair.generate(), nic_id
        )
        vms = self.api.compute.virtual_machines
        self.api.call(
            spec.name,
            "creating the VM",
            lambda: finish(vms.begin_create_or_update(self.api.rg, names.vm, body)),
        )

    def delete_all(self, host: str) -> None:
        """The VM, then its NIC, public IP and OS disk; a missing one counts as deleted."""
        names, compute_, network_ = self.names(host), self.api.compute, self.api.network
        delete = self.api.delete
        delete(host, "deleting the VM", compute_.virtual_machines.begin_delete, names.vm)
        nics = network_.network_interfaces
        delete(host, "deleting the network interface", nics.begin_delete, names.nic)
        ips = network_.public_ip_addresses
        delete(host, "deleting the public IP", ips.begin_delete, names.ip)
        delete(host, "deleting the OS disk", compute_.disks.begin_delete, names.disk)

    def undo_create(
        self, host: str, *, remove_ip: bool, remove_nic: bool, err: ProviderError
    ) -> None:
        """Delete what this run made for `host` after a failure; never hide the failure itself."""
        names, compute_, network_ = self.names(host), self.api.compute, self.api.network
        steps: list[tuple[str, Callable[[str, str], Any], str]] = []
        # a VM that failed to provision still exists (state Failed) and holds the NIC
        vms = compute_.virtual_machines
        try:
            found = self.api.find(host, "reading the VM", lambda: vms.get(self.api.rg, names.vm))
            vm_made = found is not None
        except ProviderError:
            vm_made = True  # unknown: deleting what is not there costs one 204
        if vm_made:
            steps.append(("deleting the failed VM", vms.begin_delete, names.vm))
            steps.append(("deleting the failed VM's disk", compute_.disks.begin_delete, names.disk))
        if remove_nic:
            nics = network_.network_interfaces
            steps.append(("deleting the network interface", nics.begin_delete, names.nic))
        if remove_ip:
            ips = network_.public_ip_addresses
            steps.append(("deleting the public IP", ips.begin_delete, names.ip))
        left: list[str] = []
        for step, begin, resource in steps:
            try:
                self.api.delete(host, step, begin, resource)
            except ProviderError as cleanup:
                left.append(str(cleanup))
        if left:
            err.args = (
                f"{err}\nCleaning up after it also failed; run terminate {host} to finish: "
                + "; ".join(left),
            )
