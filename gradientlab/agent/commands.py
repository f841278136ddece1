"""The runner's commands (start, stop, login, restart-browser, install-extension) and its
entry point."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import logging.handlers
import os
import select
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .extension import cmd_install_extension
from .home import EXIT_LOCKED, EventLog, Paths, load_config, log, node_home
from .lock import (
    RunnerLocked,
    lock_holder,
    run_systemctl,
    running_pid,
    supervisor_of,
    systemctl_command,
    take_lock,
    write_lock_pid,
)
from .procs import cmdline_has, pid_alive, read_events, read_pid
from .session import attach
from .supervise import serve

# ---------------------------------------------------------------- commands


def _pipe_closed(fd: int) -> bool:
    readable, _, _ = select.select([fd], [], [], 0)
    return bool(readable) and os.read(fd, 1) == b""


def await_start(
    paths: Paths,
    cursor: int,
    gone: Callable[[], bool] | None = None,
    timeout: float = 20,
    grace: float = 0.3,
) -> int:
    """Wait for the runner started after event `cursor`: its pid once it is up (its
    `runner_started` pid in runner.pid, alive `grace` seconds on). A `runner_crashed` event, or
    the runner gone, is an error naming the crash."""
    deadline = time.monotonic() + timeout
    ready: int | None = None
    ready_at = 0.0

    def crashed() -> str | None:
        crashes = [
            e for e in read_events(paths.events, cursor) if e.get("kind") == "runner_crashed"
        ]
        return str(crashes[-1].get("detail")) if crashes else None

    while True:
        detail = crashed()
        if detail is None and (
            (gone is not None and gone()) or (ready is not None and not pid_alive(ready))
        ):
            detail = crashed() or f"it exited; see {paths.log}"
        if detail is not None:
            raise RuntimeError(f"the runner died at start: {detail}")
        if ready is None:
            started = {
                str(e.get("detail"))
                for e in read_events(paths.events, cursor)
                if e.get("kind") == "runner_started"
            }
            pid = read_pid(paths.runner_pid)
            if pid is not None and f"pid {pid}" in started and pid_alive(pid):
                ready, ready_at = pid, time.monotonic()
        elif time.monotonic() - ready_at >= grace:
            return ready
        if time.monotonic() >= deadline:
            raise RuntimeError(f"the runner did not start within {timeout:.0f}s; see {paths.log}")
        time.sleep(0.05)


def cmd_start(paths: Paths) -> dict[str, Any]:
    """Start the runner unless one runs. Under systemd through the unit; otherwise as a daemon
    that inherits this command's hold on runner.lock, so two `start` at once make one runner."""
    if supervisor_of(paths) == "systemd":
        return _start_systemd(paths)
    try:
        lock = take_lock(paths)
    except RunnerLocked:
        return {"started": False, "pid": running_pid(paths)}
    cursor = EventLog(paths.events).last_id()
    alive_r, alive_w = os.pipe()  # closes (EOF) when the daemon ends
    child = os.fork()
    if child > 0:
        os.close(alive_w)
        try:
            os.waitpid(child, 0)
            pid = await_start(paths, cursor, gone=lambda: _pipe_closed(alive_r))
        finally:
            os.close(alive_r)
            os.close(lock)  # the daemon's copy keeps runner.lock held
        return {"started": True, "pid": pid}
    # double fork so the runner outlives the SSH session that started it
    code = 1
    try:
        os.close(alive_r)
        os.setsid()
        if os.fork() > 0:
            os._exit(0)
        with contextlib.suppress(OSError):
            write_lock_pid(lock, os.getpid())
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        setup_logging(paths)
        code, _ = serve(paths)
    except BaseException:  # noqa: BLE001
        with contextlib.suppress(Exception):
            log.exception("runner failed")
    finally:
        os._exit(code)


def _start_systemd(paths: Paths) -> dict[str, Any]:
    held, _ = lock_holder(paths)
    if held:
        return {"started": False, "pid": running_pid(paths), "supervisor": "systemd"}
    cursor = EventLog(paths.events).last_id()
    done = run_systemctl("start")
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(systemctl_command('start'))} failed (exit {done.returncode}): "
            f"{(done.stderr or done.stdout).strip()[-300:]}"
        )
    return {"started": True, "pid": await_start(paths, cursor), "supervisor": "systemd"}


def cmd_stop(paths: Paths, timeout: float = 15) -> dict[str, Any]:
    result: dict[str, Any] = {"stopped": False}
    if supervisor_of(paths) == "systemd":
        before = running_pid(paths, timeout=0)
        done = run_systemctl("stop")
        result["supervisor"] = "systemd"
        if done.returncode != 0:
            result["systemctl_error"] = (done.stderr or done.stdout).strip()[-300:]
        if before is not None:
            result.update(stopped=True, pid=before)
    # what systemd did not stop: a runner started by hand, or one from before runner.lock
    held, _ = lock_holder(paths)
    if held:
        pid = running_pid(paths, timeout=2)
    else:
        legacy = read_pid(paths.runner_pid)
        pid = legacy if pid_alive(legacy) and cmdline_has(legacy, "runner.py") else None
    if pid is None or not pid_alive(pid):
        return result
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.1)
    if pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
    browser = read_pid(paths.browser_pid)
    if pid_alive(browser):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(browser, signal.SIGKILL)  # type: ignore[arg-type]
    result.update(stopped=True, pid=pid)
    return result


def cmd_restart_browser(paths: Paths, grace: float = 5) -> dict[str, Any]:
    browser = read_pid(paths.browser_pid)
    if not pid_alive(browser):
        return {"killed": False}
    assert browser is not None
    with contextlib.suppress(ProcessLookupError):
        os.killpg(browser, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and pid_alive(browser):
        time.sleep(0.1)
    forced = pid_alive(browser)
    if forced:  # a hung (or stopped) browser does not act on SIGTERM: end it
        with contextlib.suppress(ProcessLookupError):
            os.killpg(browser, signal.SIGKILL)
    return {"killed": True, "pid": browser, "forced": forced}


def cmd_login(paths: Paths) -> dict[str, Any]:
    config = load_config(paths)
    result = attach(paths, config, login="always")
    EventLog(paths.events).add("logged_in", "by request")
    runner = read_pid(paths.runner_pid)
    if runner is not None and pid_alive(runner):
        os.kill(runner, signal.SIGUSR1)  # let the runner refresh its status
    return {"logged_in": True, "popup": result.get("popup", {})}


# ---------------------------------------------------------------- entry


def setup_logging(paths: Paths) -> None:
    handler = logging.handlers.RotatingFileHandler(paths.log, maxBytes=1_000_000, backupCount=2)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def main(argv: list[str] | None = None, home: Path | None = None) -> int:
    parser = argparse.ArgumentParser(prog="runner.py")
    parser.add_argument(
        "command",
        choices=[
            "run",
            "start",
            "stop",
            "login",
            "restart-browser",
            "install-extension",
        ],
    )
    args = parser.parse_args(argv)
    paths = Paths(home or node_home())
    os.umask(0o077)
    if args.command == "run":
        try:
            take_lock(paths)  # held by its fd until this process ends
        except RunnerLocked as exc:  # before anything touches the browser or the profile
            print(json.dumps({"error": f"RunnerLocked: {exc}", "pid": exc.pid}))
            return EXIT_LOCKED
        setup_logging(paths)
        code, crash = serve(paths)
        if crash is not None:
            print(json.dumps({"error": f"the runner crashed: {crash}"}))
        return code
    try:
        if args.command == "start":
            result = cmd_start(paths)
        elif args.command == "stop":
            result = cmd_stop(paths)
        elif args.command == "login":
            result = cmd_login(paths)
        elif args.command == "restart-browser":
            result = cmd_restart_browser(paths)
        else:
            result = cmd_install_extension(paths)
    except Exception as exc:  # noqa: BLE001 - one JSON error line for the control plane
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return 1
    print(json.dumps(result))
    return 0
