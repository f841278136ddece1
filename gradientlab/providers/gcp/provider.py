"""Google Compute Engine hosts: one VM per host (free `e2-micro` by default), SSH from the
operator only (`firewall.py`), each instance inserted once (`instances.py`), priced by
`pricing.py`. Credentials arrive as a `google.auth` credentials object (the task layer reads
prefect-gcp's `GcpCredentials` block); this package never talks to Prefect."""

from __future__ import annotations

import builtins
import re
import time
from collections.abc import Callable

from google.api_core import exceptions as gexc
from google.auth.credentials import Credentials
from google.cloud import compute_v1

from gradientlab.config import GcpSettings, HostSettings
from gradientlab.providers.base import (
    DATA_CENTRE_WARNING,
    FLEET_TAG,
    HOST_KEY_TAG,
    HOST_TAG,
    HOURS_PER_MONTH,
    HostRecord,
    HostState,
    PlannedHost,
    ProviderError,
    ProviderNotFound,
)
from gradientlab.providers.bootstrap import HostKeyPair
from gradientlab.providers.gcp import firewall, instances, pricing
from gradientlab.providers.gcp.sdk import ComputeApi, gce_name, short

RUNNING_POLLS = 60
_ZONE = re.compile(r"^[a-z]+-[a-z]+[0-9]+-[a-z]$")
_STATES = {
    "RUNNING": HostState.RUNNING,
    "TERMINATED": HostState.STOPPED,
    "STOPPED": HostState.STOPPED,
    "SUSPENDED": HostState.STOPPED,
    "STOPPING": HostState.STOPPED,
    "SUSPENDING": HostState.STOPPED,
    "PROVISIONING": HostState.PROVISIONING,
    "STAGING": HostState.PROVISIONING,
    "REPAIRING": HostState.PROVISIONING,
}
_STOPPED = {"TERMINATED", "STOPPED", "SUSPENDED"}
_SETTLING = {"PROVISIONING", "STAGING", "REPAIRING", "STOPPING", "SUSPENDING"}


class GcpCloudProvider:
    """A `Provider` on Compute Engine: one zone of one project, as the fleet file sets it."""

    kind = "gcp"

    def __init__(
        self,
        name: str,
        settings: GcpSettings,
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
        self.zone = settings.zone
        self.region = pricing.region_of(settings.zone)
        self.network_tag = gce_name("gradientlab", fleet_name)
        self.firewall_names = (
            gce_name("gradientlab", fleet_name, "ssh"),
            gce_name("gradientlab", fleet_name, "ssh-deny"),
        )
        self._sleep = sleep
        self.api = ComputeApi(name, settings, credentials, sleep, poll_seconds)
        self._who = self.api.who

    def instance_name(self, host: str) -> str:
        return gce_name("gradientlab", self.fleet_name, host)

    def request_id(self, host: str, after: str = "") -> str:
        return instances.request_id(self.api.project, self.zone, self.instance_name(host), after)

    def ssh_firewall_rules(self) -> tuple[compute_v1.Firewall, compute_v1.Firewall]:
        network = self.settings.network
        url = network if "/" in network else f"global/networks/{network}"
        s = self.settings
        return firewall.ssh_rules(
            url, self.network_tag, s.operator_cidr, self.fleet_name, self.firewall_names
        )

    # -- the Provider protocol

    def plan(self, spec: HostSettings) -> PlannedHost:
        machine_type = self.settings.machine_type
        warnings = [DATA_CENTRE_WARNING]
        mismatch = self._placement_problem(spec)
        if mismatch:
            warnings.append(mismatch)
        instance = self._machine(spec.name)
        existing = instance is not None and self._owned(instance, spec.name)
        if instance is not None and not existing:
            warnings.append(str(self._not_ours(spec.name)))
        free_elsewhere = []
        if pricing.free_tier_eligible(self.zone, machine_type):
            free_elsewhere = [
                r.name for r in self.list() if r.name != spec.name and r.meta.get("free_tier")
            ]
        free, tier = pricing.free_tier_warnings(self.zone, machine_type, free_elsewhere)
        monthly, costs = pricing.cost_warnings(machine_type, free)
        warnings += tier + costs
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

    def create(self, spec: HostSettings, authorized_key: str) -> HostRecord:
        mismatch = self._placement_problem(spec)
        if mismatch:
            raise ProviderError(f"{self._who}: {mismatch}")
        for rule in self.ssh_firewall_rules():
            firewall.ensure(self.api, rule)
        instance = self._machine(spec.name)
        if instance is None:
            instance = self._insert(spec, authorized_key)
        if not self._owned(instance, spec.name):
            raise self._not_ours(spec.name)
        if instance.status in _STOPPED | {"STOPPING", "SUSPENDING"}:
            return self.start(spec.name)
        return self._record(self._settle(spec.name, {"RUNNING"}, instance))

    def get(self, name: str) -> HostRecord | None:
        instance = self._machine(name)
        if instance is None or not self._owned(instance, name):
            return None
        return self._record(instance)

    def list(self) -> builtins.list[HostRecord]:
        request = compute_v1.ListInstancesRequest(
            project=self.api.project,
            zone=self.zone,
            filter=f"labels.{FLEET_TAG}={self.fleet_name}",
        )
        with self.api.api("listing instances"):
            found = builtins.list(self.api.instances.list(request=request))
        # the filter is the server's; keep only what is labelled ours whatever it returned
        return sorted(
            (self._record(i) for i in found if self._owned(i) and dict(i.labels).get(HOST_TAG)),
            key=lambda r: r.name,
        )

    def public_ip(self, name: str) -> str | None:
        record = self.get(name)
        return (record.address or None) if record else None

    def start(self, name: str) -> HostRecord:
        instance = self._settle(name, {"RUNNING"} | _STOPPED)
        if instance.status != "RUNNING":
            calls = self.api.instances
            call = calls.resume_unary if instance.status == "SUSPENDED" else calls.start_unary
            self._act(name, "starting", call, instance.name)
        return self._record(self._settle(name, {"RUNNING"}))

    def stop(self, name: str) -> HostRecord:
        instance = self._settle(name, {"RUNNING"} | _STOPPED)
        if instance.status not in _STOPPED:
            self._act(name, "stopping", self.api.instances.stop_unary, instance.name)
        return self._record(self._settle(name, _STOPPED))

    def reboot(self, name: str) -> HostRecord:
        instance = self._settle(name, {"RUNNING"} | _STOPPED)
        if instance.status != "RUNNING":
            return self.start(name)
        self._act(name, "rebooting", self.api.instances.reset_unary, instance.name)
        return self._record(self._settle(name, {"RUNNING"}))

    def terminate(self, name: str) -> None:
        """Delete the host's instance (and its boot disk); the fleet's firewall rules stay."""
        instance = self._machine(name)
        if instance is None:
            return
        if not self._owned(instance, name):
            raise self._not_ours(name)
        self._delete(name)

    # -- instances

    def _placement_problem(self, spec: HostSettings) -> str | None:
        if spec.region and spec.region not in (self.zone, self.region):
            return (
                f"host {spec.name!r} asks for region {spec.region!r} but provider {self.name!r} "
                f"places every host in zone {self.zone}; add a gcp provider for that zone"
            )
        return None

    def _machine(self, host: str) -> compute_v1.Instance | None:
        """The host's instance, or None; ours or not (`_owned` tells)."""
        with self.api.api(f"reading instance for host {host!r}"):
            try:
                return self.api.instances.get(
                    project=self.api.project, zone=self.zone, instance=self.instance_name(host)
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

    def _must(self, name: str) -> compute_v1.Instance:
        instance = self._machine(name)
        if instance is None:
            raise ProviderNotFound(f"{self._who}: no host named {name!r} (create it first)")
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
            self._sleep(self.api.poll_seconds)
            instance = self._must(name)
        return instance

    def _act(
        self, host: str, doing: str, call: Callable[..., compute_v1.Operation], vm: str
    ) -> None:
        action = f"{doing} host {host!r}"
        with self.api.api(action):
            op = call(project=self.api.project, zone=self.zone, instance=vm)
        self.api.run(op, action)

    def _insert(self, spec: HostSettings, authorized_key: str) -> compute_v1.Instance:
        s = self.settings
        with self.api.api(f"reading image family {s.image_family}"):
            image = self.api.images.get_from_family(project=s.image_project, family=s.image_family)
        names = (self.fleet_name, self.instance_name(spec.name), self.network_tag)
        resource = instances.instance_resource(
            s, spec, names, authorized_key, HostKeyPair.generate(), image
        )
        return instances.insert(
            self.api,
            resource,
            spec.name,
            lambda: self._machine(spec.name),
            lambda op, action: self._failed_insert(spec.name, op, action),
        )

    def _failed_insert(self, host: str, op: compute_v1.Operation, action: str) -> ProviderError:
        """The insert's operation failed: remove what it left behind, then say why."""
        error = self.api.operation_error(op, action)
        try:
            leftover = self._machine(host)
            if leftover is not None and self._owned(leftover, host):
                self._delete(host)
        except ProviderError as cleanup:
            return type(error)(
                f"{error}; removing the half-made instance {self.instance_name(host)} failed "
                f"too ({cleanup}): delete it in the console"
            )
        return error

    def _delete(self, name: str) -> None:
        action = f"deleting instance {self.instance_name(name)}"
        with self.api.api(action):
            try:
                op = self.api.instances.delete_unary(
                    project=self.api.project, zone=self.zone, instance=self.instance_name(name)
                )
            except gexc.NotFound:
                return
        self.api.run(op, action)

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
        zone = short(instance.zone) if instance.zone else self.zone
        machine_type = short(instance.machine_type) if instance.machine_type else ""
        free = pricing.free_tier_eligible(zone, machine_type)
        monthly = pricing.monthly_cost_usd(machine_type, free) or 0.0
        return HostRecord(
            name=labels.get(HOST_TAG, instance.name),
            provider=self.name,
            address=address,
            ssh_port=22,
            ssh_user=self.settings.ssh_user,
            host_key=metadata.get(HOST_KEY_TAG, ""),
            state=_STATES.get(instance.status, instance.status.lower()),
            provider_ref=instance.self_link,
            region=pricing.region_of(zone),
            hourly_cost_usd=round(monthly / HOURS_PER_MONTH, 6),
            meta={
                "systemd": True,
                "cloud": "gcp",
                "zone": zone,
                "project": self.api.project,
                "instance": instance.name,
                "machine_type": machine_type,
                "free_tier": free,
            },
        )
