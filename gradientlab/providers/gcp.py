"""Google Compute Engine hosts: one VM per host (free `e2-micro` by default), SSH from the operator.

Everything is named and labelled from the fleet and host names, and an instance insert carries a
request id made from the same names, so a rerun converges on what an interrupted run started.
Credentials arrive as a `google.auth` credentials object (the task layer reads prefect-gcp's
`GcpCredentials` block); this module never talks to Prefect."""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
import yaml
from google.api_core import exceptions as gexc
from google.api_core.client_options import ClientOptions
from google.auth import exceptions as auth_exc
from google.auth.credentials import Credentials
from google.cloud import compute_v1

from gradientlab.config import GcpProvider, HostSpec
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
from gradientlab.providers.bootstrap import HostKeyPair, cloud_init

FREE_REGIONS = ("us-west1", "us-central1", "us-east1")
FREE_MACHINE_TYPE = "e2-micro"
# On-demand list prices in us-central1, USD per hour; other regions differ by a few per cent.
HOURLY_PRICES = {"e2-micro": 0.0084, "e2-small": 0.0168, "e2-medium": 0.0335}
HOURS_PER_MONTH = 730
BOOT_DISK_GB = 10
BOOT_DISK_TYPE = "pd-standard"
DISK_MONTHLY_USD_PER_GB = 0.04  # pd-standard; the free tier covers 30 GB-months of it
EXTERNAL_IPV4_HOURLY_USD = 0.005
SSH_ALLOW_PRIORITY = 1000
# Just below the allow rule: beats the default network's `default-allow-ssh` (priority 65534).
SSH_DENY_PRIORITY = 1001
OPERATION_TIMEOUT_SECONDS = 900.0
RUNNING_POLLS = 60
INSERT_ATTEMPTS = 4
# Compute Engine remembers request ids for at least an hour; an older operation is a past run's.
STALE_OPERATION = timedelta(minutes=2)

# Google's guest agent makes new SSH host keys on a VM's first boot (replacing the key we pin)
# and gives every `ssh-keys` user full sudo; cloud-init writes this before the agent starts.
GUEST_AGENT_CONFIG = (
    "[InstanceSetup]\nset_host_keys = false\n\n[Daemons]\naccounts_daemon = false\n"
)

DATA_CENTRE_WARNING = (
    "cloud data-centre addresses are likely marked Unsupported by Gradient (they earn nothing)"
)

_GCE_NAME = re.compile(r"^[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$")
_ZONE = re.compile(r"^[a-z]+-[a-z]+[0-9]+-[a-z]$")
_REQUEST_IDS = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/gradientlab/providers/gcp")
_STATES = {
    "RUNNING": "running",
    "TERMINATED": "stopped",
    "STOPPED": "stopped",
    "SUSPENDED": "stopped",
    "STOPPING": "stopped",
    "SUSPENDING": "stopped",
    "PROVISIONING": "provisioning",
    "STAGING": "provisioning",
    "REPAIRING": "provisioning",
}
_STOPPED = {"TERMINATED", "STOPPED", "SUSPENDED"}
_SETTLING = {"PROVISIONING", "STAGING", "REPAIRING", "STOPPING", "SUSPENDING"}


def gce_name(*parts: str) -> str:
    """A valid Compute Engine name (RFC 1035, at most 63) from the parts; odd ones get a hash."""
    name = "-".join(parts)
    if _GCE_NAME.match(name):
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    stem = re.sub(r"[^-a-z0-9]", "-", name.lower())[: 63 - 9].strip("-")
    if not stem[:1].isalpha():
        stem = "gl-" + stem
    return f"{stem}-{digest}"


def gce_user_data(ssh_user: str, authorized_key: str, host_key: HostKeyPair, host: str) -> str:
    """The shared cloud-init user data, plus the guest-agent settings that keep the pinned key."""
    config = yaml.safe_load(cloud_init(ssh_user, authorized_key, host_key, host))
    config.setdefault("write_files", []).append(
        {
            "path": "/etc/default/instance_configs.cfg",
            "owner": "root:root",
            "permissions": "0644",
            "content": GUEST_AGENT_CONFIG,
        }
    )
    return "#cloud-config\n" + yaml.safe_dump(config, sort_keys=False)


def region_of(zone: str) -> str:
    return zone.rsplit("-", 1)[0]


def free_tier_eligible(zone: str, machine_type: str) -> bool:
    return machine_type == FREE_MACHINE_TYPE and region_of(zone) in FREE_REGIONS


def monthly_cost_usd(machine_type: str, free_tier: bool) -> float | None:
    """VM and boot disk at list price; None when the machine type's price is not known here."""
    if free_tier:
        return 0.0
    hourly = HOURLY_PRICES.get(machine_type)
    if hourly is None:
        return None
    return round(hourly * HOURS_PER_MONTH + BOOT_DISK_GB * DISK_MONTHLY_USD_PER_GB, 2)


def _short(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def _codes(exc: gexc.GoogleAPICallError) -> set[str]:
    codes = {str(e.get("reason", "")) for e in exc.errors if isinstance(e, dict)}
    if exc.reason:
        codes.add(exc.reason)
    return {c for c in codes if c}


def _norm(code: str) -> str:
    return code.upper().replace("_", "")


def _retry_after(exc: gexc.GoogleAPICallError) -> float | None:
    headers = getattr(exc.response, "headers", None) or {}
    try:
        return float(headers.get("Retry-After", ""))
    except (TypeError, ValueError):
        return None


def _parse_time(value: str) -> datetime | None:
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


class GcpCloudProvider:
    """A `Provider` on Compute Engine: one zone of one project, as the fleet file sets it."""

    kind = "gcp"

    def __init__(
        self,
        name: str,
        settings: GcpProvider,
        credentials: Credentials,
        *,
        fleet_name: str = "gradientlab",
        sleep: Callable[[float], None] = time.sleep,
        poll_seconds: float = 3.0,
    ) -> None:
        if not _ZONE.match(settings.zone):
            raise ProviderError(
                f"gcp provider {name!r}: zone {settings.zone!r} is not a zone name like "
                "us-central1-a"
            )
        self.name = name
        self.settings = settings
        self.fleet_name = fleet_name
        self.project = settings.project
        self.zone = settings.zone
        self.region = region_of(settings.zone)
        self.network_tag = gce_name("gradientlab", fleet_name)
        self.firewall_name = gce_name("gradientlab", fleet_name, "ssh")
        self.deny_firewall_name = gce_name("gradientlab", fleet_name, "ssh-deny")
        self._sleep = sleep
        self.poll_seconds = poll_seconds
        options = ClientOptions(api_endpoint=settings.endpoint) if settings.endpoint else None
        common: dict[str, Any] = {
            "credentials": credentials,
            "transport": "rest",
            "client_options": options,
        }
        self.instances = compute_v1.InstancesClient(**common)
        self.firewalls = compute_v1.FirewallsClient(**common)
        self.images = compute_v1.ImagesClient(**common)
        self.zone_operations = compute_v1.ZoneOperationsClient(**common)
        self.global_operations = compute_v1.GlobalOperationsClient(**common)

    # -- names

    @property
    def _who(self) -> str:
        return f"gcp provider {self.name!r} (project {self.project}, zone {self.zone})"

    def instance_name(self, host: str) -> str:
        return gce_name("gradientlab", self.fleet_name, host)

    def request_id(self, host: str, after: str = "") -> str:
        """The insert's request id: the same for every run that creates this host.

        `after` names a finished operation that an earlier life of the host left under the plain
        id; the next id is derived from it, so reruns still agree."""
        key = f"{self.project}/{self.zone}/{self.instance_name(host)}"
        return str(uuid.uuid5(_REQUEST_IDS, f"{key}/{after}" if after else key))

    def _network_url(self) -> str:
        network = self.settings.network
        return network if "/" in network else f"global/networks/{network}"

    # -- errors

    @contextmanager
    def _api(self, action: str) -> Iterator[None]:
        try:
            yield
        except gexc.GoogleAPICallError as exc:
            raise self._error(
                action, exc.code, _codes(exc), exc.message, _retry_after(exc)
            ) from exc
        except (auth_exc.RefreshError, auth_exc.DefaultCredentialsError) as exc:
            raise ProviderAuthError(
                f"{self._who}: {action}: the credentials from block "
                f"{self.settings.credentials_block!r} do not work ({exc}); "
                "save a valid service-account key in that GcpCredentials block"
            ) from exc
        except (requests.RequestException, auth_exc.TransportError) as exc:
            where = self.settings.endpoint or "compute.googleapis.com"
            raise ProviderError(
                f"{self._who}: {action}: could not reach {where} ({exc}); check the network"
            ) from exc

    def _error(
        self,
        action: str,
        status: int | None,
        codes: set[str],
        message: str,
        retry_after: float | None = None,
    ) -> ProviderError:
        norm = {_norm(c) for c in codes}
        detail = f"{message} [{', '.join(sorted(codes))}]" if codes else message
        if any("RESOURCEPOOLEXHAUSTED" in c for c in norm):
            return CapacityError(
                f"{self._who}: {action}: the zone has no {self.settings.machine_type} capacity "
                f"now ({detail}); rerun later or set another zone in "
                f"{', '.join(FREE_REGIONS)} for this provider"
            )
        if any("QUOTAEXCEEDED" in c for c in norm):
            return QuotaError(
                f"{self._who}: {action}: the project's quota does not allow it ({detail}); "
                "raise the quota (IAM & Admin > Quotas) or remove a VM"
            )
        if status == 429 or norm & {"RATELIMITEXCEEDED", "USERRATELIMITEXCEEDED"}:
            return ProviderRateLimited(
                f"{self._who}: {action}: Compute Engine throttled the request ({detail}); "
                "rerun in a minute",
                retry_after=retry_after,
            )
        if status in (401, 403):
            return ProviderAuthError(
                f"{self._who}: {action}: Google refused the credentials from block "
                f"{self.settings.credentials_block!r} ({detail}); give its service account the "
                f"Compute Instance Admin (v1) and Compute Security Admin roles on {self.project}"
            )
        return ProviderError(f"{self._who}: {action} failed: {detail}")

    def _operation_error(self, op: compute_v1.Operation, action: str) -> ProviderError:
        codes = {e.code for e in op.error.errors if e.code}
        message = "; ".join(e.message for e in op.error.errors if e.message)
        return self._error(
            action, op.http_error_status_code or None, codes, message or op.http_error_message
        )

    # -- operations

    def _wait(self, op: compute_v1.Operation, action: str) -> compute_v1.Operation:
        """Wait for an operation to finish (long polls on the server, then a pause); no raise."""
        deadline = time.monotonic() + OPERATION_TIMEOUT_SECONDS
        while op.status != compute_v1.Operation.Status.DONE:
            if time.monotonic() > deadline:
                raise ProviderError(
                    f"{self._who}: {action}: operation {op.name} is still not done after "
                    f"{OPERATION_TIMEOUT_SECONDS / 60:.0f} minutes; rerun to pick it up"
                )
            with self._api(action):
                if op.zone:
                    waited = self.zone_operations.wait(
                        project=self.project, zone=_short(op.zone), operation=op.name
                    )
                else:
                    waited = self.global_operations.wait(project=self.project, operation=op.name)
            if waited.status != compute_v1.Operation.Status.DONE:
                self._sleep(self.poll_seconds)
            op = waited
        return op

    def _run(self, op: compute_v1.Operation, action: str) -> compute_v1.Operation:
        op = self._wait(op, action)
        if op.error.errors:
            raise self._operation_error(op, action)
        return op

    # -- reading

    def _find(self, host: str) -> compute_v1.Instance | None:
        """The instance of that name, ours or not."""
        with self._api(f"reading instance for host {host!r}"):
            try:
                return self.instances.get(
                    project=self.project, zone=self.zone, instance=self.instance_name(host)
                )
            except gexc.NotFound:
                return None

    def _owned(self, instance: compute_v1.Instance, host: str | None = None) -> bool:
        labels = dict(instance.labels)
        if labels.get(FLEET_TAG) != self.fleet_name:
            return False
        return host is None or labels.get(HOST_TAG) == host

    def _not_ours(self, host: str) -> ProviderError:
        return ProviderError(
            f"{self._who}: instance {self.instance_name(host)!r} exists but is not GradientLab's "
            f"host {host!r} of fleet {self.fleet_name!r} (labels {FLEET_TAG}/{HOST_TAG}); "
            "rename the host or remove that instance"
        )

    def _record(self, instance: compute_v1.Instance) -> HostRecord:
        labels = dict(instance.labels)
        metadata = {item.key: item.value for item in instance.metadata.items}
        address = next(
            (
                config.nat_i_p
                for nic in instance.network_interfaces
                for config in nic.access_configs
                if config.nat_i_p
            ),
            "",
        )
        zone = _short(instance.zone) if instance.zone else self.zone
        machine_type = _short(instance.machine_type) if instance.machine_type else ""
        free = free_tier_eligible(zone, machine_type)
        monthly = monthly_cost_usd(machine_type, free) or 0.0
        return HostRecord(
            name=labels.get(HOST_TAG, instance.name),
            provider=self.name,
            address=address,
            ssh_port=22,
            ssh_user=self.settings.ssh_user,
            host_key=metadata.get(HOST_KEY_TAG, ""),
            state=_STATES.get(instance.status, instance.status.lower()),
            provider_ref=instance.self_link,
            region=region_of(zone),
            hourly_cost_usd=round(monthly / HOURS_PER_MONTH, 6),
            meta={
                "systemd": True,
                "cloud": "gcp",
                "zone": zone,
                "project": self.project,
                "instance": instance.name,
                "machine_type": machine_type,
                "free_tier": free,
            },
        )

    def get(self, name: str) -> HostRecord | None:
        instance = self._find(name)
        if instance is None or not self._owned(instance, name):
            return None
        return self._record(instance)

    def list(self) -> list[HostRecord]:
        request = compute_v1.ListInstancesRequest(
            project=self.project, zone=self.zone, filter=f"labels.{FLEET_TAG}={self.fleet_name}"
        )
        with self._api("listing instances"):
            found = list(self.instances.list(request=request))
        # the filter is the server's; keep only what is labelled ours whatever it returned
        return sorted(
            (self._record(i) for i in found if self._owned(i) and dict(i.labels).get(HOST_TAG)),
            key=lambda r: r.name,
        )

    def public_ip(self, name: str) -> str | None:
        record = self.get(name)
        return (record.address or None) if record else None

    def _must(self, name: str) -> compute_v1.Instance:
        instance = self._find(name)
        if instance is None:
            raise ProviderError(f"{self._who}: no host named {name!r} (create it first)")
        if not self._owned(instance, name):
            raise self._not_ours(name)
        return instance

    def _settle(
        self, name: str, want: set[str], instance: compute_v1.Instance | None = None
    ) -> compute_v1.Instance:
        """Poll until the instance reaches one of `want` or a state that is not a transition."""
        if instance is None:
            instance = self._must(name)
        for _ in range(RUNNING_POLLS):
            if instance.status in want or instance.status not in _SETTLING:
                return instance
            self._sleep(self.poll_seconds)
            instance = self._must(name)
        return instance

    # -- planning

    def plan(self, spec: HostSpec) -> PlannedHost:
        machine_type = self.settings.machine_type
        free = free_tier_eligible(self.zone, machine_type)
        warnings = [DATA_CENTRE_WARNING]
        mismatch = self._placement_problem(spec)
        if mismatch:
            warnings.append(mismatch)
        instance = self._find(spec.name)
        existing = instance is not None and self._owned(instance, spec.name)
        if instance is not None and not existing:
            warnings.append(str(self._not_ours(spec.name)))
        if free:
            others = [
                r.name for r in self.list() if r.name != spec.name and r.meta.get("free_tier")
            ]
            if others:
                free = False
                warnings.append(
                    f"{others[0]} already uses the free e2-micro hours of this billing account "
                    "(one e2-micro a month, all projects together); this one is billed"
                )
            else:
                warnings.append(
                    "the free tier covers one e2-micro per billing account (all projects "
                    "together); a second one is billed"
                )
        elif machine_type != FREE_MACHINE_TYPE:
            warnings.append(f"only {FREE_MACHINE_TYPE} is in the free tier, not {machine_type}")
        if self.region not in FREE_REGIONS:
            warnings.append(
                f"zone {self.zone} is outside the {FREE_MACHINE_TYPE} free regions "
                f"({', '.join(FREE_REGIONS)}): the VM is billed"
            )
        monthly = monthly_cost_usd(machine_type, free)
        if monthly is None:
            warnings.append(
                f"no price known here for {machine_type}; check Google's pricing calculator"
            )
            monthly = 0.0
        warnings.append(
            f"Google lists an in-use external IPv4 address at ${EXTERNAL_IPV4_HOURLY_USD}/hour "
            f"(about ${EXTERNAL_IPV4_HOURLY_USD * HOURS_PER_MONTH:.2f}/month); check whether "
            "your free tier or credits cover it"
        )
        warnings.append(
            "free egress is 1 GB a month from North America; beyond that Premium-tier traffic "
            "is billed per GiB"
        )
        warnings.append("a stopped VM gives up its address; starting it again gives a new one")
        return PlannedHost(
            name=spec.name,
            provider=self.name,
            region=self.region,
            action="keep" if existing else "create",
            monthly_cost_usd=monthly,
            free_tier=free,
            warnings=tuple(warnings),
        )

    def _placement_problem(self, spec: HostSpec) -> str | None:
        if spec.region and spec.region not in (self.zone, self.region):
            return (
                f"host {spec.name!r} asks for region {spec.region!r} but provider {self.name!r} "
                f"places every host in zone {self.zone}; add a gcp provider for that zone"
            )
        return None

    # -- creating

    def _read_firewall(self, name: str) -> compute_v1.Firewall | None:
        with self._api(f"reading firewall rule {name}"):
            try:
                return self.firewalls.get(project=self.project, firewall=name)
            except gexc.NotFound:
                return None

    def _ensure_firewall(self, wanted: compute_v1.Firewall) -> None:
        """Create the rule, or bring an existing one back to exactly what is wanted."""
        current = self._read_firewall(wanted.name)
        if current is None:
            action = f"creating firewall rule {wanted.name}"
            with self._api(action):
                try:
                    op = self.firewalls.insert_unary(project=self.project, firewall_resource=wanted)
                except gexc.Conflict:  # another host's run made it meanwhile
                    op = None
            if op is not None:
                self._run(op, action)
                return
            current = self._read_firewall(wanted.name)
            if current is None:
                raise ProviderError(f"{self._who}: {action}: the name is taken; rerun in a minute")
        if _short(current.network) != _short(wanted.network):
            raise ProviderError(
                f"{self._who}: firewall rule {wanted.name} is on network "
                f"{_short(current.network)!r}, not {_short(wanted.network)!r}; delete the rule "
                "(and this fleet's VMs on the old network) or set the old network back"
            )
        if self._firewall_matches(current, wanted):
            return
        action = f"updating firewall rule {wanted.name}"
        with self._api(action):  # PUT replaces every field, so stray additions go too
            op = self.firewalls.update_unary(
                project=self.project, firewall=wanted.name, firewall_resource=wanted
            )
        self._run(op, action)

    @staticmethod
    def _firewall_matches(current: compute_v1.Firewall, wanted: compute_v1.Firewall) -> bool:
        def rules(items: Any) -> list[tuple[str, tuple[str, ...]]]:
            return sorted((r.I_p_protocol, tuple(r.ports)) for r in items)

        return (
            sorted(current.source_ranges) == sorted(wanted.source_ranges)
            and sorted(current.target_tags) == sorted(wanted.target_tags)
            and rules(current.allowed) == rules(wanted.allowed)
            and rules(current.denied) == rules(wanted.denied)
            and current.direction == wanted.direction
            and current.priority == wanted.priority
            and not current.disabled
            and not current.source_tags
            and not current.source_service_accounts
        )

    def ssh_firewall_rules(self) -> tuple[compute_v1.Firewall, compute_v1.Firewall]:
        """SSH from the operator's range to the fleet's VMs, and from nowhere else."""
        common: dict[str, Any] = {
            "network": self._network_url(),
            "direction": "INGRESS",
            "target_tags": [self.network_tag],
            "disabled": False,
        }
        allow = compute_v1.Firewall(
            name=self.firewall_name,
            description=f"GradientLab fleet {self.fleet_name}: SSH from the operator only",
            priority=SSH_ALLOW_PRIORITY,
            source_ranges=[self.settings.operator_cidr],
            allowed=[compute_v1.Allowed(I_p_protocol="tcp", ports=["22"])],
            **common,
        )
        deny = compute_v1.Firewall(
            name=self.deny_firewall_name,
            description=f"GradientLab fleet {self.fleet_name}: no SSH from anywhere else",
            priority=SSH_DENY_PRIORITY,
            source_ranges=["0.0.0.0/0"],
            denied=[compute_v1.Denied(I_p_protocol="tcp", ports=["22"])],
            **common,
        )
        return allow, deny

    def instance_resource(
        self, spec: HostSpec, authorized_key: str, host_key: HostKeyPair, image: compute_v1.Image
    ) -> compute_v1.Instance:
        ssh_user = self.settings.ssh_user
        key = authorized_key.strip()
        metadata = {
            "ssh-keys": f"{ssh_user}:{key}",
            "user-data": gce_user_data(ssh_user, key, host_key, spec.name),
            HOST_KEY_TAG: host_key.public,
            "enable-oslogin": "FALSE",
        }
        return compute_v1.Instance(
            name=self.instance_name(spec.name),
            description=f"GradientLab fleet {self.fleet_name}, host {spec.name}",
            machine_type=f"zones/{self.zone}/machineTypes/{self.settings.machine_type}",
            labels={FLEET_TAG: self.fleet_name, HOST_TAG: spec.name},
            tags=compute_v1.Tags(items=[self.network_tag]),
            disks=[
                compute_v1.AttachedDisk(
                    boot=True,
                    auto_delete=True,
                    type_="PERSISTENT",
                    initialize_params=compute_v1.AttachedDiskInitializeParams(
                        source_image=image.self_link,
                        disk_size_gb=max(BOOT_DISK_GB, image.disk_size_gb or 0),
                        disk_type=f"zones/{self.zone}/diskTypes/{BOOT_DISK_TYPE}",
                    ),
                )
            ],
            network_interfaces=[
                compute_v1.NetworkInterface(
                    network=self._network_url(),
                    access_configs=[
                        compute_v1.AccessConfig(
                            name="External NAT",
                            type_="ONE_TO_ONE_NAT",
                            network_tier="PREMIUM",  # the free tier's egress is Premium-tier
                        )
                    ],
                )
            ],
            metadata=compute_v1.Metadata(
                items=[compute_v1.Items(key=k, value=v) for k, v in metadata.items()]
            ),
            # no service account: nothing on the host calls Google APIs
        )

    def create(self, spec: HostSpec, authorized_key: str) -> HostRecord:
        mismatch = self._placement_problem(spec)
        if mismatch:
            raise ProviderError(f"{self._who}: {mismatch}")
        for rule in self.ssh_firewall_rules():
            self._ensure_firewall(rule)
        instance = self._find(spec.name)
        if instance is None:
            instance = self._insert(spec, authorized_key)
        if not self._owned(instance, spec.name):
            raise self._not_ours(spec.name)
        if instance.status in _STOPPED | {"STOPPING", "SUSPENDING"}:
            return self.start(spec.name)
        return self._record(self._settle(spec.name, {"RUNNING"}, instance))

    def _insert(self, spec: HostSpec, authorized_key: str) -> compute_v1.Instance:
        """Insert the host's instance (or find the one a run before us inserted) and return it."""
        name = self.instance_name(spec.name)
        action = f"creating instance {name} for host {spec.name!r}"
        with self._api(f"reading image family {self.settings.image_family}"):
            image = self.images.get_from_family(
                project=self.settings.image_project, family=self.settings.image_family
            )
        resource = self.instance_resource(spec, authorized_key, HostKeyPair.generate(), image)
        started = datetime.now(UTC)
        request_id = self.request_id(spec.name)
        for _ in range(INSERT_ATTEMPTS):
            with self._api(action):
                try:
                    op = self.instances.insert_unary(
                        request=compute_v1.InsertInstanceRequest(
                            project=self.project,
                            zone=self.zone,
                            instance_resource=resource,
                            request_id=request_id,
                        )
                    )
                except gexc.Conflict:  # made meanwhile by another run: converge on it
                    instance = self._find(spec.name)
                    if instance is None:
                        raise ProviderError(
                            f"{self._who}: {action}: the name is taken but the instance is "
                            "gone (being deleted?); rerun in a minute"
                        ) from None
                    return instance
            op = self._wait(op, action)
            if op.error.errors:
                codes = {_norm(e.code) for e in op.error.errors}
                instance = self._find(spec.name) if "RESOURCEALREADYEXISTS" in codes else None
                if instance is not None:
                    return instance
                if self._stale(op, started):
                    request_id = self.request_id(spec.name, after=op.name)
                    continue
                raise self._failed_insert(spec.name, op, action)
            instance = self._find(spec.name)
            if instance is not None:
                return instance
            # the request id's operation created an earlier instance of this name, since deleted
            request_id = self.request_id(spec.name, after=op.name)
        raise ProviderError(
            f"{self._who}: {action}: Compute Engine kept answering with old operations; "
            "rerun in an hour"
        )

    @staticmethod
    def _stale(op: compute_v1.Operation, started: datetime) -> bool:
        inserted = _parse_time(op.insert_time) if op.insert_time else None
        return inserted is not None and inserted < started - STALE_OPERATION

    def _failed_insert(self, host: str, op: compute_v1.Operation, action: str) -> ProviderError:
        """The insert's operation failed: remove what it left behind, then say why."""
        error = self._operation_error(op, action)
        try:
            leftover = self._find(host)
            if leftover is not None and self._owned(leftover, host):
                self._delete(host)
        except ProviderError as cleanup:
            return type(error)(
                f"{error}; removing the half-made instance {self.instance_name(host)} failed "
                f"too ({cleanup}): delete it in the console"
            )
        return error

    # -- lifecycle

    def start(self, name: str) -> HostRecord:
        instance = self._settle(name, {"RUNNING"} | _STOPPED)
        if instance.status != "RUNNING":
            action = f"starting host {name!r}"
            with self._api(action):
                call = (
                    self.instances.resume_unary
                    if instance.status == "SUSPENDED"
                    else self.instances.start_unary
                )
                op = call(project=self.project, zone=self.zone, instance=instance.name)
            self._run(op, action)
        return self._record(self._settle(name, {"RUNNING"}))

    def stop(self, name: str) -> HostRecord:
        instance = self._settle(name, {"RUNNING"} | _STOPPED)
        if instance.status not in _STOPPED:
            action = f"stopping host {name!r}"
            with self._api(action):
                op = self.instances.stop_unary(
                    project=self.project, zone=self.zone, instance=instance.name
                )
            self._run(op, action)
        return self._record(self._settle(name, _STOPPED))

    def reboot(self, name: str) -> HostRecord:
        instance = self._settle(name, {"RUNNING"} | _STOPPED)
        if instance.status != "RUNNING":
            return self.start(name)
        action = f"rebooting host {name!r}"
        with self._api(action):
            op = self.instances.reset_unary(
                project=self.project, zone=self.zone, instance=instance.name
            )
        self._run(op, action)
        return self._record(self._settle(name, {"RUNNING"}))

    def terminate(self, name: str) -> None:
        """Delete the host's instance (and its boot disk); the fleet's firewall rules stay."""
        instance = self._find(name)
        if instance is None:
            return
        if not self._owned(instance, name):
            raise self._not_ours(name)
        self._delete(name)

    def _delete(self, name: str) -> None:
        action = f"deleting instance {self.instance_name(name)}"
        with self._api(action):
            try:
                op = self.instances.delete_unary(
                    project=self.project, zone=self.zone, instance=self.instance_name(name)
                )
            except gexc.NotFound:
                return
        self._run(op, action)
