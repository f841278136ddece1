"""Supervision: the runner's loop that keeps the browser alive and the status current."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from typing import Any

from .browser import Browser, clear_stale_singleton_lock
from .home import RUNNER_VERSION, EventLog, Paths, load_config, log, write_json_atomic
from .pages import SETTLED_STATES, PageChanged, PopupState
from .procs import cmdline_has, iso_in, now_iso, pid_alive, process_tree, pss_kib, read_pid
from .session import LoginFailed, attach

# ---------------------------------------------------------------- supervision


class Runner:
    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self.config = load_config(paths)
        self.events = EventLog(paths.events)
        self.browser = Browser(self.config, paths)
        self.stopping = False
        self.status: dict[str, Any] = {}
        self.browser_restarts = 0
        self.last_attach = 0.0
        self.settle_until = 0.0  # until then, read the popup every settle_poll_seconds
        self.refresh_requested = False
        self.attach_failures = 0
        # after a refused sign-in the runner waits before it signs in again by itself (5 min,
        # doubling to an hour): a changed password must not become thousands of refused
        # sign-ins an hour across a fleet; the health flow's login step still asks it to
        self.login_failures = 0
        self.login_retry_at = 0.0

    def write_status(self, **changes: Any) -> None:
        self.status.update(changes)
        browser_pid = self.browser.proc.pid if self.browser.alive() and self.browser.proc else None
        # measured here, so that the health probe itself stays a few shell builtins
        browser_tree = process_tree([browser_pid]) if browser_pid else []
        in_browser = set(browser_tree)
        runner_tree = [p for p in process_tree([os.getpid()]) if p not in in_browser]
        runner_pss = pss_kib(runner_tree)
        browser_pss = pss_kib(browser_tree) if browser_tree else None
        total = (
            None
            if runner_pss is None and browser_pss is None
            else (runner_pss or 0) + (browser_pss or 0)
        )
        self.status.update(
            runner_pid=os.getpid(),
            runner_version=RUNNER_VERSION,
            browser_pid=browser_pid,
            browser_started_at=self.browser.started_at,
            browser_restarts=self.browser_restarts,
            pss_kib=total,  # the runner and its browser together
            runner_pss_kib=runner_pss,  # the runner (and a Playwright driver while attached)
            browser_pss_kib=browser_pss,
            updated_at=now_iso(),
        )
        write_json_atomic(self.paths.status, self.status)

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGUSR1, self._on_refresh)

    def run(self) -> int:
        """Supervise until stopped. An exception escapes to `serve`, which reports the crash."""
        self.paths.runner_pid.write_text(str(os.getpid()))
        try:
            # a fresh status: what an earlier runner saw must not pass for this browser's state;
            # it says a browser is being launched, so a probe now reads Starting, not BrowserDown
            self.write_status(browser_alive=False, browser_launching_at=now_iso())
            self.end_orphan_browser()
            check = float(self.config.get("browser_check_seconds", 2))
            while not self.stopping:
                if not self.browser.alive():
                    if self.browser.proc is not None:
                        self.browser_restarts += 1
                        self.events.add("browser_exited", f"exit code {self.browser.exit_code()}")
                        self.browser.reap()
                    self.start_browser()
                elif self.refresh_requested or self.read_due_in() <= 0:
                    self.refresh_requested = False
                    self.refresh()
                self._sleep(min(check, max(0.0, self.read_due_in())))
        finally:
            self.browser.stop()
            with contextlib.suppress(OSError):
                self.paths.runner_pid.unlink()
        self.events.add("runner_stopped")
        self.write_status(browser_alive=False)
        return 0

    def read_due_in(self) -> float:
        """Seconds until the popup is read again: every few seconds while the node settles
        after a browser start, else every status interval."""
        now = time.monotonic()
        if now < self.settle_until:
            interval = float(self.config.get("settle_poll_seconds", 2))
        else:
            interval = float(self.config.get("status_interval_seconds", 60))
        return self.last_attach + interval - now

    def end_orphan_browser(self) -> None:
        """A runner killed hard leaves its browser on the profile; this runner holds
        runner.lock, so a browser still running on this profile is nobody's: end it."""
        pid = read_pid(self.paths.browser_pid)
        if pid is None or not pid_alive(pid):
            return
        if not cmdline_has(pid, f"--user-data-dir={self.paths.profile}"):
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.events.add("orphan_browser_ended", f"pid {pid}")

    def start_browser(self) -> None:
        if clear_stale_singleton_lock(self.paths.profile):
            self.events.add("stale_lock_cleared")
        if not self.status.get("browser_launching_at"):
            self.write_status(browser_alive=False, browser_launching_at=now_iso())
        try:
            self.browser.launch()
        except Exception as exc:  # noqa: BLE001 - reported, retried on the next loop
            # the status first: whoever sees the event finds the error already there
            self.write_status(browser_alive=False, browser_launching_at=None, last_error=str(exc))
            self.events.add("browser_start_failed", str(exc))
            self._sleep(5)
            return
        self.events.add(
            "browser_started", f"pid {self.browser.proc.pid if self.browser.proc else '?'}"
        )
        # read the new browser's state now, then every few seconds until it settles; until then
        # (on this host's clock) a popup that is not settled yet is the extension still connecting
        settle = float(self.config.get("settle_timeout_seconds", 60))
        self.settle_until = time.monotonic() + settle
        self.write_status(
            browser_alive=True, browser_launching_at=None, settling_until=iso_in(settle)
        )
        self.refresh()

    def refresh(self) -> None:
        try:
            login = "if-needed" if time.monotonic() >= self.login_retry_at else "never"
            result = attach(self.paths, self.config, login=login)
        except PageChanged as exc:
            # not the browser's fault: restarting it would not help; the health check alerts
            self.last_attach = time.monotonic()
            if self.status.get("page_changed") != str(exc):
                self.events.add("page_changed", str(exc))
            self.write_status(
                browser_alive=self.browser.alive(),
                page_changed=str(exc),
                page_changed_at=now_iso(),
                last_error=f"attach: {exc}",
            )
            log.warning("%s", exc)
            return
        except LoginFailed as exc:
            # what the popup read stands (Logged out), not the last state it had before
            self.last_attach = time.monotonic()
            self.attach_failures += 1
            if self.status.get("popup", {}).get("status") != exc.popup.get("status"):
                self.events.add("popup_status", str(exc.popup.get("status")))
            self.events.add("login_failed", str(exc)[:300])
            self.login_failures += 1
            self.login_retry_at = time.monotonic() + min(
                3600.0, 300.0 * 2 ** (self.login_failures - 1)
            )
            self.write_status(
                browser_alive=self.browser.alive(),
                logged_in=False,
                popup=exc.popup,
                popup_read_at=now_iso(),
                last_error=f"login: {exc}",
            )
            log.warning("login failed: %s", exc)
            return
        except Exception as exc:  # noqa: BLE001
            self.last_attach = time.monotonic()
            self.attach_failures += 1
            self.write_status(browser_alive=self.browser.alive(), last_error=f"attach: {exc}")
            log.warning("attach failed: %s", exc)
            return
        self.last_attach = time.monotonic()
        self.attach_failures = 0
        if result.get("logged_in_now") or result.get("popup", {}).get("status") not in (
            None,
            PopupState.LOGGED_OUT,
        ):
            self.login_failures, self.login_retry_at = 0, 0.0  # signed in again
            self.events.add("logged_in")
        popup = result.get("popup", {})
        previous = self.status.get("popup", {}).get("status")
        self.write_status(
            browser_alive=True,
            extension_id=result.get("extension_id"),
            extension_version=popup.get("version"),
            logged_in=popup.get("status") not in (None, PopupState.LOGGED_OUT),
            popup=popup,
            popup_read_at=now_iso(),
            page_changed=None,
            last_error=None,
        )
        if popup.get("status") != previous:
            self.events.add("popup_status", str(popup.get("status")))
        if popup.get("status") in SETTLED_STATES and self.settle_until:
            self.settle_until = 0.0
            self.write_status(settling_until=None)

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < end:
            if self.browser.proc is not None and self.browser.proc.poll() is not None:
                return
            if self.refresh_requested:
                return
            time.sleep(min(0.2, max(0.0, end - time.monotonic())))

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stopping = True

    def _on_refresh(self, signum: int, frame: Any) -> None:
        self.refresh_requested = True  # read the popup on the next loop


def serve(paths: Paths) -> tuple[int, str | None]:
    """Be the runner (the caller holds runner.lock): `runner_started`, then supervise. When it
    dies of an exception: a `runner_crashed` event and status.json's last_error, exit code 1."""
    events = EventLog(paths.events)
    runner: Runner | None = None
    try:
        events.add("runner_started", f"pid {os.getpid()}")
        runner = Runner(paths)
        runner.install_signal_handlers()
        return runner.run(), None
    except Exception as exc:  # noqa: BLE001 - reported, then the process ends
        detail = f"{type(exc).__name__}: {exc}"
        log.exception("runner crashed")
        with contextlib.suppress(Exception):
            events.add("runner_crashed", detail)
        with contextlib.suppress(Exception):
            if runner is not None:
                runner.write_status(browser_alive=False, last_error=detail)
            else:
                write_json_atomic(
                    paths.status,
                    {
                        "runner_pid": os.getpid(),
                        "runner_version": RUNNER_VERSION,
                        "browser_alive": False,
                        "browser_pid": None,
                        "last_error": detail,
                        "updated_at": now_iso(),
                    },
                )
        return 1, detail
