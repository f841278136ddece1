"""SSH faults against a real sshd host: each one is a typed RemoteError with its cause, in time.

One local host serves every case; each case breaks it in one way and puts it back. No SSH is
mocked: sshd is frozen (SIGSTOP), stopped, restarted, given an empty authorized_keys, or the
executor pins a key the host does not have."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gradientlab.config import HostSettings
from gradientlab.inventory import executor_for
from gradientlab.providers.base import HostRecord
from gradientlab.providers.local import LocalProvider
from gradientlab.remote.executor import (
    AuthRefused,
    CommandTimeout,
    HostKeyInvalid,
    HostKeyMismatch,
    HostUnreachable,
    RemoteError,
    SshExecutor,
    SshTarget,
    fingerprint,
)
from gradientlab.remote.keys import load_operator_key, operator_public_key

HOST = "faulty"
# short deadlines keep the module fast; a hang still fails (join below), it does not stall
FAST = {
    "connect_timeout": 3,
    "banner_timeout": 2,
    "handshake_timeout": 3,
    "auth_timeout": 3,
    "sftp_timeout": 5,
}
HANG_LIMIT = 60.0


@pytest.fixture(scope="module")
def provider(base_address: str) -> Iterator[LocalProvider]:
    prov = LocalProvider(
        name="faults", base_address=base_address.rsplit(".", 1)[0] + ".60", ssh_port=2222
    )
    yield prov
    prov.terminate(HOST)


@pytest.fixture(scope="module")
def host(provider: LocalProvider) -> HostRecord:
    return provider.create(HostSettings(name=HOST, provider=provider.name), operator_public_key())


@pytest.fixture()
def make(host: HostRecord, provider: LocalProvider) -> Iterator[Callable[..., SshExecutor]]:
    """Executors to the host with short deadlines; closed, and the host running, after the test."""
    made: list[SshExecutor] = []

    def _make(host_key: str | None = None) -> SshExecutor:
        target = SshTarget(
            host.name, host.address, host.ssh_port, host.ssh_user, host_key or host.host_key
        )
        ex = SshExecutor(target, load_operator_key(), **FAST)
        made.append(ex)
        return ex

    yield _make
    for ex in made:
        ex.close()
    pid = sshd_pid(provider)
    if pid is not None:
        os.kill(pid, signal.SIGCONT)  # harmless when it runs
    provider.start(HOST)  # a no-op when it runs


def sshd_pid(provider: LocalProvider) -> int | None:
    try:
        return int((provider.root / HOST / "sshd" / "sshd.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def transport_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if isinstance(t, paramiko.Transport) and t.is_alive()}


def within(call: Callable[[], Any]) -> tuple[BaseException | None, Any, float]:
    """Run `call` in a thread: (error, value, seconds). A call that hangs fails the test."""
    box: dict[str, Any] = {}

    def target() -> None:
        start = time.monotonic()
        try:
            box["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc
        box["elapsed"] = time.monotonic() - start

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(HANG_LIMIT)
    assert not thread.is_alive(), f"the call did not return within {HANG_LIMIT:.0f}s"
    return box.get("error"), box.get("value"), box["elapsed"]


def expect(call: Callable[[], Any], cls: type[RemoteError], cause: str) -> RemoteError:
    """`call` raises `cls` with `cause`, and a failed connect leaves no transport thread behind."""
    before = transport_threads()
    error, value, elapsed = within(call)
    assert type(error) is cls, f"expected {cls.__name__}, got {error!r} (returned {value!r})"
    assert error.cause == cause, (error.cause, str(error))
    assert error.host == HOST and str(error).startswith(f"{HOST}: ")
    print(f"{cls.__name__}[{cause}] after {elapsed:.1f}s: {error}")
    if cls is not CommandTimeout:  # a timed-out command keeps its (healthy) connection
        no_new_transports(before)
    return error


def no_new_transports(before: set[threading.Thread]) -> None:
    deadline = time.monotonic() + 5
    while transport_threads() - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not transport_threads() - before


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_frozen_sshd_is_unreachable_with_no_banner(
    provider: LocalProvider, make: Callable[..., SshExecutor]
) -> None:
    ex = make()
    pid = sshd_pid(provider)
    assert pid is not None
    before, fds = transport_threads(), open_fds()
    os.kill(pid, signal.SIGSTOP)  # TCP is still accepted by the kernel; no banner ever comes
    try:
        err = expect(lambda: ex.run("true"), HostUnreachable, "no-banner")
        assert "TCP connected but no SSH banner within 2s (host hung or swapping?)" in str(err)
        err = expect(lambda: ex.read_file(".profile"), HostUnreachable, "no-banner")
        no_new_transports(before)
        assert open_fds() <= fds
        assert not ex.connected
    finally:
        os.kill(pid, signal.SIGCONT)
    assert ex.run("echo thawed").stdout.strip() == "thawed"


def test_a_stopped_sshd_is_unreachable_with_no_tcp(
    provider: LocalProvider, make: Callable[..., SshExecutor]
) -> None:
    ex = make()
    provider.stop(HOST)
    try:
        err = expect(lambda: ex.run("true"), HostUnreachable, "no-tcp")
        assert "connection refused" in str(err)
        expect(lambda: ex.write_file("x", b"x", 0o600), HostUnreachable, "no-tcp")
        expect(lambda: ex.ensure_dir("d"), HostUnreachable, "no-tcp")
    finally:
        provider.start(HOST)
    assert ex.run("true").ok


def test_a_refused_key_is_auth_refused_and_says_which_key(
    host: HostRecord, make: Callable[..., SshExecutor]
) -> None:
    ex = make()
    authorized = Path(host.meta["home"]) / ".ssh" / "authorized_keys"
    saved = authorized.read_text()
    authorized.write_text("")
    try:
        before = transport_threads()
        err = expect(lambda: ex.run("true"), AuthRefused, "auth-refused")
        no_new_transports(before)
    finally:
        authorized.write_text(saved)
    ours = fingerprint(operator_public_key())
    assert ours in str(err)
    assert f"{host.ssh_user}@{host.address}" in str(err)
    assert "authorized_keys" in str(err) and "operator_cidr" in str(err)
    assert ex.run("true").ok


def test_a_changed_host_key_is_a_mismatch_with_both_fingerprints(
    host: HostRecord, make: Callable[..., SshExecutor]
) -> None:
    other = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    ex = make(host_key=other)
    err = expect(lambda: ex.run("true"), HostKeyMismatch, "key-changed")
    assert isinstance(err, HostKeyMismatch)
    assert err.offered_fingerprint == fingerprint(host.host_key)
    assert err.pinned_fingerprint == fingerprint(other)
    assert "refusing to connect" in str(err)
    assert not ex.connected


@pytest.mark.parametrize(
    "bad_key",
    ["ssh-ed25519 notbase64!!", "", "ssh-ed25519", "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIA=="],
    ids=["not-base64", "empty", "no-data", "wrong-type"],
)
def test_a_malformed_pinned_key_is_invalid(
    host: HostRecord, make: Callable[..., SshExecutor], bad_key: str
) -> None:
    err = expect(
        lambda: executor_for(replace(host, host_key=bad_key)), HostKeyInvalid, "key-invalid"
    )
    assert f"gradientlab hosts trust {HOST}" in str(err) and "re-provision" in str(err)
    ex = SshExecutor(
        SshTarget(host.name, host.address, host.ssh_port, host.ssh_user, bad_key),
        load_operator_key(),
        **FAST,
    )
    expect(lambda: ex.run("true"), HostKeyInvalid, "key-invalid")
    expect(lambda: ex.read_file("x"), HostKeyInvalid, "key-invalid")


def test_a_command_past_its_deadline_times_out_once_and_the_next_one_runs(
    make: Callable[..., SshExecutor],
) -> None:
    ex = make()
    marker = f"timeout-runs-{uuid.uuid4().hex[:8]}"
    err = expect(
        lambda: ex.run(f"echo run >> {marker}; sleep 5", timeout=1), CommandTimeout, "timeout"
    )
    assert "did not finish within 1s" in str(err)
    result = ex.run(f"cat {marker}; rm -f {marker}")
    assert result.ok
    assert result.stdout.split() == ["run"]  # not retried: a hung command must not run twice


def test_a_kept_open_connection_survives_an_sshd_restart(
    provider: LocalProvider, make: Callable[..., SshExecutor]
) -> None:
    ex = make()
    ex.write_file("kept.txt", b"still here", 0o600)
    assert ex.run("true").ok
    assert ex.connected
    provider.reboot(HOST)
    error, result, _ = within(lambda: ex.run("echo back"))
    assert error is None, repr(error)
    assert result.stdout.strip() == "back"
    provider.reboot(HOST)
    error, data, _ = within(lambda: ex.read_file("kept.txt"))
    assert error is None, repr(error)
    assert data == b"still here"


def test_a_connection_dropped_mid_command_is_unreachable_dropped(
    make: Callable[..., SshExecutor],
) -> None:
    ex = make()
    # the command's parent is the host's sshd session process: killing it drops the connection
    err = expect(lambda: ex.run("kill -9 $PPID; sleep 5"), HostUnreachable, "dropped")
    assert "dropped while running" in str(err)
    assert ex.run("echo again").stdout.strip() == "again"
