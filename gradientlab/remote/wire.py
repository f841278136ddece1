"""What the connection keeper and its clients say over the keeper's Unix socket.

A message is a JSON header and a byte payload (a file's contents), each length-prefixed. Errors
cross as their class name and fields and are raised again as the same `RemoteError` classes, so
a caller cannot tell a keeper's answer from its own connection's."""

from __future__ import annotations

import json
import os
import socket
import stat
import struct
from dataclasses import asdict
from pathlib import Path
from typing import Any

from gradientlab.paths import data_dir
from gradientlab.remote.executor import HostKeyMismatch, RemoteError, SshTarget

KEEPER_ENV = "GRADIENTLAB_KEEPER"
"""Unset: use the keeper when its socket is there; "off": never; a path: that socket."""

SOCKET_NAME = "keeper.sock"
# sun_path holds 108 bytes on Linux, the final NUL included
MAX_SOCKET_PATH = 107

# HostUnreachable, HostKeyMismatch, HostKeyInvalid, AuthRefused, CommandTimeout
_CLASSES: list[type[RemoteError]] = [RemoteError, *RemoteError.__subclasses__()]
ERRORS: dict[str, type[RemoteError]] = {cls.__name__: cls for cls in _CLASSES}

_HEADER = struct.Struct(">IQ")  # header length, payload length
MAX_HEADER = 1 << 20


class KeeperGone(ConnectionError):
    """The keeper closed the socket before answering in full."""


def socket_path() -> Path | None:
    """Where the keeper listens, or None when GRADIENTLAB_KEEPER is "off"."""
    value = os.environ.get(KEEPER_ENV, "").strip()
    if value.lower() in ("off", "0", "no", "false"):
        return None
    return Path(value) if value else data_dir() / SOCKET_NAME


def usable_socket() -> Path | None:
    """The keeper's socket when one is there and belongs to this user (else None).

    A socket another user made is never used: it could be anyone's keeper."""
    path = socket_path()
    if path is None:
        return None
    try:
        st = path.stat()
    except OSError:
        return None
    if not stat.S_ISSOCK(st.st_mode) or st.st_uid != os.getuid():
        return None
    return path


def target_to_wire(target: SshTarget) -> dict[str, Any]:
    return asdict(target)


def target_from_wire(data: dict[str, Any]) -> SshTarget:
    return SshTarget(
        name=str(data["name"]),
        address=str(data["address"]),
        port=int(data["port"]),
        user=str(data["user"]),
        host_key=str(data["host_key"]),
    )


def error_to_wire(exc: RemoteError) -> dict[str, Any]:
    data: dict[str, Any] = {
        "class": type(exc).__name__ if type(exc).__name__ in ERRORS else "RemoteError",
        "message": str(exc),
        "host": exc.host,
        "step": exc.step,
        "cause": exc.cause,
    }
    if isinstance(exc, HostKeyMismatch):
        data["offered_fingerprint"] = exc.offered_fingerprint
        data["pinned_fingerprint"] = exc.pinned_fingerprint
    return data


def error_from_wire(data: dict[str, Any]) -> RemoteError:
    cls = ERRORS.get(str(data.get("class")), RemoteError)
    common: dict[str, Any] = {
        "host": data.get("host"),
        "step": data.get("step"),
        "cause": data.get("cause"),
    }
    if cls is HostKeyMismatch:
        return HostKeyMismatch(
            str(data.get("message", "")),
            offered_fingerprint=data.get("offered_fingerprint"),
            pinned_fingerprint=data.get("pinned_fingerprint"),
            **common,
        )
    return cls(str(data.get("message", "")), **common)


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(min(size - len(chunks), 1 << 20))
        if not chunk:
            raise KeeperGone("the socket closed mid-message")
        chunks += chunk
    return bytes(chunks)


def send_message(sock: socket.socket, header: dict[str, Any], payload: bytes = b"") -> None:
    body = json.dumps(header).encode()
    sock.sendall(_HEADER.pack(len(body), len(payload)) + body + payload)


def recv_message(sock: socket.socket) -> tuple[dict[str, Any], bytes] | None:
    """The next message, or None when the peer closed the socket between messages."""
    first = sock.recv(_HEADER.size)
    if not first:
        return None
    prefix = first + _recv_exactly(sock, _HEADER.size - len(first))
    header_len, payload_len = _HEADER.unpack(prefix)
    if header_len > MAX_HEADER:
        raise KeeperGone(f"a message header of {header_len} bytes; not a keeper message")
    header = json.loads(_recv_exactly(sock, header_len))
    if not isinstance(header, dict):
        raise KeeperGone("a message header that is not a JSON object")
    return header, _recv_exactly(sock, payload_len)
