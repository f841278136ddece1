"""Whole Debian machines booted with systemd, as test hosts.

Each machine is a copy-on-write of a cached root filesystem (tests.nspawn.rootfs): an overlayfs
whose upper layer is the machine's own disk, kept across its reboots. It boots with
`systemd-nspawn --register=no --keep-unit --boot` (so it needs no systemd on this machine) inside
a network namespace the test makes: a veth pair, the host end 10.177.S.(4i+1), the machine end
10.177.S.(4i+2), a default route through the host end and a masquerade out of this machine (for
Debian's apt inside it; nothing listens on a public port). sshd answers with a host key made for
this machine alone, pinned by whoever connects; cloud-init machines get the key the product's
first-boot script carries instead.

The sandbox listens on loopback only (and the extension's sign-in hand-off accepts 127.0.0.1
pages only), so each machine's namespace gets a relay: a listening socket on the machine's own
127.0.0.1:PORT, opened from a thread that entered the namespace, whose connections are carried
to this machine's 127.0.0.1:PORT. A node in a machine reaches the sandbox at the same URL as a
node on a loopback host.

`MachineProvider` creates, reboots (`systemctl reboot` inside; nspawn then exits with 133 and is
started again on the same disk, as systemd-nspawn@.service does), powers off, starts and removes
machines.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shlex
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from gradientlab.providers.bootstrap import HostKeyPair
from tests.nspawn import rootfs

MACHINES_ROOT = Path("/var/lib/gradientlab-machines")
CLONE_NEWNET = 0x40000000
REBOOT_EXIT = 133  # systemd-nspawn's exit status when the machine asked for a reboot


class MachineError(RuntimeError):
    pass


def _run(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise MachineError(f"{shlex.join(args)} failed ({proc.returncode}): {proc.stderr[-800:]}")
    return proc


def _wait(what: str, ready: object, timeout: float, interval: float = 0.25) -> None:
    """Poll `ready()` until it is true; MachineError naming `what` after `timeout`."""
    assert callable(ready)
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise MachineError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc().setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class NetnsRelay:
    """127.0.0.1:PORT inside a network namespace carried to 127.0.0.1:PORT here (TCP)."""

    def __init__(self, netns: str, port: int) -> None:
        self.netns, self.port = netns, port
        self._listener: socket.socket | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        opened: list[socket.socket | BaseException] = []

        def open_inside() -> None:
            own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
            target = os.open(f"/run/netns/{self.netns}", os.O_RDONLY)
            try:
                _setns(target)
                try:
                    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    sock.bind(("127.0.0.1", self.port))
                    sock.listen(64)
                    opened.append(sock)
                finally:
                    _setns(own)  # this thread's later sockets are this machine's again
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                opened.append(exc)
            finally:
                os.close(own)
                os.close(target)

        thread = threading.Thread(target=open_inside)
        thread.start()
        thread.join()
        if isinstance(opened[0], BaseException):
            raise MachineError(f"relay into {self.netns}: {opened[0]}")
        self._listener = opened[0]
        threading.Thread(target=self._accept, daemon=True, name=f"relay-{self.netns}").start()

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                inside, _ = self._listener.accept()
            except OSError:
                return
            try:
                outside = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            except OSError:
                inside.close()
                continue
            outside.settimeout(None)
            for a, b in ((inside, outside), (outside, inside)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
            with contextlib.suppress(OSError):
                src.shutdown(socket.SHUT_RD)

    def stop(self) -> None:
        self._stop.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()


@dataclass
class User:
    name: str
    authorized_key: str
    sudo: str | None = None  # a sudoers line, or None for no sudo
    linger: bool = False


@dataclass
class Machine:
    name: str
    suite: str
    index: int
    subnet: str  # "10.177.S"
    dir: Path
    host_key: str = ""  # "ssh-ed25519 AAAA...", what sshd offers
    proc: subprocess.Popen[bytes] | None = None
    boots: int = 0
    relays: list[NetnsRelay] = field(default_factory=list)
    _watch: threading.Thread | None = None
    _wanted_down: bool = False

    @property
    def address(self) -> str:
        return f"{self.subnet}.{4 * self.index + 2}"

    @property
    def gateway(self) -> str:
        return f"{self.subnet}.{4 * self.index + 1}"

    @property
    def netns(self) -> str:
        return f"glm-{os.getpid()}-{self.index}"

    @property
    def veth_host(self) -> str:
        return f"glm{os.getpid() % 100000}x{self.index}"

    @property
    def veth_machine(self) -> str:
        return f"glm{os.getpid() % 100000}y{self.index}"

    @property
    def merged(self) -> Path:
        return self.dir / "root"

    @property
    def console_log(self) -> Path:
        return self.dir / "console.log"

    # ---- inside the machine, as its hypervisor would (no SSH) ----------------------------------

    def leader(self) -> int | None:
        """The machine's PID 1 (systemd) as this machine sees it."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return None
        for pid in children.split():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                    return int(pid)
        return None

    def root(self, command: str, timeout: float = 120, check: bool = True) -> str:
        """Run `command` as root inside the machine (nsenter into its namespaces)."""
        pid = self.leader()
        if pid is None:
            raise MachineError(f"{self.name} is not running")
        proc = _run(
            "nsenter",
            f"--target={pid}",
            "--mount",
            "--uts",
            "--ipc",
            "--net",
            "--pid",
            "--",
            "/bin/sh",
            "-c",
            command,
            check=False,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise MachineError(
                f"{self.name}: {command!r} failed ({proc.returncode}): "
                f"{(proc.stderr or proc.stdout)[-800:]}"
            )
        return proc.stdout

    def ssh_answers(self) -> bool:
        try:
            with socket.create_connection((self.address, 22), timeout=2) as sock:
                sock.settimeout(5)
                return sock.recv(64).startswith(b"SSH-")
        except OSError:
            return False

    def system_state(self) -> str:
        """`systemctl is-system-running`: running, degraded, starting, ... or "down"."""
        try:
            return self.root("systemctl is-system-running", check=False, timeout=30).strip()
        except MachineError:
            return "down"


class MachineProvider:
    """Creates, reboots, powers off, starts and removes nspawn machines of one test session."""

    def __init__(self, scope: str | None = None) -> None:
        self.scope = scope or f"s{os.getpid()}"
        self.root = MACHINES_ROOT / self.scope
        self.subnet = f"10.177.{os.getpid() % 250}"
        self.machines: dict[str, Machine] = {}
        self._nft_table = f"glm_{os.getpid()}"
        self._egress = False
        self._ip_forward: str | None = None  # this machine's value before the first machine

    # ---- lifecycle ------------------------------------------------------------------------------

    def create(
        self,
        name: str,
        suite: str = "bookworm",
        users: tuple[User, ...] = (),
        cloud_init_user_data: str | None = None,
        host_key: HostKeyPair | None = None,
        relay_ports: tuple[int, ...] = (),
        boot_timeout: float = 300,
    ) -> Machine:
        """A new machine from `suite`'s image, booted, with sshd answering.

        With `cloud_init_user_data`, cloud-init runs it on first boot from a NoCloud seed, as a
        cloud's metadata service would hand it over, and the host key is what it installs
        (`host_key`'s public half); otherwise the machine gets `users` and a host key of its own
        before it boots, and cloud-init is disabled."""
        reason = rootfs.why_no_machines()
        if reason:
            raise MachineError(reason)
        image = rootfs.rootfs_path(suite)
        if not rootfs.is_built(suite):
            raise MachineError(f"no {suite} image at {image}: run `make machines`")
        machine = Machine(name, suite, len(self.machines), self.subnet, self.root / name)
        self.machines[name] = machine
        machine.dir.mkdir(parents=True, exist_ok=True)
        for sub in ("upper", "work", "root"):
            (machine.dir / sub).mkdir(exist_ok=True)
        _run(
            "mount",
            "-t",
            "overlay",
            "overlay",
            "-o",
            f"lowerdir={image},upperdir={machine.dir / 'upper'},workdir={machine.dir / 'work'}",
            str(machine.merged),
        )
        self._network(machine)
        key = host_key or HostKeyPair.generate()
        machine.host_key = " ".join(key.public.split()[:2])
        root = machine.merged
        (root / "etc/hostname").write_text(f"{name}\n")
        (root / "etc/hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {name}\n")
        shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
        (root / "etc/ssh/sshd_config.d").mkdir(exist_ok=True)
        (root / "etc/ssh/sshd_config.d/10-gradientlab-machine.conf").write_text(
            "HostKey /etc/ssh/ssh_host_ed25519_key\nPasswordAuthentication no\n"
        )
        if cloud_init_user_data is not None:
            seed = root / "var/lib/cloud/seed/nocloud"
            seed.mkdir(parents=True, exist_ok=True)
            (seed / "user-data").write_text(cloud_init_user_data)
            (seed / "meta-data").write_text(f"instance-id: {name}-1\nlocal-hostname: {name}\n")
        else:
            (root / "etc/cloud/cloud-init.disabled").touch()
            private = root / "etc/ssh/ssh_host_ed25519_key"
            private.write_text(key.private_openssh)
            private.chmod(0o600)
            (root / "etc/ssh/ssh_host_ed25519_key.pub").write_text(key.public + "\n")
        for user in users:
            self._add_user(machine, user)
        for port in relay_ports:
            relay = NetnsRelay(machine.netns, port)
            relay.start()
            machine.relays.append(relay)
        self._boot(machine)
        self.wait_up(machine, boot_timeout)
        return machine

    def _add_user(self, machine: Machine, user: User) -> None:
        root = str(machine.merged)
        _run("chroot", root, "useradd", "--create-home", "--shell", "/bin/bash", user.name)
        home = machine.merged / "home" / user.name
        ssh = home / ".ssh"
        ssh.mkdir(mode=0o700, exist_ok=True)
        (ssh / "authorized_keys").write_text(user.authorized_key.strip() + "\n")
        _run("chroot", root, "chown", "-R", f"{user.name}:{user.name}", f"/home/{user.name}")
        if user.sudo:
            rule = machine.merged / "etc/sudoers.d" / f"50-{user.name}"
            rule.write_text(user.sudo.rstrip() + "\n")
            rule.chmod(0o440)
        if user.linger:
            linger = machine.merged / "var/lib/systemd/linger"
            linger.mkdir(parents=True, exist_ok=True)
            (linger / user.name).touch()

    def _network(self, machine: Machine) -> None:
        ns, host_if, machine_if = machine.netns, machine.veth_host, machine.veth_machine
        _run("ip", "netns", "add", ns)
        _run("ip", "link", "add", host_if, "type", "veth", "peer", "name", machine_if)
        _run("ip", "link", "set", machine_if, "netns", ns)
        _run("ip", "addr", "add", f"{machine.gateway}/30", "dev", host_if)
        _run("ip", "link", "set", host_if, "up")
        inside = ("ip", "netns", "exec", ns)
        _run(*inside, "ip", "link", "set", "lo", "up")
        _run(*inside, "ip", "addr", "add", f"{machine.address}/30", "dev", machine_if)
        _run(*inside, "ip", "link", "set", machine_if, "up")
        _run(*inside, "ip", "route", "add", "default", "via", machine.gateway)
        self._ensure_egress()

    def _ensure_egress(self) -> None:
        """Masquerade the machines' subnet out of this machine (Debian's apt inside them)."""
        if self._egress:
            return
        forward = Path("/proc/sys/net/ipv4/ip_forward")
        self._ip_forward = forward.read_text().strip()
        forward.write_text("1\n")
        rules = (
            f"table ip {self._nft_table} {{\n"
            "  chain postrouting {\n"
            "    type nat hook postrouting priority srcnat; policy accept;\n"
            f'    ip saddr {self.subnet}.0/24 oifname != "glm*" masquerade\n'
            "  }\n"
            "}\n"
        )
        subprocess.run(["nft", "-f", "-"], input=rules, text=True, check=True)
        self._egress = True

    def _boot(self, machine: Machine) -> None:
        machine._wanted_down = False
        log = open(machine.console_log, "ab")  # noqa: SIM115 - the nspawn process keeps it
        machine.proc = subprocess.Popen(
            [
                "systemd-nspawn",
                "--register=no",
                "--keep-unit",
                "--boot",
                "--quiet",
                f"--directory={machine.merged}",
                f"--machine={machine.name}",
                f"--network-namespace-path=/run/netns/{machine.netns}",
                # the console's output drained into console.log: with --console=passive nobody
                # reads its pseudo TTY, and once its buffer is full every write to /dev/console
                # blocks (cloud-init's keys-to-console did, inside its final stage, so
                # cloud-final.service, the boot and deploy's wait for them never ended)
                "--console=read-only",
                "--link-journal=no",
                "--resolv-conf=off",
                "--timezone=off",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        machine.boots += 1
        proc = machine.proc

        def watch() -> None:
            code = proc.wait()
            # a reboot asked from inside: start it again on the same disk
            if code == REBOOT_EXIT and not machine._wanted_down and machine.proc is proc:
                self._boot(machine)

        machine._watch = threading.Thread(target=watch, daemon=True, name=f"nspawn-{machine.name}")
        machine._watch.start()

    def wait_up(self, machine: Machine, timeout: float = 300) -> None:
        def up() -> bool:
            if machine.proc is not None and machine.proc.poll() not in (None, REBOOT_EXIT):
                tail = machine.console_log.read_text(errors="replace")[-1500:]
                raise MachineError(f"{machine.name}: nspawn exited {machine.proc.poll()}: {tail}")
            return machine.ssh_answers()

        _wait(f"{machine.name}'s sshd", up, timeout)

    def reboot(self, name: str, timeout: float = 300) -> Machine:
        """`systemctl reboot` inside, then wait until the new boot's sshd answers."""
        machine = self.machines[name]
        before = machine.boots
        machine.root("systemctl reboot", check=False)
        _wait(f"{name} to reboot", lambda: machine.boots > before, timeout)
        self.wait_up(machine, timeout)
        return machine

    def poweroff(self, name: str, timeout: float = 120) -> Machine:
        machine = self.machines[name]
        machine._wanted_down = True
        proc = machine.proc
        if proc is not None and proc.poll() is None:
            machine.root("systemctl poweroff", check=False)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()  # the nspawn process, this session's own
                proc.wait(30)
        return machine

    def start(self, name: str, timeout: float = 300) -> Machine:
        machine = self.machines[name]
        if machine.proc is None or machine.proc.poll() is not None:
            self._boot(machine)
        self.wait_up(machine, timeout)
        return machine

    def remove(self, name: str) -> None:
        machine = self.machines.pop(name)
        machine._wanted_down = True
        proc = machine.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(MachineError):
                machine.root("systemctl poweroff", check=False, timeout=30)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)
        for relay in machine.relays:
            relay.stop()
        _run("umount", str(machine.merged), check=False)
        _run("ip", "link", "del", machine.veth_host, check=False)
        _run("ip", "netns", "del", machine.netns, check=False)
        shutil.rmtree(machine.dir, ignore_errors=True)

    def close(self) -> None:
        for name in list(self.machines):
            self.remove(name)
        if self._egress:
            _run("nft", "delete", "table", "ip", self._nft_table, check=False)
            self._egress = False
        if self._ip_forward is not None:  # put back as it was (others may have changed it since)
            Path("/proc/sys/net/ipv4/ip_forward").write_text(self._ip_forward + "\n")
            self._ip_forward = None
        shutil.rmtree(self.root, ignore_errors=True)
