"""The node runner's parts that run processes: the extension install (from a file:// source, with
a stand-in `chromium --version`); the runner as real processes (one per host, crash reports, the
event log's id, the PSS split, re-reading a new browser, systemd command selection with a
stand-in `systemctl`); the health probe (PROBE_SH) run by /bin/sh; a profile lock left by a
dead process."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gradientlab.agent import browser as agent_browser
from gradientlab.agent import commands as agent_commands
from gradientlab.agent import extension as agent_extension
from gradientlab.agent import home as agent_home
from gradientlab.agent import lock as agent_lock
from gradientlab.agent import procs as agent_procs
from gradientlab.agent import supervise as agent_supervise
from gradientlab.node.deploy import PROBE_SH
from gradientlab.remote.executor import LocalExecutor
from gradientlab.sandbox.extension_id import SANDBOX_EXTENSION_ID
from tests.agent_files import shipped_runner
from tests.unit.test_runner import (
    SANDBOX_KEY,
    SANDBOX_KEY_B64,
    crx2,
    crx3,
    extension_zip,
    lock_profile,
    singletons,
)

# ---------------------------------------------------------------- the profile lock


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_lock_held_by_a_dead_pid_on_this_host_is_cleared(tmp_path: Path) -> None:
    profile = tmp_path / "profile"
    lock_profile(profile, f"{socket.gethostname()}-{dead_pid()}")
    (profile / "Preferences").write_text("{}")
    assert agent_browser.clear_stale_singleton_lock(profile) is True
    assert singletons(profile) == []
    assert (profile / "Preferences").exists()  # nothing else goes


# ---------------------------------------------------------------- install-extension


EXT_ID = "abcdefghijklmnopabcdefghijklmnop"


class Home:
    """A node home with a config.json, a stand-in chromium and a file:// extension source."""

    def __init__(self, root: Path) -> None:
        self.paths = agent_home.Paths(root / "node")
        self.paths.home.mkdir()
        self.store = root / "store"
        self.store.mkdir()
        chromium = root / "bin" / "chromium"
        chromium.parent.mkdir()
        chromium.write_text(
            '#!/bin/sh\n[ "$1" = --version ] && echo "Chromium 156.0.1.2 built for tests"\n'
        )
        chromium.chmod(chromium.stat().st_mode | stat.S_IXUSR)
        config = {
            "extension_id": EXT_ID,
            "extension_source": f"file://{self.store}/{{extension_id}}-{{chromium_version}}.crx",
            "chromium": str(chromium),
        }
        self.paths.config.write_text(json.dumps(config))
        # where the template must lead: both placeholders filled in
        self.source = self.store / f"{EXT_ID}-156.0.1.2.crx"

    def publish(self, data: bytes) -> None:
        self.source.write_bytes(data)

    def install(self) -> dict[str, Any]:
        result = agent_extension.cmd_install_extension(self.paths)
        json.dumps(result)  # what main() prints
        return result

    def current(self) -> str:
        return os.readlink(self.paths.current_extension)

    def version_dirs(self) -> list[str]:
        return sorted(
            p.name
            for p in self.paths.extensions.iterdir()
            if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")
        )

    def manifest(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(
            (self.paths.current_extension / "manifest.json").read_text()
        )
        return data


@pytest.fixture()
def home(tmp_path: Path) -> Home:
    return Home(tmp_path)


def test_install_unpacks_and_points_current_at_the_version(home: Home) -> None:
    home.publish(crx3(extension_zip("1.0.0", key=SANDBOX_KEY_B64), SANDBOX_KEY))
    result = home.install()
    assert result["changed"] is True
    assert result["fetched"] is True
    assert result["version"] == "1.0.0"
    assert result["extension_id"] == SANDBOX_EXTENSION_ID
    assert result["path"] == str(home.paths.extensions / "1.0.0")
    assert home.current() == "1.0.0"
    assert (home.paths.current_extension / "popup.html").read_text() == "<html>popup</html>"
    assert (home.paths.current_extension / "js" / "background.js").exists()
    assert home.paths.current_extension.resolve() == home.paths.extensions / "1.0.0"
    assert (home.paths.crx_cache / f"{EXT_ID}.crx").read_bytes() == home.source.read_bytes()
    assert home.version_dirs() == ["1.0.0"]


def test_a_second_install_of_the_same_files_changes_nothing(home: Home) -> None:
    home.publish(crx3(extension_zip("1.0.0"), SANDBOX_KEY))
    assert home.install()["changed"] is True
    marker = home.paths.extensions / "1.0.0" / ".gradientlab-sha256"
    before = marker.stat().st_mtime_ns
    again = home.install()
    assert again["changed"] is False
    assert again["fetched"] is True
    # the same files zipped again on another day: still no change
    home.publish(crx3(extension_zip("1.0.0", date_time=(2025, 6, 7, 8, 9, 10)), SANDBOX_KEY))
    rebuilt = home.install()
    assert rebuilt["changed"] is False
    assert marker.stat().st_mtime_ns == before
    assert home.current() == "1.0.0"


def test_the_same_version_with_other_files_is_a_change(home: Home) -> None:
    home.publish(crx3(extension_zip("1.0.0"), SANDBOX_KEY))
    home.install()
    home.publish(crx3(extension_zip("1.0.0", popup="<html>fixed</html>"), SANDBOX_KEY))
    assert home.install()["changed"] is True
    assert (home.paths.current_extension / "popup.html").read_text() == "<html>fixed</html>"


def test_a_new_version_switches_current_and_removes_the_old_one(home: Home) -> None:
    home.publish(crx3(extension_zip("1.0.0"), SANDBOX_KEY))
    home.install()
    home.publish(crx3(extension_zip("1.1.0"), SANDBOX_KEY))
    result = home.install()
    assert result["changed"] is True
    assert result["version"] == "1.1.0"
    assert home.current() == "1.1.0"
    # the browser still running until the runner restarts loaded 1.0.0: its files stay
    assert home.version_dirs() == ["1.0.0", "1.1.0"]
    assert home.manifest()["version"] == "1.1.0"

    home.publish(crx3(extension_zip("1.2.0"), SANDBOX_KEY))
    home.install()
    assert home.current() == "1.2.0"
    assert home.version_dirs() == ["1.1.0", "1.2.0"]  # the one before last is gone
    assert not (home.paths.extensions / "1.0.0").exists()


def test_a_failed_download_falls_back_to_the_cached_copy(home: Home) -> None:
    home.publish(crx3(extension_zip("1.0.0"), SANDBOX_KEY))
    home.install()
    home.source.unlink()
    result = home.install()
    assert result["fetched"] is False
    assert result["changed"] is False
    assert result["version"] == "1.0.0"
    assert home.current() == "1.0.0"


def test_a_failed_download_without_a_cache_names_the_url(home: Home) -> None:
    with pytest.raises(
        RuntimeError, match=f"could not download the extension from file://{home.source}"
    ):
        home.install()
    assert not home.paths.current_extension.exists()


def test_the_key_from_the_crx_header_goes_into_a_manifest_without_one(home: Home) -> None:
    key = SANDBOX_KEY
    home.publish(crx3(extension_zip("2.0.0", key=None), key, decoy_key=b"decoy" * 30))
    result = home.install()
    assert home.manifest()["key"] == base64.b64encode(key).decode()
    assert (
        result["extension_id"] == agent_extension.extension_id_of_key(key) == SANDBOX_EXTENSION_ID
    )
    assert home.manifest()["version"] == "2.0.0"


def test_a_crx2_key_goes_into_the_manifest_too(home: Home) -> None:
    key = b"a CRX2 public key"
    home.publish(crx2(extension_zip("2.0.0"), key))
    assert home.install()["extension_id"] == agent_extension.extension_id_of_key(key)


def test_a_manifest_key_is_kept_over_the_headers(home: Home) -> None:
    own = base64.b64encode(b"the manifest's own key").decode()
    home.publish(crx3(extension_zip("2.0.0", key=own), SANDBOX_KEY))
    result = home.install()
    assert home.manifest()["key"] == own
    assert result["extension_id"] == agent_extension.extension_id_of_key(b"the manifest's own key")


def test_a_plain_zip_without_a_key_has_no_extension_id(home: Home) -> None:
    home.publish(extension_zip("3.0.0"))
    result = home.install()
    assert result["extension_id"] is None
    assert "key" not in home.manifest()
    assert home.current() == "3.0.0"


def test_main_prints_one_json_line(
    home: Home, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GRADIENTLAB_NODE_HOME", str(home.paths.home))
    umask = os.umask(0o022)
    try:
        home.publish(crx3(extension_zip("1.0.0"), SANDBOX_KEY))
        assert agent_commands.main(["install-extension"]) == 0
        home.source.unlink()
        (home.paths.crx_cache / f"{EXT_ID}.crx").unlink()
        assert agent_commands.main(["install-extension"]) == 1
    finally:
        os.umask(umask)
    ok, failed = capsys.readouterr().out.splitlines()
    assert json.loads(ok)["version"] == "1.0.0"
    assert json.loads(failed)["error"].startswith("RuntimeError: could not download")


def test_a_download_that_is_not_a_crx_does_not_replace_the_cached_copy(home: Home) -> None:
    good = crx3(extension_zip("1.0.0"), SANDBOX_KEY)
    home.publish(good)
    home.install()
    home.publish(b"<html>503 Service Unavailable</html>")
    # refusing the bad download is fine; keeping the good copy is the point
    with contextlib.suppress(ValueError):
        home.install()
    assert (home.paths.crx_cache / f"{EXT_ID}.crx").read_bytes() == good
    home.source.unlink()
    result = home.install()
    assert result["fetched"] is False
    assert result["version"] == "1.0.0"


# ---------------------------------------------------------------- the runner as a process


RUNNER_PY = shipped_runner()


FAKE_CHROMIUM = """#!/bin/sh
# stands in for chromium: says its version, or answers its DevTools pipe (fds 3 and 4) with only
# its version (every other command fails) and idles
for a in "$@"; do
  case "$a" in
    --version) echo "Chromium 156.0.1.2 built for tests"; exit 0;;
  esac
done
exec "{python}" -c '{devtools}' "$@"  # its arguments kept
"""


FAKE_DEVTOOLS = """
import json, os, time
pending = b""
while True:
    chunk = os.read(3, 65536)
    if not chunk:
        break
    pending += chunk
    *messages, pending = pending.split(b"\\0")
    for raw in messages:
        m = json.loads(raw)
        if m.get("method") == "Browser.getVersion":
            answer = {"id": m["id"], "result": {"product": "FakeChromium/156"}}
        else:
            answer = {"id": m.get("id"), "error": {"code": -32601, "message": "fake chromium"}}
        os.write(4, json.dumps(answer).encode() + b"\\0")
time.sleep(600)  # idles on, like a browser whose runner died
"""


class Node:
    """A node home run by real `runner.py` processes, with a stand-in chromium."""

    def __init__(self, root: Path, *, browser: bool = False, **config: Any) -> None:
        self.root = root
        self.paths = agent_home.Paths(root / "node")
        self.paths.home.mkdir(parents=True)
        chromium = root / "bin" / "chromium"
        chromium.parent.mkdir()
        chromium.write_text(
            FAKE_CHROMIUM.replace("{python}", sys.executable).replace("{devtools}", FAKE_DEVTOOLS)
        )
        chromium.chmod(0o755)
        if browser:  # without an extension the runner cannot start a browser (and says so)
            (self.paths.extensions / "1.0.0").mkdir(parents=True)
            os.symlink("1.0.0", self.paths.current_extension)
        self.config: dict[str, Any] = {
            "extension_id": EXT_ID,
            "chromium": str(chromium),
            "status_interval_seconds": 3600,
            "browser_check_seconds": 0.2,
            "settle_timeout_seconds": 0,
            **config,
        }
        self.paths.config.write_text(json.dumps(self.config))
        self.env = {**os.environ, "GRADIENTLAB_NODE_HOME": str(self.paths.home)}
        self.procs: list[subprocess.Popen[str]] = []

    def cli(self, *args: str, timeout: float = 60) -> tuple[int, dict[str, Any]]:
        out = subprocess.run(
            [sys.executable, str(RUNNER_PY), *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
        )
        lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
        assert lines, (out.returncode, out.stdout, out.stderr)
        return out.returncode, json.loads(lines[-1])

    def spawn(self, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, str(RUNNER_PY), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
        )
        self.procs.append(proc)
        return proc

    def events(self) -> list[dict[str, Any]]:
        return agent_procs.read_events(self.paths.events, since=0)

    def kinds(self) -> list[str]:
        return [str(e["kind"]) for e in self.events()]

    def status(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.paths.status.read_text())
        except (OSError, ValueError):
            return {}
        return data

    def wait_for(self, what: Any, timeout: float = 20) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = what()
            if got:
                return got
            time.sleep(0.05)
        raise AssertionError(f"timed out; events: {self.kinds()}, status: {self.status()}")

    def running(self, proc: subprocess.Popen[str]) -> bool:
        return agent_procs.read_pid(self.paths.runner_pid) == proc.pid

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.cli("stop", timeout=30)
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


@pytest.fixture()
def nodes(tmp_path: Path) -> Iterator[Any]:
    made: list[Node] = []

    def make(*, browser: bool = False, **config: Any) -> Node:
        node = Node(tmp_path / f"n{len(made)}", browser=browser, **config)
        made.append(node)
        return node

    yield make
    for node in made:
        node.close()


def test_a_second_run_refuses_while_the_first_holds_the_lock(nodes: Any) -> None:
    node: Node = nodes()
    first = node.spawn("run")
    node.wait_for(lambda: node.running(first) and node.status().get("runner_pid") == first.pid)
    node.wait_for(lambda: "browser_start_failed" in node.kinds())  # no extension, no browser
    assert agent_procs.read_pid(node.paths.lock) == first.pid
    starts_before = node.kinds().count("runner_started")

    code, answer = node.cli("run", timeout=20)
    assert code == agent_home.EXIT_LOCKED
    assert answer["pid"] == first.pid
    assert f"pid {first.pid}" in answer["error"]
    assert "runner.lock" in answer["error"]
    # the refused runner touched nothing: no event, same pid file, same status
    assert node.kinds().count("runner_started") == starts_before
    assert agent_procs.read_pid(node.paths.runner_pid) == first.pid
    assert node.status()["runner_pid"] == first.pid
    assert first.poll() is None

    # `start` finds the same runner, even when its pid file is gone
    node.paths.runner_pid.unlink()
    code, answer = node.cli("start")
    assert (code, answer["started"]) == (0, False)
    assert first.poll() is None
    node.paths.runner_pid.write_text(str(first.pid))
    assert node.cli("start")[1] == {"started": False, "pid": first.pid}

    first.terminate()
    assert first.wait(15) == 0
    assert node.kinds()[-1] == "runner_stopped"
    assert agent_lock.lock_holder(node.paths) == (False, None)
    # the lock went with the process: a new runner may start
    code, answer = node.cli("start")
    assert code == 0 and answer["started"] is True and answer["pid"] != first.pid
    assert agent_lock.lock_holder(node.paths) == (True, answer["pid"])


def test_two_starts_at_once_make_one_runner(nodes: Any) -> None:
    node: Node = nodes()
    procs = [node.spawn("start") for _ in range(3)]
    answers = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, (out, err)
        answers.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(a["started"] for a in answers) == [False, False, True]
    pid = next(a["pid"] for a in answers if a["started"])
    assert all(a["pid"] == pid for a in answers), answers
    assert node.kinds().count("runner_started") == 1
    assert agent_lock.lock_holder(node.paths) == (True, pid)
    assert agent_procs.pid_alive(pid)

    assert node.cli("stop") == (0, {"stopped": True, "pid": pid})
    assert not agent_procs.pid_alive(pid)
    assert agent_lock.lock_holder(node.paths) == (False, None)
    assert node.cli("stop") == (0, {"stopped": False})


def test_a_runner_that_cannot_read_its_config_reports_the_crash(nodes: Any) -> None:
    node: Node = nodes()
    node.paths.config.write_text("{not json")
    code, answer = node.cli("run")
    assert code == 1
    assert "JSONDecodeError" in answer["error"]
    events = node.events()
    assert [e["kind"] for e in events] == ["runner_started", "runner_crashed"]
    detail = events[-1]["detail"]
    assert detail.startswith("JSONDecodeError: ")
    assert node.status()["last_error"] == detail
    assert node.status()["browser_alive"] is False
    assert not node.paths.runner_pid.exists()
    assert agent_lock.lock_holder(node.paths) == (False, None)

    # `start` says why the runner died, not only "see runner.log"
    code, answer = node.cli("start")
    assert code == 1
    assert detail in answer["error"]
    # what the control plane reads as a crash loop: each start followed by its crash
    node.cli("run")
    kinds = node.kinds()
    assert kinds == ["runner_started", "runner_crashed"] * 3
    assert "runner crashed" in node.paths.log.read_text()


def test_a_crash_in_the_loop_is_reported_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception out of the supervising loop (not a browser that fails to start)."""
    node = Node(tmp_path)
    node.close = lambda: None  # type: ignore[method-assign]

    def broken(self: agent_supervise.Runner) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(agent_supervise.Runner, "start_browser", broken)
    code, crash = agent_supervise.serve(node.paths)
    assert code == 1
    assert crash == "OSError: [Errno 28] No space left on device"
    assert node.kinds() == ["runner_started", "runner_crashed"]
    assert node.events()[-1]["detail"] == crash
    assert node.status()["last_error"] == crash
    assert not node.paths.runner_pid.exists()


def test_chromium_that_will_not_start_is_not_a_crash(nodes: Any) -> None:
    node: Node = nodes(browser=True, chromium="/nonexistent/chromium")
    proc = node.spawn("run")
    node.wait_for(lambda: node.kinds().count("browser_start_failed") >= 1)
    assert proc.poll() is None
    assert "runner_crashed" not in node.kinds()
    assert "nonexistent" in node.status()["last_error"]


def test_the_event_log_id_is_stable_across_runner_restarts(nodes: Any) -> None:
    node: Node = nodes()
    for _ in range(2):
        code, answer = node.cli("start")
        assert answer["started"] is True
        assert node.cli("stop")[1]["stopped"] is True
    log_id = node.paths.events_id.read_text().strip()
    assert node.kinds().count("runner_started") == 2
    node.cli("start")
    node.cli("stop")
    assert node.paths.events_id.read_text().strip() == log_id
    node.paths.events.unlink()
    node.cli("start")
    node.cli("stop")
    assert node.paths.events_id.read_text().strip() != log_id
    assert node.events()[0]["id"] == 1


def test_status_splits_the_pss_of_runner_and_browser(nodes: Any) -> None:
    node: Node = nodes(browser=True)
    code, answer = node.cli("start")
    assert answer["started"] is True
    status = node.wait_for(lambda: (s := node.status()).get("browser_pss_kib") and s)
    for key in ("pss_kib", "runner_pss_kib", "browser_pss_kib"):
        assert isinstance(status[key], int) and status[key] > 0, (key, status)
    assert status["pss_kib"] == status["runner_pss_kib"] + status["browser_pss_kib"]
    assert status["runner_version"] == agent_home.RUNNER_VERSION
    assert agent_procs.pid_alive(status["browser_pid"])

    # the health probe reads this node while its runner runs, and disturbs nothing
    before = snapshot(node.paths.home, skip=("status.json", "events.jsonl", "runner.log"))
    data = probe(node.root, home="node")
    assert snapshot(node.paths.home, skip=("status.json", "events.jsonl", "runner.log")) == before
    assert data["runner_alive"] is True and data["browser_alive"] is True
    assert data["runner_pid"] == answer["pid"]
    assert data["events_id"] == node.paths.events_id.read_text().strip()
    assert data["status"]["browser_pss_kib"] > 0
    assert [e["kind"] for e in data["events"]][:2] == ["runner_started", "browser_started"]

    assert node.cli("stop")[1]["stopped"] is True
    assert not agent_procs.pid_alive(status["browser_pid"])
    final = node.status()
    assert final["browser_alive"] is False and final["browser_pss_kib"] is None
    assert isinstance(final["runner_pss_kib"], int)


def test_a_new_runner_ends_the_browser_a_killed_one_left(nodes: Any) -> None:
    node: Node = nodes(browser=True)
    first = node.cli("start")[1]["pid"]
    browser = node.wait_for(lambda: node.status().get("browser_pid"))
    os.kill(first, 9)
    node.wait_for(lambda: not agent_procs.pid_alive(first))
    assert agent_procs.pid_alive(browser)  # in its own session: it outlives its runner
    assert node.cli("start")[1]["started"] is True
    node.wait_for(lambda: not agent_procs.pid_alive(browser))
    assert f"pid {browser}" in [
        e["detail"] for e in node.events() if e["kind"] == "orphan_browser_ended"
    ]


# ---------------------------------------------------------------- re-reading a new browser


class Attach:
    """Stands in for `session.attach`: answers popup states in turn (an Exception is raised)."""

    def __init__(
        self, node_runner: agent_supervise.Runner, answers: list[Any], stop_after: float
    ) -> None:
        self.runner = node_runner
        self.answers = answers
        self.stop_after = stop_after
        self.calls: list[float] = []
        self.seen: list[dict[str, Any]] = []  # status.json as the probe read it at each call

    def __call__(self, paths: Any, config: Any, login: str = "if-needed") -> dict[str, Any]:
        self.calls.append(time.monotonic())
        self.seen.append(json.loads(paths.status.read_text()))
        answer = self.answers[min(len(self.calls), len(self.answers)) - 1]
        if len(self.calls) == 1:
            threading.Timer(self.stop_after, self.stop).start()
        if isinstance(answer, Exception):
            raise answer
        return {"extension_id": EXT_ID, "popup": {"status": answer, "version": "1.0.0"}}

    def stop(self) -> None:
        self.runner.stopping = True


def run_with_attach(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    answers: list[Any],
    stop_after: float,
    **cfg: Any,
) -> tuple[Attach, list[str]]:
    node = Node(tmp_path, browser=True, browser_check_seconds=0.05, **cfg)
    node_runner = agent_supervise.Runner(node.paths)
    fake = Attach(node_runner, answers, stop_after)
    monkeypatch.setattr(agent_supervise, "attach", fake)
    assert node_runner.run() == 0
    return fake, node.kinds()


@pytest.mark.parametrize("settled", ["Good", "Excellent", "Unsupported", "Logged out"])
def test_a_new_browser_is_read_every_few_seconds_until_it_settles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settled: str
) -> None:
    answers = [RuntimeError("no service worker yet"), "Disconnected", "Disconnected", settled]
    fake, kinds = run_with_attach(
        tmp_path,
        monkeypatch,
        answers,
        stop_after=1.5,
        settle_poll_seconds=0.2,
        settle_timeout_seconds=60,
    )
    assert len(fake.calls) == 4  # then nothing until status_interval_seconds (an hour)
    gaps = [b - a for a, b in zip(fake.calls, fake.calls[1:], strict=False)]
    assert all(0.15 <= g < 0.8 for g in gaps), gaps
    assert kinds[0] == "browser_started"
    assert kinds.count("popup_status") == 2  # Disconnected, then the settled state
    assert kinds[-1] == "runner_stopped"


def test_the_status_says_launching_then_settling_until_the_node_settles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the health check needs to tell a browser being started from one that is down, and
    a node still connecting from a disconnected one."""
    fake, _ = run_with_attach(
        tmp_path,
        monkeypatch,
        ["Disconnected", "Good"],
        stop_after=1.0,
        settle_poll_seconds=0.2,
        settle_timeout_seconds=60,
    )
    first = fake.seen[0]  # read right after the launch
    assert first["browser_alive"] is True and first["browser_launching_at"] is None
    left = datetime.fromisoformat(first["settling_until"]) - datetime.now(UTC)
    assert timedelta(seconds=50) < left <= timedelta(seconds=60)
    # settled: the runner says so
    assert fake.seen[-1]["popup"]["status"] == "Disconnected"
    final = json.loads(fake.runner.paths.status.read_text())
    assert final["settling_until"] is None


def test_a_runner_marks_the_browser_launching_before_it_starts_it(nodes: Any) -> None:
    node: Node = nodes(browser=True, chromium="/nonexistent/chromium")
    node.spawn("run")
    node.wait_for(lambda: node.kinds().count("browser_start_failed") >= 1)
    # a launch that failed is not "launching" any more: the probe reads BrowserDown
    node.wait_for(lambda: node.status().get("last_error") is not None)
    assert node.status()["browser_launching_at"] is None


def test_re_reading_stops_after_the_settle_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, _ = run_with_attach(
        tmp_path,
        monkeypatch,
        ["Disconnected"],
        stop_after=1.6,
        settle_poll_seconds=0.1,
        settle_timeout_seconds=0.6,
    )
    span = fake.calls[-1] - fake.calls[0]
    assert 3 <= len(fake.calls) <= 9, fake.calls
    assert span <= 0.9


def test_without_a_new_browser_the_popup_is_read_each_status_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, _ = run_with_attach(
        tmp_path,
        monkeypatch,
        ["Disconnected"],
        stop_after=1.2,
        settle_poll_seconds=0.05,
        settle_timeout_seconds=0,
        status_interval_seconds=0.5,
    )
    gaps = [b - a for a, b in zip(fake.calls, fake.calls[1:], strict=False)]
    assert 2 <= len(fake.calls) <= 3 and all(g >= 0.45 for g in gaps), gaps


# ---------------------------------------------------------------- under systemd


FAKE_SYSTEMCTL = """#!/bin/sh
# stands in for systemctl: records its arguments; `start` runs the unit's command, `stop` ends it
echo "$*" >> "{calls}"
case "$2" in
  start) GRADIENTLAB_NODE_HOME="{home}" setsid "{python}" "{runner_py}" run \
           >/dev/null 2>&1 </dev/null & echo $! > "{unit_pid}";;
  stop) pid=$(cat "{unit_pid}" 2>/dev/null) && kill "$pid" 2>/dev/null
        while [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; do sleep 0.05; done; rm -f "{unit_pid}";;
esac
"""


class SystemdNode:
    def __init__(self, node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
        self.node = node
        self.calls = node.root / "systemctl.calls"
        bindir = node.root / "systemd-bin"
        bindir.mkdir()
        fake = bindir / "systemctl"
        fake.write_text(
            FAKE_SYSTEMCTL.format(
                calls=self.calls,
                home=node.paths.home,
                python=sys.executable,
                runner_py=RUNNER_PY,
                unit_pid=node.root / "unit.pid",
            )
        )
        fake.chmod(0o755)
        monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
        node.env["PATH"] = os.environ["PATH"]
        monkeypatch.setenv("GRADIENTLAB_NODE_HOME", str(node.paths.home))

    def main(self, command: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
        umask = os.umask(0o022)
        try:
            code = agent_commands.main([command])
        finally:
            os.umask(umask)
        answer: dict[str, Any] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        return code, answer

    def systemctl_calls(self) -> list[str]:
        return self.calls.read_text().splitlines() if self.calls.exists() else []


def test_under_systemd_start_and_stop_go_through_the_unit(
    nodes: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert agent_lock.systemctl_command("start") == [
        "systemctl",
        "--user",
        "start",
        "gradientlab-node.service",
    ]
    node: Node = nodes(supervisor="systemd")
    unit = SystemdNode(node, monkeypatch)
    assert agent_lock.supervisor_of(node.paths) == "systemd"

    code, answer = unit.main("start", capsys)
    assert code == 0 and answer["started"] is True and answer["supervisor"] == "systemd"
    assert unit.systemctl_calls() == ["--user start gradientlab-node.service"]
    pid = answer["pid"]
    assert agent_lock.lock_holder(node.paths) == (True, pid)

    code, answer = unit.main("start", capsys)  # running: no second start, no second runner
    assert answer == {"started": False, "pid": pid, "supervisor": "systemd"}
    assert unit.systemctl_calls() == ["--user start gradientlab-node.service"]

    code, answer = unit.main("stop", capsys)
    assert answer == {"stopped": True, "pid": pid, "supervisor": "systemd"}
    assert unit.systemctl_calls()[-1] == "--user stop gradientlab-node.service"
    assert not agent_procs.pid_alive(pid)
    assert node.kinds().count("runner_started") == 1


def test_under_systemd_a_runner_started_by_hand_is_stopped_too(
    nodes: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    node: Node = nodes(supervisor="systemd")
    unit = SystemdNode(node, monkeypatch)
    by_hand = node.spawn("run")
    node.wait_for(lambda: node.running(by_hand))
    code, answer = unit.main("start", capsys)
    assert answer["started"] is False and answer["pid"] == by_hand.pid
    assert unit.systemctl_calls() == []  # never a second runner beside it
    code, answer = unit.main("stop", capsys)
    assert answer["stopped"] is True and answer["pid"] == by_hand.pid
    assert unit.systemctl_calls() == ["--user stop gradientlab-node.service"]
    assert by_hand.wait(15) == 0


def test_under_systemd_a_crash_at_start_is_reported(
    nodes: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    node: Node = nodes(supervisor="systemd")
    unit = SystemdNode(node, monkeypatch)
    monkeypatch.setattr(agent_commands, "supervisor_of", lambda paths: "systemd")
    node.paths.config.write_text('{"supervisor": "systemd", ')  # cut short
    code, answer = unit.main("start", capsys)
    assert code == 1
    assert "the runner died at start: JSONDecodeError" in answer["error"]
    assert unit.systemctl_calls() == ["--user start gradientlab-node.service"]


# ---------------------------------------------------------------- the health probe (PROBE_SH)


def probe(root: Path, home: str | None = None, env: dict[str, str] | None = None) -> Any:
    """Run the real probe with /bin/sh in `root` (the login directory); the node lives in
    root/.gradientlab/node, or, when `home` is given, is linked there from root/home."""
    if home is not None:
        (root / ".gradientlab").mkdir(exist_ok=True)
        link = root / ".gradientlab" / "node"
        if not link.exists():
            os.symlink(root / home, link)
    result = LocalExecutor("probe-test", home=root, env=env or {}).run(PROBE_SH, timeout=30)
    assert result.ok, result.stderr
    assert result.stderr == ""
    return json.loads(result.stdout)


def snapshot(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, int]:
    return {
        p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.is_file() and p.name not in skip
    }


def cloud_init_here() -> str | None:
    if os.path.exists("/var/lib/cloud/instance/boot-finished"):
        return "done"
    return "running" if os.path.exists("/run/cloud-init") else None


def assert_host_metrics(host: dict[str, Any]) -> None:
    assert set(host) == {
        "load1",
        "mem_total_kib",
        "mem_available_kib",
        "disk_total_kib",
        "disk_free_kib",
        "clock",
        "cloud_init",
    }
    assert isinstance(host["load1"], int | float) and host["load1"] >= 0
    for key in ("mem_total_kib", "mem_available_kib", "disk_total_kib", "disk_free_kib"):
        assert isinstance(host[key], int) and not isinstance(host[key], bool), key
        assert host[key] > 0, key
    assert host["mem_available_kib"] <= host["mem_total_kib"]
    assert host["disk_free_kib"] <= host["disk_total_kib"]
    assert isinstance(host["clock"], float)
    assert abs(host["clock"] - time.time()) < 60
    assert host["cloud_init"] == cloud_init_here()


def test_the_probe_where_no_node_is_installed_still_reports_the_host(tmp_path: Path) -> None:
    data = probe(tmp_path)
    assert data["probe_version"] == "sh2"
    assert data["installed"] is False
    assert data["events_id"] is None
    assert_host_metrics(data["host"])
    assert list(tmp_path.iterdir()) == []  # the probe writes nothing


def test_the_probe_of_an_installed_node(tmp_path: Path) -> None:
    paths = agent_home.Paths(tmp_path / ".gradientlab" / "node")
    paths.home.mkdir(parents=True)
    paths.config.write_text("{}")
    paths.runner_pid.write_text(str(os.getpid()))  # any live pid will do
    paths.browser_pid.write_text(str(dead_pid()))
    agent_home.write_json_atomic(paths.status, {"pss_kib": 300, "runner_pss_kib": 100})
    log = agent_home.EventLog(paths.events)
    log.add("runner_started", "pid 1")
    log.add("browser_start_failed", 'a "quoted" detail')
    before = snapshot(paths.home)
    data = probe(tmp_path)
    assert snapshot(paths.home) == before
    assert data["probe_version"] == "sh2"
    assert data["installed"] is True
    assert data["runner_alive"] is True and data["runner_pid"] == os.getpid()
    assert data["browser_alive"] is False
    assert data["events_id"] == paths.events_id.read_text().strip() == log.log_id()
    assert data["status"] == {"pss_kib": 300, "runner_pss_kib": 100}
    assert [e["detail"] for e in data["events"]] == ["pid 1", 'a "quoted" detail']
    assert_host_metrics(data["host"])
    # keys the control plane read before are all still there
    assert {"runner_alive", "runner_pid", "browser_alive", "browser_pid", "installed"} <= set(data)
    assert list(data)[-1] == "events"  # a reader cuts a torn event line there


def test_the_probe_prints_null_for_what_it_cannot_read(tmp_path: Path) -> None:
    """Garbage in the node's files and from the tools: nulls, never broken JSON."""
    node = tmp_path / ".gradientlab" / "node"
    node.mkdir(parents=True)
    (node / "runner.pid").write_text("12abc\n")
    (node / "browser.pid").write_text("")
    (node / "events.id").write_text('nothex"},\n')
    bindir = tmp_path / "bin"
    bindir.mkdir()
    tools = {
        "df": 'echo "Filesystem 1024-blocks Used Available Capacity Mounted on"\n'
        'echo "/dev/x - 12 n/a 1% /"',
        "date": 'case "$1" in *%N*) echo "1712345678.%N";; *) echo 1712345678;; esac',
    }
    for name, body in tools.items():
        (bindir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bindir / name).chmod(0o755)
    data = probe(tmp_path, env={"PATH": f"{bindir}:/usr/bin:/bin"})
    assert data["runner_pid"] is None and data["runner_alive"] is False
    assert data["browser_pid"] is None
    assert data["events_id"] is None
    assert data["installed"] is False  # no config.json
    assert data["host"]["disk_total_kib"] is None and data["host"]["disk_free_kib"] is None
    assert data["host"]["clock"] == 1712345678  # a date without %N: whole seconds
    assert isinstance(data["host"]["mem_total_kib"], int)
    assert data["status"] is None and data["events"] == []

    for name, body in {"df": "exit 1", "date": "exit 1"}.items():
        (bindir / name).write_text(f"#!/bin/sh\n{body}\n")
    shutil.rmtree(node)
    data = probe(tmp_path, env={"PATH": f"{bindir}:/usr/bin:/bin"})
    assert data["installed"] is False
    assert data["host"]["clock"] is None and data["host"]["disk_free_kib"] is None


def test_restart_browser_ends_a_browser_that_ignores_sigterm(tmp_path: Path) -> None:
    """A hung browser (here: one that ignores SIGTERM) is ended anyway, so the runner starts a
    new one instead of waiting on it forever."""
    paths = agent_home.Paths(tmp_path)
    hung = subprocess.Popen(
        ["sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.1; done"],
        start_new_session=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert hung.stdout is not None and hung.stdout.readline() == "ready\n"  # trap is set
        paths.browser_pid.write_text(str(hung.pid))
        result = agent_commands.cmd_restart_browser(paths, grace=0.5)
        assert result == {"killed": True, "pid": hung.pid, "forced": True}
        assert hung.wait(timeout=10) == -9
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(hung.pid, 9)
