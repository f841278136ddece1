"""GradientLab's own SSH key: the operator identity the control plane logs in to hosts with."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gradientlab.paths import data_dir


def operator_key_path() -> Path:
    return data_dir() / "keys" / "id_ed25519"


def ensure_operator_key(path: Path | None = None) -> Path:
    """Create the key pair once (0600 private key); later calls, in any process, reuse it."""
    path = path or operator_key_path()
    public_path = path.with_suffix(".pub")
    if path.exists() and public_path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(path.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # several tasks may ask for the key at once
        if path.exists() and public_path.exists():
            return path
        key = Ed25519PrivateKey.generate()
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        public = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(private)
        public_path.write_bytes(public + b" gradientlab\n")
    return path


def load_operator_key(path: Path | None = None) -> paramiko.PKey:
    path = ensure_operator_key(path)
    return paramiko.Ed25519Key.from_private_key_file(str(path))


def operator_public_key(path: Path | None = None) -> str:
    path = ensure_operator_key(path)
    return path.with_suffix(".pub").read_text().strip()
