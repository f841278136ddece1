"""HTTP face of the sandbox network: Gradient's API, Firebase stand-ins, the dashboard login page,
the extension download and test hooks (``ThreadingHTTPServer``), and its MQTT broker (broker.py)
for the nodes' presence.

Given a certificate (``tls``), the same answers are also served over HTTPS for the real names
(api.gradient.network, app.gradient.network, securetoken.googleapis.com,
identitytoolkit.googleapis.com), and the broker listens for ``wss://wss.gradient.network/mqtt``:
a browser pointed there with ``--host-resolver-rules`` and trusting the certificate's authority
runs Gradient's own extension against the sandbox unchanged."""

from __future__ import annotations

import contextlib
import html
import ipaddress
import json
import logging
import re
import ssl
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from pydantic import ValidationError

from .broker import Broker, TlsFiles
from .crx import Release, build_crx, crx_of_folder, extension_version
from .extension_id import SANDBOX_EXTENSION_ID
from .network import DAY_SECONDS, AuthError, Fault, SandboxConfig, SandboxNetwork
from .stun import StunServer

log = logging.getLogger(__name__)

DASHBOARD_DIR = Path(__file__).with_name("dashboard")
_STATIC_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
}
_INVALID_KEY = "API key not valid. Please pass a valid API key."


class _ApiError(Exception):
    """Answer with an envelope carrying ``code``/``msg`` and HTTP ``http_status``."""

    def __init__(self, code: int, msg: str, http_status: int = 200) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.http_status = http_status


class _FirebaseError(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _opt_bool(value: Any) -> bool | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return bool(value)
    text = str(value).strip().lower()
    if text in {"true", "1", "yes"}:
        return True
    if text in {"false", "0", "no"}:
        return False
    return None


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _with_fields(obj: Any, fields: dict[str, Any]) -> Any:
    if isinstance(obj, dict):
        return {**obj, **fields}
    if isinstance(obj, list):
        return [_with_fields(item, fields) if isinstance(item, dict) else item for item in obj]
    return obj


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self, addr: tuple[str, int], sandbox: SandboxServer, tls: ssl.SSLContext | None = None
    ) -> None:
        super().__init__(addr, _Handler)
        self.sandbox = sandbox
        self.tls = tls

    def finish_request(self, request: Any, client_address: Any) -> None:
        # the TLS handshake in the request's own thread: a slow client holds only itself
        if self.tls is not None:
            request.settimeout(30)
            try:
                request = self.tls.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError) as exc:
                log.debug("sandbox TLS handshake with %s failed: %s", client_address, exc)
                return
            request.settimeout(None)
        super().finish_request(request, client_address)


# The real names served over HTTPS, and where their paths live on the sandbox.
_HOST_PREFIXES = {
    "securetoken.googleapis.com": "/securetoken",
    "identitytoolkit.googleapis.com": "/identitytoolkit",
}


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    _raw_body: bytes | None = None
    _extra_fields: dict[str, Any]
    server_version = "GradientSandbox/0.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms stall

    # ---- plumbing ----------------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s - %s", self.client_address[0], format % args)

    @property
    def sandbox(self) -> SandboxServer:
        return self.server.sandbox

    @property
    def network(self) -> SandboxNetwork:
        return self.server.sandbox.network

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload, separators=(",", ":")).encode()
        self._send(status, body, "application/json; charset=utf-8", headers)

    def _envelope(
        self,
        code: int,
        msg: str,
        data: Any,
        http_status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> None:
        payload: dict[str, Any] = {"code": code, "msg": msg, "data": data}
        if self._extra_fields:
            payload = {**payload, **self._extra_fields}
            payload["data"] = _with_fields(data, self._extra_fields)
        self._send_json(http_status, payload, headers)

    def _read_body(self) -> bytes:
        """The request body, read once from the socket so keep-alive framing stays intact
        whatever the answer (errors and faults answer before a handler looks at the body)."""
        if self._raw_body is None:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                self._raw_body = self._read_chunked()
            else:
                length = _int(self.headers.get("Content-Length"), 0)
                self._raw_body = self.rfile.read(length) if length > 0 else b""
        return self._raw_body

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size_line = self.rfile.readline(1024).split(b";", 1)[0].strip()
            size = int(size_line or b"0", 16)
            if size == 0:
                while self.rfile.readline(1024).strip():  # trailers
                    pass
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline(16)  # CRLF after the chunk

    def _json_body(self) -> dict[str, Any]:
        raw = self._read_body()
        if not raw.strip():
            return {}
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise _ApiError(400, "invalid JSON body", 400) from exc
        if not isinstance(data, dict):
            raise _ApiError(400, "JSON body must be an object", 400)
        return data

    def _form_or_json(self) -> dict[str, Any]:
        raw = self._read_body()
        ctype = self.headers.get("Content-Type", "")
        if "json" in ctype or raw.lstrip().startswith(b"{"):
            try:
                data = json.loads(raw or b"{}")
            except ValueError:
                return {}
            return data if isinstance(data, dict) else {}
        return {k: v[-1] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}

    # ---- dispatch ----------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_OPTIONS(self) -> None:
        self.send_response(HTTPStatus.NO_CONTENT)
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
        self.send_header(
            "Access-Control-Allow-Headers", "Authorization, Content-Type, X-Client-Version"
        )
        self.send_header("Access-Control-Max-Age", "600")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _dispatch(self, method: str) -> None:
        self._extra_fields = {}
        self._raw_body = None
        self._read_body()
        url = urlsplit(self.path)
        path = url.path
        host = self.headers.get("Host", "").split(":")[0].lower()
        prefix = _HOST_PREFIXES.get(host)
        if prefix and not path.startswith(prefix + "/"):
            path = prefix + path
        elif host == "app.gradient.network" and path in ("", "/"):
            path = "/app/"  # the dashboard's sign-in form is its root
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            if path.startswith("/api/") and self._throttled(path):
                return
            if not path.startswith("/__sandbox/") and self._apply_faults(path):
                return
            if path.startswith("/api/"):
                self._api(method, path[len("/api") :])
            elif path.startswith("/identitytoolkit/") or path.startswith("/securetoken/"):
                self._firebase(method, path, query)
            elif path.startswith("/__sandbox/"):
                self._hooks(method, path)
            elif path in ("/app", "/dashboard") or path.startswith(("/app/", "/dashboard/")):
                self._dashboard(method, path)
            elif path == "/service/update2/crx":
                self._crx(query)
            elif path == "/":
                self._send_json(200, self.sandbox.describe())
            elif path == "/favicon.ico":
                self._send(204, b"", "image/x-icon")
            else:
                self._send_json(404, {"error": "not found", "path": path})
        except _ApiError as exc:
            self._envelope(exc.code, exc.msg, None, exc.http_status)
        except _FirebaseError as exc:
            self._firebase_error(exc.message, exc.status)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception:  # the simulated network must never take the server down
            log.exception("sandbox handler failed for %s %s", method, self.path)
            with contextlib.suppress(OSError):
                self._envelope(500, "internal error", None, 500)

    def _throttled(self, path: str) -> bool:
        retry_after = self.network.admit(self.client_address[0])
        if retry_after is None:
            return False
        self._fault_answer(path, 429, "too many requests", {"Retry-After": str(retry_after)})
        return True

    def _apply_faults(self, path: str) -> bool:
        faults = self.network.take_faults(path)
        if not faults:
            return False
        delay = sum(f.delay for f in faults if f.kind == "slow")
        if delay > 0:
            time.sleep(delay)
        for fault in faults:
            if fault.kind == "extra_fields":
                self._extra_fields.update(fault.fields)
        for fault in faults:
            if fault.kind == "error":
                self._fault_answer(path, fault.status, "sandbox fault: server error", {})
                return True
            if fault.kind == "rate_limit":
                headers = {"Retry-After": str(fault.retry_after)}
                self._fault_answer(path, 429, "too many requests", headers)
                return True
        return False

    def _fault_answer(self, path: str, status: int, msg: str, headers: dict[str, str]) -> None:
        if path.startswith("/api/"):
            self._envelope(status, msg, None, status, headers)
        else:
            payload = {"error": {"code": status, "message": msg, "status": "UNAVAILABLE"}}
            self._send_json(status, payload, headers)

    # ---- Gradient API ------------------------------------------------------------------------

    def _uid(self) -> str:
        auth = self.headers.get("Authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        if not token:
            raise _ApiError(401, "unauthorized", 401)
        try:
            return self.network.authenticate(token)
        except AuthError as exc:
            raise _ApiError(401, exc.reason, 401) from exc

    def _range(self, body: dict[str, Any]) -> tuple[int, int]:
        kind = str(body.get("type") or "DAY").upper()
        if kind != "DAY":
            raise _ApiError(400, f"unsupported type {kind}")
        now_ms = self.network.sim_now_ms()
        end = _int(body.get("end"), now_ms)
        start = _int(body.get("start"), end - 30 * DAY_SECONDS * 1000)
        if start > end:
            raise _ApiError(400, "start must not be after end")
        return start, end

    def _api(self, method: str, path: str) -> None:
        net = self.network
        if path == "/status":
            self._require(method, "GET")
            data = {"ip": self.client_address[0], "time": net.sim_now_ms()}
            # the extension's bundle reads `ip` and `time` at the top of this answer, API
            # clients read the envelope's data: both are there
            self._extra_fields = {**data, **self._extra_fields}
            self._envelope(200, "success", data)
            return
        if path in ("/market/pub/announcement/list", "/market/pub/banner/list"):
            self._require(method, "GET")
            net.record_call(path.rsplit("/", 2)[-2])
            self._envelope(200, "success", [])
            return
        route = _match_api(method, path)
        if route is None:
            known = _match_api("GET" if method == "POST" else "POST", path)
            if known is not None:
                raise _ApiError(405, "method not allowed", 405)
            raise _ApiError(404, "not found", 404)
        name, arg = route
        uid = self._uid()
        body = self._json_body() if method == "POST" else {}
        if name == "profile":
            self._envelope(200, "success", net.profile(uid))
        elif name == "point_stats":
            start, end = self._range(body)
            self._envelope(200, "success", net.point_stats(uid, start, end))
        elif name == "node_stats":
            start, end = self._range(body)
            stats = net.node_stats(uid, arg, start, end)
            if stats is None:
                raise _ApiError(404, "node not found")
            self._envelope(200, "success", stats)
        elif name == "node_get":
            view = net.node_view(uid, arg)
            if view is None:
                raise _ApiError(404, "node not found")
            self._envelope(200, "success", view)
        elif name == "node_list":
            rows = net.node_list(
                uid,
                page=_int(body.get("page"), 1),
                size=_int(body.get("size"), 10),
                field=str(body.get("field") or "active"),
                direction=_int(body.get("direction"), 0),
                active=_opt_bool(body.get("active")),
                banned=_opt_bool(body.get("banned")),
                hide=_int(body.get("hide"), 0),
            )
            self._envelope(200, "success", rows)
        elif name == "register":
            creds = net.register(uid, self.client_address[0])
            broker = self.sandbox.broker
            if broker is None:
                raise _ApiError(503, "the network's MQTT broker is not running", 503)
            broker.add_user(creds["username"], creds["password"])
            # the extension reads clientid, username and password at the top of this answer
            self._extra_fields = {**creds, **self._extra_fields}
            self._envelope(200, "success", creds)
        elif name == "fp_add":
            net.record_call("fp/add", arg)
            self._envelope(200, "success", None)
        elif name == "latency_list":
            net.record_call("latency/list", arg.split("/")[0])
            self._envelope(200, "success", [])
        elif name == "geocode":
            net.record_call("geocode")
            # a geocoder's own answer (GeoJSON), not an envelope: nothing found here
            self._send_json(200, {"type": "FeatureCollection", "features": []})

    @staticmethod
    def _require(method: str, expected: str) -> None:
        if method != expected:
            raise _ApiError(405, "method not allowed", 405)

    # ---- Firebase stand-ins ------------------------------------------------------------------

    def _firebase_error(self, message: str, status: int = 400) -> None:
        reason = "invalid" if status == 400 else "backendError"
        payload: dict[str, Any] = {
            "error": {
                "code": status,
                "message": message,
                "errors": [{"message": message, "domain": "global", "reason": reason}],
            }
        }
        if message == _INVALID_KEY:
            payload["error"]["status"] = "INVALID_ARGUMENT"
        self._send_json(status, payload)

    def _firebase(self, method: str, path: str, query: dict[str, str]) -> None:
        net = self.network
        if method != "POST":
            raise _FirebaseError("method not allowed", 405)
        if path == "/identitytoolkit/v1/accounts:signInWithPassword":
            body = self._form_or_json()
            if not net.check_api_key(query.get("key")):
                raise _FirebaseError(_INVALID_KEY)
            email = str(body.get("email") or "")
            password = str(body.get("password") or "")
            if not email:
                raise _FirebaseError("INVALID_EMAIL")
            if not password:
                raise _FirebaseError("MISSING_PASSWORD")
            try:
                grant = net.sign_in(email, password)
            except AuthError as exc:
                raise _FirebaseError(exc.reason) from exc
            payload: dict[str, Any] = {
                "kind": "identitytoolkit#VerifyPasswordResponse",
                "localId": grant.uid,
                "email": grant.email,
                "displayName": grant.name,
                "idToken": grant.id_token,
                "registered": True,
                "refreshToken": grant.refresh_token,
                "expiresIn": str(grant.expires_in),
            }
        elif path == "/securetoken/v1/token":
            body = self._form_or_json()
            if not net.check_api_key(query.get("key")):
                raise _FirebaseError(_INVALID_KEY)
            grant_type = str(body.get("grant_type") or body.get("grantType") or "")
            refresh_token = str(body.get("refresh_token") or body.get("refreshToken") or "")
            if grant_type != "refresh_token":
                raise _FirebaseError("INVALID_GRANT_TYPE")
            if not refresh_token:
                raise _FirebaseError("MISSING_REFRESH_TOKEN")
            try:
                grant = net.refresh(refresh_token)
            except AuthError as exc:
                raise _FirebaseError(exc.reason) from exc
            payload = {
                "access_token": grant.id_token,
                "expires_in": str(grant.expires_in),
                "token_type": "Bearer",
                "refresh_token": grant.refresh_token,
                "id_token": grant.id_token,
                "user_id": grant.uid,
                "project_id": net.config.project_id,
            }
        else:
            raise _FirebaseError("NOT_FOUND", 404)
        if self._extra_fields:
            payload = {**payload, **self._extra_fields}
        self._send_json(200, payload)

    # ---- dashboard ---------------------------------------------------------------------------

    def _dashboard(self, method: str, path: str) -> None:
        """The dashboard as the real one is laid out: the sign-in form at the root, the signed-in
        page under /dashboard (the page itself sends a signed-out browser back to the form)."""
        if method != "GET":
            self._send_json(405, {"error": "method not allowed"})
            return
        if path in {"/app", "/dashboard", "/dashboard/", "/dashboard/login"}:
            self._send(302, b"", "text/plain", {"Location": "/app/"})  # older fleet files
            return
        if path in {"/app/", "/app/dashboard"}:
            name = "login.html" if path == "/app/" else "dashboard.html"
            self._send(200, self.sandbox.dashboard_page(name).encode(), _STATIC_TYPES[".html"])
            return
        name = path[len("/app/assets/") :] if path.startswith("/app/assets/") else ""
        target = DASHBOARD_DIR / name
        if not re.fullmatch(r"[A-Za-z0-9_-]+\.(js|css)", name) or not target.is_file():
            self._send_json(404, {"error": "not found", "path": path})
            return
        self._send(200, target.read_bytes(), _STATIC_TYPES[target.suffix])

    # ---- extension download ------------------------------------------------------------------

    def _crx(self, query: dict[str, str]) -> None:
        params = {k: v[-1] for k, v in parse_qs(query.get("x", "")).items()}
        ext_id = params.get("id", "")
        if ext_id != self.sandbox.extension_id:
            self._send_json(404, {"error": "no such extension", "id": ext_id})
            return
        if query.get("response") == "redirect":
            data = self.sandbox.crx()
            disposition = f'attachment; filename="{ext_id}.crx"'
            headers = {"Content-Disposition": disposition}
            self._send(200, data, "application/x-chrome-extension", headers)
            return
        # Update check (no response=redirect): an update manifest, as the store answers.
        codebase = self.sandbox.crx_url()
        body = (
            "<?xml version='1.0' encoding='UTF-8'?>"
            "<gupdate xmlns='http://www.google.com/update2/response' protocol='2.0'>"
            f"<app appid='{ext_id}' status='ok'>"
            f"<updatecheck codebase='{html.escape(codebase, quote=True)}' "
            f"version='{self.sandbox.published_version}' status='ok'/></app></gupdate>"
        )
        self._send(200, body.encode(), "text/xml; charset=utf-8")

    # ---- test / ops hooks --------------------------------------------------------------------

    def _hooks(self, method: str, path: str) -> None:
        net = self.network
        if path == "/__sandbox/state" and method == "GET":
            self._send_json(200, net.state())
        elif path == "/__sandbox/counters" and method == "GET":
            self._send_json(200, dict(net.counters))  # state() without 10,000 nodes' days
        elif path == "/__sandbox/faults" and method == "GET":
            self._send_json(200, {"faults": net.faults()})
        elif path == "/__sandbox/faults" and method == "POST":
            raw = self._read_body()
            try:
                data = json.loads(raw or b"[]")
                items = data.get("faults", [data]) if isinstance(data, dict) else data
                if not isinstance(items, list):
                    raise ValueError("faults must be a list")
                faults = [Fault.model_validate(item) for item in items]
            except (ValueError, ValidationError) as exc:
                self._send_json(400, {"error": str(exc)})
                return
            for fault in faults:
                net.add_fault(fault)
            self._send_json(200, {"faults": net.faults()})
        elif path == "/__sandbox/faults/clear" and method == "POST":
            net.clear_faults()
            self._send_json(200, {"faults": []})
        elif path == "/__sandbox/expire-tokens" and method == "POST":
            self._send_json(200, {"expired": net.expire_tokens()})
        elif path == "/__sandbox/revoke-sessions" and method == "POST":
            self._send_json(200, {"revoked": net.revoke_sessions()})
        elif path == "/__sandbox/password" and method == "POST":
            body = self._json_body()
            changed = net.change_password(str(body.get("email", "")), str(body.get("password", "")))
            self._send_json(200 if changed else 404, {"changed": changed})
        elif path == "/__sandbox/release" and method == "POST":
            body = self._json_body()
            version = body.get("version")
            if version is not None and not re.fullmatch(r"\d+(\.\d+){0,3}", str(version)):
                self._send_json(400, {"error": f"version {version!r} is not like 1.0.16"})
                return
            self.sandbox.publish(version, bool(body.get("broken_popup")))
            self._send_json(200, {"version": self.sandbox.published_version})
        elif path == "/__sandbox/ban" and method == "POST":
            body = self._json_body()
            found = net.ban(str(body.get("clientid", "")), body.get("reason"))
            self._send_json(200 if found else 404, {"banned": found})
        elif path == "/__sandbox/tick" and method == "POST":
            net.tick()
            self._send_json(200, {"simTime": net.sim_now_ms()})
        else:
            self._send_json(404, {"error": "not found", "path": path})


_API_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("POST", re.compile(r"/user/profile"), "profile"),
    ("POST", re.compile(r"/point/stats"), "point_stats"),
    ("POST", re.compile(r"/sentrynode/stats/([^/]+)"), "node_stats"),
    ("GET", re.compile(r"/sentrynode/get/([^/]+)"), "node_get"),
    ("POST", re.compile(r"/sentrynode/list"), "node_list"),
    ("POST", re.compile(r"/sentrynode/register"), "register"),
    ("POST", re.compile(r"/sentrynode/fp/add/([^/]+)"), "fp_add"),
    ("GET", re.compile(r"/sentrynode/latency/list/([^/]+/\d+)"), "latency_list"),
    ("GET", re.compile(r"/geocode"), "geocode"),
]


REAL_WEB_NAMES = (
    "api.gradient.network",
    "app.gradient.network",
    "securetoken.googleapis.com",
    "identitytoolkit.googleapis.com",
)


def _match_api(method: str, path: str) -> tuple[str, str] | None:
    for verb, pattern, name in _API_ROUTES:
        m = pattern.fullmatch(path)
        if m and verb == method:
            return name, (m.group(1) if m.groups() else "")
    return None


class SandboxServer:
    """The sandbox network behind a local HTTP server.

    >>> server = SandboxServer(SandboxConfig(speed=60))
    >>> base = server.start()        # "http://127.0.0.1:PORT"
    >>> server.stop()
    """

    def __init__(
        self,
        config: SandboxConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        network: SandboxNetwork | None = None,
        extension_id: str = SANDBOX_EXTENSION_ID,
        tick_seconds: float = 1.0,
        stun_port: int = 0,
        tls: TlsFiles | None = None,
        extension_dir: Path | None = None,
    ) -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"the sandbox listens on loopback addresses only, not {host}")
        self.config = config or (network.config if network else SandboxConfig())
        self.network = network or SandboxNetwork(self.config)
        self.host = host
        self.port = port
        self.extension_id = extension_id
        self.tick_seconds = tick_seconds
        # the network's STUN server, on 127.0.0.1 and 127.0.0.2 (RFC 5780 needs two addresses)
        self.stun = StunServer(port=stun_port)
        self.release = Release()  # what the store publishes now (see publish)
        # an unpacked extension to serve as the store's CRX instead of the sandbox's own (a
        # test's copy of Gradient's published one; never the demo's)
        self.extension_dir = extension_dir
        self.tls = tls
        self.https_port = 0
        self.broker: Broker | None = None
        self._httpd: _Server | None = None
        self._httpsd: _Server | None = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> str:
        if self._httpd is not None:
            return self.url
        self._stop.clear()
        self.stun.start()
        net = self.network
        self.broker = Broker(
            self.host,
            on_connect=net.mqtt_connected,
            on_disconnect=net.mqtt_disconnected,
            on_message=net.mqtt_message,
            tls=self.tls,
        )
        self.broker.start()
        self._httpd = _Server((self.host, self.port), self)
        self.port = self._httpd.server_address[1]
        self._spawn(self._httpd.serve_forever, "sandbox-http")
        if self.tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.tls.certfile, self.tls.keyfile)
            self._httpsd = _Server((self.host, 0), self, context)
            self.https_port = self._httpsd.server_address[1]
            self._spawn(self._httpsd.serve_forever, "sandbox-https")
        self._spawn(self._tick_loop, "sandbox-tick")
        log.info("sandbox network listening on %s", self.url)
        return self.url

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _tick_loop(self) -> None:
        while not self._stop.wait(self.tick_seconds):
            try:
                for topic, payload in self.network.take_outbox():
                    if self.broker is not None:
                        self.broker.publish(topic, payload)
            except Exception:
                log.exception("sandbox tick failed")

    def stop(self) -> None:
        self._stop.set()
        for httpd in (self._httpd, self._httpsd):
            if httpd is not None:
                httpd.shutdown()
                httpd.server_close()
        self._httpd = self._httpsd = None
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
        self.stun.stop()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []

    def __enter__(self) -> SandboxServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- addresses ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("sandbox server is not running")
        return f"http://{self.host}:{self.port}"

    @property
    def api_base(self) -> str:
        return f"{self.url}/api"

    @property
    def mqtt_url(self) -> str:
        """The broker's WebSocket address, as the served extension's config names it."""
        if self.broker is None:
            raise RuntimeError("sandbox server is not running")
        return self.broker.ws_url

    def host_resolver_rules(self) -> str:
        """Chromium's ``--host-resolver-rules`` value that sends the real names to this
        sandbox's HTTPS and TLS WebSocket listeners (needs ``tls``)."""
        if self.tls is None or self.broker is None:
            raise RuntimeError("the sandbox serves the real names only with a certificate (tls)")
        web = f"{self.host}:{self.https_port}"
        rules = [f"MAP {name} {web}" for name in REAL_WEB_NAMES]
        rules.append(f"MAP wss.gradient.network {self.host}:{self.broker.wss_port}")
        return ", ".join(rules)

    @property
    def identity_url(self) -> str:
        """Identity toolkit stand-in base (``.../v1``); append ``/accounts:signInWithPassword``."""
        return f"{self.url}/identitytoolkit/v1"

    @property
    def securetoken_base(self) -> str:
        """Secure token stand-in base (``.../v1``); append ``/token``."""
        return f"{self.url}/securetoken/v1"

    @property
    def securetoken_url(self) -> str:
        """Full URL of the secure token stand-in (``.../v1/token``)."""
        return f"{self.url}/securetoken/v1/token"

    @property
    def dashboard_login_url(self) -> str:
        """The dashboard's address (its sign-in form), as `network.dashboard_url` names it."""
        return f"{self.url}/app/"

    @property
    def crx_update_base(self) -> str:
        """Stand-in for ``https://clients2.google.com/service/update2/crx``."""
        return f"{self.url}/service/update2/crx"

    def crx_url(self, prodversion: str = "156.0.0.0") -> str:
        query = urlencode(
            {
                "response": "redirect",
                "prodversion": prodversion,
                "acceptformat": "crx2,crx3",
                "x": f"id={self.extension_id}&uc",
            },
            quote_via=quote,
        )
        return f"{self.crx_update_base}?{query}"

    def describe(self) -> dict[str, Any]:
        return {
            "service": "GradientLab sandbox network",
            "api": self.api_base,
            "identitytoolkit": self.identity_url,
            "securetoken": self.securetoken_url,
            "dashboard": self.dashboard_login_url,
            "crx": self.crx_url(),
            "extensionId": self.extension_id,
            "apiKey": self.config.api_key,
            "stun": self.stun.address,
            "mqtt": self.broker.ws_url if self.broker else None,
        }

    def fleet_network_yaml(self) -> str:
        """The fleet file's `network:` section that points GradientLab at this sandbox."""
        url = self.url
        source = (
            f"{url}/service/update2/crx?response=redirect&prodversion={{chromium_version}}"
            "&acceptformat=crx2,crx3&x=id%3D{extension_id}%26uc"
        )
        return (
            "network:\n"
            f"  api_base: {url}/api\n"
            f"  identity_base: {url}/identitytoolkit\n"
            f"  token_base: {url}/securetoken\n"
            f"  dashboard_url: {self.dashboard_login_url}\n"
            f"  web_api_key: {self.config.api_key}\n"
            f"  extension_id: {self.extension_id}\n"
            f'  extension_source: "{source}"\n'
            f"  stun_server: {self.stun.address}\n"
        )

    # ---- content -----------------------------------------------------------------------------

    def crx(self) -> bytes:
        """The extension as served: a CRX3 built now, with this server's ``config.js`` (or the
        given ``extension_dir`` packed as it is)."""
        if self.extension_dir is not None:
            return crx_of_folder(self.extension_dir)
        return build_crx(
            self.url,
            api_key=self.config.api_key,
            heartbeat_seconds=self.config.extension_heartbeat_seconds,
            mqtt_url=self.mqtt_url,
            release=self.release,
        )

    @property
    def published_version(self) -> str:
        """The version the update service answers with (a newer release once one is out)."""
        if self.extension_dir is not None:
            return str(json.loads((self.extension_dir / "manifest.json").read_text())["version"])
        return self.release.version or extension_version()

    def publish(self, version: str | None, broken_popup: bool = False) -> None:
        """Publish a new extension version (None: back to the folder's); `broken_popup` ships a
        popup that no longer looks as the real one does (a release that changed its pages)."""
        files = {"popup.html": b"<!doctype html><p>A new look</p>"} if broken_popup else {}
        self.release = Release(version, files)

    def dashboard_page(self, name: str) -> str:
        template = (DASHBOARD_DIR / name).read_text()
        cfg = {
            "apiKey": self.config.api_key,
            "extensionId": self.extension_id,
            "identityUrl": "/identitytoolkit/v1",
            "tokenUrl": "/securetoken/v1/token",
        }
        # JSON inside <script type="application/json">: escape "<" so it cannot close the tag.
        blob = json.dumps(cfg).replace("<", "\\u003c")
        return template.replace("{{SANDBOX_CONFIG}}", blob)
