"""What a host's Compute Engine instance looks like, and inserting it exactly once.

An insert carries a request id made from the project, zone and instance name, so a rerun
converges on what an interrupted run started; Compute Engine remembers ids for at least an hour,
so an id whose operation is older than this run names an earlier life of the host, and the next
id is derived from that operation."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import yaml
from google.api_core import exceptions as gexc
from google.cloud import compute_v1

from gradientlab.config import GcpSettings, HostSettings
from gradientlab.providers.base import FLEET_TAG, HOST_KEY_TAG, HOST_TAG
from gradientlab.providers.bootstrap import HostKeyPair, cloud_init
from gradientlab.providers.errors import ProviderError
from gradientlab.providers.gcp.pricing import BOOT_DISK_GB, BOOT_DISK_TYPE
from gradientlab.providers.gcp.sdk import ComputeApi

INSERT_ATTEMPTS = 4
STALE_OPERATION = timedelta(minutes=2)
_REQUEST_IDS = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/gradientlab/providers/gcp")

# Google's guest agent makes new SSH host keys on a VM's first boot (replacing the key we pin)
# and gives every `ssh-keys` user full sudo; cloud-init writes this before the agent starts.
GUEST_AGENT_CONFIG = (
    "[InstanceSetup]\nset_host_keys = false\n\n[Daemons]\naccounts_daemon = false\n"
)


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


def request_id(project: str, zone: str, instance: str, after: str = "") -> str:
    """The insert's request id: the same for every run that creates this instance.

    `after` names a finished operation that an earlier life of the host left under the plain
    id; the next id is derived from it, so reruns still agree."""
    key = f"{project}/{zone}/{instance}"
    return str(uuid.uuid5(_REQUEST_IDS, f"{key}/{after}" if after else key))


def _parse_time(value: str) -> datetime | None:
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def stale(op: compute_v1.Operation, started: datetime) -> bool:
    inserted = _parse_time(op.insert_time) if op.insert_time else None
    return inserted is not None and inserted < started - STALE_OPERATION


def instance_resource(
    settings: GcpSettings,
    spec: HostSettings,
    names: tuple[str, str, str],
    authorized_key: str,
    host_key: HostKeyPair,
    image: compute_v1.Image,
) -> compute_v1.Instance:
    """`names`: (fleet, instance name, network tag); `network` is the VPC the host joins."""
    fleet, name, network_tag = names
    zone, ssh_user, key = settings.zone, settings.ssh_user, authorized_key.strip()
    network = settings.network if "/" in settings.network else f"global/networks/{settings.network}"
    metadata = {
        "ssh-keys": f"{ssh_user}:{key}",
        "user-data": gce_user_data(ssh_user, key, host_key, spec.name),
        HOST_KEY_TAG: host_key.public,
        "enable-oslogin": "FALSE",
    }
    return compute_v1.Instance(
        name=name,
        description=f"GradientLab fleet {fleet}, host {spec.name}",
        machine_type=f"zones/{zone}/machineTypes/{settings.machine_type}",
        labels={FLEET_TAG: fleet, HOST_TAG: spec.name},
        tags=compute_v1.Tags(items=[network_tag]),
        disks=[
            compute_v1.AttachedDisk(
                boot=True,
                auto_delete=True,
                type_="PERSISTENT",
                initialize_params=compute_v1.AttachedDiskInitializeParams(
                    source_image=image.self_link,
                    disk_size_gb=max(BOOT_DISK_GB, image.disk_size_gb or 0),
                    disk_type=f"zones/{zone}/diskTypes/{BOOT_DISK_TYPE}",
                ),
            )
        ],
        network_interfaces=[
            compute_v1.NetworkInterface(
                network=network,
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


def insert(
    api: ComputeApi,
    resource: compute_v1.Instance,
    host: str,
    find: Callable[[], compute_v1.Instance | None],
    failed: Callable[[compute_v1.Operation, str], ProviderError],
) -> compute_v1.Instance:
    """Insert the instance (or find the one a run before us inserted) and return it. `find`
    reads it by name; `failed` cleans up after a failed operation and says why."""
    action = f"creating instance {resource.name} for host {host!r}"
    started = datetime.now(UTC)
    rid = request_id(api.project, api.zone, resource.name)
    for _ in range(INSERT_ATTEMPTS):
        with api.api(action):
            try:
                op = api.instances.insert_unary(
                    request=compute_v1.InsertInstanceRequest(
                        project=api.project,
                        zone=api.zone,
                        instance_resource=resource,
                        request_id=rid,
                    )
                )
            except gexc.Conflict:  # made meanwhile by another run: converge on it
                instance = find()
                if instance is None:
                    raise ProviderError(
                        f"{api.who}: {action}: the name is taken but the instance is "
                        "gone (being deleted?); rerun in a minute"
                    ) from None
                return instance
        op = api.wait(op, action)
        if op.error.errors:
            codes = {e.code.upper().replace("_", "") for e in op.error.errors}
            instance = find() if "RESOURCEALREADYEXISTS" in codes else None
            if instance is not None:
                return instance
            if stale(op, started):
                rid = request_id(api.project, api.zone, resource.name, after=op.name)
                continue
            raise failed(op, action)
        instance = find()
        if instance is not None:
            return instance
        # the request id's operation created an earlier instance of this name, since deleted
        rid = request_id(api.project, api.zone, resource.name, after=op.name)
    raise ProviderError(
        f"{api.who}: {action}: Compute Engine kept answering with old operations; rerun in an hour"
    )
