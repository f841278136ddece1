"""Tap readiness rows on a real Postgres: one per host per run, errors kept, retries not doubled,
unknown hosts refused with nothing written, every vocabulary word accepted by the schema."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, text

from gradientlab.agent.stun import Behaviour, NatType, TapReadiness, TapReadinessError
from gradientlab.node.readiness import TapCheck, parse_stun_output
from gradientlab.store.taps import latest_tap_readiness, record_tap_readiness
from tests.conftest import add_host

# any instant works: nothing here compares with the clock
AT = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
SERVER = "stun.example:3478"


def behind_nat(nat: NatType = NatType.PORT_RESTRICTED_CONE) -> TapReadiness:
    return TapReadiness(
        server=SERVER,
        udp_reachable=True,
        server_address="192.0.2.10:3478",
        local_address="10.0.0.2",
        local_port=40000,
        mapped_address="198.51.100.7",
        mapped_port=40000,
        behind_nat=True,
        rfc5780=True,
        mapping=Behaviour.ENDPOINT_INDEPENDENT,
        filtering=Behaviour.ADDRESS_AND_PORT_DEPENDENT,
        nat_type=nat,
        rtt_ms=3.5,
        notes=["a note"],
    )


def rows(engine: Engine, sql: str) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql))]


def test_one_row_per_host_per_run_with_errors_kept(engine: Engine) -> None:
    add_host(engine, "pi")
    add_host(engine, "vm")
    add_host(engine, "gone")
    first = [
        TapCheck("pi", AT, SERVER, result=behind_nat()),
        TapCheck("vm", AT, SERVER, error="vm: no TCP connection to 127.0.0.9:2222 within 5s"),
        TapCheck(
            "gone",
            AT,
            SERVER,
            result=TapReadiness(
                server=SERVER,
                udp_reachable=False,
                nat_type=NatType.UDP_BLOCKED,
                error="no answer from 192.0.2.10:3478 over UDP",
            ),
        ),
    ]
    assert record_tap_readiness(engine, first, run_id="run-1") == 3
    stored = rows(
        engine,
        "SELECT h.name, t.udp_reachable, t.mapped_address, t.mapped_port, t.behind_nat,"
        " t.mapping, t.filtering, t.nat_type, t.error, t.notes, t.run_id"
        " FROM tap_readiness t JOIN hosts h ON h.id = t.host_id ORDER BY h.name",
    )
    assert stored == [
        (
            "gone",
            False,
            None,
            None,
            None,
            None,
            None,
            "udp-blocked",
            "no answer from 192.0.2.10:3478 over UDP",
            [],
            "run-1",
        ),
        (
            "pi",
            True,
            "198.51.100.7",
            40000,
            True,
            "endpoint-independent",
            "address-and-port-dependent",
            "port-restricted-cone",
            None,
            ["a note"],
            "run-1",
        ),
        (
            "vm",
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            "vm: no TCP connection to 127.0.0.9:2222 within 5s",
            [],
            "run-1",
        ),
    ]
    # a retried store writes nothing twice
    assert record_tap_readiness(engine, first, run_id="run-1") == 0
    assert rows(engine, "SELECT count(*) FROM tap_readiness") == [(3,)]

    # the next run adds rows; the app's view shows each host's latest
    later = AT + timedelta(hours=1)
    second = [TapCheck("pi", later, SERVER, result=behind_nat(NatType.SYMMETRIC))]
    assert record_tap_readiness(engine, second, run_id="run-2") == 1
    latest = {r["host"]: r for r in latest_tap_readiness(engine)}
    assert latest["pi"]["nat_type"] == "symmetric" and latest["pi"]["checked_at"] == later
    assert latest["vm"]["error"].startswith("vm: no TCP")
    assert rows(engine, "SELECT count(*) FROM tap_readiness") == [(4,)]


def test_an_unknown_host_is_refused_and_nothing_is_written(engine: Engine) -> None:
    add_host(engine, "pi")
    checks = [
        TapCheck("pi", AT, SERVER, result=behind_nat()),
        TapCheck("ghost", AT, SERVER, result=behind_nat()),
    ]
    with pytest.raises(KeyError, match="ghost"):
        record_tap_readiness(engine, checks)
    assert rows(engine, "SELECT count(*) FROM tap_readiness") == [(0,)]


def test_the_schema_accepts_every_word_of_the_vocabulary(engine: Engine) -> None:
    add_host(engine, "pi")
    checks = []
    for i, nat in enumerate(NatType):
        behaviour = list(Behaviour)[i % len(Behaviour)]
        result = TapReadiness(
            server=SERVER, udp_reachable=True, mapping=behaviour, filtering=behaviour, nat_type=nat
        )
        checks.append(TapCheck("pi", AT + timedelta(minutes=i), SERVER, result=result))
    assert record_tap_readiness(engine, checks) == len(NatType)
    stored = rows(engine, "SELECT DISTINCT nat_type FROM tap_readiness")
    assert {s[0] for s in stored} == {n.value for n in NatType}


def test_what_a_host_prints_is_parsed_or_named() -> None:
    good = behind_nat().to_json()
    assert parse_stun_output("pi", 0, "noise\n" + good + "\n", "") == behind_nat()
    with pytest.raises(TapReadinessError, match=r"pi: the STUN test printed no result \(exit 127"):
        parse_stun_output("pi", 127, "", "sh: 1: python: not found")
    with pytest.raises(TapReadinessError, match="pi: the STUN test's result is unreadable"):
        parse_stun_output("pi", 0, '{"server": 1}', "")
