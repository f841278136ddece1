"""What an Azure host costs and what the free offer covers: pure functions of the VM size."""

from __future__ import annotations

from dataclasses import dataclass

from gradientlab.providers.base import DATA_CENTRE_WARNING, HOURS_PER_MONTH

# Pay-as-you-go Linux, US regions, USD per hour (B1s: about $7.59 a month).
HOURLY_USD = {
    "Standard_B1ls": 0.0052,
    "Standard_B1s": 0.0104,
    "Standard_B1ms": 0.0207,
    "Standard_B2s": 0.0416,
}
# New accounts get 750 hours a month of these for 12 months.
FREE_TIER_SIZES = {"Standard_B1s"}


@dataclass(frozen=True)
class Estimate:
    monthly_usd: float
    free_tier: bool
    warnings: tuple[str, ...]


def hourly_cost(vm_size: str) -> float:
    return HOURLY_USD.get(vm_size, 0.0)


def estimate(vm_size: str) -> Estimate:
    hourly = HOURLY_USD.get(vm_size)
    warnings = [
        DATA_CENTRE_WARNING,
        "a Standard static public IP (about $3.65/month) and the OS disk are billed "
        "separately from the VM once free allowances run out",
    ]
    free = vm_size in FREE_TIER_SIZES
    if free:
        warnings.append(
            f"{vm_size}: 750 hours a month are free for 12 months on new Azure accounts; "
            f"after that about ${(hourly or 0) * HOURS_PER_MONTH:.2f}/month"
        )
    if hourly is None:
        warnings.append(f"no price known for {vm_size}; the cost shown is 0")
    return Estimate(round((hourly or 0.0) * HOURS_PER_MONTH, 2), free, tuple(warnings))
