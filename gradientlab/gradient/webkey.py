"""The dashboard's Firebase web API key, read from the Sentry Node extension's own bundle.

The extension ships the dashboard's public Firebase web config (v1.0.16:
``FIREBASE_API_KEY:"AIza..."``, 39 characters, also in its token-refresh URL); it is a public
identifier, not a secret. Once deploy has unpacked the extension on a host, GradientLab reads
the key from there, so an operator never has to look it up; ``network.web_api_key`` in the
fleet file overrides it. The reader takes the bundle's named config field first (whatever the
key's format: a stand-in network's extension names its key the same way), then any key in
Firebase's own format."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

FIREBASE_KEY = re.compile(r"AIza[0-9A-Za-z_\-]{35}")
NAMED_KEY = re.compile(r"""\b(?:FIREBASE_API_KEY|apiKey)["']?\s*:\s*["']([0-9A-Za-z_\-]{8,})["']""")
# The same two patterns for grep -E on a host (POSIX classes; no \b, no \s).
GREP_PATTERN = (
    r"""(FIREBASE_API_KEY|apiKey)["']?[[:space:]]*:[[:space:]]*["'][0-9A-Za-z_-]{8,}["']"""
    r"|AIza[0-9A-Za-z_-]{35}"
)
PLACEHOLDER = re.compile(r"[\s<>]|^(\.+|x+|changeme|placeholder|your[-_ ]?key)$", re.IGNORECASE)


def find_web_api_key(texts: Iterable[str]) -> str | None:
    """The web API key the bundle's texts carry: its named config field's value, else the most
    frequent Firebase-format key; None when the bundle has none."""
    named: Counter[str] = Counter()
    firebase: Counter[str] = Counter()
    for text in texts:
        named.update(m.group(1) for m in NAMED_KEY.finditer(text))
        firebase.update(FIREBASE_KEY.findall(text))
    for found in (named, firebase):
        if found:
            return found.most_common(1)[0][0]
    return None


def is_placeholder(key: str) -> bool:
    """A value that stands for a key rather than being one (an example file's "<...>")."""
    return bool(PLACEHOLDER.search(key)) or len(key) < 8
