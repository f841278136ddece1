"""The local provider: each host is its own sshd on its own loopback address.

A local host has its own Unix user (a plain /bin/sh login, so no shell start-up files run per
command), its own host key, its own authorized key and its own home as the install folder.
It needs root, like creating a VM needs a cloud account."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import asdict
from importlib.metadata import version
from pathlib import Path

from gradientlab.agent.procs import pid_alive
from gradientlab.config import HostSettings
from gradientlab.paths import data_dir
from gradientlab.providers.base import (
    HostRecord,
    HostState,
    PlannedHost,
    ProviderError,
    ProviderNotFound,
)

LOCAL_ROOT = Path("/var/lib/gradientlab-local")
SSHD = "/usr/sbin/sshd"


def runtime_python() -> str:
    """A Python with Playwright that every local host can run (the local hosts' "image").

    Built once per machine from the system Python; the project's own interpreter may live where
    the hosts' users cannot read it."""
    pw_version = version("playwright")
    root = LOCAL_ROOT / f"runtime-playwright-{pw_version}"
    python = root / "bin" / "python"
    if (root / ".complete").exists():
        return str(python)
    LOCAL_ROOT.mkdir(parents=True, exist_ok=True)
    with open(LOCAL_ROOT / ".runtime.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (root / ".complete").exists():
            return str(python)
        shutil.rmtree(root, ignore_errors=True)
        system_python = shutil.which("python3", path="/usr/bin:/usr/local/bin")
        if not system_python:
            raise ProviderError("local provider: no system python3 to build the host runtime from")
        steps = [
            [system_python, "-m", "venv", str(root)],
            [str(root / "bin" / "pip"), "install", "--quiet", f"playwright=={pw_version}"],
        ]
        for step in steps:
            proc = subprocess.run(step, capture_output=True, text=True)
            if proc.returncode != 0:
                raise ProviderError(
                    f"local provider: building the host runtime failed at {step[:3]}: "
                    f"{proc.stderr[-800:]}"
                )
        subprocess.run(["chmod", "-R", "a+rX", str(root)], check=True)
        (root / ".complete").touch()
    return str(python)


class LocalProvider:
    kind = "local"

    def __init__(
        self,
        name: str = "local",
        base_address: str = "127.0.0.10",
        ssh_port: int = 2222,
        python: str | None = None,
    ) -> None:
        self.name = name
        self.base_address = ipaddress.ip_address(base_address)
        self.ssh_port = ssh_port
        self._python = python
        # hosts of different GradientLab homes (the demo, each test session) never mix
        self.scope = hashlib.sha256(str(data_dir().resolve()).encode()).hexdigest()[:6]
        self.root = LOCAL_ROOT / self.scope / name

    # -- helpers

    def _require_root(self) -> None:
        if os.geteuid() != 0:
            raise ProviderError(
                "the local provider creates a Unix user and an sshd per host and needs root; "
                "run as root or use the ssh provider for hosts you already have"
            )
        if not Path(SSHD).exists() or not shutil.which("ssh-keygen"):
            raise ProviderError(
                "the local provider needs OpenSSH: apt-get install openssh-server openssh-client"
            )

    def _dir(self, name: str) -> Path:
        return self.root / name

    def _user(self, name: str) -> str:
        return f"gl{self.scope}-{name}"[:32]

    def _read(self, name: str) -> HostRecord | None:
        path = self._dir(name) / "host.json"
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        record = HostRecord(**data)
        alive = pid_alive(self._sshd_pid(name))
        state = HostState.RUNNING if alive else HostState.STOPPED
        if state != record.state:
            record = HostRecord(**{**data, "state": state})
        return record

    def _write(self, record: HostRecord) -> None:
        path = self._dir(record.name) / "host.json"
        path.write_text(json.dumps(asdict(record), indent=1))

    def _sshd_pid(self, name: str) -> int | None:
        try:
            return int((self._dir(name) / "sshd" / "sshd.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def _addresses_in_use(self) -> set[str]:
        used = set()
        if LOCAL_ROOT.exists():
            for host_json in LOCAL_ROOT.glob("*/*/*/host.json"):
                try:
                    used.add(json.loads(host_json.read_text())["address"])
                except (OSError, ValueError, KeyError):
                    continue
        return used

    def _allocate_address(self, spec: HostSettings) -> str:
        if spec.address:
            return spec.address
        used = self._addresses_in_use()
        candidate = self.base_address
        for _ in range(200):
            if str(candidate) not in used and self._port_free(str(candidate)):
                return str(candidate)
            candidate += 1
        raise ProviderError(f"local provider: no free loopback address from {self.base_address}")

    def _port_free(self, address: str) -> bool:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((address, self.ssh_port))
            except OSError:
                return False
        return True

    # -- the interface

    def plan(self, spec: HostSettings) -> PlannedHost:
        exists = self.get(spec.name) is not None
        return PlannedHost(
            name=spec.name,
            provider=self.name,
            region="loopback",
            action="keep" if exists else "create",
            monthly_cost_usd=0.0,
            free_tier=True,
            warnings=(
                "local hosts share this machine's public IP: the network splits their rewards",
            ),
        )

    def create(self, spec: HostSettings, authorized_key: str) -> HostRecord:
        self._require_root()
        python = self._python or runtime_python()
        LOCAL_ROOT.mkdir(parents=True, exist_ok=True)
        # hosts created at once must not pick the same address
        with open(LOCAL_ROOT / ".create.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return self._create(spec, authorized_key, python)

    def _create(self, spec: HostSettings, authorized_key: str, python: str) -> HostRecord:
        existing = self._read(spec.name)
        if existing is not None:
            return existing if existing.state == HostState.RUNNING else self.start(spec.name)
        hdir = self._dir(spec.name)
        sshd_dir = hdir / "sshd"
        home = hdir / "home"
        sshd_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for parent in (LOCAL_ROOT, LOCAL_ROOT / self.scope, self.root, hdir):
            parent.chmod(0o755)
        user = self._user(spec.name)
        address = self._allocate_address(spec)
        try:
            pw = pwd.getpwnam(user)
            if pw.pw_dir != str(home):
                subprocess.run(["usermod", "-d", str(home), user], check=True)
        except KeyError:
            subprocess.run(
                [
                    "useradd",
                    "--no-create-home",
                    "--home-dir",
                    str(home),
                    "--shell",
                    "/bin/sh",
                    "--user-group",
                    user,
                ],
                check=True,
                capture_output=True,
            )
        # "*" = no password, but not a locked account: sshd without PAM refuses locked ones
        subprocess.run(["usermod", "-p", "*", user], check=True, capture_output=True)
        home.mkdir(exist_ok=True, mode=0o700)
        ssh_dir = home / ".ssh"
        ssh_dir.mkdir(exist_ok=True, mode=0o700)
        (ssh_dir / "authorized_keys").write_text(authorized_key.strip() + "\n")
        (ssh_dir / "authorized_keys").chmod(0o600)
        subprocess.run(["chown", "-R", f"{user}:{user}", str(home)], check=True)
        host_key_file = sshd_dir / "ssh_host_ed25519_key"
        if not host_key_file.exists():
            subprocess.run(
                [
                    "ssh-keygen",
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    spec.name,
                    "-f",
                    str(host_key_file),
                ],
                check=True,
                capture_output=True,
            )
        host_key = " ".join(host_key_file.with_suffix(".pub").read_text().split()[:2])
        (sshd_dir / "sshd_config").write_text(self._sshd_config(spec.name, address, user))
        record = HostRecord(
            name=spec.name,
            provider=self.name,
            address=address,
            ssh_port=self.ssh_port,
            ssh_user=user,
            host_key=host_key,
            state=HostState.STOPPED,
            provider_ref=f"local:{user}",
            region="loopback",
            hourly_cost_usd=0.0,
            meta={"python": python, "home": str(home), "systemd": False},
        )
        self._write(record)
        return self.start(spec.name)

    def _sshd_config(self, name: str, address: str, user: str) -> str:
        d = self._dir(name) / "sshd"
        return "\n".join(
            [
                f"ListenAddress {address}:{self.ssh_port}",
                f"HostKey {d / 'ssh_host_ed25519_key'}",
                f"PidFile {d / 'sshd.pid'}",
                "AuthorizedKeysFile .ssh/authorized_keys",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin no",
                f"AllowUsers {user}",
                "UsePAM no",
                "X11Forwarding no",
                "AllowTcpForwarding no",
                "AllowAgentForwarding no",
                "PermitTunnel no",
                "PrintMotd no",
                "MaxSessions 50",
                "MaxStartups 100:30:200",
                "Subsystem sftp internal-sftp",
                "LogLevel ERROR",
                "",
            ]
        )

    def get(self, name: str) -> HostRecord | None:
        return self._read(name)

    def list(self) -> list[HostRecord]:
        if not self.root.exists():
            return []
        out = []
        for host_json in sorted(self.root.glob("*/host.json")):
            record = self._read(host_json.parent.name)
            if record is not None:
                out.append(record)
        return out

    def public_ip(self, name: str) -> str | None:
        record = self._read(name)
        return record.address if record else None

    def _must(self, name: str) -> HostRecord:
        record = self._read(name)
        if record is None:
            raise ProviderNotFound(f"local provider: no host named {name!r} (create it first)")
        return record

    def start(self, name: str) -> HostRecord:
        self._require_root()
        record = self._must(name)
        if record.state == HostState.RUNNING:
            return record
        d = self._dir(name) / "sshd"
        Path("/run/sshd").mkdir(exist_ok=True, mode=0o755)  # sshd's privilege separation dir
        if not self._port_free(record.address):
            raise ProviderError(
                f"{name}: {record.address}:{record.ssh_port} is already taken by another process"
            )
        proc = subprocess.run(
            [SSHD, "-f", str(d / "sshd_config"), "-E", str(d / "sshd.log")],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise ProviderError(f"{name}: sshd did not start: {proc.stderr.strip()}")
        # sshd listens before it daemonizes and writes its pid file: wait for both, or the host
        # would read as stopped for a moment after it was started
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex((record.address, record.ssh_port)) == 0 and pid_alive(
                    self._sshd_pid(name)
                ):
                    break
            time.sleep(0.05)
        else:
            raise ProviderError(
                f"{name}: sshd is not listening on {record.address}:{record.ssh_port}"
            )
        self._boot(record)
        started = HostRecord(**{**asdict(record), "state": HostState.RUNNING})
        self._write(started)
        return started

    def _boot(self, record: HostRecord) -> None:
        """What an init system does at boot: run the host's autostart scripts as its user."""
        home = Path(record.meta["home"])
        autostart = home / ".gradientlab" / "autostart"
        if not autostart.is_dir():
            return
        for script in sorted(autostart.iterdir()):
            subprocess.run(
                ["/bin/sh", str(script)],
                user=record.ssh_user,
                group=record.ssh_user,
                cwd=home,
                env={"HOME": str(home), "PATH": "/usr/bin:/bin", "USER": record.ssh_user},
                capture_output=True,
                timeout=60,
            )

    def has_processes(self, name: str) -> bool:
        """Its sshd, or any process of its user, still runs (what a stop would end)."""
        record = self._read(name)
        if record is None:
            return False
        if pid_alive(self._sshd_pid(name)):
            return True
        return not subprocess.run(["pgrep", "-u", record.ssh_user], capture_output=True).returncode

    def _kill_user_processes(self, record: HostRecord) -> None:
        """Kill every process of the host's user, again until none is left: a process may fork
        between one kill and the next, and a Ctrl-C pressed again during a stop reaches the
        terminal's whole process group, so pkill runs in a session of its own."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            subprocess.run(
                ["pkill", "-KILL", "-u", record.ssh_user],
                capture_output=True,
                start_new_session=True,
            )
            left = subprocess.run(
                ["pgrep", "-u", record.ssh_user], capture_output=True, start_new_session=True
            )
            if left.returncode:
                return
            time.sleep(0.05)

    def stop(self, name: str) -> HostRecord:
        self._require_root()
        record = self._must(name)
        self._kill_user_processes(record)
        pid = self._sshd_pid(name)
        if pid_alive(pid):
            assert pid is not None
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if pid_alive(pid):  # hung (or stopped): power it off, as a hard reset would
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + 5
                while pid_alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
        stopped = HostRecord(**{**asdict(record), "state": HostState.STOPPED})
        self._write(stopped)
        return stopped

    def reboot(self, name: str) -> HostRecord:
        self.stop(name)
        return self.start(name)

    def terminate(self, name: str) -> None:
        self._require_root()
        record = self._read(name)
        if record is None:
            return
        self.stop(name)
        subprocess.run(["userdel", record.ssh_user], capture_output=True)
        subprocess.run(["groupdel", record.ssh_user], capture_output=True)
        shutil.rmtree(self._dir(name), ignore_errors=True)
        for empty in (self.root, self.root.parent):  # leave no empty folders behind
            with contextlib.suppress(OSError):
                empty.rmdir()
