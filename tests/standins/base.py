"""What every cloud stand-in shares: an HTTP server on a free loopback port, a record of every
request, and injected faults. A cloud's stand-in adds its routes (`answer`) and its error shape.

The real SDK clients are pointed at `url`; tests assert what a driver sent (`requests`) and make
the cloud refuse, throttle or fail (`fail`)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

Answer = tuple[int, dict[str, str], Any]  # status, headers, JSON body (None: no body)


@dataclass(frozen=True)
class Recorded:
    """One request as the driver sent it."""

    method: str
    path: str  # without the query (and without the API's version prefix, where it has one)
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: Any

    @property
    def resource(self) -> str:
        """The last path segment: the resource name (or action) the call is about."""
        return self.path.rsplit("/", 1)[-1]

    @property
    def api_version(self) -> str | None:
        return self.query.get("api-version")


@dataclass
class Fault:
    """Answer `status`/`code`/`message` to matching requests, `times` times (None: always)."""

    method: str
    path: str  # how it matches is the stand-in's `path_matches`
    status: int
    code: str
    message: str
    headers: dict[str, str] = field(default_factory=dict)
    times: int | None = 1
    when: Callable[[Recorded], bool] | None = None
    after: bool = False  # run the request, then answer the error (a lost response)
    in_operation: bool = False  # accept the request, then fail its long-running operation


class StandIn:
    """The part of a cloud API stand-in that is not the cloud's."""

    prefix = ""  # the API's version prefix, left out of recorded paths

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.faults: list[Fault] = []
        self.lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- what a cloud's stand-in provides

    def answer(self, rec: Recorded) -> Answer:
        """The cloud's answer to a recorded request (it calls `take_fault` where the cloud
        would fail); runs under `lock`."""
        raise NotImplementedError

    def path_matches(self, pattern: str, path: str) -> bool:
        return pattern == path

    # -- what tests use

    def fail(
        self, method: str, path: str, status: int, code: str, message: str = "", **kw: Any
    ) -> Fault:
        """The next matching request(s) get an error instead (see `Fault` for the options)."""
        fault = Fault(method.upper(), path, status, code, message or f"{code} (stand-in)", **kw)
        with self.lock:
            self.faults.append(fault)
        return fault

    def recorded(self, method: str | None, matches: Callable[[str], bool]) -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if method in (None, r.method) and matches(r.path)]

    # -- serving

    @property
    def url(self) -> str:
        assert self._server is not None, "start the stand-in first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> Self:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @contextmanager
    def serve(self) -> Iterator[str]:
        self.start()
        try:
            yield self.url
        finally:
            self.stop()

    def receive(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> Answer:
        parts = urlsplit(target)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        rec = Recorded(
            method=method,
            path=parts.path.removeprefix(self.prefix),
            query=dict(parse_qsl(parts.query, keep_blank_values=True)),
            headers=headers,
            body=body,
        )
        with self.lock:
            self.requests.append(rec)
            return self.answer(rec)

    def take_fault(self, rec: Recorded) -> Fault | None:
        """The first fault that matches the request, with one use of it taken."""
        for fault in self.faults:
            if (
                fault.times != 0
                and fault.method == rec.method
                and self.path_matches(fault.path, rec.path)
                and (fault.when is None or fault.when(rec))
            ):
                if fault.times is not None:
                    fault.times -= 1
                return fault
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def setup(self) -> None:
                super().setup()
                # headers and body go out in two writes: without this, Nagle's algorithm and
                # delayed ACKs hold each answer back by about 40 ms
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, extra, body = standin.receive(self.command, self.path, headers, raw)
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                if data:
                    self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        return Handler
