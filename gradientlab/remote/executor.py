"""Running commands and moving files on a host: one interface, an SSH and a local implementation.

SSH connections are pinned to the host key recorded when the host was created (or explicitly
trusted); there is no trust-on-first-use and no auto-add policy."""

from __future__ import annotations

import contextlib
import hashlib
import select
import socket
import stat
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import paramiko


class RemoteError(RuntimeError):
    """A step on a host failed; the message names the host, the step and what to try."""


class HostUnreachable(RemoteError):
    pass


class HostKeyMismatch(RemoteError):
    pass


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
    import base64

    blob = base64.b64decode(host_key.split()[1])
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def _key_types_for(pinned_type: str) -> list[str]:
    if pinned_type == "ssh-rsa":
        return ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"]
    return [pinned_type]


class SshExecutor:
    """One open SSH connection to a pinned host; reconnects once when the connection dropped."""

    def __init__(self, target: SshTarget, pkey: paramiko.PKey, connect_timeout: float = 10) -> None:
        self.target = target
        self.name = target.name
        self._pkey = pkey
        self._timeout = connect_timeout
        self._transport: paramiko.Transport | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._lock = threading.Lock()

    # -- connection

    def _connect(self) -> paramiko.Transport:
        t = self.target
        try:
            sock = socket.create_connection((t.address, t.port), timeout=self._timeout)
        except OSError as exc:
            raise HostUnreachable(
                f"{t.name}: cannot reach {t.address}:{t.port} ({exc}); is the host up and is "
                "SSH allowed from this address?"
            ) from None
        # small request/answer packets: without this, Nagle and delayed ACKs add ~40 ms each
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport = paramiko.Transport(sock)
        pinned_type = t.host_key.split()[0]
        transport.get_security_options().key_types = _key_types_for(pinned_type)
        try:
            transport.start_client(timeout=self._timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            transport.close()
            raise HostUnreachable(
                f"{t.name}: SSH handshake with {t.endpoint()} failed: {exc}"
            ) from None
        key = transport.get_remote_server_key()
        offered = f"{key.get_name()} {key.get_base64()}"
        if offered.split()[1] != t.host_key.split()[1]:
            transport.close()
            raise HostKeyMismatch(
                f"{t.name}: host key of {t.address}:{t.port} is {fingerprint(offered)}, but "
                f"{fingerprint(t.host_key)} is pinned; refusing to connect. If the host was "
                "rebuilt, verify the new key out of band and pin it again "
                f"(`gradientlab hosts trust {t.name}` for hosts you own)."
            )
        try:
            transport.auth_publickey(t.user, self._pkey)
        except paramiko.AuthenticationException:
            transport.close()
            raise RemoteError(
                f"{t.name}: {t.user}@{t.address} refused GradientLab's SSH key; add the public key "
                "to that user's ~/.ssh/authorized_keys"
            ) from None
        transport.set_keepalive(30)
        return transport

    def _transport_ok(self) -> paramiko.Transport:
        with self._lock:
            if self._transport is None or not self._transport.is_active():
                self.close_locked()
                self._transport = self._connect()
            return self._transport

    def close_locked(self) -> None:
        if self._sftp is not None:
            with contextlib.suppress(Exception):  # closing a dead channel
                self._sftp.close()
            self._sftp = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def close(self) -> None:
        with self._lock:
            self.close_locked()

    @property
    def connected(self) -> bool:
        return self._transport is not None and self._transport.is_active()

    # -- commands

    def run(self, command: str, timeout: float = 60) -> CommandResult:
        for attempt in (1, 2):
            transport = self._transport_ok()
            try:
                return self._exec(transport, command, timeout)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                # A connection kept open between sweeps may have dropped: reconnect once.
                self.close()
                if attempt == 2:
                    raise HostUnreachable(f"{self.name}: running a command failed: {exc}") from None
        raise AssertionError("unreachable")

    def _exec(self, transport: paramiko.Transport, command: str, timeout: float) -> CommandResult:
        chan = transport.open_session(timeout=self._timeout)
        try:
            chan.settimeout(timeout)
            chan.exec_command(command)
            chan.shutdown_write()
            out, err = bytearray(), bytearray()
            deadline = time.monotonic() + timeout
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
                    raise RemoteError(f"{self.name}: `{command}` timed out after {timeout:.0f}s")
                select.select([chan], [], [], min(left, 1.0))
            code = chan.recv_exit_status()
        finally:
            chan.close()
        return CommandResult(
            command, code, out.decode(errors="replace"), err.decode(errors="replace")
        )

    # -- files (SFTP; relative paths are relative to the login user's home)

    def _sftp_ok(self) -> paramiko.SFTPClient:
        transport = self._transport_ok()
        with self._lock:
            if self._sftp is None:
                self._sftp = paramiko.SFTPClient.from_transport(transport)
            assert self._sftp is not None
            return self._sftp

    def read_file(self, path: str) -> bytes | None:
        sftp = self._sftp_ok()
        try:
            with sftp.open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def write_file(self, path: str, data: bytes, mode: int) -> None:
        """Write atomically; the file gets its mode before any content is written."""
        sftp = self._sftp_ok()
        tmp = f"{path}.gl-tmp"
        with sftp.open(tmp, "wb") as f:
            sftp.chmod(tmp, mode)
            f.write(data)
        sftp.posix_rename(tmp, path)

    def ensure_dir(self, path: str, mode: int = 0o700) -> bool:
        sftp = self._sftp_ok()
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


@dataclass
class LocalExecutor:
    """Runs on this machine, in `home` (used for hosts that are this machine, and in tests)."""

    name: str
    home: Path
    env: dict[str, str] = field(default_factory=dict)

    def run(self, command: str, timeout: float = 60) -> CommandResult:
        proc = subprocess.run(
            ["/bin/sh", "-c", command],
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env or None,
        )
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
    """Open SSH connections kept between health sweeps (in a served flow or worker process)."""

    def __init__(self) -> None:
        self._conns: dict[tuple[str, str, int, str, str], SshExecutor] = {}
        self._lock = threading.Lock()

    def get(self, target: SshTarget, pkey: paramiko.PKey) -> SshExecutor:
        key = (target.name, target.address, target.port, target.user, target.host_key)
        with self._lock:
            conn = self._conns.get(key)
            if conn is None:
                # a host rebuilt with a new key gets a new entry; drop the stale one
                for old_key in [k for k in self._conns if k[0] == target.name]:
                    self._conns.pop(old_key).close()
                conn = self._conns[key] = SshExecutor(target, pkey)
            return conn

    def close_all(self) -> None:
        with self._lock:
            for conn in self._conns.values():
                conn.close()
            self._conns.clear()


POOL = ConnectionPool()
