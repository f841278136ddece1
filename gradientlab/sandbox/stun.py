"""The sandbox network's STUN server: RFC 5389 binding and RFC 5780 behaviour discovery.

RFC 5780 needs two addresses and two ports: the server listens on every pair of
(primary, alternate) address and (primary, alternate) port, advertises the other pair in
OTHER-ADDRESS, says where each answer leaves from in RESPONSE-ORIGIN, and answers a
CHANGE-REQUEST from the other address and/or port. On loopback the two addresses are 127.0.0.1
and 127.0.0.2 (all of 127/8 is local on Linux). With `rfc5780=False` it behaves like a
binding-only server such as stun.l.google.com: no OTHER-ADDRESS, and a CHANGE-REQUEST is
refused with 420 Unknown Attribute."""

from __future__ import annotations

import contextlib
import errno
import logging
import selectors
import socket
import struct
import threading

from gradientlab.agent.stun import (
    BINDING_ERROR,
    BINDING_REQUEST,
    BINDING_SUCCESS,
    CHANGE_IP,
    CHANGE_PORT,
    CHANGE_REQUEST,
    ERROR_CODE,
    FINGERPRINT,
    MAPPED_ADDRESS,
    OTHER_ADDRESS,
    RESPONSE_ORIGIN,
    SOFTWARE,
    UNKNOWN_ATTRIBUTES,
    XOR_MAPPED_ADDRESS,
    Address,
    StunFormatError,
    StunMessage,
    decode,
    encode,
    encode_address,
)

log = logging.getLogger(__name__)

SERVER_SOFTWARE = "GradientLab sandbox STUN"
# attributes this server understands in a request; other comprehension-required ones get 420
_UNDERSTOOD = {CHANGE_REQUEST, SOFTWARE, FINGERPRINT}


class StunServerError(RuntimeError):
    """The server could not start: says which address and port and what to try."""


class StunServer:
    """A STUN server on (primary, alternate) x (port, alt_port), served by one thread.

    >>> server = StunServer()                # 127.0.0.1 and 127.0.0.2, free ports
    >>> server.start()                       # "127.0.0.1:PORT", the fleet's network.stun_server
    >>> server.stop()
    """

    def __init__(
        self,
        primary: str = "127.0.0.1",
        alternate: str = "127.0.0.2",
        port: int = 0,
        alt_port: int = 0,
        *,
        rfc5780: bool = True,
    ) -> None:
        if primary == alternate:
            raise ValueError("RFC 5780 needs two different addresses")
        self.primary = primary
        self.alternate = alternate
        self.port = port
        self.alt_port = alt_port
        self.rfc5780 = rfc5780
        self._socks: dict[Address, socket.socket] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake: tuple[socket.socket, socket.socket] | None = None

    @property
    def address(self) -> str:
        """What a fleet file's `network.stun_server` says: "ip:port" of the primary pair."""
        if not self._socks:
            raise RuntimeError("the STUN server is not running")
        return f"{self.primary}:{self.port}"

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> str:
        if self._socks:
            return self.address
        # with free ports, the same numbers must be free on both addresses: retry a few times
        for _ in range(20):
            try:
                self._bind_all()
                break
            except OSError as exc:
                self._close_sockets()
                if exc.errno != errno.EADDRINUSE or (self.port and self.alt_port):
                    raise StunServerError(
                        f"cannot listen for STUN on {self.primary}/{self.alternate} ports "
                        f"{self.port or 'any'}/{self.alt_port or 'any'}: {exc.strerror or exc}; "
                        "free the port or choose another (--stun-port)"
                    ) from None
        else:
            raise StunServerError("no pair of free UDP ports on both STUN addresses")
        self._stop.clear()
        self._wake = socket.socketpair()
        self._thread = threading.Thread(target=self._serve, name="sandbox-stun", daemon=True)
        self._thread.start()
        log.info(
            "sandbox STUN listening on %s (other address %s:%s)",
            self.address,
            self.alternate,
            self.alt_port,
        )
        return self.address

    def _bind_all(self) -> None:
        wanted_port, wanted_alt = self.port, self.alt_port
        first = self._bind((self.primary, wanted_port))
        port = first.getsockname()[1]
        self._bind((self.alternate, port))
        if self.rfc5780:
            alt = self._bind((self.primary, wanted_alt)).getsockname()[1]
            if alt == port:
                raise OSError(errno.EADDRINUSE, "the two ports must differ")
            self._bind((self.alternate, alt))
            self.alt_port = alt
        self.port = port
        if not wanted_alt and not self.rfc5780:
            self.alt_port = 0

    def _bind(self, address: Address) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind(address)
        except OSError:
            sock.close()
            raise
        self._socks[(address[0], sock.getsockname()[1])] = sock
        return sock

    def _close_sockets(self) -> None:
        for sock in self._socks.values():
            sock.close()
        self._socks = {}

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._wake is not None:
            with contextlib.suppress(OSError):
                self._wake[1].send(b"x")
            self._thread.join(timeout=5)
            self._thread = None
        for end in self._wake or ():
            end.close()
        self._wake = None
        self._close_sockets()

    def __enter__(self) -> StunServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def other(self) -> Address | None:
        return (self.alternate, self.alt_port) if self.rfc5780 else None

    # ---- serving -----------------------------------------------------------------------------

    def _serve(self) -> None:
        assert self._wake is not None
        wake = self._wake[0]
        with selectors.DefaultSelector() as selector:
            selector.register(wake, selectors.EVENT_READ)
            for listening in self._socks.values():
                selector.register(listening, selectors.EVENT_READ, listening)
            while not self._stop.is_set():
                for key, _ in selector.select(timeout=1.0):
                    if key.fileobj is wake:
                        return
                    sock: socket.socket = key.data
                    try:
                        data, client = sock.recvfrom(2048)
                    except OSError:
                        continue
                    local = sock.getsockname()
                    try:
                        self._handle(data, (str(client[0]), int(client[1])), (local[0], local[1]))
                    except Exception:  # noqa: BLE001 - one bad datagram never stops the server
                        log.exception("STUN request from %s:%s failed", *client)

    def _handle(self, data: bytes, client: Address, local: Address) -> None:
        try:
            request = decode(data)
        except StunFormatError as exc:
            log.debug("not STUN from %s:%s: %s", client[0], client[1], exc)
            return  # RFC 5389 section 7.3: silently discard
        if request.type != BINDING_REQUEST:
            return  # indications and answers are not for us
        unknown = [k for k, _ in request.attributes if k < 0x8000 and k not in _UNDERSTOOD]
        if not self.rfc5780 and request.get(CHANGE_REQUEST) is not None:
            unknown.append(CHANGE_REQUEST)
        if unknown:
            self._send(
                local, client, self._error(request, 420, "Unknown Attribute", unknown), local
            )
            return
        change = 0
        value = request.get(CHANGE_REQUEST)
        if value is not None:
            if len(value) != 4:
                self._send(local, client, self._error(request, 400, "Bad Request"), local)
                return
            change = struct.unpack("!I", value)[0]
        source = (
            self.alternate if change & CHANGE_IP and local[0] == self.primary else
            self.primary if change & CHANGE_IP else local[0],
            self.alt_port if change & CHANGE_PORT and local[1] == self.port else
            self.port if change & CHANGE_PORT else local[1],
        )  # fmt: skip
        attrs = [
            (XOR_MAPPED_ADDRESS, encode_address(client, request.transaction_id)),
            (MAPPED_ADDRESS, encode_address(client)),
            (SOFTWARE, SERVER_SOFTWARE.encode()),
        ]
        if self.rfc5780:
            attrs.append((RESPONSE_ORIGIN, encode_address(source)))
            # the pair opposite to where the request arrived (RFC 5780 section 7.3)
            other = (
                self.alternate if local[0] == self.primary else self.primary,
                self.alt_port if local[1] == self.port else self.port,
            )
            attrs.append((OTHER_ADDRESS, encode_address(other)))
        self._send(
            source, client, StunMessage(BINDING_SUCCESS, request.transaction_id, attrs), local
        )

    @staticmethod
    def _error(
        request: StunMessage, code: int, reason: str, unknown: list[int] | None = None
    ) -> StunMessage:
        value = struct.pack("!HBB", 0, code // 100, code % 100) + reason.encode()
        attrs = [(ERROR_CODE, value)]
        if unknown:
            attrs.append((UNKNOWN_ATTRIBUTES, b"".join(struct.pack("!H", k) for k in unknown)))
        return StunMessage(BINDING_ERROR, request.transaction_id, attrs)

    def _send(self, source: Address, client: Address, message: StunMessage, local: Address) -> None:
        sock = self._socks.get(source) or self._socks[local]
        sock.sendto(encode(message), client)
