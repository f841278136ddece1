"""The node runner: keeps one Chromium with the Sentry Node extension alive and logged in.

Shipped as this single file to every host and run there with a Python that has Playwright.
It imports only the standard library and (when it attaches to the browser) Playwright, because it
lives in a tight memory budget: Chromium runs on its own, and the Playwright driver is started
only to log in or read the popup, then stopped again.

    runner.py run                 supervise the browser (foreground; systemd runs this)
    runner.py start               `run` as a daemon, unless one is already running (under
                                  systemd: `systemctl --user start gradientlab-node.service`)
    runner.py stop                stop the runner and its browser
    runner.py login               log in again through the dashboard page
    runner.py restart-browser     end the browser; the runner starts a new one
    runner.py install-extension   fetch the extension (CRX), unpack it, print JSON

One runner per host: `run` holds an exclusive flock on runner.lock (which names its pid) for its
whole life; a second one refuses before it touches the browser or the profile.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import hashlib
import io
import json
import logging
import logging.handlers
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

try:  # in the control plane, a package; on a host, two files side by side
    from gradientlab.node import pages
    from gradientlab.node.facts import (  # noqa: F401 - read_events is re-exported
        cmdline_has,
        now_iso,
        pid_alive,
        process_tree,
        pss_kib,
        read_events,
        read_pid,
    )
except ImportError:
    from facts import (  # type: ignore[no-redef]  # noqa: F401, I001
        cmdline_has,
        now_iso,
        pid_alive,
        process_tree,
        pss_kib,
        read_events,
        read_pid,
    )
    import pages  # type: ignore[no-redef]

RUNNER_VERSION = "4"  # 4: DevTools over a pipe and a private socket, no TCP port
UNIT_NAME = "gradientlab-node.service"  # the systemd user unit deploy writes
EXIT_LOCKED = 3  # `run` while another runner holds runner.lock
# popup states after which the runner stops re-reading the popup every few seconds
SETTLED = ("Good", "Excellent", "Unsupported", "Logged out")
HOME = Path(os.environ.get("GRADIENTLAB_NODE_HOME", Path(__file__).resolve().parent))
log = logging.getLogger("gradientlab.runner")


class Paths:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.config = home / "config.json"
        self.runner_pid = home / "runner.pid"
        self.lock = home / "runner.lock"
        self.browser_pid = home / "browser.pid"
        self.status = home / "status.json"
        self.events = home / "events.jsonl"
        self.events_id = home / "events.id"
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
    """Append-only JSON lines; each event has an increasing id so the control plane can resume.

    events.id beside the log names this log: a random id made whenever the log starts afresh (a
    new install, a deleted file), so a control plane that keeps (log id, cursor) knows when ids
    start again from 1."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.id_path = path.with_suffix(".id")

    def log_id(self) -> str | None:
        try:
            return self.id_path.read_text().strip() or None
        except OSError:
            return None

    def _ensure_id(self, fresh: bool) -> None:
        """Under the log's lock: a new id when the log is new, or when there is none yet."""
        if not fresh and self.log_id():
            return
        tmp = self.id_path.with_suffix(".id.tmp")
        try:
            tmp.write_text(uuid.uuid4().hex + "\n")
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.id_path)
        except OSError as exc:  # a full disk: the event may still fit; the next add tries again
            log.warning("could not write %s: %s", self.id_path, exc)

    def last_id(self) -> int:
        return self._last_id()

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
            self._ensure_id(fresh=not self.path.exists())
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


def devtools_socket(paths: Paths) -> Path:
    """Where the runner offers the browser's DevTools: a Unix socket only its user can open. A
    socket's path is limited to 107 bytes; a longer home gets a private folder under /tmp."""
    path = paths.home / "devtools.sock"
    if len(str(path)) < 100:
        return path
    digest = hashlib.sha256(str(paths.home.resolve()).encode()).hexdigest()[:12]
    return Path(f"/tmp/gradientlab-{os.getuid()}-{digest}") / "devtools.sock"


def devtools_endpoint(paths: Paths) -> str | None:
    """The WebSocket URL Playwright connects to (`ws+unix://`), or None without a browser."""
    path = devtools_socket(paths)
    return f"ws+unix://{path}:/devtools/browser" if path.is_socket() else None


class DevToolsBridge:
    """Carries DevTools messages between Chromium's `--remote-debugging-pipe` (NUL-terminated
    JSON on two pipes the runner holds) and one WebSocket client at a time on a Unix socket
    that only the runner's user may open (mode 0600). When a client leaves, the sessions it
    attached are detached, as Chromium does itself when a DevTools WebSocket closes."""

    WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
    OWN_IDS = 1_000_000_000  # ids of the bridge's own commands; clients count from 1

    def __init__(self, path: Path, to_browser: int, from_browser: int) -> None:
        self.path = path
        self.to_browser = to_browser
        self.from_browser = from_browser
        self.server: socket.socket | None = None
        self.client: socket.socket | None = None
        self.sessions: set[str] = set()
        self.stopping = False
        self.answered: set[int] = set()
        self.next_id = self.OWN_IDS
        self.write_lock = threading.Lock()
        self.state_lock = threading.Lock()
        self.changed = threading.Condition(self.state_lock)

    def start(self) -> None:
        folder = self.path.parent
        if folder != folder.parent and not folder.exists():
            folder.mkdir(mode=0o700, parents=True)
        info = folder.stat()
        if info.st_uid != os.getuid() or (
            folder.name.startswith("gradientlab-") and info.st_mode & 0o077
        ):
            raise RuntimeError(f"{folder} must belong to this user only, for the DevTools socket")
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # the socket is born 0600: no moment open to others
        try:
            server.bind(str(self.path))
        finally:
            os.umask(old_umask)
        server.listen(4)
        server.settimeout(0.5)
        self.server = server
        for target in (self._pump_from_browser, self._serve):
            threading.Thread(target=target, daemon=True).start()

    def stop(self) -> None:
        self.stopping = True
        for sock in (self.server, self.client):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
        with contextlib.suppress(OSError):
            self.path.unlink()
        for fd in (self.to_browser, self.from_browser):
            with contextlib.suppress(OSError):
                os.close(fd)
        with self.changed:
            self.changed.notify_all()

    def command(self, method: str, params: dict[str, Any] | None = None) -> int:
        with self.state_lock:
            self.next_id += 1
            ident = self.next_id
        self._send({"id": ident, "method": method, "params": params or {}})
        return ident

    def wait_answer(self, ident: int, timeout: float, alive: Callable[[], bool]) -> bool:
        deadline = time.monotonic() + timeout
        with self.changed:
            while ident not in self.answered:
                left = deadline - time.monotonic()
                if left <= 0 or self.stopping or not alive():
                    return False
                self.changed.wait(min(left, 0.1))
            return True

    def _send(self, message: dict[str, Any] | bytes) -> None:
        data = message if isinstance(message, bytes) else json.dumps(message).encode()
        data += b"\0"
        with self.write_lock:
            while data:
                data = data[os.write(self.to_browser, data) :]

    def _pump_from_browser(self) -> None:
        try:
            self._pump()
        finally:
            # the browser is gone: its client must hear it now, as it would from a DevTools
            # WebSocket that Chromium closes, not wait out its own timeouts
            with self.state_lock:
                client = self.client
            if client is not None:
                with contextlib.suppress(OSError):
                    client.shutdown(socket.SHUT_RDWR)

    def _pump(self) -> None:
        pending = b""
        while not self.stopping:
            try:
                chunk = os.read(self.from_browser, 1 << 16)
            except OSError:
                return
            if not chunk:
                return  # the browser is gone
            pending += chunk
            *messages, pending = pending.split(b"\0")
            for raw in messages:
                self._from_browser(raw)

    def _from_browser(self, raw: bytes) -> None:
        try:
            message = json.loads(raw)
        except ValueError:
            return
        ident = message.get("id")
        if isinstance(ident, int) and ident > self.OWN_IDS:
            with self.changed:
                self.answered.add(ident)
                self.changed.notify_all()
            return
        method, params = message.get("method"), message.get("params") or {}
        with self.state_lock:
            if method == "Target.attachedToTarget":
                self.sessions.add(str(params.get("sessionId")))
            elif method == "Target.detachedFromTarget":
                self.sessions.discard(str(params.get("sessionId")))
            client = self.client
        if client is not None:
            with contextlib.suppress(OSError):
                _ws_send(client, raw)

    def _serve(self) -> None:
        while not self.stopping and self.server is not None:
            try:
                client, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                client.settimeout(10)
                _ws_handshake(client, self.WS_GUID)
                client.settimeout(None)
                with self.state_lock:
                    self.client = client
                while not self.stopping:
                    message = _ws_receive(client)
                    if message is None:
                        break
                    self._send(message)
            except (OSError, EOFError, ValueError):
                pass
            finally:
                with self.state_lock:
                    self.client = None
                    left_attached, self.sessions = self.sessions, set()
                with contextlib.suppress(OSError):
                    client.close()
            with contextlib.suppress(OSError):
                self._forget_client(left_attached)

    def _forget_client(self, sessions: set[str]) -> None:
        """What a closing DevTools WebSocket undoes in Chromium: its sessions and watches."""
        if self.stopping:
            return
        self.command("Target.setAutoAttach", {"autoAttach": False, "waitForDebuggerOnStart": False})
        self.command("Target.setDiscoverTargets", {"discover": False})
        for session in sessions:
            self.command("Target.detachFromTarget", {"sessionId": session})


def _ws_handshake(client: socket.socket, guid: str) -> None:
    request = b""
    while b"\r\n\r\n" not in request:
        chunk = client.recv(4096)
        if not chunk or len(request) > 65536:
            raise EOFError("no WebSocket request")
        request += chunk
    headers = {}
    for line in request.decode("latin-1").split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    key = headers.get("sec-websocket-key")
    if not key:
        raise ValueError("not a WebSocket request")
    accept = base64.b64encode(hashlib.sha1((key + guid).encode()).digest()).decode()
    client.sendall(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        + f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
    )


def _recv_exact(client: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = client.recv(n - len(data))
        if not chunk:
            raise EOFError("the DevTools client went away")
        data += chunk
    return data


def _ws_receive(client: socket.socket) -> bytes | None:
    """One whole message from the client (continuations joined); None when it closes."""
    parts: list[bytes] = []
    while True:
        first, second = _recv_exact(client, 2)
        opcode, length = first & 0x0F, second & 0x7F
        if length == 126:
            (length,) = struct.unpack(">H", _recv_exact(client, 2))
        elif length == 127:
            (length,) = struct.unpack(">Q", _recv_exact(client, 8))
        mask = _recv_exact(client, 4) if second & 0x80 else bytes(4)
        payload = _recv_exact(client, length)
        if any(mask):
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        if opcode == 0x8:
            return None
        if opcode == 0x9:
            _ws_send(client, payload, opcode=0xA)
            continue
        if opcode == 0xA:
            continue
        parts.append(payload)
        if first & 0x80:
            return b"".join(parts)


def _ws_send(client: socket.socket, payload: bytes, opcode: int = 0x1) -> None:
    n = len(payload)
    if n < 126:
        header = struct.pack(">BB", 0x80 | opcode, n)
    elif n < 1 << 16:
        header = struct.pack(">BBH", 0x80 | opcode, 126, n)
    else:
        header = struct.pack(">BBQ", 0x80 | opcode, 127, n)
    client.sendall(header + payload)


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


# ---------------------------------------------------------------- attached work (Playwright)


class PageChanged(RuntimeError):
    """A Gradient page no longer has what `pages.py` says it has: the extension or the dashboard
    changed. Not a fault a restart fixes; a person updates pages.py."""

    def __init__(self, page: str, missing: str) -> None:
        super().__init__(f"the {page} changed: no {missing} found")
        self.page = page
        self.missing = missing


def attach(paths: Paths, config: dict[str, Any], login: str = "if-needed") -> dict[str, Any]:
    """Attach to the running browser, log in when needed, read the popup, detach.

    login: "if-needed" logs in when the popup says Logged out; "always" logs in first."""
    from playwright.sync_api import sync_playwright

    endpoint = devtools_endpoint(paths)
    if endpoint is None:
        raise RuntimeError("the browser is not running (no DevTools socket)")
    result: dict[str, Any] = {"logged_in_now": False}
    with sync_playwright() as pw:
        browser = pw.chromium.connect_over_cdp(endpoint, timeout=15000)
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
            browser.close()  # this detaches; Chromium keeps running
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


def _origin(url: str) -> str:
    m = re.match(r"^([a-z][a-z0-9+.-]*://[^/?#]+)", url, re.IGNORECASE)
    return m.group(1) if m else url


def forget_dashboard_session(context: Any, url: str) -> None:
    """Sign the dashboard out in this browser (its cookies and storage), so that signing in
    again shows the form and hands a fresh session to the extension."""
    session = context.new_cdp_session(context.pages[0] if context.pages else context.new_page())
    try:
        session.send(
            "Storage.clearDataForOrigin",
            {
                "origin": _origin(url),
                "storageTypes": "cookies,local_storage,indexeddb,service_workers,cache_storage",
            },
        )
    finally:
        with contextlib.suppress(Exception):
            session.detach()


def dashboard_login(context: Any, config: dict[str, Any], timeout: float = 30) -> None:
    """Sign in on the dashboard as a person does: the email and password fields found by their
    placeholders, Enter to submit, then the signed-in page under /dashboard."""
    url = config["dashboard_url"]
    forget_dashboard_session(context, url)
    page = context.new_page()
    try:
        page.goto(url, wait_until="domcontentloaded", timeout=timeout * 1000)
        email = page.get_by_placeholder(pages.EMAIL_PLACEHOLDER, exact=True)
        password = page.get_by_placeholder(pages.PASSWORD_PLACEHOLDER, exact=True)
        try:
            email.wait_for(state="visible", timeout=timeout * 1000)
        except Exception as exc:  # noqa: BLE001 - Playwright's TimeoutError
            raise PageChanged(
                "dashboard's sign-in page",
                f"field with the placeholder {pages.EMAIL_PLACEHOLDER!r}",
            ) from exc
        email.fill(config["email"])
        if password.count() == 0:
            raise PageChanged(
                "dashboard's sign-in page",
                f"field with the placeholder {pages.PASSWORD_PLACEHOLDER!r}",
            )
        password.fill(config["password"])
        password.press("Enter")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pages.SIGNED_IN_PATH.search(page.url):
                return
            page.wait_for_timeout(250)
        alert = ""
        with contextlib.suppress(Exception):
            alert = " ".join(page.get_by_role("alert").all_inner_texts()).strip()
        raise RuntimeError(
            "dashboard login failed: "
            + (alert or f"still on {page.url} {timeout:.0f}s after submitting the form")
        )
    finally:
        page.close()


def _envelope_data(response: Any) -> Any:
    """`data` of a `{code, msg, data}` answer with code 200, else None."""
    try:
        body = response.json()
    except Exception:  # noqa: BLE001 - not JSON: not an answer we can read
        return None
    if isinstance(body, dict) and body.get("code") == 200:
        return body.get("data")
    return None


def _today_of(stats: Any) -> dict[str, Any]:
    """Today's item of a `sentrynode/stats` answer: the newest day it lists."""
    days = (
        [d for d in stats if isinstance(d, dict) and d.get("id")] if isinstance(stats, list) else []
    )
    return max(days, key=lambda d: str(d["id"])) if days else {}


def _number(value: Any) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def read_popup(
    context: Any, ext_id: str, wait_for_status: bool = False, timeout: float = 15
) -> dict[str, Any]:
    """Open the popup and read the node's state from the popup's own API answers (a response
    listener on `sentrynode/get` and `sentrynode/stats`), falling back on its badge text.

    Raises PageChanged when none of what pages.py describes shows up."""
    page = context.new_page()
    seen: dict[str, Any] = {}

    def on_response(response: Any) -> None:
        url = response.url
        for key, pattern in (("node", pages.NODE_API), ("stats", pages.STATS_API)):
            m = pattern.search(url)
            if m:
                data = _envelope_data(response)
                if data is not None:
                    seen[key] = data
                    seen["clientid"] = m.group("clientid")

    page.on("response", on_response)
    try:
        deadline = time.monotonic() + (20 if wait_for_status else 0)
        popup = _read_popup_once(page, ext_id, seen, timeout)
        while wait_for_status and popup.get("status") not in ("Good", "Excellent"):
            if time.monotonic() > deadline:
                break
            time.sleep(1)
            seen.clear()
            popup = _read_popup_once(page, ext_id, seen, timeout)
        return popup
    finally:
        page.close()


def _read_popup_once(
    page: Any, ext_id: str, seen: dict[str, Any], timeout: float
) -> dict[str, Any]:
    page.goto(f"chrome-extension://{ext_id}/{pages.POPUP_PAGE}", timeout=timeout * 1000)
    dismissed = False
    button = page.get_by_role("button", name=pages.FIRST_RUN_BUTTON)
    with contextlib.suppress(Exception):
        if button.is_visible(timeout=500):
            button.click()
            dismissed = True
    badge_text = page.get_by_text(pages.BADGE)
    login = page.get_by_role("button", name=pages.LOGIN_BUTTON, exact=True)
    badge: str | None = None
    logged_out = False
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if "node" in seen:
            break
        with contextlib.suppress(Exception):
            if login.count() and login.first.is_visible():
                logged_out = True
                break
        page.wait_for_timeout(200)
    # the badge and today's stats follow the node's answer within a moment
    settle = time.monotonic() + (2 if "node" in seen else 0)
    while time.monotonic() < settle and ("stats" not in seen or badge is None):
        badge = _badge(badge_text)
        page.wait_for_timeout(200)
    badge = badge or _badge(badge_text)
    node = seen.get("node") if isinstance(seen.get("node"), dict) else None
    version = None
    with contextlib.suppress(Exception):
        version = page.evaluate("chrome.runtime.getManifest().version")
    popup: dict[str, Any] = {"first_run_dismissed": dismissed, "version": version}
    if logged_out and node is None:
        popup.update(status="Logged out", source="page")
        return popup
    status = pages.status_of(node, badge)
    if status is None:
        raise PageChanged("extension's popup", pages.POPUP_SHAPE)
    today = _today_of(seen.get("stats"))
    popup.update(
        status=status,
        source="api" if node is not None else "badge",
        badge=badge,
        node_id=seen.get("clientid"),
    )
    if node is not None:
        popup.update(
            ip=node.get("ip") or None,
            banned_reason=(node.get("bannedReason") or None) if node.get("banned") else None,
            points_today=_number(node.get("today")),
            connect=node.get("connect") if isinstance(node.get("connect"), bool) else None,
        )
    if today:
        popup.update(
            taps_today=_number(today.get("latency")), uptime_today=_number(today.get("duration"))
        )
    return popup


def _badge(locator: Any) -> str | None:
    with contextlib.suppress(Exception):
        for text in locator.all_inner_texts():
            m = pages.BADGE.match(text)
            if m:
                return m.group(1)
    return None


# ---------------------------------------------------------------- one runner per host


class RunnerLocked(RuntimeError):
    """Another runner holds runner.lock."""

    def __init__(self, paths: Paths, pid: int | None) -> None:
        self.pid = pid
        who = f"pid {pid}" if pid else "another process"
        super().__init__(f"a runner is already running: {who} holds {paths.lock}")


def _write_lock_pid(fd: int, pid: int) -> None:
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
        _write_lock_pid(fd, os.getpid())
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


def _systemctl(action: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(systemctl_command(action), capture_output=True, text=True, timeout=120)


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
            self.end_orphan_browser()
            # a fresh status: what an earlier runner saw must not pass for this browser's state
            self.write_status(browser_alive=False)
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
        try:
            self.browser.launch()
        except Exception as exc:  # noqa: BLE001 - reported, retried on the next loop
            # the status first: whoever sees the event finds the error already there
            self.write_status(browser_alive=False, last_error=str(exc))
            self.events.add("browser_start_failed", str(exc))
            self._sleep(5)
            return
        self.events.add(
            "browser_started", f"pid {self.browser.proc.pid if self.browser.proc else '?'}"
        )
        self.write_status(browser_alive=True)
        # read the new browser's state now, then every few seconds until it settles
        self.settle_until = time.monotonic() + float(self.config.get("settle_timeout_seconds", 60))
        self.refresh()

    def refresh(self) -> None:
        try:
            result = attach(self.paths, self.config)
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
        except Exception as exc:  # noqa: BLE001
            self.last_attach = time.monotonic()
            self.attach_failures += 1
            self.write_status(browser_alive=self.browser.alive(), last_error=f"attach: {exc}")
            log.warning("attach failed: %s", exc)
            return
        self.last_attach = time.monotonic()
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
            page_changed=None,
            last_error=None,
        )
        if popup.get("status") != previous:
            self.events.add("popup_status", str(popup.get("status")))
        if popup.get("status") in SETTLED:
            self.settle_until = 0.0

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
            _write_lock_pid(lock, os.getpid())
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
    done = _systemctl("start")
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
        done = _systemctl("stop")
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


def archive_contents(archive: zipfile.ZipFile) -> tuple[dict[str, Any], str]:
    """The manifest and a digest of the files, not of the archive: a rebuilt zip of the same
    files is no change. The installed copy keeps the digest in `.gradientlab-sha256`."""
    manifest: dict[str, Any] = json.loads(archive.read("manifest.json"))
    content = hashlib.sha256()
    for name in sorted(archive.namelist()):
        content.update(name.encode() + b"\0" + archive.read(name) + b"\0")
    return manifest, content.hexdigest()


def cmd_install_extension(paths: Paths) -> dict[str, Any]:
    """Fetch the CRX by id (one cached copy), unpack it, point `current` at it."""
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
        manifest, digest = archive_contents(archive)
        version = str(manifest["version"])
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
    # the version the running browser loaded: its files stay until the next install, so that
    # a browser still running from them does not lose its extension (and exit) before the
    # deploy restarts the runner on the new one
    previous = os.readlink(current) if current.is_symlink() else None
    if not current.is_symlink() or os.readlink(current) != version:
        tmp_link = paths.extensions / ".current.tmp"
        with contextlib.suppress(OSError):
            tmp_link.unlink()
        os.symlink(version, tmp_link)
        os.replace(tmp_link, current)
        changed = True
    for old in paths.extensions.iterdir():
        if old.is_dir() and not old.is_symlink() and old.name not in (version, previous):
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


if __name__ == "__main__":
    sys.exit(main())
