"""Running commands and moving files on a host: one interface, an SSH and a local implementation.

SSH connections are pinned to the host key recorded when the host was created (or explicitly
trusted); there is no trust-on-first-use and no auto-add policy.

Every SSH step has a deadline (TCP connect, banner, key exchange, login, opening a session, the
command itself, each SFTP request), and every failure leaves `SshExecutor` as one of the typed
`RemoteError`s below, each with a short machine-readable `cause`, so a sweep over many hosts can
judge each host on its own."""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import hashlib
import logging
import select
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

import paramiko

T = TypeVar("T")

# paramiko's transport thread logs each failed handshake with a traceback (at ERROR, through the
# application's handlers: in a flow's log); the failure reaches the caller as a typed error
# below, which names the host and what to check, so those tracebacks are noise
logging.getLogger("paramiko").addHandler(logging.NullHandler())
logging.getLogger("paramiko.transport").setLevel(logging.CRITICAL)


class RemoteError(RuntimeError):
    """A step on a host failed; the message names the host, the step and what to try.

    `cause` is a short machine-readable reason ("no-tcp", "no-banner", "dropped", ...)."""

    cause: str = "error"

    def __init__(
        self,
        message: str,
        *,
        host: str | None = None,
        step: str | None = None,
        cause: str | None = None,
    ) -> None:
        super().__init__(message)
        self.host = host
        self.step = step
        if cause is not None:
            self.cause = cause


class HostUnreachable(RemoteError):
    """No TCP connection ("no-tcp"), TCP but no SSH banner ("no-banner") or no finished key
    exchange or login answer ("no-handshake") in time, a host that stopped answering on an open
    connection ("no-answer"), or a connection that dropped mid-step ("dropped")."""

    cause = "no-tcp"


class HostKeyMismatch(RemoteError):
    """The host offered another key than the pinned one: treat it as a security incident."""

    cause = "key-changed"

    def __init__(
        self,
        message: str,
        *,
        host: str | None = None,
        step: str | None = None,
        cause: str | None = None,
        offered_fingerprint: str | None = None,
        pinned_fingerprint: str | None = None,
    ) -> None:
        super().__init__(message, host=host, step=step, cause=cause)
        self.offered_fingerprint = offered_fingerprint
        self.pinned_fingerprint = pinned_fingerprint


class HostKeyInvalid(RemoteError):
    """The pinned host key is missing or cannot be read as "<type> <base64>"."""

    cause = "key-invalid"


class AuthRefused(RemoteError):
    """SSH answered but refused GradientLab's key."""

    cause = "auth-refused"


class CommandTimeout(RemoteError):
    """A command (or an SFTP request) did not finish by its deadline."""

    cause = "timeout"


@dataclass(frozen=True)
class CommandResult:
    command: str
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


@dataclass(frozen=True)
class SshTarget:
    name: str
    address: str
    port: int
    user: str
    host_key: str  # "<type> <base64>", pinned

    def endpoint(self) -> str:
        return f"{self.user}@{self.address}:{self.port}"


class Executor(Protocol):
    name: str

    def run(self, command: str, timeout: float = 60) -> CommandResult: ...

    def read_file(self, path: str) -> bytes | None: ...

    def write_file(self, path: str, data: bytes, mode: int) -> None: ...

    def ensure_dir(self, path: str, mode: int = 0o700) -> bool: ...


def fingerprint(host_key: str) -> str:
    """OpenSSH-style SHA256 fingerprint of a "<type> <base64>" key."""
    blob = base64.b64decode(host_key.split()[1])
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def parse_host_key(host_key: str | None, host: str = "") -> tuple[str, bytes]:
    """The type and key blob of a pinned "<type> <base64>" key; HostKeyInvalid when it is not one.

    The blob must be valid base64 and start with its own type name, as every SSH public key
    does, so a truncated or pasted-over key is caught before any connection."""
    where = f"{host}: " if host else ""
    fix = (
        f"run `gradientlab hosts trust {host or 'NAME'}` (after checking the host's fingerprint "
        "out of band) or re-provision the host"
    )
    fields = (host_key or "").split()
    if not fields:
        raise HostKeyInvalid(
            f"{where}no host key is pinned; {fix}", host=host or None, step="check host key"
        )
    problem = None
    blob = b""
    if len(fields) < 2:
        problem = "it has a type but no key data"
    else:
        try:
            blob = base64.b64decode(fields[1], validate=True)
        except (binascii.Error, ValueError):
            problem = "its key data is not valid base64"
        else:
            name_len = int.from_bytes(blob[:4], "big") if len(blob) >= 4 else -1
            if name_len < 0 or blob[4 : 4 + name_len] != fields[0].encode():
                problem = f"its key data is not a {fields[0]} key"
    if problem:
        raise HostKeyInvalid(
            f'{where}the pinned host key is malformed ({problem}; expected "<type> <base64>"); '
            f"{fix}",
            host=host or None,
            step="check host key",
        )
    return fields[0], blob


def _key_types_for(pinned_type: str) -> list[str]:
    if pinned_type == "ssh-rsa":
        return ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"]
    return [pinned_type]


def _secs(seconds: float) -> str:
    return f"{seconds:g}s"


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return ""
    return str(exc) or type(exc).__name__


def _short(command: str, limit: int = 60) -> str:
    line = " ".join(command.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _discard(transport: paramiko.Transport | None, sock: socket.socket | None = None) -> None:
    """Close a transport and its socket and wait for its thread to end (every failure path)."""
    if transport is not None:
        with contextlib.suppress(Exception):
            transport.close()  # does nothing when its thread already stopped...
        with contextlib.suppress(Exception):
            transport.sock.close()  # ...so close the socket here too
        if transport.is_alive() and transport is not threading.current_thread():
            transport.join(5)  # it notices the closed socket within ~0.1 s
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()


def _still_active(transport: paramiko.Transport, grace: float = 0.2) -> bool:
    """Whether the transport is up; waits a moment, because a dying transport closes its
    channels just before it marks itself inactive."""
    end = time.monotonic() + grace
    while transport.is_active():
        if time.monotonic() >= end:
            return True
        time.sleep(0.02)
    return False


class _Watchdog:
    """Closes the transport if a step paramiko gives no deadline to outlives ours.

    (`Channel.exec_command` and `invoke_subsystem` wait for the server's answer without one.)"""

    def __init__(self, seconds: float, transport: paramiko.Transport) -> None:
        self.fired = False
        self._transport = transport
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def _fire(self) -> None:
        self.fired = True
        _discard(self._transport)

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()


# how long past a step's own deadline the watchdog waits before closing the connection
_WATCHDOG_GRACE = 5.0


class SshExecutor:
    """One open SSH connection to a pinned host; reconnects once when a kept-open connection
    dropped. Every step has a deadline, and everything raised is a `RemoteError`."""

    def __init__(
        self,
        target: SshTarget,
        pkey: paramiko.PKey,
        connect_timeout: float = 10,
        banner_timeout: float = 10,
        handshake_timeout: float = 10,
        auth_timeout: float = 10,
        sftp_timeout: float = 30,
    ) -> None:
        self.target = target
        self.name = target.name
        self._pkey = pkey
        self._connect_timeout = connect_timeout  # TCP connect; also opening a session channel
        self._banner_timeout = banner_timeout
        self._handshake_timeout = handshake_timeout
        self._auth_timeout = auth_timeout
        self._sftp_timeout = sftp_timeout
        self._transport: paramiko.Transport | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._sftp_transport: paramiko.Transport | None = None
        self._lock = threading.Lock()
        self.connects = 0  # connections opened so far (a kept-open one is counted once)

    # -- errors

    def _error(self, cls: type[RemoteError], message: str, step: str, cause: str) -> RemoteError:
        return cls(f"{self.name}: {message}", host=self.name, step=step, cause=cause)

    def _dropped(self, step: str, exc: BaseException | None) -> RemoteError:
        detail = f" ({_describe(exc)})" if exc is not None and _describe(exc) else ""
        return self._error(
            HostUnreachable,
            f"the SSH connection to {self.target.endpoint()} dropped while {step}{detail}; the "
            "host may have rebooted or lost its network; retry, and check the host if it persists",
            step,
            "dropped",
        )

    # -- connection

    def _open_socket(self) -> socket.socket:
        t = self.target
        try:
            sock = socket.create_connection((t.address, t.port), timeout=self._connect_timeout)
        except TimeoutError:
            why = f"no answer within {_secs(self._connect_timeout)}"
            hint = "is the host up, and does its firewall (operator_cidr) let SSH in from here?"
        except ConnectionRefusedError:
            why = "connection refused"
            hint = "is the host up and its sshd running on that port?"
        except socket.gaierror as exc:
            why = f"the address does not resolve ({exc.strerror or exc})"
            hint = "check the host's address"
        except OSError as exc:
            if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
                why = "no route to host"
            else:
                why = exc.strerror or _describe(exc)
            hint = "is the host up, and is its network reachable from this machine?"
        else:
            # small request/answer packets: without this, Nagle and delayed ACKs add ~40 ms each
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        raise self._error(
            HostUnreachable,
            f"cannot reach {t.address}:{t.port}: {why}; {hint}",
            "connect",
            "no-tcp",
        )

    def _connect(self) -> paramiko.Transport:
        t = self.target
        key_type, pinned_blob = parse_host_key(t.host_key, t.name)
        sock = self._open_socket()
        transport: paramiko.Transport | None = None
        try:
            transport = paramiko.Transport(sock)
            try:
                transport.get_security_options().key_types = _key_types_for(key_type)
            except ValueError:
                raise self._error(
                    HostKeyInvalid,
                    f"the pinned host key has type {key_type}, which GradientLab cannot check; "
                    "pin the host's ed25519, ecdsa or rsa key "
                    f"(`gradientlab hosts trust {t.name}`)",
                    "check host key",
                    "key-invalid",
                ) from None
            transport.banner_timeout = self._banner_timeout
            # paramiko starts the handshake clock before reading the banner
            transport.handshake_timeout = self._banner_timeout + self._handshake_timeout
            transport.auth_timeout = self._auth_timeout  # auth_publickey takes no timeout
            transport.channel_timeout = self._connect_timeout  # SFTPClient.from_transport's
            self._handshake(transport)
            self._check_host_key(transport, pinned_blob)
            self._authenticate(transport)
            transport.set_keepalive(30)
            return transport
        except BaseException as exc:
            _discard(transport, sock)
            if isinstance(exc, (paramiko.SSHException, EOFError, OSError)):
                raise self._dropped("connecting", exc) from None
            raise

    def _handshake(self, transport: paramiko.Transport) -> None:
        started = time.monotonic()
        error: BaseException | None = None
        try:
            # returns without raising when its timeout passes first (paramiko): check below
            transport.start_client(timeout=self._banner_timeout + self._handshake_timeout + 1)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            error = exc
        if error is None and transport.is_active() and transport.initial_kex_done:
            return
        raise self._handshake_error(transport, error, time.monotonic() - started)

    def _handshake_error(
        self, transport: paramiko.Transport, error: BaseException | None, elapsed: float
    ) -> RemoteError:
        t = self.target
        where = f"{t.address}:{t.port}"
        if error is not None and "host key" in str(error):
            key_type = t.host_key.split()[0]
            return HostKeyMismatch(
                f"{t.name}: {where} offers no {key_type} host key, but {key_type} key "
                f"{fingerprint(t.host_key)} is pinned; refusing to connect. If the host was "
                "rebuilt, verify its new key out of band and pin it again "
                f"(`gradientlab hosts trust {t.name}` for hosts you own).",
                host=t.name,
                step="handshake",
                pinned_fingerprint=fingerprint(t.host_key),
            )
        if not transport.remote_version:
            context = error.__context__ if error is not None else None
            if (
                error is None
                or isinstance(context, TimeoutError)
                or (elapsed >= self._banner_timeout and not isinstance(context, EOFError))
            ):
                why = (
                    f"TCP connected but no SSH banner within {_secs(self._banner_timeout)} "
                    "(host hung or swapping?)"
                )
                hint = "check the host's console and load, or reboot it"
            elif isinstance(context, EOFError) or isinstance(error, EOFError):
                why = "TCP connected but the connection closed before the SSH banner"
                hint = "sshd may be overloaded (MaxStartups) or refusing this address; see its log"
            else:
                why = f"TCP connected but no SSH banner ({_describe(error)})"
                hint = f"is port {t.port} the host's SSH port?"
            return self._error(
                HostUnreachable, f"cannot open SSH to {where}: {why}; {hint}", "banner", "no-banner"
            )
        if error is None or elapsed >= self._banner_timeout + self._handshake_timeout:
            why = (
                f"the SSH key exchange did not finish within {_secs(self._handshake_timeout)} "
                "(host overloaded?)"
            )
        else:
            why = f"the SSH key exchange failed ({_describe(error)})"
        return self._error(
            HostUnreachable,
            f"cannot open SSH to {where}: {why}; retry, and check the host's sshd if it persists",
            "handshake",
            "no-handshake",
        )

    def _check_host_key(self, transport: paramiko.Transport, pinned_blob: bytes) -> None:
        t = self.target
        key = transport.get_remote_server_key()  # the key exchange is done: this cannot raise
        if key.asbytes() == pinned_blob:
            return
        offered = fingerprint(f"{key.get_name()} {key.get_base64()}")
        pinned = fingerprint(t.host_key)
        raise HostKeyMismatch(
            f"{t.name}: host key of {t.address}:{t.port} is {offered}, but {pinned} is pinned; "
            "refusing to connect. If the host was rebuilt, verify the new key out of band and "
            f"pin it again (`gradientlab hosts trust {t.name}` for hosts you own).",
            host=t.name,
            step="check host key",
            offered_fingerprint=offered,
            pinned_fingerprint=pinned,
        )

    def _authenticate(self, transport: paramiko.Transport) -> None:
        t = self.target
        who = f"{t.user}@{t.address}"
        ours = fingerprint(f"{self._pkey.get_name()} {self._pkey.get_base64()}")
        hint = (
            f"check that GradientLab's public key ({ours}) is in {t.user}'s "
            "~/.ssh/authorized_keys on the host, and that the host's operator_cidr / firewall "
            "admits this machine"
        )
        started = time.monotonic()
        try:
            more = transport.auth_publickey(t.user, self._pkey)
        except paramiko.BadAuthenticationType as exc:
            allowed = ", ".join(exc.allowed_types) or "nothing"
            raise self._error(
                AuthRefused,
                f"{who} does not accept public-key login (it allows: {allowed}); {hint}",
                "login",
                "auth-refused",
            ) from None
        except paramiko.AuthenticationException as exc:
            if not _still_active(transport):
                raise self._error(
                    HostUnreachable,
                    f"the connection to {who} closed during login; the host may be restarting, "
                    f"or refusing this machine ({hint})",
                    "login",
                    "dropped",
                ) from None
            if "timeout" in str(exc).lower() or time.monotonic() - started >= self._auth_timeout:
                raise self._error(
                    HostUnreachable,
                    f"{who} did not answer the SSH login within {_secs(self._auth_timeout)} "
                    "(host overloaded?); retry, and check the host if it persists",
                    "login",
                    "no-handshake",
                ) from None
            raise self._error(
                AuthRefused,
                f"{who} refused GradientLab's SSH key {ours}; {hint}",
                "login",
                "auth-refused",
            ) from None
        if more or not transport.is_authenticated():
            raise self._error(
                AuthRefused,
                f"{who} wants more than GradientLab's key ({', '.join(more) or 'unknown'}); "
                "allow public-key login alone for this user",
                "login",
                "auth-refused",
            )

    def _transport_ok(self) -> tuple[paramiko.Transport, bool]:
        """The open connection (and True: it was kept open) or a new one (and False)."""
        with self._lock:
            if self._transport is not None and self._transport.is_active():
                return self._transport, True
            self.close_locked()
            self._transport = self._connect()
            self.connects += 1
            return self._transport, False

    def _forget(self, transport: paramiko.Transport) -> None:
        with self._lock:
            if self._transport is transport:
                self.close_locked()
            else:
                _discard(transport)

    def close_locked(self) -> None:
        # the transport first: closing an SFTP session on a hung host could wait on it
        if self._transport is not None:
            _discard(self._transport)
            self._transport = None
        if self._sftp is not None:
            with contextlib.suppress(Exception):  # its channel is closed already
                self._sftp.close()
            self._sftp = None
            self._sftp_transport = None

    def close(self) -> None:
        with self._lock:
            self.close_locked()

    @property
    def connected(self) -> bool:
        return self._transport is not None and self._transport.is_active()

    def _open_channel(self, transport: paramiko.Transport, step: str) -> paramiko.Channel:
        try:
            return transport.open_session(timeout=self._connect_timeout)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            if not _still_active(transport):
                raise self._dropped(step, exc) from None
            if isinstance(exc, paramiko.ChannelException):
                raise self._error(
                    RemoteError,
                    f"the host refused a new SSH session for {step} ({_describe(exc)}); too many "
                    "sessions open (sshd MaxSessions)? retry later",
                    step,
                    "session-refused",
                ) from None
            raise self._error(
                HostUnreachable,
                f"the SSH connection is open but the host did not open a session for {step} "
                f"within {_secs(self._connect_timeout)} (host hung or overloaded?); retry, and "
                "check the host if it persists",
                step,
                "no-answer",
            ) from None

    # -- commands

    def run(self, command: str, timeout: float = 60) -> CommandResult:
        for attempt in (1, 2):
            transport, kept_open = self._transport_ok()
            try:
                return self._exec(transport, command, timeout)
            except HostUnreachable:
                # A connection kept open between sweeps may have dropped: reconnect once.
                # (Never after CommandTimeout: a hung command must not run twice.)
                self._forget(transport)
                if not kept_open or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _command_timeout(self, step: str, timeout: float, why: str = "") -> RemoteError:
        return self._error(
            CommandTimeout,
            f"{step} did not finish within {_secs(timeout)}{why}; it was not retried and may "
            "still be running on the host; give it a longer timeout or see what it waits for",
            step,
            "timeout",
        )

    def _exec(self, transport: paramiko.Transport, command: str, timeout: float) -> CommandResult:
        step = f"running `{_short(command)}`"
        chan = self._open_channel(transport, step)
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + timeout
        watchdog = _Watchdog(timeout + _WATCHDOG_GRACE, transport)
        try:
            with watchdog:
                try:
                    chan.settimeout(timeout)
                    chan.exec_command(command)
                    chan.shutdown_write()
                    # Read to EOF: sshd may send the exit status before the last of the output.
                    while True:
                        while chan.recv_ready():
                            out += chan.recv(65536)
                        while chan.recv_stderr_ready():
                            err += chan.recv_stderr(65536)
                        done = chan.eof_received or chan.closed
                        if done and not chan.recv_ready() and not chan.recv_stderr_ready():
                            break
                        left = deadline - time.monotonic()
                        if left <= 0:
                            raise self._command_timeout(step, timeout)
                        select.select([chan], [], [], min(left, 1.0))
                    # the exit status may come just after EOF; closing also sets the event
                    if not chan.status_event.wait(max(deadline - time.monotonic(), 0)):
                        raise self._command_timeout(step, timeout)
                    code = chan.exit_status
                finally:
                    with contextlib.suppress(Exception):
                        chan.close()
        except RemoteError:
            raise
        except (paramiko.SSHException, EOFError, OSError) as exc:
            if watchdog.fired:
                raise self._command_timeout(
                    step, timeout, " (the host stopped answering; the connection was closed)"
                ) from None
            if isinstance(exc, TimeoutError):
                raise self._command_timeout(step, timeout) from None
            raise self._dropped(step, exc) from None
        if code == -1 and not _still_active(transport):
            raise self._dropped(step, None)  # closed without an exit status: the link died
        return CommandResult(
            command, code, out.decode(errors="replace"), err.decode(errors="replace")
        )

    # -- files (SFTP; relative paths are relative to the login user's home)

    def _sftp_for(self, transport: paramiko.Transport) -> paramiko.SFTPClient:
        with self._lock:
            sftp = self._sftp
            if (
                sftp is not None
                and self._sftp_transport is transport
                and not sftp.get_channel().closed  # type: ignore[union-attr]
            ):
                return sftp
        chan = self._open_channel(transport, "opening SFTP")
        try:
            chan.settimeout(self._sftp_timeout)  # every SFTP request then has this deadline
            with _Watchdog(self._sftp_timeout + _WATCHDOG_GRACE, transport):
                chan.invoke_subsystem("sftp")
            sftp = paramiko.SFTPClient(chan)
        except BaseException:
            with contextlib.suppress(Exception):
                chan.close()
            raise
        with self._lock:
            old, self._sftp, self._sftp_transport = self._sftp, sftp, transport
        if old is not None:
            with contextlib.suppress(Exception):
                old.close()
        return sftp

    def _drop_sftp(self, sftp: paramiko.SFTPClient | None) -> None:
        """Forget an SFTP session after a timeout: its answers may come in out of order."""
        if sftp is None:
            return
        with self._lock:
            current = self._sftp is sftp
            if current:
                self._sftp = None
                self._sftp_transport = None
        if current:
            with contextlib.suppress(Exception):
                sftp.close()

    def _file_op(self, step: str, op: Callable[[paramiko.SFTPClient], T]) -> T:
        for attempt in (1, 2):
            transport, kept_open = self._transport_ok()
            try:
                return self._file_op_once(transport, step, op)
            except HostUnreachable:
                self._forget(transport)  # reconnect once, as run() does
                if not kept_open or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _file_op_once(
        self, transport: paramiko.Transport, step: str, op: Callable[[paramiko.SFTPClient], T]
    ) -> T:
        sftp: paramiko.SFTPClient | None = None
        try:
            sftp = self._sftp_for(transport)
            return op(sftp)
        except RemoteError:
            raise
        except TimeoutError:
            self._drop_sftp(sftp)
            raise self._error(
                CommandTimeout,
                f"{step} got no answer within {_secs(self._sftp_timeout)} (host hung, or its "
                "disk stuck?); retry, and check the host if it persists",
                step,
                "timeout",
            ) from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            channel = sftp.get_channel() if sftp is not None else None
            if not _still_active(transport) or channel is None or channel.closed:
                self._drop_sftp(sftp)
                raise self._dropped(step, exc) from None
            raise self._error(
                RemoteError,
                f"{step} failed: {_describe(exc)}; check the path and that "
                f"{self.target.user} may use it",
                step,
                "file-error",
            ) from None

    def read_file(self, path: str) -> bytes | None:
        def op(sftp: paramiko.SFTPClient) -> bytes | None:
            try:
                with sftp.open(path, "rb") as f:
                    return f.read()
            except FileNotFoundError:
                return None

        return self._file_op(f"reading {path}", op)

    def write_file(self, path: str, data: bytes, mode: int) -> None:
        """Write atomically; the file gets its mode before any content is written."""

        def op(sftp: paramiko.SFTPClient) -> None:
            tmp = f"{path}.gl-tmp"
            with sftp.open(tmp, "wb") as f:
                sftp.chmod(tmp, mode)
                f.write(data)
            sftp.posix_rename(tmp, path)

        self._file_op(f"writing {path}", op)

    def ensure_dir(self, path: str, mode: int = 0o700) -> bool:
        def op(sftp: paramiko.SFTPClient) -> bool:
            try:
                st = sftp.stat(path)
                if stat.S_ISDIR(st.st_mode or 0):
                    return False
            except FileNotFoundError:
                pass
            parts = Path(path).parts
            for i in range(1, len(parts) + 1):
                sub = str(Path(*parts[:i]))
                try:
                    sftp.stat(sub)
                except FileNotFoundError:
                    sftp.mkdir(sub, mode)
            return True

        return self._file_op(f"creating folder {path}", op)


@dataclass
class LocalExecutor:
    """Runs on this machine, in `home` (used for hosts that are this machine, and in tests)."""

    name: str
    home: Path
    env: dict[str, str] = field(default_factory=dict)

    def run(self, command: str, timeout: float = 60) -> CommandResult:
        try:
            proc = subprocess.run(
                ["/bin/sh", "-c", command],
                cwd=self.home,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=self.env or None,
            )
        except subprocess.TimeoutExpired:
            step = f"running `{_short(command)}`"
            raise CommandTimeout(
                f"{self.name}: {step} did not finish within {_secs(timeout)}",
                host=self.name,
                step=step,
                cause="timeout",
            ) from None
        return CommandResult(command, proc.returncode, proc.stdout, proc.stderr)

    def read_file(self, path: str) -> bytes | None:
        p = self.home / path
        return p.read_bytes() if p.exists() else None

    def write_file(self, path: str, data: bytes, mode: int) -> None:
        p = self.home / path
        tmp = p.with_name(p.name + ".gl-tmp")
        tmp.touch(mode=mode)
        tmp.chmod(mode)
        tmp.write_bytes(data)
        tmp.replace(p)

    def ensure_dir(self, path: str, mode: int = 0o700) -> bool:
        p = self.home / path
        if p.is_dir():
            return False
        p.mkdir(mode=mode, parents=True)
        return True


class ConnectionPool:
    """Open SSH connections kept between health sweeps (in a served flow or worker process).

    `timeouts` are `SshExecutor`'s deadlines (connect_timeout, banner_timeout, ...)."""

    def __init__(self, **timeouts: float) -> None:
        self._conns: dict[tuple[str, str, int, str, str], SshExecutor] = {}
        self._used: dict[tuple[str, str, int, str, str], float] = {}
        self._lock = threading.Lock()
        self._timeouts = timeouts

    def get(self, target: SshTarget, pkey: paramiko.PKey) -> SshExecutor:
        key = (target.name, target.address, target.port, target.user, target.host_key)
        with self._lock:
            conn = self._conns.get(key)
            if conn is None:
                # a host rebuilt with a new key gets a new entry; drop the stale one
                for old_key in [k for k in self._conns if k[0] == target.name]:
                    self._conns.pop(old_key).close()
                    self._used.pop(old_key, None)
                conn = self._conns[key] = SshExecutor(target, pkey, **self._timeouts)
            self._used[key] = time.monotonic()
            return conn

    def close_idle(self, idle_seconds: float) -> list[str]:
        """Close the connections nobody asked for in `idle_seconds` (a host gone from the
        fleet, or one whose shard another worker checks now); the hosts' names."""
        cutoff = time.monotonic() - idle_seconds
        with self._lock:
            stale = [k for k, used in self._used.items() if used < cutoff]
            for key in stale:
                self._conns.pop(key).close()
                del self._used[key]
        return [k[0] for k in stale]

    def connections(self) -> list[SshExecutor]:
        with self._lock:
            return list(self._conns.values())

    def close_all(self) -> None:
        with self._lock:
            for conn in self._conns.values():
                conn.close()
            self._conns.clear()
            self._used.clear()


POOL = ConnectionPool()
