"""The STUN client's (gradientlab/agent/stun.py) wire format against RFC 5769's test vector;
the classifier; the parser. Its runs over real UDP are in tests/integration/test_stun_udp.py."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from gradientlab.agent import stun
from gradientlab.agent.stun import (
    Behaviour,
    NatType,
    StunFormatError,
    StunMessage,
    TapReadiness,
    TapReadinessError,
    classify,
    decode,
    encode,
)

EI = Behaviour.ENDPOINT_INDEPENDENT
AD = Behaviour.ADDRESS_DEPENDENT
APD = Behaviour.ADDRESS_AND_PORT_DEPENDENT

# RFC 5769 section 2.2: sample IPv4 response (SOFTWARE, XOR-MAPPED-ADDRESS 192.0.2.1:32853,
# MESSAGE-INTEGRITY, FINGERPRINT)
RFC5769_RESPONSE = bytes.fromhex(
    "0101003c2112a442b7e7a701bc34d686fa87dfae"
    "8022000b7465737420766563746f7220"
    "002000080001a147e112a643"
    "000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7"
    "80280004c07d4c96"
)


def test_rfc5769_response_vector_decodes() -> None:
    message = decode(RFC5769_RESPONSE)
    assert message.type == stun.BINDING_SUCCESS
    assert message.transaction_id == bytes.fromhex("b7e7a701bc34d686fa87dfae")
    assert message.address(stun.XOR_MAPPED_ADDRESS) == ("192.0.2.1", 32853)
    assert message.get(stun.SOFTWARE) == b"test vector"


def test_a_corrupt_message_is_refused_with_the_reason() -> None:
    flipped = bytearray(RFC5769_RESPONSE)
    flipped[30] ^= 0x01  # one bit of the XOR-MAPPED-ADDRESS value
    with pytest.raises(StunFormatError, match="FINGERPRINT"):
        decode(bytes(flipped))
    with pytest.raises(StunFormatError, match="magic cookie"):
        decode(RFC5769_RESPONSE[:4] + b"\0\0\0\0" + RFC5769_RESPONSE[8:])
    with pytest.raises(StunFormatError, match="length"):
        decode(RFC5769_RESPONSE[:-4])
    with pytest.raises(StunFormatError, match="shorter"):
        decode(b"\x00\x01")


def test_encode_round_trips_with_a_fingerprint() -> None:
    message = StunMessage(
        stun.BINDING_SUCCESS,
        b"\x01" * 12,
        [(stun.XOR_MAPPED_ADDRESS, stun.encode_address(("203.0.113.9", 40000), b"\x01" * 12))],
    )
    data = encode(message)
    back = decode(data)
    assert back.get(stun.FINGERPRINT) is not None
    assert back.address(stun.XOR_MAPPED_ADDRESS) == ("203.0.113.9", 40000)


@pytest.mark.parametrize(
    ("reachable", "behind_nat", "rfc5780", "mapping", "filtering", "expected"),
    [
        (False, None, False, None, None, NatType.UDP_BLOCKED),
        (True, True, False, None, None, NatType.BASIC_ONLY),
        (True, False, False, None, None, NatType.BASIC_ONLY),
        (True, False, True, EI, EI, NatType.OPEN),
        (True, False, True, EI, APD, NatType.FIREWALL),
        (True, True, True, EI, EI, NatType.FULL_CONE),
        (True, True, True, EI, AD, NatType.RESTRICTED_CONE),
        (True, True, True, EI, APD, NatType.PORT_RESTRICTED_CONE),
        (True, True, True, AD, APD, NatType.SYMMETRIC),
        (True, True, True, APD, None, NatType.SYMMETRIC),
        (True, True, True, None, EI, None),  # mapping test got no answer: unknown
        (True, True, True, EI, None, None),
    ],
)
def test_classify(
    reachable: bool,
    behind_nat: bool | None,
    rfc5780: bool,
    mapping: Behaviour | None,
    filtering: Behaviour | None,
    expected: NatType | None,
) -> None:
    assert classify(reachable, behind_nat, rfc5780, mapping, filtering) == expected


def test_parser_round_trips_and_ignores_new_fields() -> None:
    result = TapReadiness(
        server="stun.example:3478",
        udp_reachable=True,
        mapped_address="198.51.100.4",
        mapped_port=61000,
        behind_nat=True,
        rfc5780=True,
        mapping=EI,
        filtering=APD,
        nat_type=NatType.PORT_RESTRICTED_CONE,
        rtt_ms=12.5,
        notes=["x"],
    )
    assert TapReadiness.from_json(result.to_json()) == result
    data = json.loads(result.to_json()) | {"added_later": {"a": 1}}
    assert TapReadiness.from_json(json.dumps(data)) == result


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"udp_reachable": "yes"}, "field 'udp_reachable': expected bool"),
        ({"mapped_port": 70000}, "field 'mapped_port': 70000 is not a UDP port"),
        ({"mapped_port": True}, "field 'mapped_port': expected int"),
        ({"nat_type": "cone-ish"}, "field 'nat_type': 'cone-ish' is not one of udp-blocked"),
        ({"mapping": "sticky"}, "field 'mapping': 'sticky' is not one of endpoint-independent"),
        ({"server": None}, "field 'server': expected str"),
    ],
)
def test_parser_names_the_bad_field(change: dict[str, object], message: str) -> None:
    data = {"server": "s:1", "udp_reachable": True} | change
    with pytest.raises(TapReadinessError, match=message.replace("(", r"\(")):
        TapReadiness.from_json(json.dumps(data))
    with pytest.raises(TapReadinessError, match="not JSON"):
        TapReadiness.from_json("Traceback (most recent call last):")


def test_software_names_gradientlab_in_every_request() -> None:
    message = decode(encode(stun.binding_request(stun.CHANGE_PORT)))
    assert message.get(stun.SOFTWARE) == b"GradientLab tap-readiness"
    assert struct.unpack("!I", message.get(stun.CHANGE_REQUEST) or b"") == (stun.CHANGE_PORT,)


def test_the_database_accepts_exactly_the_nat_types_and_behaviours_the_test_reports() -> None:
    """sql/006's CHECK lists and the STUN test's vocabulary are one list."""
    import re

    from gradientlab.agent.stun import Behaviour, NatType

    sql = (Path(__file__).resolve().parents[2] / "sql" / "006_tap_readiness.sql").read_text()

    def checked(column: str) -> set[str]:
        m = re.search(rf"{column}\s+text CHECK \({column} IN\s*\(([^)]*)\)", sql)
        assert m, column
        return set(re.findall(r"'([^']+)'", m.group(1)))

    assert checked("nat_type") == {t.value for t in NatType}
    assert checked("mapping") == checked("filtering") == {b.value for b in Behaviour}
