"""The fleet's shared OCI network: a VCN, an internet gateway, a route table whose default route
goes through it, a security list that lets in SSH from the operator's range and nothing else,
and a public subnet with only that list.

Each part is found again by name and tags, compared with what is wanted, and changed only where
it differs: a rerun sends no write, and rules someone widened by hand drift back."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from oci.core.models import (
    CreateInternetGatewayDetails,
    CreateRouteTableDetails,
    CreateSecurityListDetails,
    CreateSubnetDetails,
    CreateVcnDetails,
    EgressSecurityRule,
    IngressSecurityRule,
    PortRange,
    RouteRule,
    TcpOptions,
    UpdateRouteTableDetails,
    UpdateSecurityListDetails,
    UpdateSubnetDetails,
)

from gradientlab.config import OciSettings
from gradientlab.providers.base import FLEET_TAG, ProviderError
from gradientlab.providers.oci.sdk import OciApi

ANYWHERE = "0.0.0.0/0"
TCP = "6"

# A change to make: (what it does, the SDK call, its arguments).
Change = tuple[str, Callable[..., Any], tuple[Any, ...]]


@dataclass(frozen=True)
class Network:
    vcn_id: str
    subnet_id: str


def route_rules(gateway_id: str) -> list[RouteRule]:
    return [
        RouteRule(
            destination=ANYWHERE,
            destination_type="CIDR_BLOCK",
            network_entity_id=gateway_id,
            description="default route to the internet gateway",
        )
    ]


def firewall_rules(
    operator_cidr: str,
) -> tuple[list[IngressSecurityRule], list[EgressSecurityRule]]:
    """SSH in from the operator's range only; everything out."""
    ingress = [
        IngressSecurityRule(
            protocol=TCP,
            source=operator_cidr,
            source_type="CIDR_BLOCK",
            is_stateless=False,
            tcp_options=TcpOptions(destination_port_range=PortRange(min=22, max=22)),
            description="SSH from the operator",
        )
    ]
    egress = [
        EgressSecurityRule(
            protocol="all",
            destination=ANYWHERE,
            destination_type="CIDR_BLOCK",
            is_stateless=False,
            description="all outbound",
        )
    ]
    return ingress, egress


def route_keys(rules: Iterable[Any] | None) -> set[tuple[Any, ...]]:
    return {(r.destination, r.destination_type, r.network_entity_id) for r in rules or []}


def rule_keys(rules: Iterable[Any] | None) -> set[tuple[Any, ...]]:
    keys = set()
    for r in rules or []:
        ports = None
        tcp = getattr(r, "tcp_options", None)
        if tcp is not None and tcp.destination_port_range is not None:
            ports = (tcp.destination_port_range.min, tcp.destination_port_range.max)
        address = getattr(r, "source", None) or getattr(r, "destination", None)
        udp_icmp = (getattr(r, "udp_options", None) is not None, r.icmp_options is not None)
        keys.add((r.protocol, address, bool(r.is_stateless), ports, udp_icmp))
    return keys


class FleetNetwork:
    def __init__(self, api: OciApi, settings: OciSettings, fleet: str) -> None:
        self.api = api
        self.settings = settings
        self.fleet = fleet
        self.client = api.network
        self.tags = {FLEET_TAG: fleet}

    def name(self, part: str | None = None) -> str:
        base = f"gradientlab-{self.fleet}"
        return f"{base}-{part}" if part else base

    def _converge(
        self,
        what: str,
        name: str,
        list_fn: Callable[..., Any],
        create: Change,
        change: Callable[[Any], Change | None] = lambda _: None,
        **filters: Any,
    ) -> Any:
        """Read the part, create it when missing, or make the one change it needs."""
        found = self.api.find_named(f"looking up {what}", list_fn, name, self.fleet, **filters)
        needed = create if found is None else change(found)
        if needed is None:
            return found
        doing, fn, args = needed
        return self.api.call(doing, fn, *args)

    def ensure(self) -> Network:
        vcn = self._vcn()
        gateway = self._gateway(vcn.id)
        table = self._route_table(vcn.id, gateway.id)
        security = self._security_list(vcn.id)
        subnet = self._subnet(vcn.id, table.id, security.id)
        return Network(vcn_id=vcn.id, subnet_id=subnet.id)

    def _vcn(self) -> Any:
        cidr = self.settings.vcn_cidr

        def check(vcn: Any) -> None:
            if cidr not in (vcn.cidr_blocks or [vcn.cidr_block]):
                raise ProviderError(
                    f"{self.api.name}: VCN {vcn.display_name} ({vcn.id}) has {vcn.cidr_blocks}, "
                    f"the fleet file says vcn_cidr {cidr}; put the old range back"
                )

        details = CreateVcnDetails(
            compartment_id=self.api.compartment,
            cidr_blocks=[cidr],
            display_name=self.name(),
            freeform_tags=self.tags,
        )
        return self._converge(
            "the VCN",
            self.name(),
            self.client.list_vcns,
            ("creating the VCN", self.client.create_vcn, (details,)),
            check,
        )

    def _gateway(self, vcn_id: str) -> Any:
        details = CreateInternetGatewayDetails(
            compartment_id=self.api.compartment,
            vcn_id=vcn_id,
            is_enabled=True,
            display_name=self.name("igw"),
            freeform_tags=self.tags,
        )
        return self._converge(
            "the internet gateway",
            self.name("igw"),
            self.client.list_internet_gateways,
            ("creating the internet gateway", self.client.create_internet_gateway, (details,)),
            vcn_id=vcn_id,
        )

    def _route_table(self, vcn_id: str, gateway_id: str) -> Any:
        routes = route_rules(gateway_id)

        def change(table: Any) -> Change | None:
            if route_keys(table.route_rules) == route_keys(routes):
                return None
            update = UpdateRouteTableDetails(route_rules=routes)
            return ("restoring the route table", self.client.update_route_table, (table.id, update))

        details = CreateRouteTableDetails(
            compartment_id=self.api.compartment,
            vcn_id=vcn_id,
            route_rules=routes,
            display_name=self.name("routes"),
            freeform_tags=self.tags,
        )
        return self._converge(
            "the route table",
            self.name("routes"),
            self.client.list_route_tables,
            ("creating the route table", self.client.create_route_table, (details,)),
            change,
            vcn_id=vcn_id,
        )

    def _security_list(self, vcn_id: str) -> Any:
        ingress, egress = firewall_rules(self.settings.operator_cidr)

        def change(security: Any) -> Change | None:
            if rule_keys(security.ingress_security_rules) == rule_keys(ingress) and rule_keys(
                security.egress_security_rules
            ) == rule_keys(egress):
                return None
            # the operator's range changed, or someone opened more: back to exactly ours
            update = UpdateSecurityListDetails(
                ingress_security_rules=ingress, egress_security_rules=egress
            )
            return (
                "restoring the security list",
                self.client.update_security_list,
                (security.id, update),
            )

        details = CreateSecurityListDetails(
            compartment_id=self.api.compartment,
            vcn_id=vcn_id,
            ingress_security_rules=ingress,
            egress_security_rules=egress,
            display_name=self.name("ssh"),
            freeform_tags=self.tags,
        )
        return self._converge(
            "the security list",
            self.name("ssh"),
            self.client.list_security_lists,
            ("creating the security list", self.client.create_security_list, (details,)),
            change,
            vcn_id=vcn_id,
        )

    def _subnet(self, vcn_id: str, table_id: str, security_id: str) -> Any:
        cidr = self.settings.subnet_cidr

        def change(subnet: Any) -> Change | None:
            if subnet.cidr_block != cidr:
                raise ProviderError(
                    f"{self.api.name}: subnet {subnet.display_name} ({subnet.id}) has "
                    f"{subnet.cidr_block}, the fleet file says subnet_cidr {cidr}; put the old "
                    "range back"
                )
            if subnet.route_table_id == table_id and list(subnet.security_list_ids or []) == [
                security_id
            ]:
                return None
            update = UpdateSubnetDetails(route_table_id=table_id, security_list_ids=[security_id])
            return (
                "restoring the subnet's route table and security list",
                self.client.update_subnet,
                (subnet.id, update),
            )

        # Only our security list: without it OCI attaches the VCN's default list, whose rules
        # let SSH in from anywhere.
        details = CreateSubnetDetails(
            compartment_id=self.api.compartment,
            vcn_id=vcn_id,
            cidr_block=cidr,
            route_table_id=table_id,
            security_list_ids=[security_id],
            prohibit_public_ip_on_vnic=False,
            display_name=self.name("subnet"),
            freeform_tags=self.tags,
        )
        return self._converge(
            "the subnet",
            self.name("subnet"),
            self.client.list_subnets,
            ("creating the subnet", self.client.create_subnet, (details,)),
            change,
            vcn_id=vcn_id,
        )
