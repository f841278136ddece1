"""Oracle Cloud (OCI) hosts through the `oci` SDK.

Every host is one instance in the fleet's compartment, tagged with the fleet, its host name and
the SSH host key GradientLab generated for it. The fleet shares one network, found again by name
and tags on every run: a VCN, an internet gateway, a route table whose default route goes through
it, a security list that lets in SSH from the operator's range and nothing else, and a public
subnet. Launches carry a retry token derived from the fleet and host, so a repeated `create`
never makes a second VM; "Out of host capacity" is retried across availability domains."""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

import oci
from oci._vendor.requests.exceptions import RequestException
from oci.circuit_breaker import NoCircuitBreakerStrategy
from oci.core.models import (
    CreateInternetGatewayDetails,
    CreateRouteTableDetails,
    CreateSecurityListDetails,
    CreateSubnetDetails,
    CreateVcnDetails,
    CreateVnicDetails,
    EgressSecurityRule,
    IngressSecurityRule,
    Instance,
    InstanceSourceViaImageDetails,
    LaunchInstanceDetails,
    LaunchInstanceShapeConfigDetails,
    PortRange,
    RouteRule,
    TcpOptions,
    UpdateRouteTableDetails,
    UpdateSecurityListDetails,
    UpdateSubnetDetails,
)
from oci.exceptions import ServiceError

from gradientlab.config import HostSpec, OciProvider
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

FREE_MICRO_SHAPE = "VM.Standard.E2.1.Micro"
FREE_A1_SHAPE = "VM.Standard.A1.Flex"
# Always Free, per tenancy: two micro instances, and 4 OCPUs / 24 GB across all A1 instances.
FREE_MICRO_INSTANCES = 2
FREE_A1_OCPUS = 4.0
FREE_A1_MEMORY_GBS = 24.0
HOURS_PER_MONTH = 730
UNSUPPORTED_WARNING = (
    "cloud data-centre addresses are likely marked Unsupported by Gradient (they earn nothing)"
)

# Rough pay-as-you-go list prices in USD, for estimates only: (per OCPU-hour, per GB-hour).
FLEX_PRICES: dict[str, tuple[float, float]] = {
    "VM.Standard.A1.Flex": (0.01, 0.0015),
    "VM.Standard.E3.Flex": (0.025, 0.0015),
    "VM.Standard.E4.Flex": (0.025, 0.0015),
    "VM.Standard.E5.Flex": (0.03, 0.002),
    "VM.Standard3.Flex": (0.04, 0.0015),
}
FIXED_PRICES: dict[str, float] = {
    FREE_MICRO_SHAPE: 0.0,
    "VM.Standard.E2.1": 0.03,
    "VM.Standard.E2.2": 0.06,
    "VM.Standard2.1": 0.0638,
    "VM.Standard2.2": 0.1276,
}
UNKNOWN_SHAPE_HOURLY = 0.05

STATES = {
    "RUNNING": "running",
    "CREATING_IMAGE": "running",
    "STOPPED": "stopped",
    "STOPPING": "stopped",
    "PROVISIONING": "provisioning",
    "STARTING": "provisioning",
    "MOVING": "provisioning",
    "TERMINATING": "terminated",
    "TERMINATED": "terminated",
}
GONE = ("TERMINATING", "TERMINATED")
ANYWHERE = "0.0.0.0/0"
TCP = "6"


def credentials_from(
    config_file: str | None, profile: str = "DEFAULT", instance_principal: bool = False
) -> tuple[dict[str, Any] | None, object | None]:
    """`(config, signer)` for `OciCloudProvider`: an OCI config file profile, or, on an OCI
    instance in a dynamic group, the instance principal."""
    if instance_principal:
        try:
            signer = oci.auth.signers.InstancePrincipalsSecurityTokenSigner()
        except Exception as exc:  # the SDK raises a variety of HTTP and parsing errors here
            raise ProviderAuthError(
                "OCI instance principal sign-in failed; it works only on an OCI instance that a "
                f"dynamic group and a policy allow to manage instances: {exc}"
            ) from exc
        return None, signer
    location = config_file or oci.config.DEFAULT_LOCATION
    try:
        config = oci.config.from_file(location, profile)
        oci.config.validate_config(config)
    except oci.exceptions.ClientError as exc:
        raise ProviderAuthError(f"OCI config {location} [{profile}]: {exc}") from exc
    return config, None


@dataclass(frozen=True)
class _Network:
    vcn_id: str
    subnet_id: str


class _NotFound(ProviderError):
    """OCI answered 404: the resource is gone, or these credentials may not see it."""


class OciCloudProvider:
    kind = "oci"

    def __init__(
        self,
        name: str,
        settings: OciProvider,
        config: dict[str, Any] | None = None,
        signer: object | None = None,
        *,
        fleet_name: str = "gradientlab",
        sleep: Callable[[float], None] = time.sleep,
        poll_seconds: float = 5.0,
        launch_timeout_seconds: float = 900.0,
        action_timeout_seconds: float = 600.0,
        capacity_passes: int = 3,
        capacity_backoff_seconds: float = 30.0,
    ) -> None:
        self.name = name
        self.settings = settings
        self.fleet = fleet_name
        self._sleep = sleep
        self.poll_seconds = poll_seconds
        self.launch_timeout_seconds = launch_timeout_seconds
        self.action_timeout_seconds = action_timeout_seconds
        self.capacity_passes = max(1, capacity_passes)
        self.capacity_backoff_seconds = capacity_backoff_seconds
        if config is None and signer is None:
            raise ProviderAuthError(
                f"{name}: no OCI credentials given; load them from the block "
                f"{settings.credentials_block!r} (see credentials_from)"
            )
        client_config = {**(config or {}), "region": settings.region}
        # Retries are ours (capacity across ADs, Prefect task retries); the SDK must not sleep.
        kwargs: dict[str, Any] = {
            "retry_strategy": oci.retry.NoneRetryStrategy(),
            "circuit_breaker_strategy": NoCircuitBreakerStrategy(),
        }
        if signer is not None:
            kwargs["signer"] = signer
        if settings.endpoint:
            kwargs["service_endpoint"] = settings.endpoint.rstrip("/")
        try:
            self.compute = oci.core.ComputeClient(client_config, **kwargs)
            self.network = oci.core.VirtualNetworkClient(client_config, **kwargs)
            self.identity = oci.identity.IdentityClient(client_config, **kwargs)
        except (oci.exceptions.ClientError, ValueError, OSError) as exc:
            raise ProviderAuthError(
                f"{name}: the OCI credentials from block {settings.credentials_block!r} are "
                f"unusable: {exc}"
            ) from exc
        self.tenancy_id: str = (
            client_config.get("tenancy")
            or getattr(signer, "tenancy_id", None)
            or settings.compartment_id
        )

    # -- names and tags

    @property
    def _compartment(self) -> str:
        return self.settings.compartment_id

    def _network_name(self, part: str | None = None) -> str:
        base = f"gradientlab-{self.fleet}"
        return f"{base}-{part}" if part else base

    def display_name(self, host: str) -> str:
        return f"gradientlab-{self.fleet}-{host}"

    def retry_token(self, host: str, availability_domain: str, replaces: str = "") -> str:
        """The same launch (fleet, host, AD) always carries the same token, so OCI runs it once.

        `replaces` names a terminated instance the plain token already points to."""
        seed = f"gradientlab/{self.fleet}/{host}/{availability_domain}/{replaces}"
        return hashlib.sha256(seed.encode()).hexdigest()[:48]

    def _ours(self, resource: Any) -> bool:
        return (getattr(resource, "freeform_tags", None) or {}).get(FLEET_TAG) == self.fleet

    # -- calling OCI

    def _request(self, doing: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ServiceError as exc:
            raise self._error(exc, doing) from exc
        except RequestException as exc:  # also the SDK's ConnectTimeout
            raise ProviderError(
                f"{self.name}: cannot reach OCI ({self.compute.base_client.endpoint}) while "
                f"{doing}: {exc}"
            ) from exc

    def _call(self, doing: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self._request(doing, fn, *args, **kwargs).data

    def _list(self, doing: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> list[Any]:
        """Every page of a list call (not `oci.pagination`: it retries with real sleeps)."""
        items: list[Any] = []
        while True:
            response = self._request(doing, fn, *args, **kwargs)
            items.extend(response.data)
            if not response.has_next_page:
                return items
            kwargs["page"] = response.next_page

    def _error(self, exc: ServiceError, doing: str) -> ProviderError:
        status, code = exc.status, str(exc.code or "")
        text = f"{exc.message or ''}".strip()
        said = (
            f"OCI answered {status} {code} while {doing}: {text} (opc-request-id {exc.request_id})"
        )
        lowered = text.lower()
        if status == 401 or code == "NotAuthenticated":
            return ProviderAuthError(
                f"{self.name}: {said}. Fix the credentials in block "
                f"{self.settings.credentials_block!r} (user, fingerprint, key, region)."
            )
        if status == 429 or code == "TooManyRequests":
            return ProviderRateLimited(
                f"{self.name}: {said}; try again later", _retry_after(exc.headers)
            )
        if "out of host capacity" in lowered or code in ("OutOfHostCapacity", "OutOfCapacity"):
            return CapacityError(f"{self.name}: {said}")
        if code in ("LimitExceeded", "QuotaExceeded"):
            return QuotaError(
                f"{self.name}: {said}. Raise the service limit or compartment quota, or pick "
                "another shape."
            )
        if status == 404:
            return _NotFound(
                f"{self.name}: {said}. The resource is gone, or the policies of block "
                f"{self.settings.credentials_block!r} do not allow reading it."
            )
        if status >= 500:
            return ProviderError(f"{self.name}: {said}. OCI failed on its side; retry later.")
        return ProviderError(f"{self.name}: {said}")

    # -- the shared network

    def _find(self, doing: str, fn: Callable[..., Any], name: str, **filters: Any) -> Any | None:
        for item in self._list(doing, fn, self._compartment, display_name=name, **filters):
            if self._ours(item) and item.lifecycle_state not in GONE:
                return item
        return None

    def ensure_network(self) -> _Network:
        """Find the fleet's network or build what is missing of it; rules drift back."""
        tags = {FLEET_TAG: self.fleet}
        vcn = self._find("looking up the VCN", self.network.list_vcns, self._network_name())
        if vcn is None:
            details = CreateVcnDetails(
                compartment_id=self._compartment,
                cidr_blocks=[self.settings.vcn_cidr],
                display_name=self._network_name(),
                freeform_tags=tags,
            )
            vcn = self._call("creating the VCN", self.network.create_vcn, details)
        elif self.settings.vcn_cidr not in (vcn.cidr_blocks or [vcn.cidr_block]):
            raise ProviderError(
                f"{self.name}: VCN {vcn.display_name} ({vcn.id}) has {vcn.cidr_blocks}, the "
                f"fleet file says vcn_cidr {self.settings.vcn_cidr}; put the old range back"
            )
        in_vcn = {"vcn_id": vcn.id}

        igw = self._find(
            "looking up the internet gateway",
            self.network.list_internet_gateways,
            self._network_name("igw"),
            **in_vcn,
        )
        if igw is None:
            igw = self._call(
                "creating the internet gateway",
                self.network.create_internet_gateway,
                CreateInternetGatewayDetails(
                    compartment_id=self._compartment,
                    vcn_id=vcn.id,
                    is_enabled=True,
                    display_name=self._network_name("igw"),
                    freeform_tags=tags,
                ),
            )

        routes = [
            RouteRule(
                destination=ANYWHERE,
                destination_type="CIDR_BLOCK",
                network_entity_id=igw.id,
                description="default route to the internet gateway",
            )
        ]
        table = self._find(
            "looking up the route table",
            self.network.list_route_tables,
            self._network_name("routes"),
            **in_vcn,
        )
        if table is None:
            table = self._call(
                "creating the route table",
                self.network.create_route_table,
                CreateRouteTableDetails(
                    compartment_id=self._compartment,
                    vcn_id=vcn.id,
                    route_rules=routes,
                    display_name=self._network_name("routes"),
                    freeform_tags=tags,
                ),
            )
        elif _route_keys(table.route_rules) != _route_keys(routes):
            table = self._call(
                "restoring the route table",
                self.network.update_route_table,
                table.id,
                UpdateRouteTableDetails(route_rules=routes),
            )

        ingress, egress = self._firewall_rules()
        security = self._find(
            "looking up the security list",
            self.network.list_security_lists,
            self._network_name("ssh"),
            **in_vcn,
        )
        if security is None:
            security = self._call(
                "creating the security list",
                self.network.create_security_list,
                CreateSecurityListDetails(
                    compartment_id=self._compartment,
                    vcn_id=vcn.id,
                    ingress_security_rules=ingress,
                    egress_security_rules=egress,
                    display_name=self._network_name("ssh"),
                    freeform_tags=tags,
                ),
            )
        elif _rule_keys(security.ingress_security_rules) != _rule_keys(ingress) or _rule_keys(
            security.egress_security_rules
        ) != _rule_keys(egress):
            # the operator's range changed, or someone opened more: back to exactly ours
            security = self._call(
                "restoring the security list",
                self.network.update_security_list,
                security.id,
                UpdateSecurityListDetails(
                    ingress_security_rules=ingress, egress_security_rules=egress
                ),
            )

        subnet = self._find(
            "looking up the subnet",
            self.network.list_subnets,
            self._network_name("subnet"),
            **in_vcn,
        )
        if subnet is None:
            # Only our security list: without it OCI attaches the VCN's default list, whose
            # rules let SSH in from anywhere.
            subnet = self._call(
                "creating the subnet",
                self.network.create_subnet,
                CreateSubnetDetails(
                    compartment_id=self._compartment,
                    vcn_id=vcn.id,
                    cidr_block=self.settings.subnet_cidr,
                    route_table_id=table.id,
                    security_list_ids=[security.id],
                    prohibit_public_ip_on_vnic=False,
                    display_name=self._network_name("subnet"),
                    freeform_tags=tags,
                ),
            )
        else:
            if subnet.cidr_block != self.settings.subnet_cidr:
                raise ProviderError(
                    f"{self.name}: subnet {subnet.display_name} ({subnet.id}) has "
                    f"{subnet.cidr_block}, the fleet file says subnet_cidr "
                    f"{self.settings.subnet_cidr}; put the old range back"
                )
            if subnet.route_table_id != table.id or list(subnet.security_list_ids or []) != [
                security.id
            ]:
                subnet = self._call(
                    "restoring the subnet's route table and security list",
                    self.network.update_subnet,
                    subnet.id,
                    UpdateSubnetDetails(route_table_id=table.id, security_list_ids=[security.id]),
                )
        return _Network(vcn_id=vcn.id, subnet_id=subnet.id)

    def _firewall_rules(self) -> tuple[list[IngressSecurityRule], list[EgressSecurityRule]]:
        ingress = [
            IngressSecurityRule(
                protocol=TCP,
                source=self.settings.operator_cidr,
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

    # -- images, ADs and launching

    def newest_image(self) -> Any:
        s = self.settings
        images = self._list(
            f"looking up the newest {s.image_os} {s.image_os_version} image for {s.shape}",
            self.compute.list_images,
            self._compartment,
            operating_system=s.image_os,
            operating_system_version=s.image_os_version,
            shape=s.shape,
            sort_by="TIMECREATED",
            sort_order="DESC",
        )
        for image in images:
            if image.lifecycle_state in (None, "AVAILABLE"):
                return image
        raise ProviderError(
            f"{self.name}: no {s.image_os} {s.image_os_version} image for shape {s.shape} in "
            f"{s.region}; change image_os/image_os_version in the fleet file"
        )

    def availability_domains(self) -> list[str]:
        ads = self._call(
            "listing availability domains",
            self.identity.list_availability_domains,
            self.tenancy_id,
        )
        names = sorted(ad.name for ad in ads)
        if not names:
            raise ProviderError(f"{self.name}: OCI lists no availability domains in this region")
        return names

    def _shape_config(self) -> LaunchInstanceShapeConfigDetails | None:
        ocpus, memory = _flex_size(
            self.settings.shape, self.settings.ocpus, self.settings.memory_gbs
        )
        if ocpus is None:
            return None
        return LaunchInstanceShapeConfigDetails(ocpus=ocpus, memory_in_gbs=memory)

    def _launch_details(
        self,
        spec: HostSpec,
        authorized_key: str,
        host_key: HostKeyPair,
        subnet_id: str,
        image_id: str,
        availability_domain: str,
    ) -> LaunchInstanceDetails:
        s = self.settings
        return LaunchInstanceDetails(
            availability_domain=availability_domain,
            compartment_id=self._compartment,
            display_name=self.display_name(spec.name),
            shape=s.shape,
            shape_config=self._shape_config(),
            source_details=InstanceSourceViaImageDetails(image_id=image_id),
            create_vnic_details=CreateVnicDetails(
                subnet_id=subnet_id,
                assign_public_ip=True,
                display_name=self.display_name(spec.name),
            ),
            metadata={
                "ssh_authorized_keys": authorized_key,
                "user_data": cloud_init_b64(s.ssh_user, authorized_key, host_key, spec.name),
            },
            freeform_tags={
                FLEET_TAG: self.fleet,
                HOST_TAG: spec.name,
                HOST_KEY_TAG: host_key.public,
            },
        )

    def _launch(
        self, spec: HostSpec, authorized_key: str, subnet_id: str, image_id: str, ads: list[str]
    ) -> Instance:
        host_key = HostKeyPair.generate()
        failures: list[tuple[str, ProviderError]] = []
        for attempt in range(self.capacity_passes):
            if attempt:
                last_pass = failures[-len(ads) :]
                if not any(isinstance(exc, CapacityError) for _, exc in last_pass):
                    break  # limits and quotas do not free up by waiting a minute
                self._sleep(self.capacity_backoff_seconds * 2 ** (attempt - 1))
            for ad in ads:
                details = self._launch_details(
                    spec, authorized_key, host_key, subnet_id, image_id, ad
                )
                doing = f"launching {spec.name} ({self.settings.shape}) in {ad}"
                try:
                    instance = self._call(
                        doing,
                        self.compute.launch_instance,
                        details,
                        opc_retry_token=self.retry_token(spec.name, ad),
                    )
                    if instance.lifecycle_state in GONE:
                        # the token still names a host terminated in the last 24 hours
                        instance = self._call(
                            doing,
                            self.compute.launch_instance,
                            details,
                            opc_retry_token=self.retry_token(spec.name, ad, replaces=instance.id),
                        )
                except (CapacityError, QuotaError) as exc:
                    failures.append((ad, exc))
                    continue
                return instance
        tried = ", ".join(dict.fromkeys(ad for ad, _ in failures))
        last = failures[-1][1]
        if any(isinstance(exc, CapacityError) for _, exc in failures):
            raise CapacityError(
                f"{self.name}: out of host capacity for {self.settings.shape} for host "
                f"{spec.name}: tried {tried} in {self.settings.region}, "
                f"{self.capacity_passes} times each. Try again later (A1 capacity comes and "
                f"goes), or another region or shape. Last answer: {last}"
            )
        raise QuotaError(
            f"{self.name}: no availability domain would take another {self.settings.shape} "
            f"for host {spec.name} (tried {tried}): {last}"
        )

    # -- instances

    def _instances(self, display_name: str | None = None) -> list[Instance]:
        filters = {"display_name": display_name} if display_name else {}
        return [
            i
            for i in self._list(
                "listing instances", self.compute.list_instances, self._compartment, **filters
            )
            if self._ours(i) and i.lifecycle_state != "TERMINATED"
        ]

    def _find_instance(self, name: str) -> Instance | None:
        found = [
            i
            for i in self._instances(self.display_name(name))
            if (i.freeform_tags or {}).get(HOST_TAG) == name
        ]
        alive = [i for i in found if i.lifecycle_state not in GONE]
        pool = alive or found
        return max(pool, key=lambda i: str(i.time_created)) if pool else None

    def _get_instance(self, name: str, ocid: str) -> Instance | None:
        try:
            instance = self._call(f"reading host {name}", self.compute.get_instance, ocid)
        except _NotFound:
            return None
        return None if instance.lifecycle_state == "TERMINATED" else instance

    def _wait_for(self, name: str, ocid: str, wanted: str, timeout: float) -> Instance:
        polls = max(1, math.ceil(timeout / self.poll_seconds))
        state = "unknown"
        for poll in range(polls):
            if poll:
                self._sleep(self.poll_seconds)
            instance = self._call(
                f"waiting for host {name} to be {wanted}", self.compute.get_instance, ocid
            )
            state = instance.lifecycle_state
            if state == wanted:
                return instance
            if state in GONE:
                raise ProviderError(
                    f"{self.name}: host {name} ({ocid}) went {state} while we waited for "
                    f"{wanted}; its work requests in the OCI console say why"
                )
        raise ProviderError(
            f"{self.name}: host {name} ({ocid}) was still {state} after {timeout:.0f}s; "
            f"wanted {wanted}"
        )

    def _attachments(self, instance_id: str | None = None) -> dict[str, str]:
        """instance OCID -> its primary VNIC's OCID."""
        filters = {"instance_id": instance_id} if instance_id else {}
        attachments = self._list(
            "listing VNIC attachments",
            self.compute.list_vnic_attachments,
            self._compartment,
            **filters,
        )
        primary: dict[str, Any] = {}
        for a in attachments:
            if a.lifecycle_state != "ATTACHED" or not a.vnic_id:
                continue
            known = primary.get(a.instance_id)
            if known is None or (a.nic_index or 0) < (known.nic_index or 0):
                primary[a.instance_id] = a
        return {instance: a.vnic_id for instance, a in primary.items()}

    def _public_ip(self, name: str, vnic_id: str | None) -> str | None:
        if not vnic_id:
            return None
        try:
            vnic = self._call(f"reading the address of host {name}", self.network.get_vnic, vnic_id)
        except _NotFound:
            return None
        return vnic.public_ip or None

    def _address(self, name: str, instance: Instance) -> str | None:
        if instance.lifecycle_state in GONE:
            return None
        return self._public_ip(name, self._attachments(instance.id).get(instance.id))

    def _address_after_launch(self, name: str, instance: Instance) -> str:
        # the VNIC and its public IP can show up a little after the instance says RUNNING
        for poll in range(6):
            if poll:
                self._sleep(self.poll_seconds)
            address = self._address(name, instance)
            if address:
                return address
        raise ProviderError(
            f"{self.name}: host {name} ({instance.id}) runs but has no public IP; check that "
            f"subnet {self._network_name('subnet')} allows public IPs"
        )

    def _record(self, instance: Instance, address: str | None) -> HostRecord:
        tags = instance.freeform_tags or {}
        name = tags.get(HOST_TAG, instance.display_name)
        # without the tag no key is pinned, and SSH to the host is refused until one is
        host_key = tags.get(HOST_KEY_TAG, "")
        ocpus, memory = _instance_size(instance)
        return HostRecord(
            name=name,
            provider=self.name,
            address=address or "",
            ssh_port=22,
            ssh_user=self.settings.ssh_user,
            host_key=host_key,
            state=STATES.get(instance.lifecycle_state, str(instance.lifecycle_state).lower()),
            provider_ref=instance.id,
            region=self.settings.region,
            hourly_cost_usd=hourly_cost(instance.shape, ocpus, memory),
            meta={
                "systemd": True,
                "cloud": "oci",
                "availability_domain": instance.availability_domain,
                "shape": instance.shape,
            },
        )

    def _check_region(self, spec: HostSpec) -> None:
        if spec.region and spec.region != self.settings.region:
            raise ProviderError(
                f"{self.name}: host {spec.name} asks for region {spec.region}, but this provider "
                f"works in {self.settings.region}; declare another oci provider for that region"
            )

    # -- the interface

    def plan(self, spec: HostSpec) -> PlannedHost:
        self._check_region(spec)
        s = self.settings
        # every live instance of the compartment counts against the Always Free allowance
        alive = [
            i
            for i in self._list("listing instances", self.compute.list_instances, self._compartment)
            if i.lifecycle_state not in GONE
        ]
        mine = [
            i for i in alive if self._ours(i) and (i.freeform_tags or {}).get(HOST_TAG) == spec.name
        ]
        others = [i for i in alive if i not in mine]
        exists = bool(mine)
        warnings = [UNSUPPORTED_WARNING]
        ocpus, memory = _flex_size(s.shape, s.ocpus, s.memory_gbs)
        if s.shape == FREE_MICRO_SHAPE:
            micros = sum(1 for i in others if i.shape == FREE_MICRO_SHAPE)
            free = micros < FREE_MICRO_INSTANCES
            monthly = 0.0
            if not free:
                warnings.append(
                    f"Always Free allows {FREE_MICRO_INSTANCES} {FREE_MICRO_SHAPE} per tenancy "
                    f"and {micros} already exist in this compartment: the launch will likely "
                    "fail with LimitExceeded"
                )
            warnings.append(
                f"{FREE_MICRO_SHAPE} has 1 GB of memory; Chromium with the extension needs "
                "about 350 MiB, so leave the host to the node"
            )
        elif s.shape == FREE_A1_SHAPE:
            assert ocpus is not None and memory is not None
            used_ocpus = used_memory = 0.0
            for i in others:
                if i.shape == FREE_A1_SHAPE:
                    o, m = _instance_size(i)
                    used_ocpus += o or 0.0
                    used_memory += m or 0.0
            paid_ocpus = _beyond(used_ocpus, ocpus, FREE_A1_OCPUS)
            paid_memory = _beyond(used_memory, memory, FREE_A1_MEMORY_GBS)
            free = paid_ocpus == 0 and paid_memory == 0
            price_ocpu, price_gb = FLEX_PRICES[FREE_A1_SHAPE]
            monthly = (paid_ocpus * price_ocpu + paid_memory * price_gb) * HOURS_PER_MONTH
            if not free:
                warnings.append(
                    f"Always Free covers {FREE_A1_OCPUS:g} OCPUs / {FREE_A1_MEMORY_GBS:g} GB of "
                    f"A1 per tenancy; {used_ocpus:g} OCPUs / {used_memory:g} GB are in use here, "
                    f"so {paid_ocpus:g} OCPUs / {paid_memory:g} GB of this host are paid"
                )
            warnings.append(
                'A1 capacity is often exhausted ("Out of host capacity"); create retries '
                "across availability domains with backoff"
            )
        else:
            free = False
            monthly = hourly_cost(s.shape, ocpus, memory) * HOURS_PER_MONTH
            if s.shape not in FIXED_PRICES and s.shape not in FLEX_PRICES:
                warnings.append(f"no price known for {s.shape}; the cost is a rough guess")
        if free:
            warnings.append(
                "Always Free limits count every compartment of the tenancy; only this "
                "compartment was checked"
            )
        return PlannedHost(
            name=spec.name,
            provider=self.name,
            region=s.region,
            action="keep" if exists else "create",
            monthly_cost_usd=round(monthly, 2),
            free_tier=free,
            warnings=tuple(warnings),
        )

    def create(self, spec: HostSpec, authorized_key: str) -> HostRecord:
        self._check_region(spec)
        found = self._find_instance(spec.name)
        existing = self._get_instance(spec.name, found.id) if found is not None else None
        if existing is not None and existing.lifecycle_state not in GONE:
            record = self._start(spec.name, existing)
            if record.address:
                return record
            return replace(record, address=self._address_after_launch(spec.name, existing))
        network = self.ensure_network()
        image = self.newest_image()
        ads = self.availability_domains()
        instance = self._launch(spec, authorized_key, network.subnet_id, image.id, ads)
        try:
            instance = self._wait_for(
                spec.name, instance.id, "RUNNING", self.launch_timeout_seconds
            )
            address = self._address_after_launch(spec.name, instance)
        except ProviderError as exc:
            # never leave behind a VM this run launched but could not bring up
            try:
                self._call(
                    f"terminating host {spec.name} after a failed launch",
                    self.compute.terminate_instance,
                    instance.id,
                    preserve_boot_volume=False,
                )
                exc.add_note(f"GradientLab terminated instance {instance.id} launched by this run")
            except ProviderError as cleanup:
                exc.add_note(
                    f"terminating instance {instance.id} failed too ({cleanup}); terminate it "
                    f"by hand or run `terminate {spec.name}`"
                )
            raise
        return self._record(instance, address)

    def get(self, name: str) -> HostRecord | None:
        found = self._find_instance(name)
        if found is None:
            return None
        instance = self._get_instance(name, found.id)
        if instance is None:
            return None
        return self._record(instance, self._address(name, instance))

    def list(self) -> list[HostRecord]:
        instances = self._instances()
        vnics = self._attachments() if instances else {}
        records = []
        for instance in sorted(instances, key=lambda i: i.display_name or ""):
            address = None
            if instance.lifecycle_state not in GONE:
                name = (instance.freeform_tags or {}).get(HOST_TAG, instance.display_name)
                address = self._public_ip(name, vnics.get(instance.id))
            records.append(self._record(instance, address))
        return records

    def public_ip(self, name: str) -> str | None:
        record = self.get(name)
        return (record.address or None) if record is not None else None

    def _must(self, name: str) -> Instance:
        found = self._find_instance(name)
        instance = self._get_instance(name, found.id) if found is not None else None
        if instance is None or instance.lifecycle_state in GONE:
            raise ProviderError(f"{self.name}: no host named {name!r} in OCI (create it first)")
        return instance

    def _act(self, name: str, instance: Instance, action: str, wanted: str) -> HostRecord:
        self._call(
            f"sending {action} to host {name}", self.compute.instance_action, instance.id, action
        )
        instance = self._wait_for(name, instance.id, wanted, self.action_timeout_seconds)
        return self._record(instance, self._address(name, instance))

    def start(self, name: str) -> HostRecord:
        return self._start(name, self._must(name))

    def _start(self, name: str, instance: Instance) -> HostRecord:
        state = instance.lifecycle_state
        if state == "STOPPING":
            instance = self._wait_for(name, instance.id, "STOPPED", self.action_timeout_seconds)
            state = instance.lifecycle_state
        if state == "STOPPED":
            return self._act(name, instance, "START", "RUNNING")
        if state != "RUNNING":
            instance = self._wait_for(name, instance.id, "RUNNING", self.action_timeout_seconds)
        return self._record(instance, self._address(name, instance))

    def stop(self, name: str) -> HostRecord:
        instance = self._must(name)
        if instance.lifecycle_state in ("STOPPED", "STOPPING"):
            if instance.lifecycle_state == "STOPPING":
                instance = self._wait_for(name, instance.id, "STOPPED", self.action_timeout_seconds)
            return self._record(instance, self._address(name, instance))
        return self._act(name, instance, "STOP", "STOPPED")

    def reboot(self, name: str) -> HostRecord:
        instance = self._must(name)
        if instance.lifecycle_state != "RUNNING":
            return self._start(name, instance)
        return self._act(name, instance, "SOFTRESET", "RUNNING")

    def terminate(self, name: str) -> None:
        """Terminate the host's instance and its boot volume; the fleet's network stays."""
        for instance in self._instances(self.display_name(name)):
            if (instance.freeform_tags or {}).get(HOST_TAG) != name:
                continue
            if instance.lifecycle_state in GONE:
                continue
            try:
                self._call(
                    f"terminating host {name}",
                    self.compute.terminate_instance,
                    instance.id,
                    preserve_boot_volume=False,
                )
            except _NotFound:
                continue


def _retry_after(headers: Any) -> float | None:
    try:
        value = (headers or {}).get("retry-after")
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _flex_size(
    shape: str, ocpus: float | None, memory_gbs: float | None
) -> tuple[float | None, float | None]:
    """OCPUs and memory a Flex shape launches with; (None, None) for fixed shapes."""
    if not shape.endswith(".Flex"):
        return None, None
    cores = float(ocpus or 1)
    per_ocpu = 6.0 if shape == FREE_A1_SHAPE else 16.0
    return cores, float(memory_gbs or cores * per_ocpu)


def _instance_size(instance: Instance) -> tuple[float | None, float | None]:
    config = instance.shape_config
    if config is None:
        return None, None
    return config.ocpus, config.memory_in_gbs


def _beyond(used: float, wanted: float, free: float) -> float:
    """How much of `wanted` falls beyond the free allowance once `used` is counted."""
    return max(0.0, used + wanted - free) - max(0.0, used - free)


def hourly_cost(shape: str, ocpus: float | None, memory_gbs: float | None) -> float:
    """A rough USD/hour for one instance; Always Free shapes within their allowance are 0."""
    if shape == FREE_MICRO_SHAPE:
        return 0.0
    if shape in FLEX_PRICES:
        price_ocpu, price_gb = FLEX_PRICES[shape]
        cores, memory = ocpus or 1.0, memory_gbs or 0.0
        if shape == FREE_A1_SHAPE:
            cores = max(0.0, cores - FREE_A1_OCPUS)
            memory = max(0.0, memory - FREE_A1_MEMORY_GBS)
        return round(cores * price_ocpu + memory * price_gb, 5)
    return FIXED_PRICES.get(shape, UNKNOWN_SHAPE_HOURLY)


def _route_keys(rules: Iterable[Any] | None) -> set[tuple[Any, ...]]:
    return {(r.destination, r.destination_type, r.network_entity_id) for r in rules or []}


def _rule_keys(rules: Iterable[Any] | None) -> set[tuple[Any, ...]]:
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
