"""The SSH inventory provider: hosts the operator already has (home servers, a Pi, a VPS).

GradientLab does not make or destroy these machines. `create` adopts a host the fleet file lists,
after checking that it answers with its pinned host key; `terminate` is refused. A host's key is
pinned in the fleet file (`host_key:`) or recorded once, explicitly, by
`gradientlab hosts trust HOST`, which shows the fingerprint first."""

from __future__ import annotations

import fcntl
import socket
from dataclasses import replace
from pathlib import Path

import paramiko

from gradientlab.config import HostSettings
from gradientlab.paths import data_dir
from gradientlab.providers.base import HostRecord, PlannedHost, ProviderError, ProviderNotFound
from gradientlab.providers.sudo import POWER_OFF, REBOOT, sudoers_rule
from gradientlab.remote.executor import RemoteError, SshExecutor, SshTarget, fingerprint


def known_hosts_path() -> Path:
    return data_dir() / "known_hosts"


class KnownHosts:
    """GradientLab's own record of trusted host keys: `<name> <address>:<port> <type> <key>`."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or known_hosts_path()

    def _lines(self) -> list[list[str]]:
        if not self.path.exists():
            return []
        return [ln.split() for ln in self.path.read_text().splitlines() if ln.strip()]

    def get(self, name: str, address: str, port: int) -> str | None:
        for parts in self._lines():
            if len(parts) == 4 and parts[0] == name and parts[1] == f"{address}:{port}":
                return f"{parts[2]} {parts[3]}"
        return None

    def set(self, name: str, address: str, port: int, host_key: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            keep = [p for p in self._lines() if p and p[0] != name]
            keep.append([name, f"{address}:{port}", *host_key.split()[:2]])
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text("".join(" ".join(p) + "\n" for p in keep))
            tmp.replace(self.path)


def scan_host_key(address: str, port: int, timeout: float = 10) -> str:
    """The key a host offers now. Only for `hosts trust`, which shows it before recording it."""
    try:
        sock = socket.create_connection((address, port), timeout=timeout)
    except OSError as exc:
        raise ProviderError(f"cannot reach {address}:{port}: {exc}") from None
    transport = paramiko.Transport(sock)
    transport.get_security_options().key_types = ["ssh-ed25519"] + [
        k for k in transport.get_security_options().key_types if k != "ssh-ed25519"
    ]
    try:
        transport.start_client(timeout=timeout)
        key = transport.get_remote_server_key()
        return f"{key.get_name()} {key.get_base64()}"
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise ProviderError(f"{address}:{port}: SSH handshake failed: {exc}") from None
    finally:
        transport.close()


class SshInventoryProvider:
    kind = "ssh"

    def __init__(
        self,
        name: str,
        hosts: list[HostSettings],
        known_hosts: KnownHosts | None = None,
        pkey: paramiko.PKey | None = None,
    ) -> None:
        self.name = name
        self.hosts = {h.name: h for h in hosts if h.provider == name}
        self.known_hosts = known_hosts or KnownHosts()
        self._pkey = pkey

    def _spec(self, name: str) -> HostSettings:
        spec = self.hosts.get(name)
        if spec is None:
            raise ProviderNotFound(
                f"ssh provider {self.name!r}: {name!r} is not in the fleet file's inventory; "
                "GradientLab cannot create machines you do not have"
            )
        return spec

    def _record(self, spec: HostSettings) -> HostRecord:
        assert spec.address is not None and spec.user is not None
        port = spec.port or 22
        host_key = spec.host_key or self.known_hosts.get(spec.name, spec.address, port)
        if not host_key:
            raise ProviderError(
                f"{spec.name}: no host key is pinned for {spec.address}:{port}. Put it in the "
                f"fleet file (`host_key:`) or run `gradientlab hosts trust {spec.name}` and "
                "compare the fingerprint it shows with the host's own "
                "(`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the host)"
            )
        return HostRecord(
            name=spec.name,
            provider=self.name,
            address=spec.address,
            ssh_port=port,
            ssh_user=spec.user,
            host_key=" ".join(host_key.split()[:2]),
            state="running",
            provider_ref=f"ssh:{spec.user}@{spec.address}:{port}",
            region=spec.region,
            hourly_cost_usd=0.0,
            meta={"python": None},
        )

    def plan(self, spec: HostSettings) -> PlannedHost:
        warnings = ["a host you already have: GradientLab adopts it and never deletes it"]
        port = spec.port or 22
        if not spec.host_key and not self.known_hosts.get(spec.name, spec.address or "", port):
            warnings.append(f"no pinned host key yet: run `gradientlab hosts trust {spec.name}`")
        return PlannedHost(
            name=spec.name,
            provider=self.name,
            region=spec.region,
            action="adopt",
            monthly_cost_usd=0.0,
            free_tier=True,
            warnings=tuple(warnings),
        )

    def create(self, spec: HostSettings, authorized_key: str) -> HostRecord:
        """Adopt the host: check that it answers with its pinned key and accepts our key."""
        record = self._record(self._spec(spec.name))
        if self._pkey is not None:
            self._check(record)
        return record

    def _check(self, record: HostRecord) -> None:
        assert self._pkey is not None
        ex = SshExecutor(
            SshTarget(
                record.name, record.address, record.ssh_port, record.ssh_user, record.host_key
            ),
            self._pkey,
        )
        try:
            result = ex.run("true", timeout=20)
        except RemoteError as exc:
            raise ProviderError(str(exc)) from None
        finally:
            ex.close()
        if not result.ok:
            raise ProviderError(f"{record.name}: a test command failed: {result.stderr.strip()}")

    def get(self, name: str) -> HostRecord | None:
        spec = self.hosts.get(name)
        if spec is None:
            return None
        try:
            return self._record(spec)
        except ProviderError:
            return None

    def list(self) -> list[HostRecord]:
        return [r for r in (self.get(n) for n in sorted(self.hosts)) if r is not None]

    def public_ip(self, name: str) -> str | None:
        record = self.get(name)
        return record.address if record else None

    def _sudo(self, name: str, command: str, what: str) -> HostRecord:
        if self._pkey is None:
            raise ProviderError(f"{name}: {what} needs GradientLab's SSH key")
        record = self._record(self._spec(name))
        ex = SshExecutor(
            SshTarget(
                record.name, record.address, record.ssh_port, record.ssh_user, record.host_key
            ),
            self._pkey,
        )
        try:
            result = ex.run(command, timeout=30)
        except RemoteError:
            return record  # the connection drops as the host goes down
        finally:
            ex.close()
        if not result.ok:
            raise ProviderError(
                f"{name}: {what} failed ({result.stderr.strip() or result.exit_code}); allow "
                f"`{record.ssh_user}` to run it with sudo without a password: put the line "
                f"`{sudoers_rule(record.ssh_user)}` in /etc/sudoers.d/gradientlab "
                "(`visudo -f` checks it)"
            )
        return record

    def reboot(self, name: str) -> HostRecord:
        return self._sudo(name, REBOOT.command_line(), "reboot")

    def stop(self, name: str) -> HostRecord:
        record = self._sudo(name, POWER_OFF.command_line(), "power off")
        return replace(record, state="stopped")

    def start(self, name: str) -> HostRecord:
        record = self._record(self._spec(name))
        if self._pkey is not None:
            try:
                self._check(record)
            except ProviderError:
                raise ProviderError(
                    f"{name}: GradientLab cannot power on a machine you own; start it yourself"
                ) from None
        return record

    def terminate(self, name: str) -> None:
        raise ProviderError(
            f"{name}: GradientLab does not delete hosts you already have. Remove it from the "
            "fleet file, and stop the node there with `.gradientlab/node/runner.py stop`"
        )


def trust(
    spec: HostSettings, expected_fingerprint: str | None, known_hosts: KnownHosts | None = None
) -> tuple[str, str]:
    """Record the key the host offers now. Returns (host_key, fingerprint)."""
    if spec.address is None:
        raise ProviderError(f"{spec.name}: no address in the fleet file")
    port = spec.port or 22
    host_key = scan_host_key(spec.address, port)
    fp = fingerprint(host_key)
    if expected_fingerprint is not None and expected_fingerprint != fp:
        raise ProviderError(
            f"{spec.name}: {spec.address}:{port} offers {fp}, not {expected_fingerprint}; "
            "nothing recorded"
        )
    (known_hosts or KnownHosts()).set(spec.name, spec.address, port, host_key)
    return host_key, fp
