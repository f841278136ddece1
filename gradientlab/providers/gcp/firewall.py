"""The fleet's SSH firewall on Compute Engine: SSH from the operator's range to the fleet's VMs
(by network tag), and a deny rule just below it for everyone else. Read what exists, compare
with what is wanted, change only the difference."""

from __future__ import annotations

from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import compute_v1

from gradientlab.providers.errors import ProviderError
from gradientlab.providers.gcp.sdk import ComputeApi, short

SSH_ALLOW_PRIORITY = 1000
# Just below the allow rule: beats the default network's `default-allow-ssh` (priority 65534).
SSH_DENY_PRIORITY = 1001


def ssh_rules(
    network_url: str, network_tag: str, operator_cidr: str, fleet: str, names: tuple[str, str]
) -> tuple[compute_v1.Firewall, compute_v1.Firewall]:
    """SSH from the operator's range to the fleet's VMs, and from nowhere else."""
    common: dict[str, Any] = {
        "network": network_url,
        "direction": "INGRESS",
        "target_tags": [network_tag],
        "disabled": False,
    }
    allow = compute_v1.Firewall(
        name=names[0],
        description=f"GradientLab fleet {fleet}: SSH from the operator only",
        priority=SSH_ALLOW_PRIORITY,
        source_ranges=[operator_cidr],
        allowed=[compute_v1.Allowed(I_p_protocol="tcp", ports=["22"])],
        **common,
    )
    deny = compute_v1.Firewall(
        name=names[1],
        description=f"GradientLab fleet {fleet}: no SSH from anywhere else",
        priority=SSH_DENY_PRIORITY,
        source_ranges=["0.0.0.0/0"],
        denied=[compute_v1.Denied(I_p_protocol="tcp", ports=["22"])],
        **common,
    )
    return allow, deny


def matches(current: compute_v1.Firewall, wanted: compute_v1.Firewall) -> bool:
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


def read(api: ComputeApi, name: str) -> compute_v1.Firewall | None:
    with api.api(f"reading firewall rule {name}"):
        try:
            return api.firewalls.get(project=api.project, firewall=name)
        except gexc.NotFound:
            return None


def ensure(api: ComputeApi, wanted: compute_v1.Firewall) -> None:
    """Create the rule, or bring an existing one back to exactly what is wanted."""
    current = read(api, wanted.name)
    if current is None:
        action = f"creating firewall rule {wanted.name}"
        with api.api(action):
            try:
                op = api.firewalls.insert_unary(project=api.project, firewall_resource=wanted)
            except gexc.Conflict:  # another host's run made it meanwhile
                op = None
        if op is not None:
            api.run(op, action)
            return
        current = read(api, wanted.name)
        if current is None:
            raise ProviderError(f"{api.who}: {action}: the name is taken; rerun in a minute")
    if short(current.network) != short(wanted.network):
        raise ProviderError(
            f"{api.who}: firewall rule {wanted.name} is on network "
            f"{short(current.network)!r}, not {short(wanted.network)!r}; delete the rule "
            "(and this fleet's VMs on the old network) or set the old network back"
        )
    if matches(current, wanted):
        return
    action = f"updating firewall rule {wanted.name}"
    with api.api(action):  # PUT replaces every field, so stray additions go too
        op = api.firewalls.update_unary(
            project=api.project, firewall=wanted.name, firewall_resource=wanted
        )
    api.run(op, action)
