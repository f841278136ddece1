"""One runner per host: the flock on runner.lock, and who supervises the runner."""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import time

from .home import UNIT_NAME, Paths, load_config
from .procs import pid_alive, read_pid

# ---------------------------------------------------------------- one runner per host


class RunnerLocked(RuntimeError):
    """Another runner holds runner.lock."""

    def __init__(self, paths: Paths, pid: int | None) -> None:
        self.pid = pid
        who = f"pid {pid}" if pid else "another process"
        super().__init__(f"a runner is already running: {who} holds {paths.lock}")


def write_lock_pid(fd: int, pid: int) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{pid}\n".encode(), 0)


def take_lock(paths: Paths, attempts: int = 3) -> int:
    """Hold runner.lock (exclusive, non-blocking) and write this pid into it; the returned fd
    holds the lock until the process ends. Raises RunnerLocked naming the holder's pid.

    A few quick tries, so that a momentary look by `lock_holder` never turns a runner away."""
    fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT, 0o600)
    tries = 0
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            tries += 1
            if tries >= attempts:
                os.close(fd)
                raise RunnerLocked(paths, read_pid(paths.lock)) from None
            time.sleep(0.1)
    with contextlib.suppress(OSError):  # a full disk: the lock holds, its pid is a nicety
        write_lock_pid(fd, os.getpid())
    return fd


def lock_holder(paths: Paths) -> tuple[bool, int | None]:
    """(held, pid written in it): looks with a shared lock taken and dropped at once."""
    try:
        fd = os.open(paths.lock, os.O_RDONLY)
    except OSError:
        return False, None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True, read_pid(paths.lock)
    finally:
        os.close(fd)  # drops the shared lock when it was taken
    return False, None


def running_pid(paths: Paths, timeout: float = 5) -> int | None:
    """The pid of the runner holding runner.lock (None when none does), once it has started:
    a runner just launched may still be the `start` that launched it for a moment."""
    deadline = time.monotonic() + timeout
    while True:
        held, pid = lock_holder(paths)
        if not held:
            return None
        if pid is not None and pid == read_pid(paths.runner_pid) and pid_alive(pid):
            return pid
        if time.monotonic() >= deadline:
            return pid
        time.sleep(0.05)


def supervisor_of(paths: Paths) -> str:
    """Who starts the runner: "systemd" (a user unit deploy wrote) or "runner" (`start`)."""
    try:
        return "systemd" if load_config(paths).get("supervisor") == "systemd" else "runner"
    except (OSError, ValueError, AttributeError):
        return "runner"


def systemctl_command(action: str) -> list[str]:
    return ["systemctl", "--user", action, UNIT_NAME]


def run_systemctl(action: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(systemctl_command(action), capture_output=True, text=True, timeout=120)
