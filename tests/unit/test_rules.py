"""Gradient's rules on what GradientLab observed: shared public IPs, one node per device."""

from __future__ import annotations

import pytest

from gradientlab.rules import (
    ObservedIp,
    SecondNodeRefused,
    check_one_node_per_device,
    one_node_per_device,
    shared_ips,
)

KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHVn2xBOxm4xf1ZwLd4rQkzKq4wZ0n5yM0dkz3eJ8y7a"


def test_hosts_seen_at_one_ip_by_any_source_share_it() -> None:
    found = shared_ips(
        [
            ObservedIp("n1", "203.0.113.7", "network"),
            ObservedIp("n2", "203.0.113.7", "stun"),
            ObservedIp("n2", "203.0.113.7", "network"),
            ObservedIp("n3", "198.51.100.1", "network"),
            ObservedIp("n4", " ", "stun"),
            ObservedIp("n5", "", "network"),
        ]
    )
    assert [(s.ip, s.hosts, s.sources) for s in found] == [
        ("203.0.113.7", ("n1", "n2"), ("network", "stun"))
    ]
    assert found[0].warning == (
        "n1, n2 share the public IP 203.0.113.7 (seen by the network and by STUN): "
        "nodes behind one public IP split their rewards (Gradient's rules)"
    )


def test_one_host_seen_twice_is_not_shared() -> None:
    one = [ObservedIp("n1", "203.0.113.7", "network"), ObservedIp("n1", "203.0.113.7", "stun")]
    assert shared_ips(one) == []


def test_a_second_host_on_a_deployed_machine_is_refused() -> None:
    with pytest.raises(SecondNodeRefused, match="n2 is the same machine as n1"):
        check_one_node_per_device("n2", KEY_A, {"n1": KEY_A, "n3": KEY_B})
    check_one_node_per_device("n1", KEY_A, {"n1": KEY_A})  # a redeploy of itself
    check_one_node_per_device("n4", None, {"n1": KEY_A})  # no key pinned: nothing to compare


def test_among_new_hosts_on_one_machine_the_first_by_name_is_deployed() -> None:
    refused = one_node_per_device([("b", KEY_A), ("a", KEY_A), ("c", KEY_B)], {})
    assert list(refused) == ["b"]
    assert "one Sentry Node per device" in refused["b"]
    # a machine that already runs a node refuses every newcomer on it
    assert sorted(one_node_per_device([("a", KEY_A), ("c", KEY_B)], {"z": KEY_A})) == ["a"]
