"""Chromium's DevTools over --remote-debugging-pipe, bridged to a 0600 Unix socket for
Playwright: no TCP port for other local users to reach."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .home import Paths


def devtools_socket(paths: Paths) -> Path:
    """Where the runner offers the browser's DevTools: a Unix socket only its user can open. A
    socket's path is limited to 107 bytes; a longer home gets a private folder under /tmp."""
    path = paths.home / "devtools.sock"
    if len(str(path)) < 100:
        return path
    digest = hashlib.sha256(str(paths.home.resolve()).encode()).hexdigest()[:12]
    return Path(f"/tmp/gradientlab-{os.getuid()}-{digest}") / "devtools.sock"


def devtools_endpoint(paths: Paths) -> str | None:
    """The WebSocket URL Playwright connects to (`ws+unix://`), or None without a browser."""
    path = devtools_socket(paths)
    return f"ws+unix://{path}:/devtools/browser" if path.is_socket() else None


class DevToolsBridge:
    """Carries DevTools messages between Chromium's `--remote-debugging-pipe` (NUL-terminated
    JSON on two pipes the runner holds) and one WebSocket client at a time on a Unix socket
    that only the runner's user may open (mode 0600). When a client leaves, the sessions it
    attached are detached, as Chromium does itself when a DevTools WebSocket closes."""

    WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
    OWN_IDS = 1_000_000_000  # ids of the bridge's own commands; clients count from 1

    def __init__(self, path: Path, to_browser: int, from_browser: int) -> None:
        self.path = path
        self.to_browser = to_browser
        self.from_browser = from_browser
        self.server: socket.socket | None = None
        self.client: socket.socket | None = None
        self.sessions: set[str] = set()
        self.stopping = False
        self.answered: set[int] = set()
        self.next_id = self.OWN_IDS
        self.write_lock = threading.Lock()
        self.state_lock = threading.Lock()
        self.changed = threading.Condition(self.state_lock)

    def start(self) -> None:
        folder = self.path.parent
        if folder != folder.parent and not folder.exists():
            folder.mkdir(mode=0o700, parents=True)
        info = folder.stat()
        if info.st_uid != os.getuid() or (
            folder.name.startswith("gradientlab-") and info.st_mode & 0o077
        ):
            raise RuntimeError(f"{folder} must belong to this user only, for the DevTools socket")
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # the socket is born 0600: no moment open to others
        try:
            server.bind(str(self.path))
        finally:
            os.umask(old_umask)
        server.listen(4)
        server.settimeout(0.5)
        self.server = server
        for target in (self._pump_from_browser, self._serve):
            threading.Thread(target=target, daemon=True).start()

    def stop(self) -> None:
        self.stopping = True
        for sock in (self.server, self.client):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
        with contextlib.suppress(OSError):
            self.path.unlink()
        for fd in (self.to_browser, self.from_browser):
            with contextlib.suppress(OSError):
                os.close(fd)
        with self.changed:
            self.changed.notify_all()

    def command(self, method: str, params: dict[str, Any] | None = None) -> int:
        with self.state_lock:
            self.next_id += 1
            ident = self.next_id
        self._send({"id": ident, "method": method, "params": params or {}})
        return ident

    def wait_answer(self, ident: int, timeout: float, alive: Callable[[], bool]) -> bool:
        deadline = time.monotonic() + timeout
        with self.changed:
            while ident not in self.answered:
                left = deadline - time.monotonic()
                if left <= 0 or self.stopping or not alive():
                    return False
                self.changed.wait(min(left, 0.1))
            return True

    def _send(self, message: dict[str, Any] | bytes) -> None:
        data = message if isinstance(message, bytes) else json.dumps(message).encode()
        data += b"\0"
        with self.write_lock:
            while data:
                data = data[os.write(self.to_browser, data) :]

    def _pump_from_browser(self) -> None:
        try:
            self._pump()
        finally:
            # the browser is gone: its client must hear it now, as it would from a DevTools
            # WebSocket that Chromium closes, not wait out its own timeouts
            with self.state_lock:
                client = self.client
            if client is not None:
                with contextlib.suppress(OSError):
                    client.shutdown(socket.SHUT_RDWR)

    def _pump(self) -> None:
        pending = b""
        while not self.stopping:
            try:
                chunk = os.read(self.from_browser, 1 << 16)
            except OSError:
                return
            if not chunk:
                return  # the browser is gone
            pending += chunk
            *messages, pending = pending.split(b"\0")
            for raw in messages:
                self._from_browser(raw)

    def _from_browser(self, raw: bytes) -> None:
        try:
            message = json.loads(raw)
        except ValueError:
            return
        ident = message.get("id")
        if isinstance(ident, int) and ident > self.OWN_IDS:
            with self.changed:
                self.answered.add(ident)
                self.changed.notify_all()
            return
        method, params = message.get("method"), message.get("params") or {}
        with self.state_lock:
            if method == "Target.attachedToTarget":
                self.sessions.add(str(params.get("sessionId")))
            elif method == "Target.detachedFromTarget":
                self.sessions.discard(str(params.get("sessionId")))
            client = self.client
        if client is not None:
            with contextlib.suppress(OSError):
                _ws_send(client, raw)

    def _serve(self) -> None:
        while not self.stopping and self.server is not None:
            try:
                client, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                client.settimeout(10)
                _ws_handshake(client, self.WS_GUID)
                client.settimeout(None)
                with self.state_lock:
                    self.client = client
                while not self.stopping:
                    message = _ws_receive(client)
                    if message is None:
                        break
                    self._send(message)
            except (OSError, EOFError, ValueError):
                pass
            finally:
                with self.state_lock:
                    self.client = None
                    left_attached, self.sessions = self.sessions, set()
                with contextlib.suppress(OSError):
                    client.close()
            with contextlib.suppress(OSError):
                self._forget_client(left_attached)

    def _forget_client(self, sessions: set[str]) -> None:
        """What a closing DevTools WebSocket undoes in Chromium: its sessions and watches."""
        if self.stopping:
            return
        self.command("Target.setAutoAttach", {"autoAttach": False, "waitForDebuggerOnStart": False})
        self.command("Target.setDiscoverTargets", {"discover": False})
        for session in sessions:
            self.command("Target.detachFromTarget", {"sessionId": session})


def _ws_handshake(client: socket.socket, guid: str) -> None:
    request = b""
    while b"\r\n\r\n" not in request:
        chunk = client.recv(4096)
        if not chunk or len(request) > 65536:
            raise EOFError("no WebSocket request")
        request += chunk
    headers = {}
    for line in request.decode("latin-1").split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    key = headers.get("sec-websocket-key")
    if not key:
        raise ValueError("not a WebSocket request")
    accept = base64.b64encode(hashlib.sha1((key + guid).encode()).digest()).decode()
    client.sendall(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        + f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
    )


def _recv_exact(client: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = client.recv(n - len(data))
        if not chunk:
            raise EOFError("the DevTools client went away")
        data += chunk
    return data


def _ws_receive(client: socket.socket) -> bytes | None:
    """One whole message from the client (continuations joined); None when it closes."""
    parts: list[bytes] = []
    while True:
        first, second = _recv_exact(client, 2)
        opcode, length = first & 0x0F, second & 0x7F
        if length == 126:
            (length,) = struct.unpack(">H", _recv_exact(client, 2))
        elif length == 127:
            (length,) = struct.unpack(">Q", _recv_exact(client, 8))
        mask = _recv_exact(client, 4) if second & 0x80 else bytes(4)
        payload = _recv_exact(client, length)
        if any(mask):
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        if opcode == 0x8:
            return None
        if opcode == 0x9:
            _ws_send(client, payload, opcode=0xA)
            continue
        if opcode == 0xA:
            continue
        parts.append(payload)
        if first & 0x80:
            return b"".join(parts)


def _ws_send(client: socket.socket, payload: bytes, opcode: int = 0x1) -> None:
    n = len(payload)
    if n < 126:
        header = struct.pack(">BB", 0x80 | opcode, n)
    elif n < 1 << 16:
        header = struct.pack(">BBH", 0x80 | opcode, 126, n)
    else:
        header = struct.pack(">BBQ", 0x80 | opcode, 127, n)
    client.sendall(header + payload)
