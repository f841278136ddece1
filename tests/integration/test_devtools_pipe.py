"""Chromium's DevTools on a node host reach only the runner's own user: a real runner drives a
real Chromium with the sandbox extension over `--remote-debugging-pipe`, bridged to a Unix
socket of mode 0600. The browser listens on no TCP port, another local user cannot open the
socket, and the runner still logs in and reads the popup (also from a second process,
`runner.py login`)."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gradientlab.agent import devtools as agent_devtools
from gradientlab.agent import home as agent_home
from gradientlab.agent import procs as agent_procs
from gradientlab.sandbox import SANDBOX_EXTENSION_ID, SandboxConfig, SandboxServer
from gradientlab.sandbox.network import SandboxAccount
from tests.agent_files import shipped_runner
from tests.integration.test_sandbox_extension import CHROMIUM, unpack_served_crx

EMAIL = "pipe@example.test"
PASSWORD = "pipe-pass"
RUNNER_PY = shipped_runner()

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian chromium")


@pytest.fixture()
def server() -> Iterator[SandboxServer]:
    cfg = SandboxConfig(
        accounts=[SandboxAccount(email=EMAIL, password=PASSWORD, name="Pipe")],
        api_key="pipe-key",
        speed=60,
    )
    srv = SandboxServer(cfg)
    srv.start()
    yield srv
    srv.stop()


def listening_tcp_inodes() -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[3] == "0A":  # LISTEN
                    inodes.add(fields[9])
    return inodes


def socket_inodes(pid: int) -> set[str]:
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(target[len("socket:[") : -1])
    return found


def group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == pgid:
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def wait_for(what: Any, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = what()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_the_browser_listens_on_no_port_and_only_the_runners_user_reaches_it(
    server: SandboxServer, tmp_path: Path
) -> None:
    paths = agent_home.Paths(tmp_path / "node")
    paths.home.mkdir(parents=True)
    unpack_served_crx(server.crx_url(), paths.extensions / "1.0")
    os.symlink("1.0", paths.current_extension)
    paths.config.write_text(
        json.dumps(
            {
                "chromium": CHROMIUM,
                "extension_id": SANDBOX_EXTENSION_ID,
                "dashboard_url": server.dashboard_login_url,
                "email": EMAIL,
                "password": PASSWORD,
                "status_interval_seconds": 3600,
                "settle_poll_seconds": 1,
            }
        )
    )
    env = {**os.environ, "GRADIENTLAB_NODE_HOME": str(paths.home)}
    proc = subprocess.Popen(
        [sys.executable, str(RUNNER_PY), "run"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        status = wait_for(
            lambda: (
                (s := _status(paths)).get("popup", {}).get("status") not in (None, "Logged out")
                and s
            )
        )
        assert status["extension_id"] == SANDBOX_EXTENSION_ID
        browser = int(status["browser_pid"])
        assert agent_procs.cmdline_has(browser, "--remote-debugging-pipe")

        # no TCP listener in the browser's processes (nor in the runner's)
        listening = listening_tcp_inodes()
        for pid in [*group_pids(browser), proc.pid]:
            assert not socket_inodes(pid) & listening, pid

        # the DevTools socket: this user's, 0600; another local user is refused
        sock_path = agent_devtools.devtools_socket(paths)
        info = sock_path.stat()
        assert stat.S_ISSOCK(info.st_mode)
        assert info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) == 0o600
        nobody = subprocess.run(
            [
                "/usr/bin/python3",  # one every user may run
                "-c",
                "import socket, sys\n"
                "s = socket.socket(socket.AF_UNIX)\n"
                "try:\n    s.connect(sys.argv[1])\nexcept PermissionError:\n    print('refused')\n"
                "else:\n    print('connected')",
                str(sock_path),
            ],
            user=65534,
            group=65534,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert nobody.stdout.strip() == "refused", nobody.stderr

        # a second process of the runner's user drives the same browser through the socket
        login = subprocess.run(
            [sys.executable, str(RUNNER_PY), "login"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        answer = json.loads([ln for ln in login.stdout.splitlines() if ln.startswith("{")][-1])
        assert answer["logged_in"] is True, login.stderr
        assert answer["popup"]["status"] not in (None, "Logged out")

        # the browser survived both clients, and the socket accepts the next one
        assert agent_procs.pid_alive(browser)
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(sock_path))
    finally:
        proc.terminate()
        proc.wait(30)
    assert not agent_devtools.devtools_socket(paths).exists()


def _status(paths: agent_home.Paths) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(paths.status.read_text())
    except (OSError, ValueError):
        return {}
    return data
