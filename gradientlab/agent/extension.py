"""Installing the extension: fetch the CRX, check and unpack it, load it unpacked."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import struct
import subprocess
import urllib.request
import zipfile
from typing import Any

from .home import Paths, load_config

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
