"""The connection keeper: SSH connections kept open across flow runs on one worker machine.

    python -m gradientlab.remote.keeper [--idle-seconds 3600] [--socket PATH]

Prefect's `serve` and process workers start each flow run in its own process, so a connection
pool in the run's process dies with the run. The keeper is one long-lived process per machine
holding pinned SSH connections (keyed by host, address, port, user and pinned host key, as the
in-process pool is); flow runs send it their commands and file reads/writes over a Unix socket
in GradientLab's data folder (0600, this user only; never TCP). The operator's private key stays
in the keeper. Each (re)connect checks the pinned key exactly as `SshExecutor` does, and errors
come back as the same typed `RemoteError`s. It exits on SIGTERM/SIGINT, after `--idle-seconds`
without a request, or when the process named by `--exit-with` ends."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from gradientlab.agent.procs import pid_alive
from gradientlab.remote.executor import ConnectionPool, RemoteError
from gradientlab.remote.keys import load_operator_key
from gradientlab.remote.wire import (
    KEEPER_ENV,
    MAX_HEADER,
    MAX_SOCKET_PATH,
    error_to_wire,
    recv_message,
    send_message,
    socket_path,
    target_from_wire,
)

log = logging.getLogger("gradientlab.keeper")

_PEERCRED = struct.Struct("3i")  # pid, uid, gid


class KeeperError(RuntimeError):
    """The keeper cannot start (its socket path is unusable, or another one runs)."""


def _lock_path(sock_path: Path) -> Path:
    return sock_path.with_name(sock_path.name + ".lock")


def keeper_answers(sock_path: Path, timeout: float = 2) -> bool:
    """Whether a keeper answers a ping on `sock_path`."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(sock_path))
            send_message(sock, {"op": "ping"})
            answer = recv_message(sock)
    except (OSError, ValueError):
        return False
    return answer is not None and answer[0].get("ok") is True


# a command's output the keeper sends back: stdout and stderr together fit in one message
# header with room to spare (the health probe caps its own output at 512 KiB on the host)
MAX_ANSWER_TEXT = MAX_HEADER - 128 * 1024
MAX_ANSWER_STDERR = 64 * 1024


def _cut(text: str, limit: int) -> str:
    """`text` cut to at most `limit` bytes once JSON-encoded (non-ASCII escapes count 6 each)."""
    encoded = json.dumps(text)
    if len(encoded) <= limit:
        return text
    # ASCII-heavy output is cut in one step; escaped output takes a few halvings at most
    cut = text[: max(0, limit - 64)]
    while len(json.dumps(cut)) > limit:
        cut = cut[: len(cut) // 2]
    return cut


def capped_run_answer(exit_code: int, stdout: str, stderr: str) -> dict[str, Any]:
    """A `run` answer that always fits the wire's header cap: output over it is cut (and says
    so in `truncated`), so a host that prints too much is read as what it printed, never as a
    keeper that vanished mid-answer."""
    out = _cut(stdout, MAX_ANSWER_TEXT)
    err = _cut(stderr, MAX_ANSWER_STDERR)
    return {
        "ok": True,
        "exit_code": exit_code,
        "stdout": out,
        "stderr": err,
        "truncated": len(out) < len(stdout) or len(err) < len(stderr),
    }


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    # a sweep's threads connect at once; a queue of 5 (socketserver's default) made the rest
    # fall back to their own connections whenever the keeper was slow to accept
    request_queue_size = 128
    keeper: ConnectionKeeper


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        sock: socket.socket = self.request
        _, uid, _ = _PEERCRED.unpack(
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
        )
        if uid != os.getuid():  # the socket is 0600 already; this is the second lock
            return
        keeper = self.server.keeper
        while True:
            try:
                message = recv_message(sock)
            except (OSError, ValueError):
                return
            if message is None:
                return
            header, payload = message
            with keeper.busy():
                answer, data = keeper.answer(header, payload)
            try:
                send_message(sock, answer, data)
            except OSError:
                return  # the client gave up (its own deadline); nothing to tell it


class ConnectionKeeper:
    """Pinned SSH connections, served to this user's processes over a Unix socket."""

    def __init__(
        self,
        sock_path: Path,
        idle_seconds: float,
        connection_idle_seconds: float = 1800,
        **timeouts: float,
    ) -> None:
        self.sock_path = sock_path
        self.idle_seconds = idle_seconds
        self.connection_idle_seconds = connection_idle_seconds
        self.pool = ConnectionPool(**timeouts)
        self.requests = 0
        self._pkey = load_operator_key()  # once: the key file is not read again per request
        self._in_flight = 0
        self._last_request = time.monotonic()
        self._state = threading.Lock()
        self.stopping = threading.Event()

    # -- requests

    @contextlib.contextmanager
    def busy(self) -> Any:
        with self._state:
            self._in_flight += 1
            self.requests += 1
        try:
            yield
        finally:
            with self._state:
                self._in_flight -= 1
                self._last_request = time.monotonic()

    def idle_for(self) -> float:
        with self._state:
            return 0.0 if self._in_flight else time.monotonic() - self._last_request

    def answer(self, header: dict[str, Any], payload: bytes) -> tuple[dict[str, Any], bytes]:
        op = header.get("op")
        try:
            if op == "ping":
                return {"ok": True, "pid": os.getpid()}, b""
            if op == "stats":
                return {"ok": True, "stats": self.stats()}, b""
            ex = self.pool.get(target_from_wire(header["target"]), self._pkey)
            if op == "run":
                result = ex.run(str(header["command"]), timeout=float(header["timeout"]))
                return capped_run_answer(result.exit_code, result.stdout, result.stderr), b""
            if op == "read_file":
                data = ex.read_file(str(header["path"]))
                return {"ok": True, "found": data is not None}, data or b""
            if op == "write_file":
                ex.write_file(str(header["path"]), payload, int(header["mode"]))
                return {"ok": True}, b""
            if op == "ensure_dir":
                return {
                    "ok": True,
                    "created": ex.ensure_dir(str(header["path"]), int(header["mode"])),
                }, b""
            raise ValueError(f"unknown request {op!r}")
        except RemoteError as exc:
            return {"ok": False, "error": error_to_wire(exc)}, b""
        except Exception as exc:  # noqa: BLE001 - the client gets it as a RemoteError
            target = header.get("target")
            name = target.get("name") if isinstance(target, dict) else None
            log.exception("request %s failed", op)
            error = RemoteError(
                f"{name or 'keeper'}: the connection keeper failed on {op!r}: "
                f"{type(exc).__name__}: {exc}; see the keeper's log",
                host=name,
                step=str(op),
                cause="keeper-error",
            )
            return {"ok": False, "error": error_to_wire(error)}, b""

    def stats(self) -> dict[str, Any]:
        conns = self.pool.connections()
        return {
            "pid": os.getpid(),
            "requests": self.requests,
            "connects": {c.name: c.connects for c in conns},
            "open": sorted(c.name for c in conns if c.connected),
        }

    # -- life

    def serve(self, exit_with: int | None = None) -> None:
        """Listen until stopped, idle for `idle_seconds`, or `exit_with` ends."""
        if len(str(self.sock_path)) > MAX_SOCKET_PATH:
            raise KeeperError(
                f"{self.sock_path}: a Unix socket path may have at most {MAX_SOCKET_PATH} bytes; "
                f"set {KEEPER_ENV} to a shorter path"
            )
        self.sock_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(_lock_path(self.sock_path), "a") as lock:
            self._claim(lock)
            server = self._listen()
            thread = threading.Thread(target=server.serve_forever, args=(0.2,), daemon=True)
            thread.start()
            log.info("keeping SSH connections on %s (pid %d)", self.sock_path, os.getpid())
            try:
                self._wait(exit_with)
            finally:
                server.shutdown()
                server.server_close()
                with contextlib.suppress(FileNotFoundError):
                    self.sock_path.unlink()
                self.pool.close_all()

    def _claim(self, lock: IO[str]) -> None:
        """Hold the lock for the keeper's life: whoever holds it owns the socket path, so a
        socket file found under the lock is stale (a keeper that was killed) and is removed."""
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise KeeperError(f"another keeper already serves {self.sock_path}") from None
        with contextlib.suppress(FileNotFoundError):
            self.sock_path.unlink()

    def _listen(self) -> _Server:
        old_umask = os.umask(0o177)  # the socket is born 0600: no window with wider rights
        try:
            server = _Server(str(self.sock_path), _Handler)
        finally:
            os.umask(old_umask)
        os.chmod(self.sock_path, 0o600)
        server.keeper = self
        return server

    def _wait(self, exit_with: int | None) -> None:
        last_sweep = time.monotonic()
        while not self.stopping.wait(1.0):
            if time.monotonic() - last_sweep >= min(60.0, self.connection_idle_seconds):
                last_sweep = time.monotonic()
                closed = self.pool.close_idle(self.connection_idle_seconds)
                if closed:
                    log.info(
                        "closed %d connections idle for %.0fs",
                        len(closed),
                        self.connection_idle_seconds,
                    )
            if self.idle_for() >= self.idle_seconds:
                log.info("idle for %.0fs; exiting", self.idle_seconds)
                return
            if exit_with is not None and not pid_alive(exit_with):
                log.info("process %d ended; exiting", exit_with)
                return


def start_keeper(exit_with: int | None = None, wait: float = 15) -> subprocess.Popen[bytes] | None:
    """Start a keeper for this machine unless one answers already; None when one did.

    The caller stops the process it got (by its id) when it is done with it."""
    path = socket_path()
    if path is None or keeper_answers(path):
        return None
    command = [sys.executable, "-m", "gradientlab.remote.keeper"]
    if exit_with is not None:
        command += ["--exit-with", str(exit_with)]
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if keeper_answers(path):
            return proc
        if proc.poll() is not None:
            raise KeeperError(f"the connection keeper exited with {proc.returncode} on start")
        time.sleep(0.05)
    stop_keeper(proc)
    raise KeeperError(f"the connection keeper did not answer on {path} within {wait:g}s")


def stop_keeper(proc: subprocess.Popen[bytes], wait: float = 10) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gradientlab.remote.keeper")
    parser.add_argument("--socket", help=f"the socket (default: ${KEEPER_ENV} or the data folder)")
    parser.add_argument("--idle-seconds", type=float, default=3600)
    parser.add_argument("--exit-with", type=int, help="exit when this process id ends")
    parser.add_argument(
        "--connection-idle-seconds",
        type=float,
        default=1800,
        help="close a host's connection nobody used for this long",
    )
    parser.add_argument("--connect-timeout", type=float, default=10)
    parser.add_argument("--banner-timeout", type=float, default=10)
    parser.add_argument("--handshake-timeout", type=float, default=10)
    parser.add_argument("--auth-timeout", type=float, default=10)
    parser.add_argument("--sftp-timeout", type=float, default=30)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s keeper %(message)s")
    path = Path(args.socket) if args.socket else socket_path()
    if path is None:
        print(f"{KEEPER_ENV} is off; not starting", file=sys.stderr)
        return 2
    keeper = ConnectionKeeper(
        path,
        args.idle_seconds,
        args.connection_idle_seconds,
        connect_timeout=args.connect_timeout,
        banner_timeout=args.banner_timeout,
        handshake_timeout=args.handshake_timeout,
        auth_timeout=args.auth_timeout,
        sftp_timeout=args.sftp_timeout,
    )

    def stop(signum: int, _frame: object) -> None:
        keeper.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        keeper.serve(args.exit_with)
    except KeeperError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
