"""The node runner's standalone parts: CRX unpacking, extension ids, the profile lock, the event
log, what the runner reads in the extension's pages. The parts that run processes are in
tests/integration/test_runner_processes.py."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import socket
import struct
import zipfile
from pathlib import Path
from typing import Any

import pytest

from gradientlab.agent import browser as agent_browser
from gradientlab.agent import extension as agent_extension
from gradientlab.agent import home as agent_home
from gradientlab.agent import procs as agent_procs
from gradientlab.sandbox.extension_id import SANDBOX_EXTENSION_ID

EXTENSION_DIR = Path(__file__).resolve().parents[2] / "gradientlab" / "sandbox" / "extension"
SANDBOX_KEY_B64: str = json.loads((EXTENSION_DIR / "manifest.json").read_text())["key"]
SANDBOX_KEY = base64.b64decode(SANDBOX_KEY_B64)

# ---------------------------------------------------------------- building CRX files by hand


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def pb_bytes(field: int, value: bytes) -> bytes:
    """One length-delimited protobuf field."""
    return varint(field << 3 | 2) + varint(len(value)) + value


def pb_int(field: int, value: int) -> bytes:
    return varint(field << 3) + varint(value)


def crx3(zip_bytes: bytes, key: bytes, *, decoy_key: bytes | None = None) -> bytes:
    """A CRX3: magic, version 3, header length, CrxFileHeader, then the zip.

    CrxFileHeader: 2 = sha256_with_rsa AsymmetricKeyProof{1: public_key, 2: signature},
    3 = sha256_with_ecdsa (same shape), 10000 = signed_header_data = SignedData{1: crx_id}."""
    header = b""
    if decoy_key is not None:  # a proof whose key is not the one the id is made of
        header += pb_bytes(3, pb_bytes(1, decoy_key) + pb_bytes(2, b"\x01" * 64))
    header += pb_bytes(2, pb_bytes(1, key) + pb_bytes(2, b"\x02" * 256))
    header += pb_int(5, 1)  # a varint field the reader must skip
    header += pb_bytes(10000, pb_bytes(1, hashlib.sha256(key).digest()[:16]))
    return b"Cr24" + struct.pack("<II", 3, len(header)) + header + zip_bytes


def crx2(zip_bytes: bytes, key: bytes) -> bytes:
    signature = b"\x03" * 128
    return b"Cr24" + struct.pack("<III", 2, len(key), len(signature)) + key + signature + zip_bytes


def extension_zip(
    version: str = "1.0.0",
    *,
    key: str | None = None,
    date_time: tuple[int, int, int, int, int, int] = (2024, 1, 1, 0, 0, 0),
    popup: str = "<html>popup</html>",
) -> bytes:
    manifest: dict[str, Any] = {"manifest_version": 3, "name": "Sentry (test)", "version": version}
    if key is not None:
        manifest["key"] = key
    files = {
        "manifest.json": json.dumps(manifest),
        "popup.html": popup,
        "js/background.js": "console.log(1)",
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, text in files.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=date_time), text)
    return buf.getvalue()


# ---------------------------------------------------------------- unpack_crx, extension ids


def test_unpack_crx3_returns_the_zip_and_the_key_of_its_id() -> None:
    zip_bytes = extension_zip()
    data = crx3(zip_bytes, SANDBOX_KEY, decoy_key=b"not-the-key" * 20)
    got_zip, got_key = agent_extension.unpack_crx(data)
    assert got_zip == zip_bytes
    assert got_key == SANDBOX_KEY


def test_unpack_crx3_without_a_key_matching_its_id_gives_no_key() -> None:
    zip_bytes = extension_zip()
    header = pb_bytes(2, pb_bytes(1, b"some key")) + pb_bytes(10000, pb_bytes(1, b"\0" * 16))
    data = b"Cr24" + struct.pack("<II", 3, len(header)) + header + zip_bytes
    assert agent_extension.unpack_crx(data) == (zip_bytes, None)


def test_unpack_crx2_returns_the_zip_and_its_key() -> None:
    zip_bytes = extension_zip()
    assert agent_extension.unpack_crx(crx2(zip_bytes, SANDBOX_KEY)) == (zip_bytes, SANDBOX_KEY)


def test_unpack_a_plain_zip_returns_it_without_a_key() -> None:
    zip_bytes = extension_zip()
    assert agent_extension.unpack_crx(zip_bytes) == (zip_bytes, None)


@pytest.mark.parametrize(
    "data",
    [b"", b"<html>Not Found</html>", b"\x00" * 64, b"Cr24" + struct.pack("<I", 4) + b"\0" * 8],
    ids=["empty", "html", "zeros", "crx4"],
)
def test_unpack_garbage_raises_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        agent_extension.unpack_crx(data)


def test_extension_id_of_key_matches_the_sandbox_extension() -> None:
    assert agent_extension.extension_id_of_key(SANDBOX_KEY) == SANDBOX_EXTENSION_ID


def test_extension_id_of_key_maps_the_sha256_hex_to_a_to_p() -> None:
    key = b"any public key"
    ext_id = agent_extension.extension_id_of_key(key)
    hexdigits = hashlib.sha256(key).hexdigest()[:32]
    assert len(ext_id) == 32
    assert ext_id == hexdigits.translate(str.maketrans("0123456789abcdef", "abcdefghijklmnop"))
    assert set(ext_id) <= set("abcdefghijklmnop")


# ---------------------------------------------------------------- the profile lock


def lock_profile(profile: Path, target: str) -> None:
    profile.mkdir(parents=True, exist_ok=True)
    os.symlink(target, profile / "SingletonLock")
    os.symlink("/tmp/.org.chromium.Chromium.gone/SingletonSocket", profile / "SingletonSocket")
    os.symlink("/tmp/.org.chromium.Chromium.gone/SingletonCookie", profile / "SingletonCookie")


def singletons(profile: Path) -> list[str]:
    names = ("SingletonLock", "SingletonSocket", "SingletonCookie")
    return [n for n in names if os.path.lexists(profile / n)]


def test_a_lock_held_by_a_live_pid_is_kept(tmp_path: Path) -> None:
    profile = tmp_path / "profile"
    lock_profile(profile, f"{socket.gethostname()}-{os.getpid()}")
    assert agent_browser.clear_stale_singleton_lock(profile) is False
    assert singletons(profile) == ["SingletonLock", "SingletonSocket", "SingletonCookie"]


def test_a_lock_from_another_host_is_cleared(tmp_path: Path) -> None:
    profile = tmp_path / "profile"
    lock_profile(profile, f"not-{socket.gethostname()}-{os.getpid()}")
    assert agent_browser.clear_stale_singleton_lock(profile) is True
    assert singletons(profile) == []


def test_no_lock_is_nothing_to_clear(tmp_path: Path) -> None:
    assert agent_browser.clear_stale_singleton_lock(tmp_path / "profile") is False
    (tmp_path / "profile").mkdir()
    assert agent_browser.clear_stale_singleton_lock(tmp_path / "profile") is False


# ---------------------------------------------------------------- the event log


def ids(events: list[dict[str, Any]]) -> list[int]:
    return [int(e["id"]) for e in events]


def test_event_ids_keep_increasing_across_instances(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    first = agent_home.EventLog(path)
    first.add("runner_started", "pid 1")
    first.add("browser_started", "pid 2")
    second = agent_home.EventLog(path)  # a new runner process on the same home
    second.add("runner_started", "pid 3")
    second.add("logged_in")
    events = agent_procs.read_events(path, since=0)
    assert ids(events) == [1, 2, 3, 4]
    assert [e["kind"] for e in events] == [
        "runner_started",
        "browser_started",
        "runner_started",
        "logged_in",
    ]
    assert all(set(e) == {"id", "at", "kind", "detail"} for e in events)


def test_read_events_since_returns_only_newer_ones(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = agent_home.EventLog(path)
    for i in range(5):
        log.add("popup_status", f"#{i}")
    assert ids(agent_procs.read_events(path, since=3)) == [4, 5]
    assert agent_procs.read_events(path, since=5) == []
    assert agent_procs.read_events(tmp_path / "missing.jsonl", since=0) == []


def test_read_events_skips_a_torn_line_and_returns_the_last_200(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = agent_home.EventLog(path)
    for _ in range(250):
        log.add("tick")
    with open(path, "a") as f:
        f.write('{"id": 251, "at": "2025-')  # a write cut short
    assert ids(agent_procs.read_events(path, since=0)) == list(range(51, 251))
    agent_home.EventLog(path).add("after")
    assert ids(agent_procs.read_events(path, since=250)) == [251]


def test_a_trimmed_log_keeps_counting(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    pad = "x" * 200
    with open(path, "w") as f:
        for i in range(1, 2001):
            f.write(json.dumps({"id": i, "at": "t", "kind": "tick", "detail": pad}) + "\n")
    log = agent_home.EventLog(path)
    log.add("after_trim")
    lines = path.read_text().splitlines()
    assert len(lines) == 500
    assert json.loads(lines[-1])["id"] == 2001
    assert ids(agent_procs.read_events(path, since=1999)) == [2000, 2001]


def test_two_live_event_logs_on_one_file_never_reuse_an_id(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    daemon = agent_home.EventLog(path)  # Runner.run's log
    daemon.add("runner_started")
    agent_home.EventLog(path).add("logged_in", "by request")  # cmd_login in another process
    daemon.add("popup_status", "Good")
    assert ids(agent_procs.read_events(path, since=0)) == [1, 2, 3]


def test_the_event_log_id(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    id_path = tmp_path / "events.id"
    log = agent_home.EventLog(path)
    assert log.log_id() is None
    log.add("runner_started")
    first = id_path.read_text().strip()
    assert len(first) == 32 and set(first) <= set("0123456789abcdef")
    assert log.log_id() == first
    log.add("browser_started")
    agent_home.EventLog(path).add("runner_started")  # another process on the same log
    assert log.log_id() == first
    path.unlink()  # the log starts again: its ids do too, so it gets a new id
    log.add("runner_started")
    second = log.log_id()
    assert second and second != first
    assert ids(agent_procs.read_events(path, since=0)) == [1]
    id_path.unlink()  # an id lost (or a log from before ids): a new one, ids go on
    log.add("popup_status", "Good")
    third = log.log_id()
    assert third and third not in (first, second)
    assert ids(agent_procs.read_events(path, since=0)) == [1, 2]


# ---------------------------------------------------------------- what the runner reads in pages


@pytest.mark.parametrize(
    ("node", "badge", "status"),
    [
        ({"connect": True, "banned": False}, "Good", "Good"),
        ({"connect": True, "banned": False}, "Excellent", "Excellent"),
        ({"connect": True, "banned": False}, "Disconnected", "Good"),  # the answer wins
        ({"connect": False, "banned": False}, "Good", "Disconnected"),
        ({"connect": True, "banned": True}, "Good", "Unsupported"),
        ({"banned": False}, "Disconnected", "Disconnected"),  # no `connect`: the badge
        (None, "Good", "Good"),
        (None, None, None),
    ],
)
def test_the_nodes_state_comes_from_the_api_answer_then_the_badge(
    node: dict[str, Any] | None, badge: str | None, status: str | None
) -> None:
    from gradientlab.agent import pages

    assert pages.status_of(node, badge) == status


def test_the_badge_pattern_reads_only_whole_badge_texts() -> None:
    from gradientlab.agent import pages

    assert pages.BADGE.match(" Good ")
    assert not pages.BADGE.match("Good morning")
    assert pages.NODE_API.search("https://api.gradient.network/api/sentrynode/get/abc123?x=1")
    assert pages.SIGNED_IN_PATH.search("https://app.gradient.network/dashboard")
    assert not pages.SIGNED_IN_PATH.search("https://app.gradient.network/dashboards-help")
