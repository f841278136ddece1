"""The sandbox network's MQTT v5 broker: Debian's ``mosquitto``, run as a child process.

Gradient's extension keeps its node present over MQTT v5 on a WebSocket
(``wss://wss.gradient.network:443/mqtt``) with the ``clientid``, ``username`` and ``password``
that ``POST /api/sentrynode/register`` answered. The sandbox does the same with a real broker:

- a generated ``mosquitto.conf`` in a private folder: a plain TCP listener on loopback for the
  sandbox's own client (the watcher), a WebSocket listener (``ws://127.0.0.1:PORT/mqtt``), and,
  given a certificate, a TLS WebSocket listener for the real names;
- password authentication: a ``password_file`` (PBKDF2-SHA512, mosquitto's ``$7$`` format,
  written here, never on a command line) reloaded by SIGHUP when register hands out new
  credentials; an ACL lets a node publish only ``client/<kind>/<its clientid>`` and read only
  ``client/task/<its clientid>``;
- presence from the broker itself: mosquitto's log (``New client connected from IP:PORT as ID``,
  ``Client ID disconnected`` / ``closed its connection`` / ``has exceeded timeout``, ``Socket
  error on client ID``) says when each node's connection opens and closes, and from which
  address;
- messages through a paho-mqtt client subscribed to ``client/#``; tasks are published on
  ``client/task/<clientid>``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import ipaddress
import logging
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt

log = logging.getLogger(__name__)

MOSQUITTO = "/usr/sbin/mosquitto"
_ITERATIONS = 101  # mosquitto_passwd's own default for $7$

_CONNECTED = re.compile(
    r"^New client connected from (?P<addr>\S+):\d+ as (?P<cid>\S+) \(p(?P<proto>\d+),"
    r".*?(?:u'(?P<user>[^']*)')?\)\.$"
)
_CLOSED = re.compile(
    r"^(?:Client (?P<a>\S+) (?:disconnected|closed its connection|has exceeded timeout)"
    r"|Socket error on client (?P<b>\S+), disconnecting)"
)
_TAKEN_OVER = re.compile(r"^Client (?P<cid>\S+) already connected, closing old connection")

OnConnect = Callable[[str, str, str], object]  # clientid, address, username
OnDisconnect = Callable[[str], None]  # clientid
OnMessage = Callable[[str, bytes], None]  # topic, payload


def password_line(username: str, password: str) -> str:
    """One line of a mosquitto password file: ``user:$7$iterations$salt$hash``."""
    salt = secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _ITERATIONS)
    b64 = base64.b64encode
    return f"{username}:$7${_ITERATIONS}${b64(salt).decode()}${b64(digest).decode()}\n"


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _plain_address(addr: str) -> str:
    """``::ffff:127.0.0.1`` (how a WebSocket peer is logged) as ``127.0.0.1``."""
    with contextlib.suppress(ValueError):
        ip = ipaddress.ip_address(addr.strip("[]"))
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ip)
    return addr


@dataclass(frozen=True)
class TlsFiles:
    """A certificate (with its chain) and its key, for the TLS WebSocket listener."""

    certfile: Path
    keyfile: Path


class Broker:
    """A mosquitto child process and the sandbox's watcher on it."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        *,
        on_connect: OnConnect,
        on_disconnect: OnDisconnect,
        on_message: OnMessage,
        tls: TlsFiles | None = None,
        ws_port: int = 0,
        wss_port: int = 0,
    ) -> None:
        self.host = host
        self.tls = tls
        self.ws_port = ws_port
        self.wss_port = wss_port
        self.tcp_port = 0
        self._on_connect = on_connect
        self._on_disconnect = on_disconnect
        self._on_message = on_message
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._client: mqtt.Client | None = None
        self._users: dict[str, str] = {}  # username -> password-file line
        self._users_lock = threading.Lock()
        self._stale: dict[str, int] = {}  # clientid -> closes still due from taken-over sessions
        self._running = threading.Event()
        self._watcher = ("sandbox-watcher", secrets.token_urlsafe(24))

    # ---- lifecycle ---------------------------------------------------------------------------

    @staticmethod
    def available() -> bool:
        return os.access(MOSQUITTO, os.X_OK)

    def start(self, timeout: float = 20) -> None:
        if self._proc is not None:
            return
        if not self.available():
            raise RuntimeError(
                f"{MOSQUITTO} is missing: the sandbox's MQTT broker is Debian's mosquitto "
                "(make system, or apt-get install mosquitto)"
            )
        self._dir = Path(tempfile.mkdtemp(prefix="gradientlab-mqtt-"))
        os.chmod(self._dir, 0o700)
        self._own(self._dir)
        if self.tls is not None:
            # the broker reads its own copies (started as root, it runs as `mosquitto`)
            self.tls = TlsFiles(self._copy(self.tls.certfile), self._copy(self.tls.keyfile))
        self.tcp_port = free_port(self.host)
        self.ws_port = self.ws_port or free_port(self.host)
        if self.tls is not None:
            self.wss_port = self.wss_port or free_port(self.host)
        user, password = self._watcher
        self._users[user] = password_line(user, password)
        self._write_passwords()
        (self._dir / "acl").write_text(
            f"user {user}\ntopic readwrite #\n\n"
            "pattern write client/+/%c\npattern read client/task/%c\n"
        )
        (self._dir / "mosquitto.conf").write_text(self._config())
        for name in ("acl", "mosquitto.conf"):
            self._own(self._dir / name)
        self._proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self._dir / "mosquitto.conf")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read_log, name="sandbox-mqtt-log", daemon=True)
        self._reader.start()
        if not self._running.wait(timeout):
            self.stop()
            raise RuntimeError("mosquitto did not start")
        self._client = self._connect_watcher(timeout)

    @staticmethod
    def _run_as() -> pwd.struct_passwd | None:
        """The account mosquitto drops to when started as root (its own), else None."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam("mosquitto")
        except KeyError:
            return None

    def _own(self, path: Path) -> None:
        account = self._run_as()
        if account is not None:
            os.chown(path, account.pw_uid, account.pw_gid)

    def _copy(self, source: Path) -> Path:
        assert self._dir is not None
        target = self._dir / source.name
        target.write_bytes(source.read_bytes())
        os.chmod(target, 0o600)
        self._own(target)
        return target

    def _config(self) -> str:
        assert self._dir is not None
        lines = [
            "per_listener_settings false",
            "allow_anonymous false",
            f"password_file {self._dir / 'passwords'}",
            f"acl_file {self._dir / 'acl'}",
            "persistence false",
            # started as root: run as mosquitto when that account exists, else stay
            *(["user root"] if os.geteuid() == 0 and self._run_as() is None else []),
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "log_timestamp false",
            "connection_messages true",
            f"listener {self.tcp_port} {self.host}",
            "protocol mqtt",
            f"listener {self.ws_port} {self.host}",
            "protocol websockets",
        ]
        if self.tls is not None:
            lines += [
                f"listener {self.wss_port} {self.host}",
                "protocol websockets",
                f"certfile {self.tls.certfile}",
                f"keyfile {self.tls.keyfile}",
            ]
        return "\n".join(lines) + "\n"

    def _connect_watcher(self, timeout: float) -> mqtt.Client:
        user, password = self._watcher
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id="sandbox-watcher",
            protocol=mqtt.MQTTv5,
        )
        client.username_pw_set(user, password)
        subscribed = threading.Event()

        def on_connect(c: mqtt.Client, _u: object, _f: object, reason: object, _p: object) -> None:
            if not getattr(reason, "is_failure", False):
                c.subscribe("client/#", qos=0)
                subscribed.set()

        def on_message(_c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
            try:
                self._on_message(message.topic, bytes(message.payload))
            except Exception:
                log.exception("sandbox broker: handling %s failed", message.topic)

        client.on_connect = on_connect
        client.on_message = on_message
        client.reconnect_delay_set(min_delay=1, max_delay=2)
        client.connect(self.host, self.tcp_port, keepalive=30)
        client.loop_start()
        if not subscribed.wait(timeout):
            client.loop_stop()
            raise RuntimeError("the sandbox could not connect to its own MQTT broker")
        return client

    def stop(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.disconnect()
                self._client.loop_stop()
            self._client = None
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
            self._proc = None
        if self._reader is not None:
            self._reader.join(timeout=5)
            self._reader = None
        self._running.clear()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    # ---- addresses ---------------------------------------------------------------------------

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.ws_port}/mqtt"

    # ---- credentials -------------------------------------------------------------------------

    def _write_passwords(self) -> None:
        assert self._dir is not None
        target = self._dir / "passwords"
        tmp = target.with_suffix(".tmp")
        tmp.write_text("".join(self._users.values()))
        os.chmod(tmp, 0o600)
        self._own(tmp)
        os.replace(tmp, target)

    def add_user(self, username: str, password: str, timeout: float = 10) -> None:
        """Let ``username`` in with ``password``: rewrite the password file, make mosquitto
        reload it, and return once the broker accepts the new credentials."""
        with self._users_lock:
            self._users[username] = password_line(username, password)
            self._write_passwords()
            if self._proc is not None:
                self._proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + timeout
            while not self._accepts(username, password):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"mosquitto did not take the credentials of {username}")
                time.sleep(0.05)

    def _accepts(self, username: str, password: str) -> bool:
        """Whether a CONNECT with these credentials gets a successful CONNACK."""
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"sandbox-check-{secrets.token_hex(4)}",
            protocol=mqtt.MQTTv5,
        )
        client.username_pw_set(username, password)
        try:
            client.connect(self.host, self.tcp_port, keepalive=5)
        except OSError:
            return False
        answered = threading.Event()
        ok: list[bool] = []

        def on_connect(_c: mqtt.Client, _u: object, _f: object, reason: object, _p: object) -> None:
            ok.append(not getattr(reason, "is_failure", True))
            answered.set()

        client.on_connect = on_connect
        end = time.monotonic() + 2
        while not answered.is_set() and time.monotonic() < end:
            client.loop(timeout=0.05)
        with contextlib.suppress(Exception):
            client.disconnect()
            client.loop(timeout=0.05)
        return bool(ok and ok[0])

    # ---- messages ----------------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes | str) -> None:
        if self._client is None:
            raise RuntimeError("the broker is not running")
        self._client.publish(topic, payload, qos=0)

    # ---- presence, from the broker's log -------------------------------------------------------

    def _read_log(self) -> None:
        proc = self._proc
        if proc is None or proc.stderr is None:
            return
        for raw in proc.stderr:
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            log.debug("mosquitto: %s", line)
            try:
                self._log_line(line)
            except Exception:
                log.exception("sandbox broker: handling log line %r failed", line)

    def _log_line(self, line: str) -> None:
        if line.startswith("mosquitto version") and line.endswith("running"):
            self._running.set()
            return
        m = _CONNECTED.match(line)
        if m:
            cid = m.group("cid")
            if not cid.startswith("sandbox-"):
                self._on_connect(cid, _plain_address(m.group("addr")), m.group("user") or "")
            return
        m = _TAKEN_OVER.match(line)
        if m:
            # the old session's close is logged later: it must not end the new one
            cid = m.group("cid")
            self._stale[cid] = self._stale.get(cid, 0) + 1
            return
        m = _CLOSED.match(line)
        if m:
            cid = m.group("a") or m.group("b") or ""
            if cid.startswith("sandbox-") or cid == "<unknown>":
                return
            if self._stale.get(cid):
                self._stale[cid] -= 1
                return
            self._on_disconnect(cid)
