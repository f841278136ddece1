"""The provider interface every flow uses. A provider talks to its cloud, not to our tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from gradientlab.config import HostSettings
from gradientlab.providers.errors import (  # noqa: F401 - re-exported: callers import them here
    CapacityError,
    ProviderAuthError,
    ProviderError,
    ProviderNotFound,
    ProviderRateLimited,
    ProviderUnavailable,
    QuotaError,
)


class HostState:
    """A host's `state`: what its provider reports (the first four) and what GradientLab
    records around a provider's calls (the last two). Plain strings, as the database has them."""

    RUNNING = "running"
    PROVISIONING = "provisioning"  # being created or started by the provider
    STOPPING = "stopping"
    STOPPED = "stopped"
    TERMINATED = "terminated"
    CREATING = "creating"  # recorded before the create call: a rerun completes it
    PLANNED = "planned"


# hosts no check or action can reach: their rows are history
UNREACHABLE_STATES = (HostState.TERMINATED, HostState.CREATING)


@dataclass(frozen=True)
class HostRecord:
    """What a provider knows of one host it runs."""

    name: str
    provider: str
    address: str
    ssh_port: int
    ssh_user: str
    host_key: str  # "<type> <base64>", recorded at creation and pinned from then on
    state: str  # a HostState
    provider_ref: str
    region: str | None = None
    hourly_cost_usd: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PlannedHost:
    name: str
    provider: str
    region: str | None
    action: str  # create, keep
    monthly_cost_usd: float
    free_tier: bool
    warnings: tuple[str, ...] = ()


class Provider(Protocol):
    kind: str

    def plan(self, spec: HostSettings) -> PlannedHost: ...

    def create(self, spec: HostSettings, authorized_key: str) -> HostRecord: ...

    def get(self, name: str) -> HostRecord | None: ...

    def list(self) -> list[HostRecord]: ...

    def public_ip(self, name: str) -> str | None: ...

    def start(self, name: str) -> HostRecord: ...

    def stop(self, name: str) -> HostRecord: ...

    def reboot(self, name: str) -> HostRecord: ...

    def terminate(self, name: str) -> None: ...


HOURS_PER_MONTH = 730  # how the three clouds turn an hourly price into a monthly one
DATA_CENTRE_WARNING = (
    "cloud data-centre addresses are likely marked Unsupported by Gradient (they earn nothing)"
)

# Labels/tags on everything GradientLab creates, so `list` finds only its own.
FLEET_TAG = "gradientlab-fleet"
HOST_TAG = "gradientlab-host"
HOST_KEY_TAG = "gradientlab-host-key"
