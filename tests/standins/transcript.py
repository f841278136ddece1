"""A pytest plugin that writes down what each cloud stand-in recorded, test by test.

Run the provider tests with it before and after a change to a driver, then compare: the same
transcript means the drivers sent the same requests. What differs from run to run (free ports,
generated host keys, uuid4s) is replaced by a placeholder; everything else is kept as sent.

    python -m pytest -n 0 tests/integration/test_provider_*.py -p tests.standins.transcript \
        --transcript before.json
    python -m tests.standins.transcript before.json after.json
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Headers a driver chooses; the rest (dates, user agents, signatures, lengths) the SDK does.
KEPT_HEADERS = ("opc-retry-token", "if-match")
_PORT = re.compile(r"127\.0\.0\.1:\d+")
_PUBLIC_KEY = re.compile(r"ssh-ed25519 AAAA[A-Za-z0-9+/=]+")
_PRIVATE_KEY = re.compile(
    r"-----BEGIN OPENSSH PRIVATE KEY-----.*?-----END OPENSSH PRIVATE KEY-----", re.S
)
_UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
_transcripts: dict[str, dict[str, list[Any]]] = {}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--transcript", help="write the stand-ins' recorded requests to this file")


def _text(value: str) -> str:
    if len(value) > 100 and re.fullmatch(r"[A-Za-z0-9+/=\s]+", value):
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            decoded = None
        if decoded is not None:
            return "base64:" + _text(decoded)
    value = _PORT.sub("127.0.0.1:PORT", value)
    value = _PRIVATE_KEY.sub("PRIVATE-KEY", value)
    value = _PUBLIC_KEY.sub("ssh-ed25519 HOST-KEY", value)
    return _UUID4.sub("UUID4", value)


def normalized(value: Any) -> Any:
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, dict):
        return {_text(str(k)): normalized(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [normalized(v) for v in value]
    return value


def _record(rec: Any) -> dict[str, Any]:
    fields = {f.name: getattr(rec, f.name) for f in dataclasses.fields(rec)}
    fields.pop("api_version", None)  # Azure's; the query has it too
    headers = fields.pop("headers", None) or {}
    kept = {k: v for k, v in headers.items() if k.lower() in KEPT_HEADERS}
    if kept:
        fields["headers"] = kept
    return normalized(fields)


def recorded_by(standin: Any) -> list[Any] | None:
    """The requests a stand-in recorded, whichever attribute it keeps them in."""
    for attribute in ("requests", "calls"):
        found = getattr(standin, attribute, None)
        if isinstance(found, list) and all(dataclasses.is_dataclass(r) for r in found):
            return found
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    yield
    seen: dict[str, list[Any]] = {}
    for name, value in getattr(item, "funcargs", {}).items():
        if type(value).__module__.startswith("tests.standins."):
            records = recorded_by(value)
            if records is not None:
                seen[name] = [_record(r) for r in records]
    if seen:
        _transcripts[item.nodeid] = seen


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = session.config.getoption("--transcript")
    if path:
        Path(path).write_text(json.dumps(_transcripts, indent=1, sort_keys=True) + "\n")


def compare(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What differs between two transcripts, one line per test (empty: the same requests)."""
    problems = []
    for test in sorted(set(before) | set(after)):
        if test not in after:
            problems.append(f"{test}: no transcript after")
        elif test not in before:
            problems.append(f"{test}: no transcript before")
        elif before[test] != after[test]:
            problems.append(f"{test}: the recorded requests differ")
    return problems


if __name__ == "__main__":
    old, new = (json.loads(Path(p).read_text()) for p in sys.argv[1:3])
    differences = compare(old, new)
    print("\n".join(differences) or f"same requests in all {len(old)} tests")
    sys.exit(1 if differences else 0)
