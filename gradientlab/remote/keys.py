"""GradientLab's own SSH key: the operator identity the control plane logs in to hosts with.

On one machine it is a 0600 file in the data folder, made on first use. On a control plane of
several machines every worker reads the same key from Prefect: `GRADIENTLAB_SSH_KEY_BLOCK` names
a Secret block holding the private key, and the task layer (which may import Prefect; this module
may not) hands this module a reader with `read_operator_key_with`. The key is then parsed in
memory and never written to any worker's disk."""

from __future__ import annotations

import fcntl
import io
import os
import threading
from collections.abc import Callable
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gradientlab.paths import data_dir

KEY_BLOCK_ENV = "GRADIENTLAB_SSH_KEY_BLOCK"

_reader: Callable[[], str] | None = None
_key: paramiko.PKey | None = None
_key_lock = threading.Lock()


class OperatorKeyUnavailable(RuntimeError):
    """The operator key is configured to come from a Prefect block this process cannot read."""


def read_operator_key_with(reader: Callable[[], str] | None) -> None:
    """Take the private key (PEM or OpenSSH text) from `reader` instead of the key file; it is
    called once, when the key is first needed. None goes back to the file."""
    global _reader, _key
    with _key_lock:
        _reader, _key = reader, None


def key_block_name() -> str | None:
    return os.environ.get(KEY_BLOCK_ENV) or None


def parse_private_key(text: str, source: str) -> paramiko.PKey:
    """An unencrypted Ed25519, ECDSA or RSA private key from its text, in memory."""
    for kind in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return kind.from_private_key(io.StringIO(text))
        except (paramiko.SSHException, ValueError):
            continue
    raise OperatorKeyUnavailable(
        f"{source}: not an unencrypted Ed25519, ECDSA or RSA private key "
        "(store the whole key file, from its BEGIN line to its END line)"
    )


def _key_from_reader() -> paramiko.PKey | None:
    global _key
    if _reader is None:
        name = key_block_name()
        if name:  # never fall back on (or create) a key file when a block is configured
            raise OperatorKeyUnavailable(
                f"{KEY_BLOCK_ENV}={name}: the SSH key lives in that Prefect Secret block, and "
                "this process cannot read blocks; run it as a flow, or start the connection "
                "keeper with `python -m deployments.keeper`"
            )
        return None
    with _key_lock:
        if _key is None:
            _key = parse_private_key(_reader(), f"the SSH key block {key_block_name() or ''}")
        return _key


def operator_key_path() -> Path:
    return data_dir() / "keys" / "id_ed25519"


class OperatorKeyMissing(RuntimeError):
    """The public key is there but the private key every host trusts is not."""


def ensure_operator_key(path: Path | None = None) -> Path:
    """Create the key pair once (0600 private key); later calls, in any process, reuse it.

    A pair is made only when neither file exists. A private key without its public file gets
    the public file back (derived from it); a public key without its private key is refused:
    a new pair would silently lock GradientLab out of every host that trusts the old one."""
    path = path or operator_key_path()
    public_path = path.with_suffix(".pub")
    if path.exists() and public_path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(path.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # several tasks may ask for the key at once
        if path.exists() and public_path.exists():
            return path
        if path.exists():
            existing = paramiko.Ed25519Key.from_private_key_file(str(path))
            _write_whole(public_path, (public_key_line(existing) + "\n").encode(), 0o644)
            return path
        if public_path.exists():
            raise OperatorKeyMissing(
                f"GradientLab's private SSH key {path} is missing, but its public key "
                f"{public_path} is there (every host GradientLab made trusts that one): restore "
                f"{path.name} from your backup, or set {KEY_BLOCK_ENV} to the Secret block that "
                f"holds it; only if the hosts are to get a new key, delete {public_path} and "
                "run again"
            )
        key = Ed25519PrivateKey.generate()
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        public = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        # each file appears whole (written aside, then renamed), the public one last: a caller
        # that finds both without taking the lock must never read a half-written one (a host
        # created at that moment got an empty authorized_keys)
        _write_whole(path, private, 0o600)
        _write_whole(public_path, public + b" gradientlab\n", 0o644)
    return path


def _write_whole(path: Path, data: bytes, mode: int) -> None:
    part = path.with_name(f".{path.name}.part")
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(part, path)


def load_operator_key(path: Path | None = None) -> paramiko.PKey:
    if path is None and (key := _key_from_reader()) is not None:
        return key
    path = ensure_operator_key(path)
    return paramiko.Ed25519Key.from_private_key_file(str(path))


def public_key_line(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.get_base64()} gradientlab"


def operator_public_key(path: Path | None = None) -> str:
    if path is None and (key := _key_from_reader()) is not None:
        return public_key_line(key)
    path = ensure_operator_key(path)
    return path.with_suffix(".pub").read_text().strip()
