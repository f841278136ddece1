"""What an OCI host costs, and what Always Free covers: pure functions of shapes and sizes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gradientlab.providers.base import HOURS_PER_MONTH

FREE_MICRO_SHAPE = "VM.Standard.E2.1.Micro"
FREE_A1_SHAPE = "VM.Standard.A1.Flex"
# Always Free, per tenancy: two micro instances, and 4 OCPUs / 24 GB across all A1 instances.
FREE_MICRO_INSTANCES = 2
FREE_A1_OCPUS = 4.0
FREE_A1_MEMORY_GBS = 24.0

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


@dataclass(frozen=True)
class Instance:
    """What pricing needs of an instance that already runs: its shape and size."""

    shape: str
    ocpus: float | None
    memory_gbs: float | None


@dataclass(frozen=True)
class Estimate:
    monthly_usd: float
    free_tier: bool
    warnings: tuple[str, ...]


def flex_size(
    shape: str, ocpus: float | None, memory_gbs: float | None
) -> tuple[float | None, float | None]:
    """OCPUs and memory a Flex shape launches with; (None, None) for fixed shapes."""
    if not shape.endswith(".Flex"):
        return None, None
    cores = float(ocpus or 1)
    per_ocpu = 6.0 if shape == FREE_A1_SHAPE else 16.0
    return cores, float(memory_gbs or cores * per_ocpu)


def beyond(used: float, wanted: float, free: float) -> float:
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


def _micro(others: list[Instance]) -> Estimate:
    micros = sum(1 for i in others if i.shape == FREE_MICRO_SHAPE)
    free = micros < FREE_MICRO_INSTANCES
    warnings = []
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
    return Estimate(0.0, free, tuple(warnings))


def _a1(ocpus: float, memory: float, others: list[Instance]) -> Estimate:
    a1 = [i for i in others if i.shape == FREE_A1_SHAPE]
    used_ocpus = sum(i.ocpus or 0.0 for i in a1)
    used_memory = sum(i.memory_gbs or 0.0 for i in a1)
    paid_ocpus = beyond(used_ocpus, ocpus, FREE_A1_OCPUS)
    paid_memory = beyond(used_memory, memory, FREE_A1_MEMORY_GBS)
    free = paid_ocpus == 0 and paid_memory == 0
    price_ocpu, price_gb = FLEX_PRICES[FREE_A1_SHAPE]
    monthly = (paid_ocpus * price_ocpu + paid_memory * price_gb) * HOURS_PER_MONTH
    warnings = []
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
    return Estimate(monthly, free, tuple(warnings))


def estimate(
    shape: str, ocpus: float | None, memory_gbs: float | None, others: Iterable[Instance]
) -> Estimate:
    """The monthly cost of one more host, counting the compartment's other live instances
    against the tenancy's Always Free allowance."""
    others = list(others)
    size = flex_size(shape, ocpus, memory_gbs)
    if shape == FREE_MICRO_SHAPE:
        found = _micro(others)
    elif shape == FREE_A1_SHAPE:
        assert size[0] is not None and size[1] is not None
        found = _a1(size[0], size[1], others)
    else:
        warnings: tuple[str, ...] = ()
        if shape not in FIXED_PRICES and shape not in FLEX_PRICES:
            warnings = (f"no price known for {shape}; the cost is a rough guess",)
        found = Estimate(hourly_cost(shape, *size) * HOURS_PER_MONTH, False, warnings)
    if found.free_tier:
        note = (
            "Always Free limits count every compartment of the tenancy; only this "
            "compartment was checked"
        )
        found = Estimate(found.monthly_usd, True, (*found.warnings, note))
    return Estimate(round(found.monthly_usd, 2), found.free_tier, found.warnings)
