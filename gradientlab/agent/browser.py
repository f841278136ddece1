"""The browser process: Chromium's flags, its launch on a DevTools pipe, its stop."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from .devtools import DevToolsBridge, devtools_socket
from .home import Paths
from .procs import now_iso, pid_alive

# ---------------------------------------------------------------- browser


def chromium_flags(config: dict[str, Any], paths: Paths) -> list[str]:
    ext = str(paths.current_extension.resolve())
    flags = [
        "--headless=new",
        f"--user-data-dir={paths.profile}",
        # DevTools over the pipe the runner holds (fds 3 and 4), never a TCP port that every
        # local user could reach; the runner bridges it to a socket only its user can open
        "--remote-debugging-pipe",
        f"--disable-extensions-except={ext}",
        f"--load-extension={ext}",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        # memory: one renderer, GPU and network service in the browser process
        "--renderer-process-limit=1",
        "--in-process-gpu",
        "--enable-features=NetworkServiceInProcess2",
    ]
    if os.geteuid() == 0:
        flags.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
    flags.extend(config.get("extra_chromium_flags", []))
    return flags


def clear_stale_singleton_lock(profile: Path) -> bool:
    """Remove Chromium's profile lock when the process that held it is gone."""
    lock = profile / "SingletonLock"
    try:
        target = os.readlink(lock)
    except OSError:
        return False
    host, _, pid = target.rpartition("-")
    if host == socket.gethostname() and pid.isdigit() and pid_alive(int(pid)):
        return False
    for name in ("SingletonLock", "SingletonSocket", "SingletonCookie"):
        with contextlib.suppress(OSError):
            (profile / name).unlink()
    return True


class Browser:
    def __init__(self, config: dict[str, Any], paths: Paths) -> None:
        self.config = config
        self.paths = paths
        self.proc: SpawnedProcess | None = None
        self.started_at: str | None = None
        self.bridge: DevToolsBridge | None = None

    def launch(self, timeout: float = 30) -> None:
        self.paths.profile.mkdir(parents=True, exist_ok=True)
        if self.bridge is not None:
            self.bridge.stop()
            self.bridge = None
        if not self.paths.current_extension.exists():
            raise RuntimeError(
                f"no extension at {self.paths.current_extension}; run install-extension"
            )
        self.forget_stale_service_worker()
        chromium = str(self.config.get("chromium", "/usr/bin/chromium"))
        if shutil.which(chromium) is None:
            raise RuntimeError(f"no chromium to run at {chromium!r} (`chromium` in config.json)")
        # the DevTools pipe: Chromium reads commands on fd 3 and writes answers on fd 4
        to_browser_r, to_browser_w = _high_fds(*os.pipe())
        from_browser_r, from_browser_w = _high_fds(*os.pipe())
        args = [chromium, *chromium_flags(self.config, self.paths), "about:blank"]
        (chrome_log,) = _high_fds(
            os.open(self.paths.chrome_log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        )
        try:
            # posix_spawn, not fork + preexec_fn: the runner has threads (the DevTools bridge)
            self.proc = SpawnedProcess(
                os.posix_spawn(
                    shutil.which(chromium) or chromium,
                    args,
                    dict(os.environ),
                    file_actions=[
                        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                        (os.POSIX_SPAWN_DUP2, chrome_log, 1),
                        (os.POSIX_SPAWN_DUP2, chrome_log, 2),
                        (os.POSIX_SPAWN_DUP2, to_browser_r, 3),
                        (os.POSIX_SPAWN_DUP2, from_browser_w, 4),
                    ],
                    setsid=True,
                ),
                args,
            )
        finally:
            for fd in (chrome_log, to_browser_r, from_browser_w):
                os.close(fd)
        self.bridge = DevToolsBridge(devtools_socket(self.paths), to_browser_w, from_browser_r)
        self.paths.browser_pid.write_text(str(self.proc.pid))
        self.started_at = now_iso()
        self.bridge.start()
        try:
            asked = self.bridge.command("Browser.getVersion")
        except OSError:  # the pipe closed: the browser has exited, or is about to
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
        else:
            if self.bridge.wait_answer(asked, timeout, self.alive):
                return
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"chromium exited with {self.proc.returncode} at start; see {self.paths.chrome_log}"
            )
        raise RuntimeError(f"chromium did not answer on its DevTools pipe in {timeout:.0f}s")

    def forget_stale_service_worker(self) -> None:
        """Chromium keeps an unpacked extension's service worker scripts in the profile and does
        not reread them while the version is unchanged: after new files of the same version,
        drop that cache so the new scripts run (the extension's storage, the login, stays)."""
        try:
            digest = (self.paths.current_extension / ".gradientlab-sha256").read_text()
        except OSError:
            return
        marker = self.paths.profile / ".gradientlab-extension-sha256"
        try:
            if marker.read_text() == digest:
                return
        except OSError:
            pass
        shutil.rmtree(self.paths.profile / "Default" / "Service Worker", ignore_errors=True)
        marker.write_text(digest)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def reap(self) -> None:
        """A browser killed hard leaves its renderers and zygotes behind, holding the profile:
        end its whole process group before a new browser starts."""
        if self.bridge is not None:
            self.bridge.stop()
            self.bridge = None
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except (ProcessLookupError, PermissionError):
                break
            time.sleep(0.05)

    def stop(self, grace: float = 5) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.bridge is not None:
            self.bridge.stop()
            self.bridge = None
        with contextlib.suppress(OSError):
            self.paths.browser_pid.unlink()


class SpawnedProcess:
    """A child started with `os.posix_spawn`, with the part of Popen's interface the runner
    uses: pid, poll(), wait(timeout), returncode."""

    def __init__(self, pid: int, args: list[str]) -> None:
        self.pid = pid
        self.args = args
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere
                self.returncode = -1
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            time.sleep(0.05)
        assert self.returncode is not None
        return self.returncode


def _high_fds(*fds: int) -> tuple[int, ...]:
    """The same pipes above fd 9 and closed at exec, so that putting them on 3 and 4 in the
    child never clobbers one with the other."""
    moved = []
    for fd in fds:
        moved.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10))
        os.close(fd)
    return tuple(moved)
