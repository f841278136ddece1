"""What a Compute Engine host costs and what the free tier covers: pure functions."""

from __future__ import annotations

from gradientlab.providers.base import HOURS_PER_MONTH

FREE_REGIONS = ("us-west1", "us-central1", "us-east1")
FREE_MACHINE_TYPE = "e2-micro"
# On-demand list prices in us-central1, USD per hour; other regions differ by a few per cent.
HOURLY_PRICES = {"e2-micro": 0.0084, "e2-small": 0.0168, "e2-medium": 0.0335}
BOOT_DISK_GB = 10
BOOT_DISK_TYPE = "pd-standard"
DISK_MONTHLY_USD_PER_GB = 0.04  # pd-standard; the free tier covers 30 GB-months of it
EXTERNAL_IPV4_HOURLY_USD = 0.005


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


def free_tier_warnings(
    zone: str, machine_type: str, free_hosts_elsewhere: list[str]
) -> tuple[bool, list[str]]:
    """(free, warnings) for one more host, given the fleet's hosts already on the free tier."""
    free = free_tier_eligible(zone, machine_type)
    warnings = []
    if free:
        if free_hosts_elsewhere:
            free = False
            warnings.append(
                f"{free_hosts_elsewhere[0]} already uses the free e2-micro hours of this billing "
                "account (one e2-micro a month, all projects together); this one is billed"
            )
        else:
            warnings.append(
                "the free tier covers one e2-micro per billing account (all projects "
                "together); a second one is billed"
            )
    elif machine_type != FREE_MACHINE_TYPE:
        warnings.append(f"only {FREE_MACHINE_TYPE} is in the free tier, not {machine_type}")
    if region_of(zone) not in FREE_REGIONS:
        warnings.append(
            f"zone {zone} is outside the {FREE_MACHINE_TYPE} free regions "
            f"({', '.join(FREE_REGIONS)}): the VM is billed"
        )
    return free, warnings


def cost_warnings(machine_type: str, free: bool) -> tuple[float, list[str]]:
    """The monthly cost to show, and what the estimate leaves out."""
    warnings = []
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
    return monthly, warnings
