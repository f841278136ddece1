"""The health flow's direct question to the network for nodes its node list leaves out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gradientlab.config import load_fleet
from gradientlab.sandbox.network import uid_for_email
from tests.conftest import fleet_yaml


def test_the_network_answers_for_each_known_node_and_omits_unknown_ones(
    sandbox: Any, base_address: str, tmp_path: Path
) -> None:
    from tasks.network import network_lookup

    path = tmp_path / "fleet.yaml"
    path.write_text(fleet_yaml(sandbox, ["lookup-1"], base_address))
    fleet = load_fleet(path)
    uid = uid_for_email(fleet.account.email)
    sandbox.network.heartbeat(uid, "lookup-node-1", "198.51.100.23", "0.1.0")
    found, error = network_lookup.fn(fleet, ["lookup-node-1", "never-registered"])
    assert error is None
    assert list(found) == ["lookup-node-1"]
    assert found["lookup-node-1"].connect is True
    assert found["lookup-node-1"].ip == "198.51.100.23"
