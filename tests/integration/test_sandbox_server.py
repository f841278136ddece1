"""The sandbox over HTTP: Firebase stand-ins, envelope, auth, faults, CRX download, CLI."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import struct
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest

from gradientlab.sandbox import SANDBOX_EXTENSION_ID, SandboxConfig, SandboxServer
from gradientlab.sandbox import server as server_module
from gradientlab.sandbox.crx import EXTENSION_DIR, build_crx
from gradientlab.sandbox.extension_id import extension_id_from_manifest_key
from gradientlab.sandbox.network import DATACENTER_REASON, SandboxAccount, SandboxNetwork

KEY = "test-web-key"
EMAIL = "alice@example.test"
PASSWORD = "s3cret"
REPO = Path(__file__).resolve().parents[2]
# Sim time runs 60x from 01:00: a sim day lasts 23 real minutes from there, so no sim midnight
# falls inside this module, whatever the real hour.
SIM_START = datetime(2025, 3, 1, 1, 0, tzinfo=UTC).timestamp()


class FakeClock:
    """The network's real-time clock (token lifetimes), moved by hand instead of by sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    cfg = SandboxConfig(
        accounts=[
            SandboxAccount(email=EMAIL, password=PASSWORD, name="Alice"),
            SandboxAccount(email="bob@example.test", password="pw", name="Bob"),
        ],
        api_key=KEY,
        datacenter_ranges=["127.0.0.9/32"],
        speed=60,
        start_time=SIM_START,
    )
    srv = SandboxServer(cfg)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture()
def client(server: SandboxServer) -> Iterator[httpx.Client]:
    server.network.clear_faults()
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c
    server.network.clear_faults()


def wait_for(what: str, check: Any, timeout: float = 10) -> None:
    """Poll `check()` until it is true; the deadline is a hang guard, not a timing assertion."""
    import time

    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} did not happen"
        time.sleep(0.05)


def connect_node(
    server: SandboxServer, creds: dict[str, Any], source: str = "127.0.0.1"
) -> mqtt.Client:
    """An MQTT v5 client on the broker's WebSocket listener with register's credentials, as
    the extension connects (paho here; the extension's own client is tested in the browser)."""
    assert server.broker is not None
    node = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=creds["clientid"],
        protocol=mqtt.MQTTv5,
        transport="websockets",
    )
    node.ws_set_options(path="/mqtt")
    node.username_pw_set(creds["username"], creds["password"])
    node.connect("127.0.0.1", server.broker.ws_port, bind_address=source)
    node.loop_start()
    return node


def online(server: SandboxServer, clientid: str) -> bool:
    return any(n["clientid"] == clientid and n["connect"] for n in server.network.state()["nodes"])


def sign_in(client: httpx.Client, email: str = EMAIL, password: str = PASSWORD) -> dict[str, Any]:
    r = client.post(
        "/identitytoolkit/v1/accounts:signInWithPassword",
        params={"key": KEY},
        json={"email": email, "password": password, "returnSecureToken": True},
    )
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_sign_in_answers_firebase_fields(client: httpx.Client) -> None:
    data = sign_in(client)
    assert data["kind"] == "identitytoolkit#VerifyPasswordResponse"
    assert data["email"] == EMAIL and data["displayName"] == "Alice"
    assert data["registered"] is True and data["expiresIn"] == "3600"
    assert data["localId"] and data["idToken"] and data["refreshToken"]


@pytest.mark.parametrize(
    ("params", "body", "message"),
    [
        ({"key": KEY}, {"email": EMAIL, "password": "wrong"}, "INVALID_PASSWORD"),
        ({"key": KEY}, {"email": "nobody@x.test", "password": "x"}, "EMAIL_NOT_FOUND"),
        ({"key": "bad"}, {"email": EMAIL, "password": PASSWORD}, "API key not valid"),
        ({}, {"email": EMAIL, "password": PASSWORD}, "API key not valid"),
    ],
)
def test_sign_in_errors(
    client: httpx.Client, params: dict[str, str], body: dict[str, str], message: str
) -> None:
    r = client.post("/identitytoolkit/v1/accounts:signInWithPassword", params=params, json=body)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == 400
    assert err["message"].startswith(message)


def test_refresh_form_and_json(client: httpx.Client) -> None:
    auth = sign_in(client)
    form = client.post(
        "/securetoken/v1/token",
        params={"key": KEY},
        data={"grant_type": "refresh_token", "refresh_token": auth["refreshToken"]},
    )
    assert form.status_code == 200
    body = form.json()
    assert body["token_type"] == "Bearer"
    assert body["user_id"] == auth["localId"]
    assert body["refresh_token"] == auth["refreshToken"]
    assert body["id_token"] == body["access_token"] and body["expires_in"] == "3600"
    assert body["project_id"]
    as_json = client.post(
        "/securetoken/v1/token",
        params={"key": KEY},
        json={"grant_type": "refresh_token", "refresh_token": auth["refreshToken"]},
    )
    assert as_json.status_code == 200
    profile = client.post("/api/user/profile", headers=bearer(as_json.json()["id_token"]))
    assert profile.json()["code"] == 200
    bad = client.post(
        "/securetoken/v1/token",
        params={"key": KEY},
        data={"grant_type": "refresh_token", "refresh_token": "nope"},
    )
    assert bad.status_code == 400 and bad.json()["error"]["message"] == "INVALID_REFRESH_TOKEN"


def test_api_requires_a_bearer_token(client: httpx.Client) -> None:
    r = client.post("/api/user/profile")
    assert r.status_code == 401
    assert r.json() == {"code": 401, "msg": "unauthorized", "data": None}
    r = client.post("/api/user/profile", headers=bearer("garbage"))
    assert r.status_code == 401 and r.json()["code"] == 401


def test_id_tokens_expire_after_ttl() -> None:
    cfg = SandboxConfig(
        accounts=[SandboxAccount(email=EMAIL, password=PASSWORD)],
        api_key=KEY,
        token_ttl_seconds=300,
        start_time=SIM_START,
    )
    clock = FakeClock()
    network = SandboxNetwork(cfg, clock=clock)
    with SandboxServer(network=network) as srv, httpx.Client(base_url=srv.url) as c:
        auth = sign_in(c)
        clock.now += 299
        assert c.post("/api/user/profile", headers=bearer(auth["idToken"])).json()["code"] == 200
        clock.now += 1
        r = c.post("/api/user/profile", headers=bearer(auth["idToken"]))
        assert r.status_code == 401
        assert r.json()["msg"] == "token expired"
        fresh = c.post(
            "/securetoken/v1/token",
            params={"key": KEY},
            data={"grant_type": "refresh_token", "refresh_token": auth["refreshToken"]},
        ).json()
        assert c.post("/api/user/profile", headers=bearer(fresh["id_token"])).json()["code"] == 200


def test_node_endpoints_envelopes(client: httpx.Client, server: SandboxServer) -> None:
    auth = sign_in(client)
    h = bearer(auth["idToken"])
    reg = client.post("/api/sentrynode/register", headers=h)
    assert reg.status_code == 200
    creds = reg.json()["data"]
    assert set(creds) == {"clientid", "username", "password"}
    # the extension's bundle reads them at the top of the answer: they are there too
    assert {k: reg.json()[k] for k in creds} == creds
    c1 = creds["clientid"]
    # registered, not yet connected: the network knows the node, offline
    assert client.get(f"/api/sentrynode/get/{c1}", headers=h).json()["data"]["connect"] is False
    node = connect_node(server, creds)
    try:
        wait_for("the node's MQTT connection", lambda: online(server, c1))
        got = client.get(f"/api/sentrynode/get/{c1}", headers=h).json()
        assert got["data"]["connect"] is True
    finally:
        node.disconnect()
        node.loop_stop()
    wait_for("the node's MQTT close", lambda: not online(server, c1))
    assert client.get(f"/api/sentrynode/get/{c1}", headers=h).json()["data"]["connect"] is False
    assert got["code"] == 200
    assert set(got["data"]) >= {
        "active",
        "connect",
        "banned",
        "bannedReason",
        "ip",
        "today",
        "season",
        "location",
    }
    assert set(got["data"]["location"]) == {"country", "place"}
    body = {"page": 1, "size": 10, "field": "active", "direction": 0, "active": True}
    listed = client.post("/api/sentrynode/list", headers=h, json={**body, "banned": "", "hide": 0})
    rows = listed.json()["data"]
    row = next(r for r in rows if r["name"] == c1)
    assert set(row) >= {"name", "connect", "point", "today", "latency", "location", "ip", "banned"}
    status = client.get("/api/status").json()
    now = status["data"]
    assert now["ip"] == "127.0.0.1" and isinstance(now["time"], int)
    assert status["ip"] == now["ip"]  # where the extension's bundle reads it
    rng = {"start": now["time"] - 86_400_000, "end": now["time"], "type": "DAY"}
    stats = client.post(f"/api/sentrynode/stats/{c1}", headers=h, json=rng).json()
    assert stats["code"] == 200
    assert all(set(i) == {"id", "duration", "latency"} for i in stats["data"])
    assert all(len(i["id"]) == 8 and i["id"].isdigit() for i in stats["data"])
    points = client.post("/api/point/stats", headers=h, json=rng).json()
    assert points["code"] == 200
    assert all(set(i) == {"id", "node", "referral", "bonus", "boost"} for i in points["data"])
    profile = client.post("/api/user/profile", headers=h).json()["data"]
    assert profile["name"] == "Alice"
    assert set(profile["point"]) == {"total", "balance", "referral"}
    assert profile["node"]["sentryActive"] >= 0
    # Unknown node, and another account's node: envelope code 404.
    assert client.get("/api/sentrynode/get/nope", headers=h).json()["code"] == 404
    bob = bearer(sign_in(client, "bob@example.test", "pw")["idToken"])
    assert client.get(f"/api/sentrynode/get/{c1}", headers=bob).json()["code"] == 404
    assert client.post(f"/api/sentrynode/stats/{c1}", headers=bob, json=rng).json()["code"] == 404


def test_the_extensions_other_calls_are_answered_and_recorded(
    client: httpx.Client, server: SandboxServer
) -> None:
    h = bearer(sign_in(client)["idToken"])
    c1 = client.post("/api/sentrynode/register", headers=h).json()["clientid"]
    before = dict(server.network.calls)
    fp = client.post(f"/api/sentrynode/fp/add/{c1}", headers=h, json={"overallHash": "x"})
    assert fp.json()["code"] == 200
    assert client.get(f"/api/sentrynode/latency/list/{c1}/10", headers=h).json()["data"] == []
    assert client.get("/api/geocode?lat=1&lng=2", headers=h).json()["features"] == []
    for name in ("announcement", "banner"):
        assert client.get(f"/api/market/pub/{name}/list").json()["data"] == []
    calls = server.network.calls
    for name in ("fp/add", "latency/list", "geocode", "announcement", "banner"):
        assert calls.get(name, 0) == before.get(name, 0) + 1, name
    node = next(n for n in server.network.state()["nodes"] if n["clientid"] == c1)
    assert node["fingerprints"] == 1


def test_datacenter_peer_address_is_unsupported(server: SandboxServer) -> None:
    transport = httpx.HTTPTransport(local_address="127.0.0.9")
    with httpx.Client(base_url=server.url, transport=transport) as c:
        h = bearer(sign_in(c)["idToken"])
        creds = c.post("/api/sentrynode/register", headers=h).json()["data"]
        node = connect_node(server, creds, source="127.0.0.9")
        try:
            wait_for("the node's MQTT connection", lambda: online(server, creds["clientid"]))
            view = c.get(f"/api/sentrynode/get/{creds['clientid']}", headers=h).json()["data"]
        finally:
            node.disconnect()
            node.loop_stop()
        assert view["connect"] is True and view["ip"] == "127.0.0.9"
        assert view["banned"] is True and view["bannedReason"] == DATACENTER_REASON


def test_fault_5xx_for_n_requests(client: httpx.Client) -> None:
    h = bearer(sign_in(client)["idToken"])
    r = client.post("/__sandbox/faults", json={"kind": "error", "status": 502, "count": 2})
    assert r.status_code == 200
    first = client.post("/api/user/profile", headers=h)
    second = client.post("/api/user/profile", headers=h)
    third = client.post("/api/user/profile", headers=h)
    assert [first.status_code, second.status_code, third.status_code] == [502, 502, 200]
    assert first.json()["code"] == 502
    assert third.json()["code"] == 200


def test_fault_429_with_retry_after_until_cleared(client: httpx.Client) -> None:
    h = bearer(sign_in(client)["idToken"])
    client.post(
        "/__sandbox/faults",
        json={"faults": [{"kind": "rate_limit", "retry_after": 7, "path": "/api/point"}]},
    )
    for _ in range(3):
        r = client.post("/api/point/stats", headers=h, json={"start": 0, "end": 1, "type": "DAY"})
        assert r.status_code == 429
        assert r.headers["Retry-After"] == "7"
        assert r.json()["code"] == 429
    assert client.post("/api/user/profile", headers=h).status_code == 200  # other path
    client.post("/__sandbox/faults/clear")
    r = client.post("/api/point/stats", headers=h, json={"start": 0, "end": 1, "type": "DAY"})
    assert r.status_code == 200


def test_fault_extra_fields(client: httpx.Client) -> None:
    h = bearer(sign_in(client)["idToken"])
    client.post("/api/sentrynode/register", headers=h)
    client.post("/__sandbox/faults", json={"kind": "extra_fields", "fields": {"zzNew": 1}})
    profile = client.post("/api/user/profile", headers=h).json()
    assert profile["zzNew"] == 1 and profile["data"]["zzNew"] == 1
    assert profile["data"]["name"] == "Alice"
    rows = client.post("/api/sentrynode/list", headers=h, json={}).json()["data"]
    assert rows and all(r["zzNew"] == 1 for r in rows)


def test_fault_slow_and_expire_tokens(
    client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth = sign_in(client)
    h = bearer(auth["idToken"])
    slept: list[float] = []
    monkeypatch.setattr(server_module, "time", SimpleNamespace(sleep=slept.append))
    client.post("/__sandbox/faults", json={"kind": "slow", "delay": 0.5, "count": 1})
    assert client.post("/api/user/profile", headers=h).status_code == 200
    assert slept == [0.5]  # the answer was held back by the fault's delay
    assert client.post("/api/user/profile", headers=h).status_code == 200
    assert slept == [0.5]  # count 1: once only
    client.post("/__sandbox/faults", json={"kind": "expire_tokens"})
    r = client.post("/api/user/profile", headers=h)
    assert r.status_code == 401 and r.json()["msg"] == "token expired"


def test_state_hook(client: httpx.Client) -> None:
    state = client.get("/__sandbox/state").json()
    assert {"simTime", "nodes", "accounts", "faults"} <= set(state)
    assert {a["email"] for a in state["accounts"]} == {EMAIL, "bob@example.test"}


def test_extension_id_matches_manifest_key() -> None:
    manifest = json.loads((EXTENSION_DIR / "manifest.json").read_text())
    assert extension_id_from_manifest_key(manifest["key"]) == SANDBOX_EXTENSION_ID
    assert manifest["manifest_version"] == 3
    assert manifest["externally_connectable"]["matches"] == [
        "http://127.0.0.1/*",
        "https://app.gradient.network/*",
    ]


def parse_crx(data: bytes) -> tuple[bytes, zipfile.ZipFile]:
    assert data[:4] == b"Cr24"
    version, header_size = struct.unpack("<II", data[4:12])
    assert version == 3
    header = data[12 : 12 + header_size]
    assert len(header) == header_size
    return header, zipfile.ZipFile(io.BytesIO(data[12 + header_size :]))


def test_served_crx_parses(client: httpx.Client, server: SandboxServer) -> None:
    ext_id = SANDBOX_EXTENSION_ID
    r = client.get(
        f"/service/update2/crx?response=redirect&prodversion=156.0.0.0"
        f"&acceptformat=crx2,crx3&x=id%3D{ext_id}%26uc"
    )
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/x-chrome-extension"
    header, zf = parse_crx(r.content)
    assert zf.testzip() is None
    manifest = json.loads(zf.read("manifest.json"))
    assert manifest["name"] == "Gradient Sentry Node (sandbox)"
    assert base64.b64decode(manifest["key"]) in header  # public key carried in the header
    config = zf.read("config.js").decode()
    assert f'"{server.url}/api"' in config
    assert f'"{server.url}/securetoken/v1/token"' in config
    assert f'"{KEY}"' in config
    assert {"background.js", "popup.html", "popup.js", "api.js"} <= set(zf.namelist())
    assert client.get(server.crx_url()).content[:4] == b"Cr24"
    other = client.get(
        "/service/update2/crx?response=redirect&x=id%3Daaaabbbbccccddddeeeeffffgggghhhh%26uc"
    )
    assert other.status_code == 404


def test_build_crx_bakes_the_base_url() -> None:
    _, zf = parse_crx(build_crx("http://127.0.0.1:9999", api_key="k"))
    assert '"http://127.0.0.1:9999/api"' in zf.read("config.js").decode()


def test_the_dashboard_has_the_real_ones_shape(client: httpx.Client) -> None:
    """The sign-in form at the root with the real placeholders, the signed-in page under
    /dashboard; older fleet files' /dashboard/login still lands on the form."""
    page = client.get("/app/")
    assert page.status_code == 200
    assert 'placeholder="Enter Email"' in page.text
    assert 'placeholder="Enter Password"' in page.text
    assert SANDBOX_EXTENSION_ID in page.text and KEY in page.text
    assert 'placeholder="Enter Email"' not in client.get("/app/dashboard").text
    assert client.get("/dashboard/login").headers["location"] == "/app/"
    assert client.get("/app/assets/dashboard.js").status_code == 200
    assert client.get("/app/assets/../network.py").status_code == 404
    assert client.get("/app/assets/x.py").status_code == 404


def test_refuses_non_loopback_bind() -> None:
    with pytest.raises(ValueError):
        SandboxServer(host="0.0.0.0")


def test_module_entry_point_prints_url_and_stops_on_sigterm() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gradientlab.sandbox",
            "--port",
            "0",
            "--stun-port",
            "0",
            "--speed",
            "10",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        assert httpx.get(f"{url}/api/status").json()["code"] == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_keep_alive_survives_answers_that_skip_the_body(client: httpx.Client) -> None:
    """A 401 (or a fault) answered before the body is read must not corrupt the next request."""
    body = {"start": 0, "end": 1, "type": "DAY"}
    for _ in range(3):
        r = client.post("/api/point/stats", headers=bearer("expired"), json=body)
        assert r.status_code == 401
    auth = sign_in(client)  # same connection
    client.post("/__sandbox/faults", json={"kind": "error", "count": 1})
    assert client.post("/api/point/stats", json=body).status_code == 503
    h = bearer(auth["idToken"])
    assert client.post("/api/point/stats", headers=h, json=body).json()["code"] == 200


def test_chunked_request_body(client: httpx.Client) -> None:
    h = bearer(sign_in(client)["idToken"])

    def chunks() -> Iterator[bytes]:
        yield b'{"start": 0, "end": 1,'
        yield b' "type": "DAY"}'

    r = client.post("/api/point/stats", headers=h, content=chunks())
    assert r.json()["code"] == 200
    assert client.post("/api/user/profile", headers=h).json()["code"] == 200


def test_a_published_release_changes_the_served_version_and_pages(
    server: SandboxServer, client: httpx.Client
) -> None:
    import json

    try:
        assert client.post("/__sandbox/release", json={"version": "1.x"}).status_code == 400
        answer = client.post("/__sandbox/release", json={"version": "0.3.0", "broken_popup": True})
        assert answer.json() == {"version": "0.3.0"}
        _, zf = parse_crx(client.get(server.crx_url().replace(server.url, "")).content)
        assert json.loads(zf.read("manifest.json"))["version"] == "0.3.0"
        assert zf.read("popup.html") == b"<!doctype html><p>A new look</p>"  # pages changed
        assert "popup.js" in zf.namelist()
    finally:
        client.post("/__sandbox/release", json={})
    _, zf = parse_crx(client.get(server.crx_url().replace(server.url, "")).content)
    assert json.loads(zf.read("manifest.json"))["version"] == "0.1.0"
