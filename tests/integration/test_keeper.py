"""The connection keeper against real sshd hosts: connections outlive the processes that use them.

Two local hosts; one keeper process per test (started and stopped by its process id) on a socket
in a folder of the test's own. Reuse is proven by the host's own sshd session process (the
parent of every command run on that connection) and the keeper's connection counter."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from gradientlab.config import HostSettings
from gradientlab.inventory import executor_for
from gradientlab.providers.base import HostRecord
from gradientlab.providers.local import LocalProvider
from gradientlab.remote.executor import (
    POOL,
    CommandTimeout,
    HostKeyMismatch,
    HostUnreachable,
    fingerprint,
)
from gradientlab.remote.keeper import start_keeper
from gradientlab.remote.keeper_client import KeeperExecutor, keeper_stats
from gradientlab.remote.keys import operator_public_key
from gradientlab.remote.wire import KEEPER_ENV

HOSTS = ("keep-a", "keep-b")
HANG_LIMIT = 60.0
# short SSH deadlines inside the keeper keep the frozen-host case quick
FAST = ["--connect-timeout", "4", "--banner-timeout", "3", "--handshake-timeout", "3"]
FAST += ["--auth-timeout", "3", "--sftp-timeout", "5"]


@pytest.fixture(scope="module")
def provider(base_address: str) -> Iterator[LocalProvider]:
    prov = LocalProvider(
        name="keeper", base_address=base_address.rsplit(".", 1)[0] + ".70", ssh_port=2222
    )
    yield prov
    for name in HOSTS:
        prov.terminate(name)


@pytest.fixture(scope="module")
def hosts(provider: LocalProvider) -> dict[str, HostRecord]:
    key = operator_public_key()
    return {
        name: provider.create(HostSettings(name=name, provider=provider.name), key)
        for name in HOSTS
    }


@pytest.fixture()
def sock_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="glk-"))  # short: a socket path has at most 107 bytes
    yield path
    shutil.rmtree(path, ignore_errors=True)


Keeper = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture()
def keeper(
    sock_dir: Path, provider: LocalProvider, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Keeper]:
    """Start a keeper on the test's socket; stopped by its id, hosts thawed and up afterwards."""
    started: list[subprocess.Popen[bytes]] = []
    sock = sock_dir / "keeper.sock"
    monkeypatch.setenv(KEEPER_ENV, str(sock))

    def start(*extra: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gradientlab.remote.keeper", "--socket", str(sock), *extra]
        )
        started.append(proc)
        wait_for(lambda: answers(sock) or proc.poll() is not None)
        assert proc.poll() is None, f"the keeper exited with {proc.returncode}"
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    for name in HOSTS:
        for pid in [sshd_pid(provider, name), *sessions(provider, name)]:
            if pid is not None:
                os.kill(pid, signal.SIGCONT)  # harmless when it runs
        provider.start(name)  # a no-op when it runs
    POOL.close_all()


def wait_for(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + HANG_LIMIT
    while not check():
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.05)


def answers(sock: Path) -> bool:
    try:
        keeper_stats(sock, timeout=2)
    except OSError:
        return False
    return True


def sshd_pid(provider: LocalProvider, name: str) -> int | None:
    try:
        return int((provider.root / name / "sshd" / "sshd.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat_line = (entry / "stat").read_text()
        except OSError:
            continue
        state, ppid = stat_line.rsplit(")", 1)[1].split()[:2]
        if state != "Z":  # a killed connection its sshd has not reaped yet is gone
            tree.setdefault(int(ppid), []).append(int(entry.name))
    return tree


def sessions(provider: LocalProvider, name: str) -> list[int]:
    """Every process below the host's sshd: one tree per open SSH connection."""
    root = sshd_pid(provider, name)
    tree, found, todo = _children(), [], [root] if root else []
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def commands(pids: list[int]) -> list[str]:
    found = []
    for pid in pids:
        try:
            found.append(Path(f"/proc/{pid}/cmdline").read_bytes().decode().strip("\0"))
        except OSError:
            continue
    return found


def connections(provider: LocalProvider, name: str) -> set[int]:
    """The sshd processes, one per open SSH connection (the listener's own children)."""
    root = sshd_pid(provider, name)
    return set(_children().get(root or -1, []))


def only_connection(provider: LocalProvider, name: str) -> set[int]:
    """The host's one open SSH connection (waiting out earlier tests' closing ones)."""
    wait_for(lambda: len(connections(provider, name)) == 1)
    return connections(provider, name)


def session_pid(record: HostRecord) -> str:
    """The host's sshd process that runs this connection's commands (the command's parent)."""
    return executor_for(record).run("echo $PPID").stdout.strip()


def stats() -> dict[str, Any]:
    return keeper_stats(Path(os.environ[KEEPER_ENV]))


CLIENT = """
import json, sys
from gradientlab.inventory import executor_for
from gradientlab.providers.base import HostRecord
ex = executor_for(HostRecord(**json.loads(sys.argv[1])))
print(type(ex).__name__, ex.run("echo $PPID").stdout.strip())
"""


def from_another_process(record: HostRecord) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", CLIENT, json.dumps(asdict(record))],
        capture_output=True,
        text=True,
        timeout=HANG_LIMIT,
        check=True,
    )
    return out.stdout.split()


def pooled(hosts: dict[str, HostRecord]) -> list[str]:
    """This process's own connections to these hosts (other tests' may be in the pool too)."""
    return sorted(c.name for c in POOL.connections() if c.name in hosts)


def test_commands_and_files_go_through_the_keeper(
    keeper: Keeper, hosts: dict[str, HostRecord]
) -> None:
    keeper()
    record = hosts["keep-a"]
    ex = executor_for(record)
    assert isinstance(ex, KeeperExecutor)
    result = ex.run("echo out; echo err >&2; exit 3")
    assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert ex.ensure_dir("kept/sub", 0o700) is True
    assert ex.ensure_dir("kept/sub", 0o700) is False
    data = bytes(range(256)) * 1000  # binary, and more than one socket read
    ex.write_file("kept/sub/blob", data, 0o600)
    assert ex.read_file("kept/sub/blob") == data
    assert ex.read_file("kept/none") is None
    assert ex.run("stat -c %a kept/sub/blob").stdout.strip() == "600"
    assert pooled(hosts) == []  # this process opened no SSH connection of its own
    assert stats()["connects"] == {"keep-a": 1}


def test_a_connection_outlives_the_client_processes_that_use_it(
    keeper: Keeper, provider: LocalProvider, hosts: dict[str, HostRecord]
) -> None:
    keeper()
    record = hosts["keep-a"]
    kind, first = from_another_process(record)
    assert kind == "KeeperExecutor"
    open_connections = only_connection(provider, "keep-a")
    kind, second = from_another_process(record)
    assert second == first  # the same sshd session process ran both commands
    assert connections(provider, "keep-a") == open_connections
    assert stats()["connects"] == {"keep-a": 1}
    assert "keep-a" in stats()["open"]


def test_a_killed_connection_is_reconnected_transparently(
    keeper: Keeper, provider: LocalProvider, hosts: dict[str, HostRecord]
) -> None:
    keeper()
    record = hosts["keep-a"]
    before = session_pid(record)
    (connection,) = only_connection(provider, "keep-a")
    os.kill(connection, signal.SIGKILL)  # the host side of the keeper's connection
    wait_for(lambda: connection not in connections(provider, "keep-a"))
    after = session_pid(record)
    assert after and after != before
    assert stats()["connects"] == {"keep-a": 2}


def test_a_changed_host_key_is_refused_through_the_keeper(
    keeper: Keeper, provider: LocalProvider, hosts: dict[str, HostRecord], sock_dir: Path
) -> None:
    keeper()
    record = hosts["keep-b"]
    assert executor_for(record).run("true").ok
    key = provider.root / "keep-b" / "sshd" / "ssh_host_ed25519_key"
    saved = {p: p.read_bytes() for p in (key, key.with_suffix(".pub"))}
    key.unlink()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    new_key = " ".join(key.with_suffix(".pub").read_text().split()[:2])
    try:
        provider.reboot("keep-b")  # the rebuilt host comes back with its new key
        for call in (
            lambda: executor_for(record).run("true"),
            lambda: executor_for(record).read_file("x"),
        ):
            with pytest.raises(HostKeyMismatch) as caught:
                call()
            err = caught.value
            assert err.cause == "key-changed" and err.host == "keep-b"
            assert err.offered_fingerprint == fingerprint(new_key)
            assert err.pinned_fingerprint == fingerprint(record.host_key)
            assert "refusing to connect" in str(err)
        assert not any(c.endswith("@notty") for c in commands(sessions(provider, "keep-b")))
        assert "keep-b" not in stats()["open"]
        assert stats()["connects"]["keep-b"] == 1  # the refused attempts never connected
    finally:
        for path, content in saved.items():
            path.write_bytes(content)
        provider.reboot("keep-b")
    wait_for(lambda: _runs(record))


def _runs(record: HostRecord) -> bool:
    try:
        return executor_for(record).run("true").ok
    except HostKeyMismatch:
        return False


def test_a_frozen_host_times_out_and_the_keeper_keeps_serving_the_others(
    keeper: Keeper, provider: LocalProvider, hosts: dict[str, HostRecord]
) -> None:
    keeper(*FAST)
    frozen, other = hosts["keep-a"], hosts["keep-b"]
    assert session_pid(frozen) and session_pid(other)
    stopped = [p for p in [sshd_pid(provider, "keep-a"), *sessions(provider, "keep-a")] if p]
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)  # the host hangs: its sshd and its open connection
    box: dict[str, Any] = {}

    def call() -> None:
        try:
            box["value"] = executor_for(frozen).run("true", timeout=5)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc

    thread = threading.Thread(target=call, daemon=True)
    try:
        thread.start()
        # while the frozen host's call waits on its deadlines, the other host is served
        assert executor_for(other).run("echo fine").stdout == "fine\n"
        assert thread.is_alive()
        thread.join(HANG_LIMIT)
        assert not thread.is_alive(), f"the call did not return within {HANG_LIMIT:.0f}s"
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
    error = box.get("error")
    assert isinstance(error, (HostUnreachable, CommandTimeout)), box
    assert error.host == "keep-a" and str(error).startswith("keep-a: ")
    assert executor_for(other).run("true").ok
    wait_for(lambda: executor_for(frozen).run("true").ok)


def test_a_stale_socket_falls_back_then_a_keeper_replaces_it_and_exits_when_idle(
    keeper: Keeper, hosts: dict[str, HostRecord], sock_dir: Path
) -> None:
    sock = sock_dir / "keeper.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(sock))  # a keeper that was killed leaves its socket file behind
    dead.close()
    record = hosts["keep-a"]
    ex = executor_for(record)
    assert isinstance(ex, KeeperExecutor)
    assert ex.run("echo direct").stdout == "direct\n"  # no keeper answered: this process's pool
    assert pooled(hosts) == ["keep-a"]
    POOL.close_all()

    proc = keeper("--idle-seconds", "3")
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert sock.stat().st_uid == os.getuid()
    assert executor_for(record).run("echo kept").stdout == "kept\n"
    assert pooled(hosts) == []
    assert proc.wait(HANG_LIMIT) == 0  # idle: it exits by itself...
    assert not sock.exists()  # ...and takes its socket with it


def test_a_second_keeper_on_the_same_socket_refuses_to_start(
    keeper: Keeper, hosts: dict[str, HostRecord], sock_dir: Path
) -> None:
    keeper()
    second = subprocess.run(
        [
            sys.executable,
            "-m",
            "gradientlab.remote.keeper",
            "--socket",
            str(sock_dir / "keeper.sock"),
        ],
        capture_output=True,
        text=True,
        timeout=HANG_LIMIT,
    )
    assert second.returncode == 1 and "another keeper already serves" in second.stderr
    assert executor_for(hosts["keep-a"]).run("echo still").stdout == "still\n"
    assert pooled(hosts) == []


def test_sigterm_stops_the_keeper_and_removes_its_socket(
    keeper: Keeper, hosts: dict[str, HostRecord], sock_dir: Path
) -> None:
    proc = keeper()
    assert executor_for(hosts["keep-b"]).run("true").ok
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(HANG_LIMIT) == 0
    assert not (sock_dir / "keeper.sock").exists()
    assert executor_for(hosts["keep-b"]).run("echo direct").stdout == "direct\n"


def test_start_keeper_starts_one_once_and_it_ends_with_the_process_it_serves(
    keeper: Keeper, sock_dir: Path, hosts: dict[str, HostRecord]
) -> None:
    parent = subprocess.Popen(["sleep", "600"])  # stands for deployments.serve's process
    try:
        started = start_keeper(exit_with=parent.pid)
        assert started is not None
        try:
            assert start_keeper(exit_with=parent.pid) is None  # one answers already
            assert executor_for(hosts["keep-a"]).run("echo kept").stdout == "kept\n"
            assert stats()["pid"] == started.pid
        finally:
            parent.kill()
            parent.wait()
        assert started.wait(HANG_LIMIT) == 0  # it noticed its process end
        assert not (sock_dir / "keeper.sock").exists()
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def test_a_connection_nobody_uses_is_closed_and_reopened_when_needed_again(
    keeper: Keeper, hosts: dict[str, HostRecord]
) -> None:
    keeper("--connection-idle-seconds", "2")
    a, b = hosts["keep-a"], hosts["keep-b"]
    assert executor_for(a).run("echo a").stdout == "a\n"
    deadline = time.monotonic() + HANG_LIMIT
    # keep-b is checked all along (its shard stays here); keep-a is not asked for again
    while "keep-a" in stats()["open"] and time.monotonic() < deadline:
        assert executor_for(b).run("echo b").stdout == "b\n"
        time.sleep(0.5)
    assert stats()["open"] == ["keep-b"]
    assert stats()["connects"]["keep-b"] == 1
    assert executor_for(a).run("echo again").stdout == "again\n"  # reopened on demand
    assert stats()["connects"]["keep-a"] == 1  # a new connection, counted from its own start
