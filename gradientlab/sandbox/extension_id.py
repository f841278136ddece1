"""The fixed id of the sandbox extension, derived from the `key` in its manifest.json."""

from __future__ import annotations

import base64
import hashlib

SANDBOX_EXTENSION_ID = "jjooflmniolkefagchmonjfeegcipghp"


def extension_id_from_public_key(der: bytes) -> str:
    """Chrome's extension id: sha256 of the DER public key, first 32 hex digits, 0-f -> a-p."""
    digest = hashlib.sha256(der).hexdigest()[:32]
    return "".join(chr(ord("a") + int(c, 16)) for c in digest)


def extension_id_from_manifest_key(key_b64: str) -> str:
    """The id Chrome gives an unpacked extension whose manifest has this `key`."""
    return extension_id_from_public_key(base64.b64decode(key_b64))
