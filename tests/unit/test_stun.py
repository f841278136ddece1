"""The STUN client (gradientlab/agent/stun.py) against the sandbox STUN server over real UDP on
loopback; its wire format against RFC 5769's test vector; the classifier; the parser."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gradientlab.agent import stun
from gradientlab.agent.stun import (
    Behaviour,
    NatType,
    StunClient,
    StunFormatError,
    StunMessage,
    TapReadiness,
    TapReadinessError,
    classify,
    decode,
    encode,
    run_test,
)
from gradientlab.sandbox.stun import StunServer

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


@pytest.fixture(scope="module")
def server() -> Iterator[StunServer]:
    with StunServer() as s:
        yield s


@pytest.fixture(scope="module")
def basic_server() -> Iterator[StunServer]:
    """Binding only, like stun.l.google.com."""
    with StunServer(rfc5780=False) as s:
        yield s


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


def test_open_host_on_a_full_rfc5780_server(server: StunServer) -> None:
    result = run_test(server.address)
    assert result.error is None
    assert result.udp_reachable and result.rfc5780
    # loopback is no NAT: the mapped address is the socket's own
    assert (result.mapped_address, result.mapped_port) == (
        result.local_address,
        result.local_port,
    )
    assert result.behind_nat is False
    assert (result.mapping, result.filtering, result.nat_type) == (EI, EI, NatType.OPEN)


def test_basic_only_server_gives_reachability_and_mapped_address(
    basic_server: StunServer,
) -> None:
    result = run_test(basic_server.address)
    assert result.udp_reachable and not result.rfc5780
    assert result.mapped_address == "127.0.0.1" and result.mapped_port == result.local_port
    assert result.nat_type == NatType.BASIC_ONLY
    assert result.mapping is None and result.filtering is None


def test_no_server_is_udp_blocked_not_a_crash() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))  # bound, never answers
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        result = run_test(address, rto=0.05, attempts=2)
    assert not result.udp_reachable
    assert result.nat_type == NatType.UDP_BLOCKED
    assert result.error == f"no answer from {address} over UDP"


@pytest.mark.parametrize(
    ("server", "reason"),
    [
        ("", "empty"),
        ("stun.example:99999", "not host:port"),
        ("stun.example:x", "not host:port"),
        ("name.invalid:3478", "name.invalid:3478"),
    ],
)
def test_a_bad_server_setting_is_an_error_naming_it(server: str, reason: str) -> None:
    result = run_test(server, rto=0.05, attempts=1)
    assert not result.udp_reachable and result.nat_type is None
    assert result.error is not None and reason in result.error


def test_change_request_is_answered_from_the_other_address(server: StunServer) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        client = StunClient(sock, rto=0.2, attempts=3)
        primary = ("127.0.0.1", server.port)
        plain = client.binding(primary)
        both = client.binding(primary, stun.CHANGE_IP | stun.CHANGE_PORT)
        port_only = client.binding(primary, stun.CHANGE_PORT)
        ip_only = client.binding(primary, stun.CHANGE_IP)
    assert plain is not None and plain.source == primary
    assert plain.other == ("127.0.0.2", server.alt_port)
    assert both is not None and both.source == ("127.0.0.2", server.alt_port)
    assert port_only is not None and port_only.source == ("127.0.0.1", server.alt_port)
    assert ip_only is not None and ip_only.source == ("127.0.0.2", server.port)
    # asked on the alternate pair, OTHER-ADDRESS names the primary pair
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        answer = StunClient(sock).binding(("127.0.0.2", server.alt_port))
    assert answer is not None and answer.other == primary


def test_a_basic_server_refuses_change_request_with_420(basic_server: StunServer) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        answer = StunClient(sock).binding(
            ("127.0.0.1", basic_server.port), stun.CHANGE_IP | stun.CHANGE_PORT
        )
    assert answer is not None and answer.error is not None
    assert answer.error.startswith("420")


def test_the_server_ignores_junk_and_keeps_answering(server: StunServer) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        for junk in (b"", b"hello", RFC5769_RESPONSE, b"\x00\x01\x00\x00" + b"\0" * 16):
            sock.sendto(junk, ("127.0.0.1", server.port))
        answer = StunClient(sock).binding(("127.0.0.1", server.port))
        assert answer is not None and answer.mapped == ("127.0.0.1", sock.getsockname()[1])


def test_a_second_server_gets_its_own_ports(server: StunServer) -> None:
    with StunServer() as other:
        assert other.port not in (server.port, server.alt_port)
        assert run_test(other.address).nat_type == NatType.OPEN


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


def test_runs_as_a_lone_file_and_prints_one_json_line(server: StunServer, tmp_path: Path) -> None:
    """As on a host: the file alone, beside nothing else of gradientlab."""
    lone = tmp_path / "stun.py"
    lone.write_bytes(Path(stun.__file__).read_bytes())
    done = subprocess.run(
        [sys.executable, "-I", str(lone), server.address],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = done.stdout.splitlines()
    assert len(lines) == 1
    assert TapReadiness.from_json(lines[0]).nat_type == NatType.OPEN


def test_software_names_gradientlab_in_every_request() -> None:
    message = decode(encode(stun.binding_request(stun.CHANGE_PORT)))
    assert message.get(stun.SOFTWARE) == b"GradientLab tap-readiness"
    assert struct.unpack("!I", message.get(stun.CHANGE_REQUEST) or b"") == (stun.CHANGE_PORT,)


def test_a_server_that_advertises_other_address_but_ignores_change_request() -> None:
    """Some servers name an OTHER-ADDRESS yet answer every request from where it was sent:
    the client must not read their answers as endpoint-independent filtering."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as liar:
        liar.bind(("127.0.0.1", 0))
        liar.settimeout(0.2)
        done = threading.Event()

        def serve() -> None:
            while not done.is_set():
                try:
                    data, client = liar.recvfrom(2048)
                except TimeoutError:
                    continue
                request = decode(data)
                answer = StunMessage(
                    stun.BINDING_SUCCESS,
                    request.transaction_id,
                    [
                        (
                            stun.XOR_MAPPED_ADDRESS,
                            stun.encode_address(client, request.transaction_id),
                        ),
                        (stun.OTHER_ADDRESS, stun.encode_address(("127.0.0.2", 1))),
                    ],
                )
                liar.sendto(encode(answer), client)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            result = run_test(f"127.0.0.1:{liar.getsockname()[1]}", rto=0.05, attempts=2)
        finally:
            done.set()
            thread.join(timeout=5)
    assert result.udp_reachable and not result.rfc5780
    assert result.nat_type == NatType.BASIC_ONLY
    assert result.filtering is None and result.mapping is None
    assert any("did not answer a CHANGE-REQUEST" in note for note in result.notes)


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
