"""Gradient's community rules, checked on what GradientLab has observed (pure functions).

- One Sentry Node per device: a second host that is the same machine is refused at deploy.
  "The same machine" is read from SSH, not from the fleet file: two hosts whose pinned host
  keys are equal answer from one sshd, whatever addresses the fleet file gives them.
- Nodes sharing a public IP split their rewards: the IP the network reports for each node (its
  `ip`) and the address a STUN server maps the host to are both observations of it."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

SPLIT_RULE = "nodes behind one public IP split their rewards (Gradient's rules)"
ONE_NODE_RULE = "Gradient allows one Sentry Node per device"


@dataclass(frozen=True)
class ObservedIp:
    host: str
    ip: str
    source: str  # "network" (the node's ip as Gradient sees it) or "stun" (the mapped address)


@dataclass(frozen=True)
class SharedIp:
    ip: str
    hosts: tuple[str, ...]
    sources: tuple[str, ...]

    @property
    def warning(self) -> str:
        seen = " and ".join(
            {"network": "by the network", "stun": "by STUN"}.get(s, s) for s in self.sources
        )
        return f"{', '.join(self.hosts)} share the public IP {self.ip} (seen {seen}): {SPLIT_RULE}"


def shared_ips(observed: list[ObservedIp]) -> list[SharedIp]:
    """Groups of two or more hosts seen at one public IP, by any source."""
    hosts: dict[str, set[str]] = defaultdict(set)
    sources: dict[str, set[str]] = defaultdict(set)
    for o in observed:
        ip = o.ip.strip()
        if not ip:
            continue
        hosts[ip].add(o.host)
        sources[ip].add(o.source)
    return [
        SharedIp(ip, tuple(sorted(hosts[ip])), tuple(sorted(sources[ip])))
        for ip in sorted(hosts)
        if len(hosts[ip]) > 1
    ]


class SecondNodeRefused(ValueError):
    """Deploying this host would put a second Sentry Node on one machine."""


def one_node_per_device(
    candidates: list[tuple[str, str | None]], deployed: dict[str, str]
) -> dict[str, str]:
    """Which of `candidates` (name, pinned host key) a deploy must refuse, with why: each one
    whose machine already has a node (in `deployed`), and all but the first by name of those
    that share a machine with each other."""
    refused: dict[str, str] = {}
    taken = dict(deployed)
    for name, key in sorted(candidates, key=lambda c: c[0]):
        try:
            check_one_node_per_device(name, key, taken)
        except SecondNodeRefused as exc:
            refused[name] = str(exc)
            continue
        if key:
            taken[name] = key
    return refused


def check_one_node_per_device(host: str, host_key: str | None, deployed: dict[str, str]) -> None:
    """`deployed`: host name -> pinned host key of every other live host with a node on it."""
    if not host_key:
        return
    same = sorted(name for name, key in deployed.items() if name != host and key == host_key)
    if same:
        raise SecondNodeRefused(
            f"{host} is the same machine as {', '.join(same)} (they answer with one SSH host "
            f"key): {ONE_NODE_RULE}; remove one of them from the fleet file"
        )
