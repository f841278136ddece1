"""Splitting a sweep into shards: every host in exactly one, stable, and bad input named."""

from __future__ import annotations

import pytest

from gradientlab.config import HealthSettings
from gradientlab.health import Verdict, network_state_of
from gradientlab.health.shards import ShardError, parse_shard, shard_count, shards_for

HOSTS = [f"node-{i:05d}" for i in range(10_000)]


def test_every_host_is_in_exactly_one_shard_of_about_equal_size() -> None:
    shards = shards_for(len(HOSTS), 2500)
    assert [str(s) for s in shards] == ["0/4", "1/4", "2/4", "3/4"]
    owners = {h: [s for s in shards if s.holds(h)] for h in HOSTS}
    assert all(len(o) == 1 for o in owners.values())
    sizes = [sum(1 for h in HOSTS if s.holds(h)) for s in shards]
    assert sum(sizes) == len(HOSTS)
    assert max(sizes) - min(sizes) < 0.1 * 2500  # a hash, not a count: close, not equal


def test_a_host_stays_on_its_shard_from_sweep_to_sweep() -> None:
    first = {h: next(str(s) for s in shards_for(10_000, 2500) if s.holds(h)) for h in HOSTS[:50]}
    again = {h: next(str(s) for s in shards_for(10_000, 2500) if s.holds(h)) for h in HOSTS[:50]}
    assert first == again


@pytest.mark.parametrize(
    ("hosts", "per", "count"),
    [(0, 2500, 1), (2500, 2500, 1), (2501, 2500, 2), (10_000, 2500, 4), (3, 1, 3)],
)
def test_shard_count(hosts: int, per: int, count: int) -> None:
    assert shard_count(hosts, per) == count


@pytest.mark.parametrize("text", ["4/4", "-1/4", "1", "a/b", "1/0", "", "1/4/2"])
def test_a_bad_shard_parameter_says_what_is_expected(text: str) -> None:
    with pytest.raises(ShardError, match=r"health: shard .* is not '<index>/<count>'"):
        parse_shard(text)


def test_parse_shard() -> None:
    part = parse_shard("2/4")
    assert (part.index, part.count, str(part)) == (2, 4, "2/4")


def test_the_network_state_from_the_shards_verdicts() -> None:
    policy = HealthSettings()
    down = network_state_of([Verdict.DISCONNECTED] * 7 + [Verdict.GOOD] * 3, None, policy)
    assert down.down and (down.disconnected, down.checked) == (7, 10)
    up = network_state_of([Verdict.GOOD] * 7 + [Verdict.UNREACHABLE] * 30, None, policy)
    assert not up.down and up.checked == 7
    assert network_state_of([], "503", policy).down
