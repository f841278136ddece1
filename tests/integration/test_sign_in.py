"""Sign-in where GradientLab starts servers: a real Prefect server with its auth string turns
away clients without it and serves clients with it; GradientLab refuses to start one beyond
loopback without it; the app's users are managed from the command line without a password
ever on it."""

from __future__ import annotations

import base64
import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from gradientlab import app_users
from gradientlab.binding import PREFECT_CLIENT_AUTH_VAR, PREFECT_SERVER_AUTH_VAR
from gradientlab.cli import services

GRADIENTLAB = str(Path(sys.executable).with_name("gradientlab"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7", "prefect.example"])
def test_gradientlab_will_not_start_prefect_beyond_loopback_without_its_auth_string(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    monkeypatch.delenv(PREFECT_SERVER_AUTH_VAR, raising=False)
    started: list[services.Service] = []

    with pytest.raises(services.ServiceError, match=PREFECT_SERVER_AUTH_VAR):
        services.start_prefect_server(
            tmp_path / "prefect", free_port(), tmp_path, started.append, host=host
        )
    assert not started  # refused before anything ran

    env = {k: v for k, v in os.environ.items() if k != PREFECT_SERVER_AUTH_VAR}
    done = subprocess.run(
        [GRADIENTLAB, "prefect-server", "--host", host, "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "refusing to start Prefect's server" in done.stderr
    assert PREFECT_SERVER_AUTH_VAR in done.stderr and PREFECT_CLIENT_AUTH_VAR in done.stderr


def test_prefect_server_with_an_auth_string_turns_away_clients_without_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth = f"admin:{secrets.token_urlsafe(24)}"
    monkeypatch.setenv(PREFECT_SERVER_AUTH_VAR, auth)
    monkeypatch.delenv(PREFECT_CLIENT_AUTH_VAR, raising=False)
    port = free_port()
    # every address, as a production server listens; the auth string makes that allowed
    server = services.start_prefect_server(tmp_path / "prefect", port, tmp_path, host="0.0.0.0")
    try:
        assert auth not in Path(f"/proc/{server.pid}/cmdline").read_text()
        api = f"http://127.0.0.1:{port}/api"
        good = "Basic " + base64.b64encode(auth.encode()).decode()
        bad = "Basic " + base64.b64encode(b"admin:guess").decode()
        with httpx.Client(timeout=30) as http:  # a read: CSRF tokens guard the writes
            assert http.get(f"{api}/admin/version").status_code == 401
            answer = http.get(f"{api}/admin/version", headers={"Authorization": bad})
            assert answer.status_code == 401
            answer = http.get(f"{api}/admin/version", headers={"Authorization": good})
            assert answer.status_code == 200

        # Prefect's own client, as workers and flows use it: the auth string from its env
        env = services.prefect_env(tmp_path / "prefect", port, "0.0.0.0")
        assert env[PREFECT_CLIENT_AUTH_VAR] == auth
        assert env["PREFECT_API_URL"] == api
        check = [
            sys.executable,
            "-c",
            "import asyncio\nfrom prefect import get_client\n"
            "async def main():\n"
            "    async with get_client() as c:\n"
            "        print(len(await c.read_flows()))\n"
            "asyncio.run(main())",
        ]
        base = {k: v for k, v in os.environ.items() if k != PREFECT_SERVER_AUTH_VAR}
        signed = subprocess.run(
            check, env={**base, **env}, capture_output=True, text=True, timeout=120
        )
        assert signed.returncode == 0, signed.stderr
        assert signed.stdout.strip() == "0"

        unsigned_env = {**base, **env}
        unsigned_env.pop(PREFECT_CLIENT_AUTH_VAR)
        unsigned = subprocess.run(
            check, env=unsigned_env, capture_output=True, text=True, timeout=120
        )
        assert unsigned.returncode != 0
        assert "401" in unsigned.stderr
    finally:
        server.stop()


def test_app_users_are_added_from_stdin_listed_and_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    users = tmp_path / "app-users.toml"
    env = {**os.environ, app_users.USERS_FILE_VAR: str(users)}

    def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [GRADIENTLAB, "app-user", *args],
            input=stdin,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    password = "a long enough password"
    added = cli("add", "alice", "--role", "operator", stdin=password + "\n")
    assert added.returncode == 0, added.stderr
    assert password not in users.read_text()
    assert cli("add", "bob", "--role", "viewer", stdin="short\n").returncode == 2
    assert "at least 12 characters" in cli("add", "bob", "--role", "viewer", stdin="x\n").stderr
    assert cli("list").stdout.splitlines() == ["alice\toperator"]
    monkeypatch.setenv(app_users.USERS_FILE_VAR, str(users))
    assert app_users.authenticate(app_users.load_users(), "alice", password) is not None

    assert cli("remove", "alice").returncode == 0
    gone = cli("remove", "alice")
    assert gone.returncode == 2 and "no user 'alice'" in gone.stderr
    assert "no users" in cli("list").stdout
