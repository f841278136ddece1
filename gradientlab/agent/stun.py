"""Tap readiness from a host: a STUN binding test (RFC 5389) and, where the server advertises
OTHER-ADDRESS, NAT behaviour discovery (RFC 5780).

Gradient's taps are peer-to-peer connections, so whether a node can be tapped depends on its
NAT. Shipped beside runner.py (standard library only) and run on the host:

    python stun.py HOST[:PORT] [--rto SECONDS] [--attempts N]

prints one JSON line, a `TapReadiness`; the control plane reads it back with
`TapReadiness.from_json`. The test itself never fails the command: what went wrong is the
result's `error`.
"""

from __future__ import annotations

import argparse
import binascii
import contextlib
import ipaddress
import json
import os
import select
import socket
import struct
import sys
import time
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

MAGIC_COOKIE = 0x2112A442
BINDING_REQUEST = 0x0001
BINDING_SUCCESS = 0x0101
BINDING_ERROR = 0x0111
FINGERPRINT_XOR = 0x5354554E

# attribute types (RFC 5389 section 18.2, RFC 5780 section 9, RFC 3489 for the old names)
MAPPED_ADDRESS = 0x0001
CHANGE_REQUEST = 0x0003
SOURCE_ADDRESS = 0x0004  # RFC 3489's RESPONSE-ORIGIN
CHANGED_ADDRESS = 0x0005  # RFC 3489's OTHER-ADDRESS
ERROR_CODE = 0x0009
UNKNOWN_ATTRIBUTES = 0x000A
XOR_MAPPED_ADDRESS = 0x0020
SOFTWARE = 0x8022
FINGERPRINT = 0x8028
RESPONSE_ORIGIN = 0x802B
OTHER_ADDRESS = 0x802C

CHANGE_IP = 0x04
CHANGE_PORT = 0x02

DEFAULT_PORT = 3478
# Said in every request: GradientLab never hides what it is from the network.
CLIENT_SOFTWARE = "GradientLab tap-readiness"
STUN_RESULT_VERSION = 1


class Word(str, Enum):
    """A word of the test's vocabulary: its value wherever it is printed or compared (what
    `enum.StrEnum` does from Python 3.11; hosts may run 3.9)."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class Behaviour(Word):
    """A NAT's mapping or filtering behaviour (RFC 4787 terms, as RFC 5780 measures them)."""

    ENDPOINT_INDEPENDENT = "endpoint-independent"
    ADDRESS_DEPENDENT = "address-dependent"
    ADDRESS_AND_PORT_DEPENDENT = "address-and-port-dependent"


class NatType(Word):
    """The label an operator reads, from what the test could see."""

    UDP_BLOCKED = "udp-blocked"  # no answer at all: no UDP out, or the server is down
    OPEN = "open"  # the host's own address, and anyone may send to it
    FIREWALL = "firewall"  # the host's own address, but unsolicited packets are dropped
    FULL_CONE = "full-cone"  # NAT: endpoint-independent mapping and filtering
    RESTRICTED_CONE = "restricted-cone"  # NAT: EI mapping, address-dependent filtering
    PORT_RESTRICTED_CONE = "port-restricted-cone"  # NAT: EI mapping, addr+port filtering
    SYMMETRIC = "symmetric"  # NAT: a new mapping per destination; peers rarely get through
    BASIC_ONLY = "basic-only"  # answered, but the server cannot tell NAT behaviour (no 5780)


def classify(
    reachable: bool,
    behind_nat: bool | None,
    rfc5780: bool,
    mapping: Behaviour | None,
    filtering: Behaviour | None,
) -> NatType | None:
    """The NAT type from the measured parts; None when a test needed for it did not answer."""
    if not reachable:
        return NatType.UDP_BLOCKED
    if not rfc5780:
        return NatType.BASIC_ONLY
    if behind_nat is False:
        if filtering is None:
            return None
        return NatType.OPEN if filtering == Behaviour.ENDPOINT_INDEPENDENT else NatType.FIREWALL
    if mapping is None:
        return None
    if mapping != Behaviour.ENDPOINT_INDEPENDENT:
        return NatType.SYMMETRIC
    if filtering is None:
        return None
    return {
        Behaviour.ENDPOINT_INDEPENDENT: NatType.FULL_CONE,
        Behaviour.ADDRESS_DEPENDENT: NatType.RESTRICTED_CONE,
        Behaviour.ADDRESS_AND_PORT_DEPENDENT: NatType.PORT_RESTRICTED_CONE,
    }[filtering]


class TapReadinessError(ValueError):
    """What a host printed is not a tap-readiness result; says which field is wrong."""


@dataclass(frozen=True)
class TapReadiness:
    """One host's STUN test: what a peer trying to tap this node would meet."""

    server: str
    udp_reachable: bool
    server_address: str | None = None  # the address the server name resolved to, "ip:port"
    local_address: str | None = None
    local_port: int | None = None
    mapped_address: str | None = None
    mapped_port: int | None = None
    behind_nat: bool | None = None
    rfc5780: bool = False  # the server advertised OTHER-ADDRESS and answered from it
    mapping: Behaviour | None = None
    filtering: Behaviour | None = None
    nat_type: NatType | None = None
    rtt_ms: float | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    version: int = STUN_RESULT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> TapReadiness:
        """Strict about the fields it uses; tolerant of fields a newer host adds."""
        try:
            data = json.loads(line)
        except ValueError as exc:
            raise TapReadinessError(f"not JSON ({exc}): {line[:200]!r}") from None
        if not isinstance(data, dict):
            raise TapReadinessError(f"expected a JSON object, got {type(data).__name__}")
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TapReadiness:
        def want(name: str, kinds: tuple[type, ...], optional: bool = True) -> Any:
            value = data.get(name)
            if value is None and optional:
                return None
            # bool is an int subclass: never take true for a number
            if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
                expected = " or ".join(k.__name__ for k in kinds)
                raise TapReadinessError(f"field {name!r}: expected {expected}, got {value!r}")
            return value

        def port(name: str) -> int | None:
            value: int | None = want(name, (int,))
            if value is not None and not 0 < value < 65536:
                raise TapReadinessError(f"field {name!r}: {value} is not a UDP port")
            return value

        def vocabulary(name: str, enum: type[Word]) -> Any:
            value = want(name, (str,))
            if value is None:
                return None
            try:
                return enum(value)
            except ValueError:
                allowed = ", ".join(e.value for e in enum)
                raise TapReadinessError(
                    f"field {name!r}: {value!r} is not one of {allowed}"
                ) from None

        rtt = want("rtt_ms", (int, float))
        return cls(  # fields a newer host adds are ignored
            server=want("server", (str,), optional=False),
            udp_reachable=want("udp_reachable", (bool,), optional=False),
            server_address=want("server_address", (str,)),
            local_address=want("local_address", (str,)),
            local_port=port("local_port"),
            mapped_address=want("mapped_address", (str,)),
            mapped_port=port("mapped_port"),
            behind_nat=want("behind_nat", (bool,)),
            rfc5780=bool(want("rfc5780", (bool,))),
            mapping=vocabulary("mapping", Behaviour),
            filtering=vocabulary("filtering", Behaviour),
            nat_type=vocabulary("nat_type", NatType),
            rtt_ms=float(rtt) if rtt is not None else None,
            error=want("error", (str,)),
            notes=[str(n) for n in want("notes", (list,)) or []],
            version=want("version", (int,)) or STUN_RESULT_VERSION,
        )


# ---------------------------------------------------------------- the wire format


class StunFormatError(ValueError):
    """Bytes that are not a well-formed STUN message."""


Address = tuple[str, int]


@dataclass
class StunMessage:
    type: int
    transaction_id: bytes
    attributes: list[tuple[int, bytes]] = field(default_factory=list)

    def get(self, attr: int) -> bytes | None:
        for kind, value in self.attributes:
            if kind == attr:
                return value
        return None

    def address(self, *kinds: int) -> Address | None:
        """The first of these address attributes present, decoded (XOR ones un-XORed)."""
        for kind in kinds:
            value = self.get(kind)
            if value is not None:
                xor = kind == XOR_MAPPED_ADDRESS
                return decode_address(value, self.transaction_id if xor else None)
        return None


def _attribute(kind: int, value: bytes) -> bytes:
    pad = (4 - len(value) % 4) % 4
    return struct.pack("!HH", kind, len(value)) + value + b"\0" * pad


def fingerprint_of(message_so_far: bytes) -> int:
    """CRC-32 of the message up to FINGERPRINT (length already counting it), XOR 0x5354554e."""
    return (binascii.crc32(message_so_far) & 0xFFFFFFFF) ^ FINGERPRINT_XOR


def encode(message: StunMessage, *, fingerprint: bool = True) -> bytes:
    body = b"".join(_attribute(k, v) for k, v in message.attributes)
    length = len(body) + (8 if fingerprint else 0)
    header = struct.pack("!HHI", message.type, length, MAGIC_COOKIE) + message.transaction_id
    data = header + body
    if fingerprint:
        data += _attribute(FINGERPRINT, struct.pack("!I", fingerprint_of(data)))
    return data


def decode(data: bytes) -> StunMessage:
    """A STUN message from a datagram; StunFormatError when it is not one (or is corrupt)."""
    if len(data) < 20:
        raise StunFormatError(f"{len(data)} bytes is shorter than a STUN header")
    kind, length, cookie = struct.unpack("!HHI", data[:8])
    if kind & 0xC000:
        raise StunFormatError("the first two bits are not zero")
    if cookie != MAGIC_COOKIE:
        raise StunFormatError(f"magic cookie is {cookie:#x}, not {MAGIC_COOKIE:#x}")
    if length % 4 or 20 + length != len(data):
        raise StunFormatError(f"length {length} does not match the {len(data) - 20} body bytes")
    message = StunMessage(kind, data[8:20])
    at = 20
    while at < len(data):
        if at + 4 > len(data):
            raise StunFormatError("an attribute header runs past the end")
        attr, size = struct.unpack("!HH", data[at : at + 4])
        end = at + 4 + size
        if end > len(data):
            raise StunFormatError(f"attribute {attr:#06x} runs past the end")
        value = data[at + 4 : end]
        if attr == FINGERPRINT and (
            size != 4 or struct.unpack("!I", value)[0] != fingerprint_of(data[:at])
        ):
            raise StunFormatError("FINGERPRINT does not match the message")
        message.attributes.append((attr, value))
        at = end + (4 - size % 4) % 4
    return message


def encode_address(address: Address, transaction_id: bytes | None = None) -> bytes:
    """An address attribute's value for IPv4; XORed (XOR-MAPPED-ADDRESS) given a transaction."""
    ip, port = address
    packed = ipaddress.IPv4Address(ip).packed
    if transaction_id is not None:
        port ^= MAGIC_COOKIE >> 16
        packed = bytes(a ^ b for a, b in zip(packed, struct.pack("!I", MAGIC_COOKIE)))
    return struct.pack("!BBH", 0, 1, port) + packed


def decode_address(value: bytes, transaction_id: bytes | None = None) -> Address:
    if len(value) < 8:
        raise StunFormatError(f"an address attribute of {len(value)} bytes")
    family, port = value[1], struct.unpack("!H", value[2:4])[0]
    key = struct.pack("!I", MAGIC_COOKIE) + (transaction_id or b"")
    if family == 1:
        raw = value[4:8]
    elif family == 2 and len(value) >= 20:
        raw = value[4:20]
    else:
        raise StunFormatError(f"address family {family} is neither IPv4 (1) nor IPv6 (2)")
    if transaction_id is not None:
        port ^= MAGIC_COOKIE >> 16
        raw = bytes(a ^ b for a, b in zip(raw, key))
    ip = ipaddress.ip_address(raw)
    return str(ip), port


def binding_request(change: int = 0) -> StunMessage:
    attrs = [(SOFTWARE, CLIENT_SOFTWARE.encode())]
    if change:
        attrs.append((CHANGE_REQUEST, struct.pack("!I", change)))
    return StunMessage(BINDING_REQUEST, os.urandom(12), attrs)


def error_text(message: StunMessage) -> str:
    value = message.get(ERROR_CODE) or b""
    if len(value) < 4:
        return "an error answer without ERROR-CODE"
    code = (value[2] & 0x7) * 100 + value[3]
    return f"{code} {value[4:].decode(errors='replace').strip()}".strip()


# ---------------------------------------------------------------- the client


@dataclass(frozen=True)
class Answer:
    source: Address  # where the answer came from, as the socket saw it
    mapped: Address | None
    other: Address | None
    rtt_ms: float
    error: str | None = None


class StunClient:
    """Binding transactions over one UDP socket, retransmitted with RTO doubling (RFC 5389
    section 7.2.1) but a shorter budget, `rto * (2**attempts - 1)` seconds (3.75 s by default):
    a filtering test that expects no answer waits all of it."""

    def __init__(self, sock: socket.socket, rto: float = 0.25, attempts: int = 4) -> None:
        self.sock = sock
        self.rto = rto
        self.attempts = attempts

    def binding(self, server: Address, change: int = 0) -> Answer | None:
        request = binding_request(change)
        data = encode(request)
        started = time.monotonic()
        wait = self.rto
        for _ in range(self.attempts):
            self.sock.sendto(data, server)
            deadline = time.monotonic() + wait
            while (left := deadline - time.monotonic()) > 0:
                ready, _, _ = select.select([self.sock], [], [], left)
                if not ready:
                    break
                try:
                    packet, source = self.sock.recvfrom(2048)
                except OSError:  # an ICMP error reported on the socket: keep waiting
                    continue
                answer = self._answer(packet, source, request.transaction_id, started)
                if answer is not None:
                    return answer
            wait *= 2
        return None

    @staticmethod
    def _answer(packet: bytes, source: Address, tid: bytes, started: float) -> Answer | None:
        try:
            message = decode(packet)
        except StunFormatError:
            return None  # stray or corrupt datagram: not our answer
        if message.transaction_id != tid:
            return None  # a late answer to an earlier transaction
        rtt = (time.monotonic() - started) * 1000
        src = (str(source[0]), int(source[1]))
        if message.type == BINDING_ERROR:
            return Answer(src, None, None, rtt, error=error_text(message))
        if message.type != BINDING_SUCCESS:
            return None
        try:
            mapped = message.address(XOR_MAPPED_ADDRESS, MAPPED_ADDRESS)
            other = message.address(OTHER_ADDRESS, CHANGED_ADDRESS)
        except StunFormatError as exc:
            return Answer(src, None, None, rtt, error=f"unreadable answer: {exc}")
        if mapped is None:
            return Answer(src, None, other, rtt, error="the answer has no mapped address")
        return Answer(src, mapped, other, rtt)


def parse_server(server: str) -> tuple[str, int]:
    """ "host[:port]" -> (host, port); ValueError naming what is wrong."""
    text = server.strip()
    if not text:
        raise ValueError("the STUN server is empty; set network.stun_server to host:port")
    host, sep, port_text = text.rpartition(":")
    if not sep:
        return text, DEFAULT_PORT
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"STUN server {server!r} is not host:port (port 1 to 65535)")
    return host, int(port_text)


def _udp_socket(local_ip: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((local_ip, 0))
    return sock


def _local_ip_towards(server: Address) -> str:
    """The source address the kernel picks for the server: the host's side of the test."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(server)  # UDP connect sends nothing; it only chooses a route
        return str(probe.getsockname()[0])


def run_test(server: str, rto: float = 0.25, attempts: int = 4) -> TapReadiness:
    """The whole test against `server` ("host:port"); never raises for network trouble."""
    try:
        host, port = parse_server(server)
        infos = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM)
        primary: Address = (str(infos[0][4][0]), int(infos[0][4][1]))
        local_ip = _local_ip_towards(primary)
    except (OSError, ValueError, IndexError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return TapReadiness(server=server, udp_reachable=False, error=f"{server}: {reason}")
    where = f"{primary[0]}:{primary[1]}"
    try:
        return _measure(server, primary, local_ip, rto, attempts)
    except OSError as exc:  # no route, or the kernel refused to send: UDP cannot get out
        return TapReadiness(
            server=server,
            udp_reachable=False,
            server_address=where,
            local_address=local_ip,
            nat_type=NatType.UDP_BLOCKED,
            error=f"cannot send to {where}: {exc.strerror or exc}",
        )


def _measure(
    server: str, primary: Address, local_ip: str, rto: float, attempts: int
) -> TapReadiness:
    where = f"{primary[0]}:{primary[1]}"
    notes: list[str] = []
    with contextlib.ExitStack() as stack:
        sock = stack.enter_context(_udp_socket(local_ip))
        local_port = int(sock.getsockname()[1])
        client = StunClient(sock, rto, attempts)
        first = client.binding(primary)
        if first is None or first.mapped is None:
            error = (
                f"no answer from {where} over UDP"
                if first is None
                else f"{where} answered: {first.error}"
            )
            return TapReadiness(
                server=server,
                udp_reachable=first is not None,
                server_address=where,
                local_address=local_ip,
                local_port=local_port,
                nat_type=NatType.UDP_BLOCKED if first is None else None,
                error=error,
            )
        mapped = first.mapped
        behind_nat = mapped != (local_ip, local_port)
        other = first.other
        rfc5780 = other is not None and other[0] != primary[0] and other[1] != primary[1]
        if other is not None and not rfc5780:
            notes.append(f"OTHER-ADDRESS {other[0]}:{other[1]} differs from {where} in one part")
        mapping: Behaviour | None = None
        filtering: Behaviour | None = None
        if rfc5780 and other is not None:
            mapping = _mapping(client, primary, other, mapped, behind_nat, notes)
            sock2 = stack.enter_context(_udp_socket(local_ip))
            filtering, conforms = _filtering(
                StunClient(sock2, rto, attempts), primary, other, notes
            )
            if not conforms:
                rfc5780 = False
                mapping = filtering = None
        return TapReadiness(
            server=server,
            udp_reachable=True,
            server_address=where,
            local_address=local_ip,
            local_port=local_port,
            mapped_address=mapped[0],
            mapped_port=mapped[1],
            behind_nat=behind_nat,
            rfc5780=rfc5780,
            mapping=mapping,
            filtering=filtering,
            nat_type=classify(True, behind_nat, rfc5780, mapping, filtering),
            rtt_ms=round(first.rtt_ms, 2),
            notes=notes,
        )


def _mapping(
    client: StunClient,
    primary: Address,
    other: Address,
    mapped: Address,
    behind_nat: bool,
    notes: list[str],
) -> Behaviour | None:
    """RFC 5780 section 4.3, from the socket test I used."""
    if not behind_nat:
        return Behaviour.ENDPOINT_INDEPENDENT  # no translation at all
    second = client.binding((other[0], primary[1]))
    if second is None or second.mapped is None:
        notes.append(f"mapping test II: no answer from {other[0]}:{primary[1]}")
        return None
    if second.mapped == mapped:
        return Behaviour.ENDPOINT_INDEPENDENT
    third = client.binding(other)
    if third is None or third.mapped is None:
        notes.append(f"mapping test III: no answer from {other[0]}:{other[1]}")
        return None
    if third.mapped == second.mapped:
        return Behaviour.ADDRESS_DEPENDENT
    return Behaviour.ADDRESS_AND_PORT_DEPENDENT


def _filtering(
    client: StunClient, primary: Address, other: Address, notes: list[str]
) -> tuple[Behaviour | None, bool]:
    """RFC 5780 section 4.4 on a fresh socket, so that the mapping tests opened no holes.

    Returns the behaviour and whether the server honoured CHANGE-REQUEST."""
    first = client.binding(primary)
    if first is None or first.mapped is None:
        notes.append("filtering test I: no answer on a second socket")
        return None, True
    both = client.binding(primary, CHANGE_IP | CHANGE_PORT)
    if both is not None:
        if both.error is not None or both.source != other:
            notes.append(
                "the server advertises OTHER-ADDRESS but did not answer a CHANGE-REQUEST from it"
                + (f" ({both.error})" if both.error else f" (answered from {both.source})")
            )
            return None, False
        return Behaviour.ENDPOINT_INDEPENDENT, True
    port_only = client.binding(primary, CHANGE_PORT)
    if port_only is not None:
        if port_only.error is not None or port_only.source != (primary[0], other[1]):
            notes.append("the server did not answer a change-port request from its other port")
            return None, False
        return Behaviour.ADDRESS_DEPENDENT, True
    return Behaviour.ADDRESS_AND_PORT_DEPENDENT, True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="stun.py", description="STUN tap-readiness test; prints one JSON line."
    )
    parser.add_argument("server", help="the network's STUN server, host[:port]")
    parser.add_argument("--rto", type=float, default=0.25, help="first retransmit timeout (s)")
    parser.add_argument("--attempts", type=int, default=4, help="requests per transaction")
    args = parser.parse_args(argv)
    if args.rto <= 0 or args.attempts < 1:
        parser.error("--rto must be above 0 and --attempts at least 1")
    print(run_test(args.server, args.rto, args.attempts).to_json(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
