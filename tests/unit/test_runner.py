"""The node runner's standalone parts: CRX unpacking, extension ids, the profile lock, the event
log and the extension install (from a file:// source, with a stand-in `chromium --version`)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import socket
import stat
import struct
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from gradientlab.node import runner
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
    got_zip, got_key = runner.unpack_crx(data)
    assert got_zip == zip_bytes
    assert got_key == SANDBOX_KEY


def test_unpack_crx3_without_a_key_matching_its_id_gives_no_key() -> None:
    zip_bytes = extension_zip()
    header = pb_bytes(2, pb_bytes(1, b"some key")) + pb_bytes(10000, pb_bytes(1, b"\0" * 16))
    data = b"Cr24" + struct.pack("<II", 3, len(header)) + header + zip_bytes
    assert runner.unpack_crx(data) == (zip_bytes, None)


def test_unpack_crx2_returns_the_zip_and_its_key() -> None:
    zip_bytes = extension_zip()
    assert runner.unpack_crx(crx2(zip_bytes, SANDBOX_KEY)) == (zip_bytes, SANDBOX_KEY)


def test_unpack_a_plain_zip_returns_it_without_a_key() -> None:
    zip_bytes = extension_zip()
    assert runner.unpack_crx(zip_bytes) == (zip_bytes, None)


@pytest.mark.parametrize(
    "data",
    [b"", b"<html>Not Found</html>", b"\x00" * 64, b"Cr24" + struct.pack("<I", 4) + b"\0" * 8],
    ids=["empty", "html", "zeros", "crx4"],
)
def test_unpack_garbage_raises_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        runner.unpack_crx(data)


def test_extension_id_of_key_matches_the_sandbox_extension() -> None:
    assert runner.extension_id_of_key(SANDBOX_KEY) == SANDBOX_EXTENSION_ID


def test_extension_id_of_key_maps_the_sha256_hex_to_a_to_p() -> None:
    key = b"any public key"
    ext_id = runner.extension_id_of_key(key)
    hexdigits = hashlib.sha256(key).hexdigest()[:32]
    assert len(ext_id) == 32
    assert ext_id == hexdigits.translate(str.maketrans("0123456789abcdef", "abcdefghijklmnop"))
    assert set(ext_id) <= set("abcdefghijklmnop")


# ---------------------------------------------------------------- the profile lock


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def lock_profile(profile: Path, target: str) -> None:
    profile.mkdir(parents=True, exist_ok=True)
    os.symlink(target, profile / "SingletonLock")
    os.symlink("/tmp/.org.chromium.Chromium.gone/SingletonSocket", profile / "SingletonSocket")
    os.symlink("/tmp/.org.chromium.Chromium.gone/SingletonCookie", profile / "SingletonCookie")


def singletons(profile: Path) -> list[str]:
    names = ("SingletonLock", "SingletonSocket", "SingletonCookie")
    return [n for n in names if os.path.lexists(profile / n)]


def test_a_lock_held_by_a_dead_pid_on_this_host_is_cleared(tmp_path: Path) -> None:
    profile = tmp_path / "profile"
    lock_profile(profile, f"{socket.gethostname()}-{dead_pid()}")
    (profile / "Preferences").write_text("{}")
    assert runner.clear_stale_singleton_lock(profile) is True
    assert singletons(profile) == []
    assert (profile / "Preferences").exists()  # nothing else goes


def test_a_lock_held_by_a_live_pid_is_kept(tmp_path: Path) -> None:
    profile = tmp_path / "profile"
    lock_profile(profile, f"{socket.gethostname()}-{os.getpid()}")
    assert runner.clear_stale_singleton_lock(profile) is False
    assert singletons(profile) == ["SingletonLock", "SingletonSocket", "SingletonCookie"]


def test_a_lock_from_another_host_is_cleared(tmp_path: Path) -> None:
    profile = tmp_path / "profile"
    lock_profile(profile, f"not-{socket.gethostname()}-{os.getpid()}")
    assert runner.clear_stale_singleton_lock(profile) is True
    assert singletons(profile) == []


def test_no_lock_is_nothing_to_clear(tmp_path: Path) -> None:
    assert runner.clear_stale_singleton_lock(tmp_path / "profile") is False
    (tmp_path / "profile").mkdir()
    assert runner.clear_stale_singleton_lock(tmp_path / "profile") is False


# ---------------------------------------------------------------- the event log


def ids(events: list[dict[str, Any]]) -> list[int]:
    return [int(e["id"]) for e in events]


def test_event_ids_keep_increasing_across_instances(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    first = runner.EventLog(path)
    first.add("runner_started", "pid 1")
    first.add("browser_started", "pid 2")
    second = runner.EventLog(path)  # a new runner process on the same home
    second.add("runner_started", "pid 3")
    second.add("logged_in")
    events = runner.read_events(path, since=0)
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
    log = runner.EventLog(path)
    for i in range(5):
        log.add("popup_status", f"#{i}")
    assert ids(runner.read_events(path, since=3)) == [4, 5]
    assert runner.read_events(path, since=5) == []
    assert runner.read_events(tmp_path / "missing.jsonl", since=0) == []


def test_read_events_skips_a_torn_line_and_returns_the_last_200(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = runner.EventLog(path)
    for _ in range(250):
        log.add("tick")
    with open(path, "a") as f:
        f.write('{"id": 251, "at": "2025-')  # a write cut short
    assert ids(runner.read_events(path, since=0)) == list(range(51, 251))
    runner.EventLog(path).add("after")
    assert ids(runner.read_events(path, since=250)) == [251]


def test_a_trimmed_log_keeps_counting(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    pad = "x" * 200
    with open(path, "w") as f:
        for i in range(1, 2001):
            f.write(json.dumps({"id": i, "at": "t", "kind": "tick", "detail": pad}) + "\n")
    log = runner.EventLog(path)
    log.add("after_trim")
    lines = path.read_text().splitlines()
    assert len(lines) == 500
    assert json.loads(lines[-1])["id"] == 2001
    assert ids(runner.read_events(path, since=1999)) == [2000, 2001]


def test_two_live_event_logs_on_one_file_never_reuse_an_id(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    daemon = runner.EventLog(path)  # Runner.run's log
    daemon.add("runner_started")
    runner.EventLog(path).add("logged_in", "by request")  # cmd_login in another process
    daemon.add("popup_status", "Good")
    assert ids(runner.read_events(path, since=0)) == [1, 2, 3]


# ---------------------------------------------------------------- install-extension

EXT_ID = "abcdefghijklmnopabcdefghijklmnop"


class Home:
    """A node home with a config.json, a stand-in chromium and a file:// extension source."""

    def __init__(self, root: Path) -> None:
        self.paths = runner.Paths(root / "node")
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
        result = runner.cmd_install_extension(self.paths)
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
    assert home.version_dirs() == ["1.1.0"]
    assert not (home.paths.extensions / "1.0.0").exists()
    assert home.manifest()["version"] == "1.1.0"


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
    assert result["extension_id"] == runner.extension_id_of_key(key) == SANDBOX_EXTENSION_ID
    assert home.manifest()["version"] == "2.0.0"


def test_a_crx2_key_goes_into_the_manifest_too(home: Home) -> None:
    key = b"a CRX2 public key"
    home.publish(crx2(extension_zip("2.0.0"), key))
    assert home.install()["extension_id"] == runner.extension_id_of_key(key)


def test_a_manifest_key_is_kept_over_the_headers(home: Home) -> None:
    own = base64.b64encode(b"the manifest's own key").decode()
    home.publish(crx3(extension_zip("2.0.0", key=own), SANDBOX_KEY))
    result = home.install()
    assert home.manifest()["key"] == own
    assert result["extension_id"] == runner.extension_id_of_key(b"the manifest's own key")


def test_a_plain_zip_without_a_key_has_no_extension_id(home: Home) -> None:
    home.publish(extension_zip("3.0.0"))
    result = home.install()
    assert result["extension_id"] is None
    assert "key" not in home.manifest()
    assert home.current() == "3.0.0"


def test_main_prints_one_json_line(
    home: Home, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(runner, "HOME", home.paths.home)
    umask = os.umask(0o022)
    try:
        home.publish(crx3(extension_zip("1.0.0"), SANDBOX_KEY))
        assert runner.main(["install-extension"]) == 0
        home.source.unlink()
        (home.paths.crx_cache / f"{EXT_ID}.crx").unlink()
        assert runner.main(["install-extension"]) == 1
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
