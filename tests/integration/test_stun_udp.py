"""The STUN client (gradientlab/agent/stun.py) against the sandbox STUN server over real UDP on
loopback (and against servers that do not answer, or answer wrongly)."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gradientlab.agent import stun
from gradientlab.agent.stun import (
    NatType,
    StunClient,
    StunMessage,
    TapReadiness,
    decode,
    encode,
    run_test,
)
from gradientlab.sandbox.stun import StunServer
from tests.unit.test_stun import EI, RFC5769_RESPONSE


@pytest.fixture(scope="module")
def server() -> Iterator[StunServer]:
    with StunServer() as s:
        yield s


@pytest.fixture(scope="module")
def basic_server() -> Iterator[StunServer]:
    """Binding only, like stun.l.google.com."""
    with StunServer(rfc5780=False) as s:
        yield s


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
