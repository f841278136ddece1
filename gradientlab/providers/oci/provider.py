"""Oracle Cloud (OCI) hosts: one instance per host in the fleet's compartment, tagged with the
fleet, its host name and the SSH host key GradientLab generated for it, on the fleet's shared
network (`network.py`), launched by `launch.py`, priced by `pricing.py`."""

from __future__ import annotations

import builtins
import math
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from oci.core.models import Instance

from gradientlab.config import HostSettings, OciSettings
from gradientlab.providers.base import (
    DATA_CENTRE_WARNING,
    HOST_KEY_TAG,
    HOST_TAG,
    HostRecord,
    HostState,
    PlannedHost,
    ProviderError,
    ProviderNotFound,
)
from gradientlab.providers.oci import pricing
from gradientlab.providers.oci.launch import Launcher, display_name, retry_token
from gradientlab.providers.oci.network import FleetNetwork, Network
from gradientlab.providers.oci.sdk import GONE, OciApi, ours

STATES = {
    "RUNNING": HostState.RUNNING,
    "CREATING_IMAGE": HostState.RUNNING,
    "STOPPED": HostState.STOPPED,
    "STOPPING": HostState.STOPPED,
    "PROVISIONING": HostState.PROVISIONING,
    "STARTING": HostState.PROVISIONING,
    "MOVING": HostState.PROVISIONING,
    "TERMINATING": HostState.TERMINATED,
    "TERMINATED": HostState.TERMINATED,
}


def _size(instance: Instance) -> pricing.Instance:
    config = instance.shape_config
    if config is None:
        return pricing.Instance(instance.shape, None, None)
    return pricing.Instance(instance.shape, config.ocpus, config.memory_in_gbs)


def _host(instance: Instance) -> str:
    return str((instance.freeform_tags or {}).get(HOST_TAG, instance.display_name))


class OciCloudProvider:
    kind = "oci"

    def __init__(
        self,
        name: str,
        settings: OciSettings,
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
        self.api = OciApi(name, settings, config, signer)
        self.tenancy_id = self.api.tenancy_id
        self.compute, self.network, self.identity = (
            self.api.compute,
            self.api.network,
            self.api.identity,
        )
        self.fleet_network = FleetNetwork(self.api, settings, fleet_name)
        self.launcher = Launcher(
            self.api, settings, fleet_name, sleep, capacity_passes, capacity_backoff_seconds
        )

    def display_name(self, host: str) -> str:
        return display_name(self.fleet, host)

    def retry_token(self, host: str, availability_domain: str, replaces: str = "") -> str:
        return retry_token(self.fleet, host, availability_domain, replaces)

    def ensure_network(self) -> Network:
        return self.fleet_network.ensure()

    # -- the Provider protocol

    def plan(self, spec: HostSettings) -> PlannedHost:
        self._check_region(spec)
        # every live instance of the compartment counts against the Always Free allowance
        alive = [i for i in self._compartment_instances() if i.lifecycle_state not in GONE]
        mine = [i for i in alive if ours(i, self.fleet) and _host_tag(i) == spec.name]
        s = self.settings
        others = [_size(i) for i in alive if i not in mine]
        cost = pricing.estimate(s.shape, s.ocpus, s.memory_gbs, others)
        return PlannedHost(
            name=spec.name,
            provider=self.name,
            region=s.region,
            action="keep" if mine else "create",
            monthly_cost_usd=cost.monthly_usd,
            free_tier=cost.free_tier,
            warnings=(DATA_CENTRE_WARNING, *cost.warnings),
        )

    def create(self, spec: HostSettings, authorized_key: str) -> HostRecord:
        self._check_region(spec)
        existing = self._live_machine(spec.name)
        if existing is not None:
            record = self._start(spec.name, existing)
            if record.address:
                return record
            return replace(record, address=self._address_after_launch(spec.name, existing))
        network = self.ensure_network()
        instance = self.launcher.launch(spec, authorized_key, network.subnet_id)
        try:
            instance = self._wait_for(
                spec.name, instance.id, "RUNNING", self.launch_timeout_seconds
            )
            address = self._address_after_launch(spec.name, instance)
        except ProviderError as exc:
            self._terminate_failed_launch(spec.name, instance.id, exc)
            raise
        return self._record(instance, address)

    def get(self, name: str) -> HostRecord | None:
        instance = self._machine(name)
        if instance is None:
            return None
        return self._record(instance, self._address(name, instance))

    def list(self) -> builtins.list[HostRecord]:
        instances = self._instances()
        vnics = self._attachments() if instances else {}
        records = []
        for instance in sorted(instances, key=lambda i: i.display_name or ""):
            address = None
            if instance.lifecycle_state not in GONE:
                address = self._public_ip(_host(instance), vnics.get(instance.id))
            records.append(self._record(instance, address))
        return records

    def public_ip(self, name: str) -> str | None:
        record = self.get(name)
        return (record.address or None) if record is not None else None

    def start(self, name: str) -> HostRecord:
        return self._start(name, self._must(name))

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
            if _host_tag(instance) != name or instance.lifecycle_state in GONE:
                continue
            try:
                self._terminate(name, instance.id)
            except ProviderNotFound:
                continue

    # -- instances

    def _check_region(self, spec: HostSettings) -> None:
        if spec.region and spec.region != self.settings.region:
            raise ProviderError(
                f"{self.name}: host {spec.name} asks for region {spec.region}, but this provider "
                f"works in {self.settings.region}; declare another oci provider for that region"
            )

    def _compartment_instances(self, **filters: Any) -> builtins.list[Instance]:
        return self.api.list(
            "listing instances", self.compute.list_instances, self.api.compartment, **filters
        )

    def _instances(self, display_name: str | None = None) -> builtins.list[Instance]:
        filters = {"display_name": display_name} if display_name else {}
        return [
            i
            for i in self._compartment_instances(**filters)
            if ours(i, self.fleet) and i.lifecycle_state != "TERMINATED"
        ]

    def _machine(self, name: str) -> Instance | None:
        """The host's newest instance (a live one first), read afresh; None once terminated."""
        found = [i for i in self._instances(self.display_name(name)) if _host_tag(i) == name]
        pool = [i for i in found if i.lifecycle_state not in GONE] or found
        if not pool:
            return None
        newest = max(pool, key=lambda i: str(i.time_created))
        try:
            instance = self.api.call(f"reading host {name}", self.compute.get_instance, newest.id)
        except ProviderNotFound:
            return None
        return None if instance.lifecycle_state == "TERMINATED" else instance

    def _live_machine(self, name: str) -> Instance | None:
        instance = self._machine(name)
        return instance if instance is not None and instance.lifecycle_state not in GONE else None

    def _must(self, name: str) -> Instance:
        instance = self._live_machine(name)
        if instance is None:
            raise ProviderNotFound(f"{self.name}: no host named {name!r} in OCI (create it first)")
        return instance

    def _terminate(self, name: str, ocid: str, doing: str = "") -> None:
        self.api.call(
            doing or f"terminating host {name}",
            self.compute.terminate_instance,
            ocid,
            preserve_boot_volume=False,
        )

    def _terminate_failed_launch(self, name: str, ocid: str, exc: ProviderError) -> None:
        """Never leave behind a VM this run launched but could not bring up."""
        try:
            self._terminate(name, ocid, f"terminating host {name} after a failed launch")
            exc.add_note(f"GradientLab terminated instance {ocid} launched by this run")
        except ProviderError as cleanup:
            exc.add_note(
                f"terminating instance {ocid} failed too ({cleanup}); terminate it by hand or "
                f"run `terminate {name}`"
            )

    def _wait_for(self, name: str, ocid: str, wanted: str, timeout: float) -> Instance:
        polls = max(1, math.ceil(timeout / self.poll_seconds))
        state = "unknown"
        for poll in range(polls):
            if poll:
                self._sleep(self.poll_seconds)
            instance = self.api.call(
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

    def _act(self, name: str, instance: Instance, action: str, wanted: str) -> HostRecord:
        self.api.call(
            f"sending {action} to host {name}", self.compute.instance_action, instance.id, action
        )
        instance = self._wait_for(name, instance.id, wanted, self.action_timeout_seconds)
        return self._record(instance, self._address(name, instance))

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

    # -- addresses and records

    def _attachments(self, instance_id: str | None = None) -> dict[str, str]:
        """instance OCID -> its primary VNIC's OCID."""
        filters = {"instance_id": instance_id} if instance_id else {}
        attachments = self.api.list(
            "listing VNIC attachments",
            self.compute.list_vnic_attachments,
            self.api.compartment,
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
            vnic = self.api.call(
                f"reading the address of host {name}", self.network.get_vnic, vnic_id
            )
        except ProviderNotFound:
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
            f"subnet {self.fleet_network.name('subnet')} allows public IPs"
        )

    def _record(self, instance: Instance, address: str | None) -> HostRecord:
        tags = instance.freeform_tags or {}
        size = _size(instance)
        return HostRecord(
            name=_host(instance),
            provider=self.name,
            address=address or "",
            ssh_port=22,
            ssh_user=self.settings.ssh_user,
            # without the tag no key is pinned, and SSH to the host is refused until one is
            host_key=tags.get(HOST_KEY_TAG, ""),
            state=STATES.get(instance.lifecycle_state, str(instance.lifecycle_state).lower()),
            provider_ref=instance.id,
            region=self.settings.region,
            hourly_cost_usd=pricing.hourly_cost(instance.shape, size.ocpus, size.memory_gbs),
            meta={
                "systemd": True,
                "cloud": "oci",
                "availability_domain": instance.availability_domain,
                "shape": instance.shape,
            },
        )


def _host_tag(instance: Instance) -> str | None:
    return (instance.freeform_tags or {}).get(HOST_TAG)
