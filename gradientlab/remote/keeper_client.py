"""An `Executor` whose SSH connection lives in the connection keeper (`remote/keeper.py`).

Each call is one request over the keeper's Unix socket; the keeper's pinned connection runs it
with the same deadlines and raises the same typed errors, which arrive here as those classes.
When no keeper answers the socket, the call goes to the in-process executor instead: a call
is only ever sent once, so a command never runs twice."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gradientlab.remote.executor import (
    CommandResult,
    CommandTimeout,
    Executor,
    RemoteError,
    SshTarget,
)
from gradientlab.remote.wire import (
    KeeperGone,
    error_from_wire,
    recv_message,
    send_message,
    target_to_wire,
)

# what the keeper may spend on a call beyond the command's own deadline: a reconnect, every SSH
# step's deadline and the watchdog's grace; past it the keeper itself is taken to be hung
KEEPER_MARGIN = 120.0
FILE_DEADLINE = 180.0
KEEPER_CONNECT_TIMEOUT = 5.0
SLOWEST_UPLOAD = 50_000  # bytes per second a large write may take before the keeper is "hung"


class KeeperExecutor:
    """Runs on one host through the keeper; `fallback()` gives the in-process executor."""

    def __init__(
        self, target: SshTarget, sock_path: Path, fallback: Callable[[], Executor]
    ) -> None:
        self.target = target
        self.name = target.name
        self._sock_path = sock_path
        self._fallback = fallback

    def _connect(self) -> socket.socket | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # never wait unbounded: a hung keeper whose queue is full would hold a blocking connect
        # for ever (with a timeout it fails at once, EAGAIN); nothing was sent yet, so the call
        # can go to the in-process executor instead
        sock.settimeout(KEEPER_CONNECT_TIMEOUT)
        try:
            sock.connect(str(self._sock_path))
        except OSError:  # no keeper (a stale socket file, it just exited, or its queue is full)
            sock.close()
            return None
        return sock

    def _call(
        self, header: dict[str, Any], payload: bytes, deadline: float, step: str
    ) -> tuple[dict[str, Any], bytes] | None:
        """The keeper's answer (raising its error), or None when no keeper took the call."""
        sock = self._connect()
        if sock is None:
            return None
        with sock:
            sock.settimeout(deadline)
            try:
                send_message(sock, {**header, "target": target_to_wire(self.target)}, payload)
                message = recv_message(sock)
            except TimeoutError:
                raise CommandTimeout(
                    f"{self.name}: the connection keeper gave no answer for {step} within "
                    f"{deadline:g}s; it may still run on the host; check the keeper "
                    "(python -m gradientlab.remote.keeper) and its log",
                    host=self.name,
                    step=step,
                    cause="keeper-timeout",
                ) from None
            except (OSError, KeeperGone) as exc:
                message = None
                reason = str(exc) or type(exc).__name__
            else:
                reason = "it closed the socket"
            if message is None:
                raise RemoteError(
                    f"{self.name}: the connection keeper stopped while {step} ({reason}); it may "
                    "have run on the host; retry",
                    host=self.name,
                    step=step,
                    cause="keeper-gone",
                )
        answer, data = message
        if not answer.get("ok"):
            raise error_from_wire(answer.get("error") or {})
        return answer, data

    def run(self, command: str, timeout: float = 60) -> CommandResult:
        step = f"running `{command[:60]}`"
        got = self._call(
            {"op": "run", "command": command, "timeout": timeout},
            b"",
            timeout + KEEPER_MARGIN,
            step,
        )
        if got is None:
            return self._fallback().run(command, timeout)
        answer, _ = got
        return CommandResult(
            command, int(answer["exit_code"]), str(answer["stdout"]), str(answer["stderr"])
        )

    def read_file(self, path: str) -> bytes | None:
        got = self._call({"op": "read_file", "path": path}, b"", FILE_DEADLINE, f"reading {path}")
        if got is None:
            return self._fallback().read_file(path)
        answer, data = got
        return data if answer.get("found") else None

    def write_file(self, path: str, data: bytes, mode: int) -> None:
        header = {"op": "write_file", "path": path, "mode": mode}
        deadline = FILE_DEADLINE + len(data) / SLOWEST_UPLOAD
        if self._call(header, data, deadline, f"writing {path}") is None:
            self._fallback().write_file(path, data, mode)

    def ensure_dir(self, path: str, mode: int = 0o700) -> bool:
        header = {"op": "ensure_dir", "path": path, "mode": mode}
        got = self._call(header, b"", FILE_DEADLINE, f"creating folder {path}")
        if got is None:
            return self._fallback().ensure_dir(path, mode)
        return bool(got[0].get("created"))


def keeper_stats(sock_path: Path, timeout: float = 5) -> dict[str, Any]:
    """The keeper's own counters: requests served, connections opened per host, open hosts."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(sock_path))
        send_message(sock, {"op": "stats"})
        message = recv_message(sock)
    if message is None:
        raise KeeperGone("the keeper closed the socket without stats")
    stats = message[0].get("stats")
    if not isinstance(stats, dict):
        raise KeeperGone(f"the keeper answered no stats: {message[0]}")
    return stats
