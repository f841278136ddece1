"""The web API key: read from the extension's own bundle, a placeholder refused by `check`."""

from __future__ import annotations

from pathlib import Path

import pytest

from gradientlab.config import FleetFileError, load_fleet, parse_fleet
from gradientlab.gradient.webkey import FIREBASE_KEY, find_web_api_key, is_placeholder

REPO = Path(__file__).resolve().parents[2]
REAL_EXTENSION = Path("/work/shared/fixtures/gradient-sentry-node-1.0.16")
SANDBOX_EXTENSION = REPO / "gradientlab" / "sandbox" / "extension"


def bundle_texts(folder: Path) -> list[str]:
    return [p.read_text(errors="replace") for p in sorted(folder.glob("*.js"))]


@pytest.mark.skipif(not REAL_EXTENSION.is_dir(), reason="the real extension is not here")
def test_the_real_extension_s_bundle_carries_the_dashboard_s_firebase_key() -> None:
    key = find_web_api_key(bundle_texts(REAL_EXTENSION))
    assert key is not None and key.startswith("AIza") and len(key) == 39
    assert FIREBASE_KEY.fullmatch(key)
    assert not is_placeholder(key)


def test_a_stand_in_extension_names_its_key_the_same_way() -> None:
    # the sandbox's extension carries the sandbox's key in its Firebase config field
    assert find_web_api_key(bundle_texts(SANDBOX_EXTENSION)) == "sandbox-web-api-key"


def test_the_named_field_wins_and_a_bundle_without_a_key_has_none() -> None:
    other = "AIza" + "b" * 35
    texts = [f'x="{other}"', 'const c={FIREBASE_API_KEY:"real-key-123"}']
    assert find_web_api_key(texts) == "real-key-123"
    assert find_web_api_key([f"fetch('/v1/token?key={other}')"]) == other
    assert find_web_api_key(["no key here", ""]) is None


def test_the_example_s_placeholder_is_refused_naming_the_line_and_the_fix() -> None:
    text = (REPO / "fleet.example.yaml").read_text()
    placeholder = text.replace(
        "  # web_api_key: AIza...",
        '  web_api_key: "<the dashboard\'s public Firebase web API key>"  #',
    )
    assert placeholder != text
    with pytest.raises(FleetFileError) as caught:
        parse_fleet(placeholder, "fleet.yaml")
    message = str(caught.value)
    line = next(i for i, s in enumerate(placeholder.splitlines(), 1) if "web_api_key:" in s)
    assert f"fleet.yaml:{line}: network.web_api_key: " in message
    assert "placeholder" in message and "extension's bundle" in message
    # the example as shipped sets no key: deploy reads it
    assert load_fleet(REPO / "fleet.example.yaml").network.web_api_key is None


@pytest.mark.parametrize(
    "value", ["<your key>", "...", "changeme", "YOUR_KEY", "short", "a b c d e f"]
)
def test_placeholders(value: str) -> None:
    assert is_placeholder(value)


@pytest.mark.parametrize("value", ["AIzaSyD-" + "x1" * 15 + "abc", "sandbox-web-api-key"])
def test_keys(value: str) -> None:
    assert not is_placeholder(value)
