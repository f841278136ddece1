"""The Web Store's update service: the update check URL, its answer, versions compared."""

from __future__ import annotations

import pytest

from gradientlab.config import NetworkSettings
from gradientlab.webstore import (
    UpdateCheckFailed,
    is_behind,
    parse_update_manifest,
    update_check_url,
    version_key,
)

ID = "caacbgbklghmpodbdafajbgdnegacfmo"
# the shape the real service answers with (a gupdate manifest, namespaced)
OK = f"""<?xml version="1.0" encoding="UTF-8"?>
<gupdate xmlns="http://www.google.com/update2/response" protocol="2.0" server="prod">
<daystart elapsed_days="6908" elapsed_seconds="36021"/>
<app appid="{ID}" cohort="1::" cohortname="" status="ok">
<updatecheck codebase="https://clients2.googleusercontent.com/crx/blobs/x/{ID}.crx"
 fp="1.abc" hash_sha256="00" protocol="2.0" size="3403612" status="ok" version="1.0.16"/>
</app></gupdate>"""
UNKNOWN = f"""<?xml version="1.0" encoding="UTF-8"?>
<gupdate xmlns="http://www.google.com/update2/response" protocol="2.0" server="prod">
<app appid="{ID}" status="error-unknownApplication"><updatecheck status="noupdate"/></app>
</gupdate>"""


def test_the_real_answer_shape_gives_the_version_and_codebase() -> None:
    published = parse_update_manifest(OK, ID)
    assert published.version == "1.0.16"
    assert published.codebase and published.codebase.endswith(f"{ID}.crx")


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (UNKNOWN, "status 'noupdate'"),
        (OK.replace(ID, "a" * 32), "does not mention"),
        ("<html>captive portal</html>", "does not mention"),
        ("not xml at all", "not an update manifest"),
        (OK.replace('version="1.0.16"', 'version="latest"'), "not an extension version"),
    ],
)
def test_answers_that_name_no_version_say_why(text: str, said: str) -> None:
    with pytest.raises((UpdateCheckFailed, ValueError), match=said):
        parse_update_manifest(text, ID, "the service")


def test_versions_compare_as_integers() -> None:
    assert version_key("1.0.16") > version_key("1.0.9")
    assert version_key("1.1") == version_key("1.1.0.0")
    assert is_behind("1.0.9", "1.0.16") and not is_behind("1.0.16", "1.0.16")
    assert is_behind(None, "1.0.16")  # never deployed: behind
    with pytest.raises(ValueError, match="1.0.x"):
        version_key("1.0.x")


def test_the_check_asks_the_service_extension_source_names_with_version_zero() -> None:
    url = update_check_url(NetworkSettings())
    assert url.startswith("https://clients2.google.com/service/update2/crx?")
    assert f"x=id%3D{ID}%26v%3D0.0.0.0%26uc" in url
    assert "response=redirect" not in url
