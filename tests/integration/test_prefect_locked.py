"""Prefect as GradientLab starts it (the demo's and `serve`'s server on loopback) is locked by
default: a web page open in the operator's browser (a foreign Origin, no credentials) gets
nothing from it, not even a CORS grant; its own UI's origin is allowed; a request with the auth
string but no CSRF token changes nothing; Prefect's own client works; and the key that encrypts
Secret blocks lives outside Prefect's database, in a 0600 file of GradientLab's data folder."""

from __future__ import annotations

import base64
import os
import socket
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from gradientlab.binding import PREFECT_CLIENT_AUTH_VAR, PREFECT_SERVER_AUTH_VAR
from gradientlab.cli import services
from gradientlab.paths import data_dir

FOREIGN = "http://attacker.example"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_foreign_page_without_credentials_gets_nothing_from_gradientlabs_prefect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in (PREFECT_SERVER_AUTH_VAR, PREFECT_CLIENT_AUTH_VAR, "PREFECT_SERVER_ENCRYPTION_KEY"):
        monkeypatch.delenv(var, raising=False)  # as the demo starts it: nothing set by anyone
    monkeypatch.setenv("GRADIENTLAB_HOME", str(tmp_path / "home"))
    port = free_port()
    home = tmp_path / "prefect"
    server = services.start_prefect_server(home, port, tmp_path)
    try:
        cmdline = Path(f"/proc/{server.pid}/cmdline").read_text()
        env = services.prefect_env(home, port)
        auth = env[PREFECT_CLIENT_AUTH_VAR]
        assert auth and auth not in cmdline
        for name in (services.AUTH_STRING_FILE, services.ENCRYPTION_KEY_FILE):
            assert stat.S_IMODE((data_dir() / name).stat().st_mode) == 0o600, name
        # a Secret block saved by Prefect's own client (auth string from its env, CSRF token
        # fetched by it), as the fleet's blocks are
        base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        save = (
            "from prefect.blocks.system import Secret\n"
            "Secret(value='the-fleet-ssh-key').save('fleet-key', overwrite=True)\n"
            "print(Secret.load('fleet-key').get())\n"
        )
        saved = subprocess.run([sys.executable, "-c", save], env={**base, **env},
                               capture_output=True, text=True, timeout=180)  # fmt: skip
        assert saved.returncode == 0, saved.stderr[-2000:]
        assert saved.stdout.strip().endswith("the-fleet-ssh-key")
        # Prefect keeps no encryption key of its own in its database: it is outside, in a file
        with sqlite3.connect(home / "prefect.db") as db:
            keys = [k for (k,) in db.execute("SELECT key FROM configuration")]
        assert "ENCRYPTION_KEY" not in keys

        api = f"http://127.0.0.1:{port}/api"
        page = {"Origin": FOREIGN}
        with httpx.Client(timeout=30) as http:
            for method, path in [
                ("POST", "/block_documents/filter?include_secrets=true"),
                ("POST", "/deployments/filter"),
                ("GET", "/admin/settings"),
                ("POST", "/flow_runs/filter"),
            ]:
                answer = http.request(method, api + path, json={}, headers=page)
                # no credentials: 401; a write is refused for its missing CSRF token first
                expected = 401 if method == "GET" else 403
                assert answer.status_code == expected, (path, answer.status_code, answer.text)
                assert "the-fleet-ssh-key" not in answer.text
                assert answer.headers.get("access-control-allow-origin") in (None, ""), path
            preflight = {
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            }
            foreign = http.options(f"{api}/flows/filter", headers={**page, **preflight})
            assert foreign.headers.get("access-control-allow-origin") not in (FOREIGN, "*")
            own = f"http://127.0.0.1:{port}"
            ui = http.options(f"{api}/flows/filter", headers={"Origin": own, **preflight})
            assert ui.headers.get("access-control-allow-origin") == own
            # a forged CSRF token and client id, still without credentials: 401
            forged = {**page, "Prefect-Csrf-Token": "x", "Prefect-Csrf-Client": "page"}
            answer = http.post(f"{api}/block_documents/filter", json={}, headers=forged)
            assert answer.status_code in (401, 403) and "the-fleet-ssh-key" not in answer.text
            # with the auth string, still no state change without Prefect's CSRF token
            signed = {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()}
            answer = http.post(f"{api}/flows/", json={"name": "by-a-page"}, headers=signed)
            assert answer.status_code == 403 and "CSRF" in answer.text
            assert http.get(f"{api}/admin/version", headers=signed).status_code == 200
    finally:
        server.stop()
