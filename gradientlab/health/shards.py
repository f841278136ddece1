"""Splitting one health sweep across workers.

Above `health.shard_hosts` hosts, the scheduled health run becomes a dispatcher: it starts one
flow run per shard of the deployment `health/health-shard`, which any worker in the pool picks
up, waits for them, and records what is fleet-wide (the network's state) once. A host belongs to
one shard by a stable hash of its name, so it stays on the same shard from sweep to sweep while
the fleet keeps its size, and each shard's histories and locks stay warm on whichever worker
runs it."""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass


class ShardError(ValueError):
    """A shard parameter that is not "<index>/<count>" with 0 <= index < count."""


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, host: str) -> bool:
        return zlib.crc32(host.encode()) % self.count == self.index


def parse_shard(text: str) -> Shard:
    """ "2/4" is the third of four shards."""
    index_text, sep, count_text = str(text).partition("/")
    try:
        index, count = int(index_text), int(count_text)
    except ValueError:
        index, count = -1, 0
    if not sep or count < 1 or not 0 <= index < count:
        raise ShardError(
            f"health: shard {text!r} is not '<index>/<count>' with 0 <= index < count (e.g. '0/4')"
        )
    return Shard(index, count)


def shard_count(hosts: int, shard_hosts: int) -> int:
    """How many shards a sweep of `hosts` hosts needs, at most `shard_hosts` each."""
    return max(1, math.ceil(hosts / max(1, shard_hosts)))


def shards_for(hosts: int, shard_hosts: int) -> list[Shard]:
    n = shard_count(hosts, shard_hosts)
    return [Shard(i, n) for i in range(n)]
