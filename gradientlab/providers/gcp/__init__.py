"""Google Compute Engine: `sdk` (clients, errors, operations), `firewall` (the fleet's SSH
rules), `instances` (the VM's shape and its one insert), `pricing` (free-tier rules) and
`provider` (the `Provider` itself)."""

from gradientlab.providers.base import DATA_CENTRE_WARNING
from gradientlab.providers.gcp.pricing import free_tier_eligible, monthly_cost_usd, region_of
from gradientlab.providers.gcp.provider import GcpCloudProvider
from gradientlab.providers.gcp.sdk import gce_name

__all__ = [
    "DATA_CENTRE_WARNING",
    "GcpCloudProvider",
    "free_tier_eligible",
    "gce_name",
    "monthly_cost_usd",
    "region_of",
]
