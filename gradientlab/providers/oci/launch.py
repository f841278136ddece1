"""Launching one OCI instance: the newest image for the shape, the availability domains, and a
launch that carries a retry token per (fleet, host, AD), so a repeated launch never makes a
second VM. "Out of host capacity" is retried across the domains, with backoff between passes."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from oci.core.models import (
    CreateVnicDetails,
    Instance,
    InstanceSourceViaImageDetails,
    LaunchInstanceDetails,
    LaunchInstanceShapeConfigDetails,
)

from gradientlab.config import HostSettings, OciSettings
from gradientlab.providers.base import (
    FLEET_TAG,
    HOST_KEY_TAG,
    HOST_TAG,
    CapacityError,
    ProviderError,
    QuotaError,
)
from gradientlab.providers.bootstrap import HostKeyPair, cloud_init_b64
from gradientlab.providers.oci.pricing import flex_size
from gradientlab.providers.oci.sdk import GONE, OciApi


def display_name(fleet: str, host: str) -> str:
    return f"gradientlab-{fleet}-{host}"


def retry_token(fleet: str, host: str, availability_domain: str, replaces: str = "") -> str:
    """The same launch (fleet, host, AD) always carries the same token, so OCI runs it once.

    `replaces` names a terminated instance the plain token already points to."""
    seed = f"gradientlab/{fleet}/{host}/{availability_domain}/{replaces}"
    return hashlib.sha256(seed.encode()).hexdigest()[:48]


class Launcher:
    def __init__(
        self,
        api: OciApi,
        settings: OciSettings,
        fleet: str,
        sleep: Callable[[float], None],
        passes: int,
        backoff_seconds: float,
    ) -> None:
        self.api = api
        self.settings = settings
        self.fleet = fleet
        self.sleep = sleep
        self.passes = max(1, passes)
        self.backoff_seconds = backoff_seconds

    def newest_image(self) -> Any:
        s = self.settings
        images = self.api.list(
            f"looking up the newest {s.image_os} {s.image_os_version} image for {s.shape}",
            self.api.compute.list_images,
            self.api.compartment,
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
            f"{self.api.name}: no {s.image_os} {s.image_os_version} image for shape {s.shape} "
            f"in {s.region}; change image_os/image_os_version in the fleet file"
        )

    def availability_domains(self) -> list[str]:
        ads = self.api.call(
            "listing availability domains",
            self.api.identity.list_availability_domains,
            self.api.tenancy_id,
        )
        names = sorted(ad.name for ad in ads)
        if not names:
            raise ProviderError(
                f"{self.api.name}: OCI lists no availability domains in this region"
            )
        return names

    def details(
        self,
        spec: HostSettings,
        authorized_key: str,
        host_key: HostKeyPair,
        subnet_id: str,
        image_id: str,
        availability_domain: str,
    ) -> LaunchInstanceDetails:
        s = self.settings
        ocpus, memory = flex_size(s.shape, s.ocpus, s.memory_gbs)
        shape_config = (
            None
            if ocpus is None
            else LaunchInstanceShapeConfigDetails(ocpus=ocpus, memory_in_gbs=memory)
        )
        name = display_name(self.fleet, spec.name)
        return LaunchInstanceDetails(
            availability_domain=availability_domain,
            compartment_id=self.api.compartment,
            display_name=name,
            shape=s.shape,
            shape_config=shape_config,
            source_details=InstanceSourceViaImageDetails(image_id=image_id),
            create_vnic_details=CreateVnicDetails(
                subnet_id=subnet_id, assign_public_ip=True, display_name=name
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

    def _launch_in(self, spec: HostSettings, details: LaunchInstanceDetails, ad: str) -> Instance:
        doing = f"launching {spec.name} ({self.settings.shape}) in {ad}"
        compute = self.api.compute
        token = retry_token(self.fleet, spec.name, ad)
        instance = self.api.call(doing, compute.launch_instance, details, opc_retry_token=token)
        if instance.lifecycle_state in GONE:
            # the token still names a host terminated in the last 24 hours
            token = retry_token(self.fleet, spec.name, ad, replaces=instance.id)
            instance = self.api.call(doing, compute.launch_instance, details, opc_retry_token=token)
        return instance

    def launch(self, spec: HostSettings, authorized_key: str, subnet_id: str) -> Instance:
        image = self.newest_image()
        ads = self.availability_domains()
        host_key = HostKeyPair.generate()
        failures: list[tuple[str, ProviderError]] = []
        for attempt in range(self.passes):
            if attempt:
                last_pass = failures[-len(ads) :]
                if not any(isinstance(exc, CapacityError) for _, exc in last_pass):
                    break  # limits and quotas do not free up by waiting a minute
                self.sleep(self.backoff_seconds * 2 ** (attempt - 1))
            for ad in ads:
                details = self.details(spec, authorized_key, host_key, subnet_id, image.id, ad)
                try:
                    return self._launch_in(spec, details, ad)
                except (CapacityError, QuotaError) as exc:
                    failures.append((ad, exc))
        raise self._no_domain(spec, failures)

    def _no_domain(
        self, spec: HostSettings, failures: list[tuple[str, ProviderError]]
    ) -> Exception:
        tried = ", ".join(dict.fromkeys(ad for ad, _ in failures))
        last = failures[-1][1]
        s = self.settings
        if any(isinstance(exc, CapacityError) for _, exc in failures):
            return CapacityError(
                f"{self.api.name}: out of host capacity for {s.shape} for host {spec.name}: "
                f"tried {tried} in {s.region}, {self.passes} times each. Try again later (A1 "
                f"capacity comes and goes), or another region or shape. Last answer: {last}"
            )
        return QuotaError(
            f"{self.api.name}: no availability domain would take another {s.shape} for host "
            f"{spec.name} (tried {tried}): {last}"
        )
