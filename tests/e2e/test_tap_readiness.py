"""poc_taps's tap-readiness step for real: a local sshd host runs the STUN test against the
sandbox's STUN server over SSH, through Prefect, and the table holds one row per host per run —
a host that cannot be reached included, as its own row with its error, without failing the run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from tests.conftest import add_host, fleet_yaml

pytestmark = pytest.mark.e2e

HOSTS = ["taps-1"]


@pytest.fixture(scope="module")
def fleet_file(
    sandbox: Any, base_address: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("taps") / "fleet.yaml"
    # a loopback address of its own, away from the other e2e fleets of this session
    path.write_text(fleet_yaml(sandbox, HOSTS, base_address.rsplit(".", 1)[0] + ".230"))
    yield path
    from gradientlab.config import load_fleet
    from gradientlab.inventory import provider_for
    from gradientlab.remote.executor import POOL

    POOL.close_all()
    fleet = load_fleet(path)
    for host in fleet.hosts:
        provider_for(fleet, host.provider).terminate(host.name)


def rows(engine: Engine, sql: str) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql))]


def test_poc_taps_stores_each_hosts_tap_readiness(
    prefect_server: None, engine: Engine, sandbox: Any, fleet_file: Path
) -> None:
    from flows.poc_taps import poc_taps
    from flows.provision import provision

    provision(fleet_path=str(fleet_file), approve=True)
    add_host(engine, "lost-1")  # in the database, but its pinned key is not a real one

    poc_taps(fleet_path=str(fleet_file))
    stored = rows(
        engine,
        "SELECT h.name, t.stun_server, t.udp_reachable, t.local_address, t.local_port,"
        " t.mapped_address, t.mapped_port, t.behind_nat, t.rfc5780, t.mapping, t.filtering,"
        " t.nat_type, t.error, t.run_id IS NOT NULL"
        " FROM tap_readiness t JOIN hosts h ON h.id = t.host_id ORDER BY h.name",
    )
    assert len(stored) == 2, stored
    lost, host = stored
    stun = sandbox.stun.address
    # the local host talks to the sandbox's STUN server over loopback: no NAT in between
    assert host[:3] == ("taps-1", stun, True)
    assert host[5:7] == host[3:5]  # mapped address and port are the host's own socket
    assert host[7:12] == (
        False,
        True,
        "endpoint-independent",
        "endpoint-independent",
        "open",
    )
    assert host[12] is None and host[13]
    assert lost[0] == "lost-1" and lost[2] is None and lost[11] is None
    assert "lost-1" in lost[12] and "host key" in lost[12]

    # the next run adds one row per host; the view the app reads has each host's latest
    poc_taps(fleet_path=str(fleet_file))
    assert rows(engine, "SELECT count(*), count(DISTINCT checked_at) FROM tap_readiness") == [
        (4, 2)
    ]
    latest = rows(engine, "SELECT host, nat_type FROM v_tap_readiness_latest ORDER BY host")
    assert latest == [("lost-1", None), ("taps-1", "open")]


def test_the_uptime_page_reads_what_poc_taps_stored(
    prefect_server: None, engine: Engine, sandbox: Any, fleet_file: Path
) -> None:
    """The flow refreshes the tap-readiness rollup after its tests: the app's query (which
    reads only the rollup and the tests it points at) has every host's latest test at once."""
    from flows.poc_taps import poc_taps
    from flows.provision import provision
    from gradientlab.store import reads
    from gradientlab.store.reads import FleetFilter

    provision(fleet_path=str(fleet_file), approve=True)
    poc_taps(fleet_path=str(fleet_file))
    poc_taps(fleet_path=str(fleet_file))
    first, last = rows(
        engine,
        "SELECT (min(checked_at) AT TIME ZONE 'UTC')::date,"
        " (max(checked_at) AT TIME ZONE 'UTC')::date FROM tap_readiness",
    )[0]
    readiness = reads.tap_readiness(engine, FleetFilter(first, last)).set_index("host")
    assert readiness["tests"].to_dict() == {"taps-1": 2}
    assert readiness.loc["taps-1", "nat_type"] == "open"
    summary = reads.tap_readiness_summary(engine, FleetFilter(first, last))
    assert summary[["nat_type", "hosts"]].values.tolist() == [["open", 1]]
