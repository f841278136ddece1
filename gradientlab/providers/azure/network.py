"""The fleet's shared Azure network: a resource group tagged with the fleet, a network security
group that admits SSH from the operator's range only, and a virtual network with one subnet
behind that group.

ARM's `create_or_update` is itself "compare and change the difference": a PUT of the wanted
resource changes only what differs, and replaces the whole rule list, so rules someone added by
hand go. A resource group another fleet owns is refused before anything is written."""

from __future__ import annotations

from azure.mgmt.network import models as network
from azure.mgmt.resource.resources.models import ResourceGroup

from gradientlab.config import AzureSettings
from gradientlab.providers.azure.sdk import ArmApi, finish
from gradientlab.providers.base import FLEET_TAG, ProviderError

VNET_PREFIX = "10.44.0.0/16"
SUBNET_NAME = "default"
SUBNET_PREFIX = "10.44.1.0/24"
SSH_RULE_NAME = "allow-ssh-from-operator"


def ssh_rule(operator_cidr: str) -> network.SecurityRule:
    # Exactly one rule: Azure's default rules already deny every other inbound connection from
    # the internet.
    return network.SecurityRule(
        name=SSH_RULE_NAME,
        properties=network.SecurityRulePropertiesFormat(
            description="SSH from the operator's range only",
            protocol="Tcp",
            access="Allow",
            direction="Inbound",
            priority=100,
            source_address_prefix=operator_cidr,
            source_port_range="*",
            destination_address_prefix="*",
            destination_port_range="22",
        ),
    )


def virtual_network(location: str, tags: dict[str, str], nsg_id: str) -> network.VirtualNetwork:
    subnet = network.Subnet(
        name=SUBNET_NAME,
        properties=network.SubnetPropertiesFormat(
            address_prefix=SUBNET_PREFIX,
            network_security_group=network.NetworkSecurityGroup(id=nsg_id),
        ),
    )
    return network.VirtualNetwork(
        location=location,
        tags=tags,
        properties=network.VirtualNetworkPropertiesFormat(
            address_space=network.AddressSpace(address_prefixes=[VNET_PREFIX]), subnets=[subnet]
        ),
    )


class FleetNetwork:
    def __init__(self, api: ArmApi, settings: AzureSettings, fleet: str, prefix: str) -> None:
        self.api = api
        self.settings = settings
        self.fleet = fleet
        self.vnet_name = f"{prefix}-vnet"
        self.nsg_name = f"{prefix}-nsg"
        self._subnet_id: str | None = None  # set once the shared network is in place

    def ensure(self) -> str:
        """The subnet's id, once the group, NSG and VNet are as wanted (once per object)."""
        if self._subnet_id is None:
            self._resource_group()
            nsg = self._security_group()
            self._subnet_id = self._virtual_network(str(nsg.id))
        return self._subnet_id

    def _resource_group(self) -> None:
        groups = self.api.resources.resource_groups
        existing = self.api.find(
            None, "reading the resource group", lambda: groups.get(self.api.rg)
        )
        tags = dict(existing.tags or {}) if existing is not None else {}
        owner = tags.get(FLEET_TAG)
        if owner is not None and owner != self.fleet:
            raise ProviderError(
                f"azure provider {self.api.name}: resource group {self.api.rg} belongs to fleet "
                f"{owner!r}; give this fleet its own `resource_group`"
            )
        tags[FLEET_TAG] = self.fleet
        # an existing group keeps its location; a different one would be refused
        location = existing.location if existing is not None else self.settings.location
        wanted = ResourceGroup(location=location, tags=tags)
        self.api.call(
            None,
            "creating the resource group",
            lambda: groups.create_or_update(self.api.rg, wanted),
        )

    def _security_group(self) -> network.NetworkSecurityGroup:
        wanted = network.NetworkSecurityGroup(
            location=self.settings.location,
            tags={FLEET_TAG: self.fleet},
            properties=network.NetworkSecurityGroupPropertiesFormat(
                security_rules=[ssh_rule(self.settings.operator_cidr)]
            ),
        )
        groups = self.api.network.network_security_groups
        return self.api.call(
            None,
            "creating the network security group",
            lambda: finish(groups.begin_create_or_update(self.api.rg, self.nsg_name, wanted)),
        )

    def _virtual_network(self, nsg_id: str) -> str:
        wanted = virtual_network(self.settings.location, {FLEET_TAG: self.fleet}, nsg_id)
        vnets = self.api.network.virtual_networks
        vnet = self.api.call(
            None,
            "creating the virtual network",
            lambda: finish(vnets.begin_create_or_update(self.api.rg, self.vnet_name, wanted)),
        )
        subnets = vnet.properties.subnets if vnet.properties else None
        subnet_id = next((s.id for s in subnets or [] if s.name == SUBNET_NAME and s.id), None)
        return subnet_id or f"{vnet.id}/subnets/{SUBNET_NAME}"
