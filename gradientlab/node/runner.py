"""The node runner: keeps one Chromium with the Sentry Node extension alive and logged in.

Shipped as this single file to every host and run there with a Python that has Playwright.
It imports only the standard library and (when it attaches to the browser) Playwright, because it
lives in a tight memory budget: Chromium runs on its own, and the Playwright driver is started
only to log in or read the popup, then stopped again.

    runner.py run                 supervise the browser (foreground; systemd runs this)
    runner.py start               `run` as a daemon, unless one is already running
    runner.py stop                stop the runner and its browser
    runner.py login               log in again through the dashboard page
    runner.py restart-browser     end the browser; the runner starts a new one
    runner.py install-extension   fetch the extension (CRX), unpack it, print JSON
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import io
import json
import logging
import logging.handlers
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

try:  # in the control plane, a package; on a host, two files side by side
    from gradientlab.node.facts import (  # noqa: F401 - read_events is re-exported
        now_iso,
        pid_alive,
        process_tree,
        pss_kib,
        read_events,
        read_pid,
    )
except ImportError:
    from facts import (  # type: ignore[no-redef]  # noqa: F401, I001
        now_iso,
        pid_alive,
        process_tree,
        pss_kib,
        read_events,
        read_pid,
    )

RUNNER_VERSION = "1"
HOME = Path(os.environ.get("GRADIENTLAB_NODE_HOME", Path(__file__).resolve().parent))
log = logging.getLogger("gradientlab.runner")


class Paths:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.config = home / "config.json"
        self.runner_pid = home / "runner.pid"
        self.browser_pid = home / "browser.pid"
        self.status = home / "status.json"
        self.events = home / "events.jsonl"
        self.log = home / "runner.log"
        self.chrome_log = home / "chrome.log"
        self.profile = home / "profile"
        self.extensions = home / "extension"
        self.current_extension = home / "extension" / "current"
        self.crx_cache = home / "extension-cache"


def load_config(paths: Paths) -> dict[str, Any]:
    with open(paths.config) as f:
        config: dict[str, Any] = json.load(f)
    return config


def write_json_atomic(path: Path, data: Any, mode: int = 0o644) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


# ---------------------------------------------------------------- events


class EventLog:
    """Append-only JSON lines; each event has an increasing id so the control plane can resume."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _last_id(self) -> int:
        try:
            with open(self.path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 4096))
                lines = f.read().splitlines()
            for line in reversed(lines):
                with contextlib.suppress(ValueError, KeyError):
                    return int(json.loads(line)["id"])
        except OSError:
            pass
        return 0

    def add(self, kind: str, detail: str = "") -> None:
        # The runner and one-shot commands (login) append to one file: take the next id under
        # a lock, from the file itself, so ids never repeat.
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            event = {"id": self._last_id() + 1, "at": now_iso(), "kind": kind, "detail": detail}
            with open(self.path, "a+b") as f:
                f.seek(0, os.SEEK_END)
                if f.tell():
                    f.seek(f.tell() - 1)
                    if f.read(1) != b"\n":
                        f.write(b"\n")  # end a line a crash cut short
                f.write(json.dumps(event).encode() + b"\n")
            self._trim()
        log.info("event %s %s", kind, detail)

    def _trim(self, keep: int = 500) -> None:
        if self.path.stat().st_size < 256 * 1024:
            return
        lines = self.path.read_text().splitlines()[-keep:]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, self.path)


# ---------------------------------------------------------------- browser


def chromium_flags(config: dict[str, Any], paths: Paths) -> list[str]:
    ext = str(paths.current_extension.resolve())
    flags = [
        "--headless=new",
        f"--user-data-dir={paths.profile}",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
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


def devtools_port(profile: Path) -> int | None:
    try:
        first = (profile / "DevToolsActivePort").read_text().splitlines()[0]
        return int(first)
    except (OSError, ValueError, IndexError):
        return None


class Browser:
    def __init__(self, config: dict[str, Any], paths: Paths) -> None:
        self.config = config
        self.paths = paths
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at: str | None = None

    def launch(self, timeout: float = 30) -> None:
        self.paths.profile.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            (self.paths.profile / "DevToolsActivePort").unlink()
        if not self.paths.current_extension.exists():
            raise RuntimeError(
                f"no extension at {self.paths.current_extension}; run install-extension"
            )
        self.forget_stale_service_worker()
        args = [
            self.config.get("chromium", "/usr/bin/chromium"),
            *chromium_flags(self.config, self.paths),
        ]
        args.append("about:blank")
        chrome_log = open(self.paths.chrome_log, "wb")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=chrome_log,
            stderr=chrome_log,
            start_new_session=True,
        )
        chrome_log.close()
        self.paths.browser_pid.write_text(str(self.proc.pid))
        self.started_at = now_iso()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"chromium exited with {self.proc.returncode} at start; "
                    f"see {self.paths.chrome_log}"
                )
            if devtools_port(self.paths.profile):
                return
            time.sleep(0.1)
        raise RuntimeError(f"chromium did not open its DevTools port in {timeout:.0f}s")

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
        with contextlib.suppress(OSError):
            self.paths.browser_pid.unlink()


# ---------------------------------------------------------------- attached work (Playwright)

POPUP_FIELDS = {
    "status": "#status",
    "node_id": "#node-id",
    "ip": "#ip",
    "version": "#version",
    "taps_today": "#taps-today",
    "uptime_today": "#uptime-today",
    "points_today": "#points-today",
    "banned_reason": "#banned-reason",
    "error": "#error",
}


def attach(paths: Paths, config: dict[str, Any], login: str = "if-needed") -> dict[str, Any]:
    """Attach to the running browser, log in when needed, read the popup, detach.

    login: "if-needed" logs in when the popup says Logged out; "always" logs in first."""
    from playwright.sync_api import sync_playwright

    port = devtools_port(paths.profile)
    if port is None:
        raise RuntimeError("the browser is not running (no DevTools port)")
    result: dict[str, Any] = {"logged_in_now": False}
    with sync_playwright() as pw:
        browser = pw.chromium.connect_over_cdp(f"http://127.0.0.1:{port}", timeout=15000)
        try:
            context = browser.contexts[0]
            ext_id = find_extension_id(context, config)
            result["extension_id"] = ext_id
            if login == "always":
                dashboard_login(context, config)
                result["logged_in_now"] = True
            popup = read_popup(context, ext_id)
            if popup.get("status") == "Logged out" and login == "if-needed":
                dashboard_login(context, config)
                result["logged_in_now"] = True
                popup = read_popup(context, ext_id, wait_for_status=True)
            result["popup"] = popup
            # an open page costs ~40 MiB: leave only the extension's own worker running
            for page in context.pages:
                if page.url in ("about:blank", ""):
                    with contextlib.suppress(Exception):
                        page.close()
        finally:
            browser.close()  # over CDP this detaches; Chromium keeps running
    return result


def find_extension_id(context: Any, config: dict[str, Any]) -> str:
    """The loaded extension's id, read from its service worker URL."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for worker in context.service_workers:
            m = re.match(r"chrome-extension://([a-p]{32})/", worker.url)
            if m:
                found = m.group(1)
                wanted = config.get("extension_id")
                if wanted and found != wanted:
                    raise RuntimeError(
                        f"the loaded extension has id {found}, not the configured {wanted}: "
                        "the dashboard could not hand it the session"
                    )
                return found
        with contextlib.suppress(Exception):
            context.wait_for_event("serviceworker", timeout=1000)
    raise RuntimeError("the extension's service worker did not start within 10s")


def dashboard_login(context: Any, config: dict[str, Any]) -> None:
    page = context.new_page()
    try:
        page.goto(config["dashboard_url"], wait_until="domcontentloaded", timeout=30000)
        page.fill("input[name=email]", config["email"])
        page.fill("input[name=password]", config["password"])
        page.click("button[type=submit]")
        page.wait_for_selector("#login-status[data-state]", timeout=30000)
        state = page.get_attribute("#login-status", "data-state")
        if state != "ok":
            raise RuntimeError(f"dashboard login failed: {page.inner_text('#login-status')}")
    finally:
        page.close()


def read_popup(context: Any, ext_id: str, wait_for_status: bool = False) -> dict[str, Any]:
    page = context.new_page()
    try:
        page.goto(f"chrome-extension://{ext_id}/popup.html", timeout=30000)
        dismissed = False
        button = page.get_by_role("button", name="I got it")
        with contextlib.suppress(Exception):
            if button.is_visible(timeout=500):
                button.click()
                dismissed = True
        deadline = time.monotonic() + (20 if wait_for_status else 0)
        while True:
            page.wait_for_selector("body[data-ready='1']", timeout=20000)
            popup = {
                k: page.inner_text(sel).strip()
                for k, sel in POPUP_FIELDS.items()
                if page.query_selector(sel)
            }
            if not wait_for_status or popup.get("status") == "Good" or time.monotonic() > deadline:
                break
            time.sleep(1)
            page.reload()
        popup["first_run_dismissed"] = dismissed
        return popup
    finally:
        page.close()


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
        self.refresh_requested = False
        self.attach_failures = 0

    def write_status(self, **changes: Any) -> None:
        self.status.update(changes)
        self.status.update(
            runner_pid=os.getpid(),
            runner_version=RUNNER_VERSION,
            browser_pid=self.browser.proc.pid
            if self.browser.alive() and self.browser.proc
            else None,
            browser_started_at=self.browser.started_at,
            browser_restarts=self.browser_restarts,
            # measured here, so that the health probe itself stays a few shell builtins
            pss_kib=pss_kib(
                process_tree(
                    [
                        os.getpid(),
                        *(
                            [self.browser.proc.pid]
                            if self.browser.alive() and self.browser.proc
                            else []
                        ),
                    ]
                )
            ),
            updated_at=now_iso(),
        )
        write_json_atomic(self.paths.status, self.status)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGUSR1, self._on_refresh)
        self.paths.runner_pid.write_text(str(os.getpid()))
        # a fresh status: what an earlier runner saw must not pass for this browser's state
        self.write_status(browser_alive=False)
        self.events.add("runner_started", f"pid {os.getpid()}")
        check = float(self.config.get("browser_check_seconds", 2))
        interval = float(self.config.get("status_interval_seconds", 60))
        try:
            while not self.stopping:
                if not self.browser.alive():
                    if self.browser.proc is not None:
                        self.browser_restarts += 1
                        self.events.add("browser_exited", f"exit code {self.browser.exit_code()}")
                        self.browser.reap()
                    self.start_browser()
                elif self.refresh_requested or time.monotonic() - self.last_attach >= interval:
                    self.refresh_requested = False
                    self.refresh()
                self._sleep(check)
        finally:
            self.browser.stop()
            self.events.add("runner_stopped")
            self.write_status(browser_alive=False)
            with contextlib.suppress(OSError):
                self.paths.runner_pid.unlink()
        return 0

    def start_browser(self) -> None:
        if clear_stale_singleton_lock(self.paths.profile):
            self.events.add("stale_lock_cleared")
        try:
            self.browser.launch()
        except Exception as exc:  # noqa: BLE001 - reported, retried on the next loop
            self.events.add("browser_start_failed", str(exc))
            self.write_status(browser_alive=False, last_error=str(exc))
            self._sleep(5)
            return
        self.events.add(
            "browser_started", f"pid {self.browser.proc.pid if self.browser.proc else '?'}"
        )
        self.write_status(browser_alive=True)
        self.refresh()

    def refresh(self) -> None:
        self.last_attach = time.monotonic()
        try:
            result = attach(self.paths, self.config)
        except Exception as exc:  # noqa: BLE001
            self.attach_failures += 1
            self.write_status(browser_alive=self.browser.alive(), last_error=f"attach: {exc}")
            log.warning("attach failed: %s", exc)
            return
        self.attach_failures = 0
        if result.get("logged_in_now"):
            self.events.add("logged_in")
        popup = result.get("popup", {})
        previous = self.status.get("popup", {}).get("status")
        self.write_status(
            browser_alive=True,
            extension_id=result.get("extension_id"),
            extension_version=popup.get("version"),
            logged_in=popup.get("status") not in (None, "Logged out"),
            popup=popup,
            popup_read_at=now_iso(),
            last_error=None,
        )
        if popup.get("status") != previous:
            self.events.add("popup_status", str(popup.get("status")))

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


# ---------------------------------------------------------------- commands


def cmd_start(paths: Paths) -> dict[str, Any]:
    pid = read_pid(paths.runner_pid)
    if pid_alive(pid):
        return {"started": False, "pid": pid}
    # double fork so the runner outlives the SSH session that started it
    if os.fork() > 0:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pid = read_pid(paths.runner_pid)
            if pid_alive(pid):
                return {"started": True, "pid": pid}
            time.sleep(0.05)
        raise RuntimeError(f"the runner did not start; see {paths.log}")
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    setup_logging(paths)
    try:
        code = Runner(paths).run()
    except Exception:  # noqa: BLE001
        log.exception("runner crashed")
        code = 1
    os._exit(code)


def cmd_stop(paths: Paths, timeout: float = 15) -> dict[str, Any]:
    pid = read_pid(paths.runner_pid)
    if not pid_alive(pid):
        return {"stopped": False}
    assert pid is not None
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
    return {"stopped": True, "pid": pid}


def cmd_restart_browser(paths: Paths) -> dict[str, Any]:
    browser = read_pid(paths.browser_pid)
    if not pid_alive(browser):
        return {"killed": False}
    assert browser is not None
    with contextlib.suppress(ProcessLookupError):
        os.killpg(browser, signal.SIGTERM)
    return {"killed": True, "pid": browser}


def cmd_login(paths: Paths) -> dict[str, Any]:
    config = load_config(paths)
    result = attach(paths, config, login="always")
    EventLog(paths.events).add("logged_in", "by request")
    runner = read_pid(paths.runner_pid)
    if runner is not None and pid_alive(runner):
        os.kill(runner, signal.SIGUSR1)  # let the runner refresh its status
    return {"logged_in": True, "popup": result.get("popup", {})}


# ---------------------------------------------------------------- extension install


def _protobuf_fields(data: bytes) -> list[tuple[int, bytes]]:
    """Length-delimited fields of a protobuf message (enough to read a CRX3 header)."""
    out = []
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        field, wire = key >> 3, key & 7
        if wire == 2:
            length, i = _varint(data, i)
            out.append((field, data[i : i + length]))
            i += length
        elif wire == 0:
            _, i = _varint(data, i)
        elif wire == 5:
            i += 4
        elif wire == 1:
            i += 8
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
    return out


def _varint(data: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = data[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def extension_id_of_key(der: bytes) -> str:
    digest = hashlib.sha256(der).hexdigest()[:32]
    return "".join(chr(ord("a") + int(c, 16)) for c in digest)


def unpack_crx(data: bytes) -> tuple[bytes, bytes | None]:
    """Split a CRX file into its zip and the public key matching its id (CRX3) or key (CRX2)."""
    if data[:4] != b"Cr24":
        if data[:2] == b"PK":
            return data, None  # a plain zip
        raise ValueError("not a CRX file (no Cr24 magic)")
    version = struct.unpack("<I", data[4:8])[0]
    if version == 2:
        key_len, sig_len = struct.unpack("<II", data[8:16])
        key = data[16 : 16 + key_len]
        return data[16 + key_len + sig_len :], key
    if version != 3:
        raise ValueError(f"unsupported CRX version {version}")
    header_len = struct.unpack("<I", data[8:12])[0]
    header = data[12 : 12 + header_len]
    zip_bytes = data[12 + header_len :]
    keys: list[bytes] = []
    crx_id: bytes | None = None
    for field, value in _protobuf_fields(header):
        if field in (2, 3):  # AsymmetricKeyProof: public_key = 1
            keys.extend(v for f, v in _protobuf_fields(value) if f == 1)
        elif field == 10000:  # SignedData: crx_id = 1
            crx_id = next((v for f, v in _protobuf_fields(value) if f == 1), None)
    for key in keys:
        if crx_id is None or hashlib.sha256(key).digest()[:16] == crx_id:
            return zip_bytes, key
    return zip_bytes, None


def _check_crx(data: bytes, url: str) -> None:
    try:
        zip_bytes, _ = unpack_crx(data)
        with zipfile.ZipFile(io.BytesIO(zip_bytes)) as archive:
            archive.getinfo("manifest.json")
    except (ValueError, KeyError, zipfile.BadZipFile, struct.error, IndexError) as exc:
        raise ValueError(f"{url} did not answer with an extension package: {exc}") from None


def chromium_version(chromium: str) -> str:
    out = subprocess.run([chromium, "--version"], capture_output=True, text=True, timeout=30)
    m = re.search(r"(\d+\.\d+\.\d+\.\d+)", out.stdout)
    return m.group(1) if m else "137.0.0.0"


def cmd_install_extension(paths: Paths) -> dict[str, Any]:
    """Fetch the CRX by id (one cached copy), unpack it, point `current` at it."""
    import base64

    config = load_config(paths)
    ext_id = config["extension_id"]
    url = config["extension_source"].format(
        chromium_version=chromium_version(config.get("chromium", "/usr/bin/chromium")),
        extension_id=ext_id,
    )
    paths.crx_cache.mkdir(parents=True, exist_ok=True)
    cached = paths.crx_cache / f"{ext_id}.crx"
    fetched = True
    try:
        with urllib.request.urlopen(url, timeout=60) as answer:  # noqa: S310 - the fleet's URL
            data = answer.read()
        _check_crx(data, url)  # an error page must not replace the good cached copy
        tmp = cached.with_suffix(".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, cached)
    except (OSError, ValueError) as exc:
        if not cached.exists():
            raise RuntimeError(f"could not download the extension from {url}: {exc}") from None
        data = cached.read_bytes()
        fetched = False
    zip_bytes, key = unpack_crx(data)
    with zipfile.ZipFile(io.BytesIO(zip_bytes)) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        version = str(manifest["version"])
        # digest the files, not the archive: a rebuilt zip of the same files is no change
        content = hashlib.sha256()
        for name in sorted(archive.namelist()):
            content.update(name.encode() + b"\0" + archive.read(name) + b"\0")
        digest = content.hexdigest()
        target = paths.extensions / version
        marker = target / ".gradientlab-sha256"
        changed = not (marker.exists() and marker.read_text() == digest)
        if changed:
            staging = paths.extensions / f".{version}.staging"
            shutil.rmtree(staging, ignore_errors=True)
            archive.extractall(staging)
            if "key" not in manifest and key is not None:
                # the store's key keeps the unpacked extension's id equal to the store id
                manifest["key"] = base64.b64encode(key).decode()
                (staging / "manifest.json").write_text(json.dumps(manifest, indent=1))
            (staging / ".gradientlab-sha256").write_text(digest)
            shutil.rmtree(target, ignore_errors=True)
            os.replace(staging, target)
    loaded_key = json.loads((target / "manifest.json").read_text()).get("key")
    loaded_id = extension_id_of_key(base64.b64decode(loaded_key)) if loaded_key else None
    current = paths.current_extension
    if not current.is_symlink() or os.readlink(current) != version:
        tmp_link = paths.extensions / ".current.tmp"
        with contextlib.suppress(OSError):
            tmp_link.unlink()
        os.symlink(version, tmp_link)
        os.replace(tmp_link, current)
        changed = True
    for old in paths.extensions.iterdir():
        if old.is_dir() and not old.is_symlink() and old.name not in (version,):
            shutil.rmtree(old, ignore_errors=True)
    return {
        "version": version,
        "changed": changed,
        "fetched": fetched,
        "extension_id": loaded_id,
        "path": str(target),
    }


# ---------------------------------------------------------------- entry


def setup_logging(paths: Paths) -> None:
    handler = logging.handlers.RotatingFileHandler(paths.log, maxBytes=1_000_000, backupCount=2)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
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
    paths = Paths(HOME)
    os.umask(0o077)
    try:
        if args.command == "run":
            setup_logging(paths)
            return Runner(paths).run()
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


if __name__ == "__main__":
    sys.exit(main())
