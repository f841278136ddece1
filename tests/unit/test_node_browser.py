"""Which Chromium each host runs, decided per OS from `/etc/os-release` samples (the real files'
text) and the shell facts' JSON lines. The Debian path runs end to end in tests/e2e."""

from __future__ import annotations

import pytest

from gradientlab.node.browser import (
    DEBIAN_CHROMIUM,
    NoUsableBrowser,
    choose_browser,
    parse_browser_facts,
    parse_os_release,
)

DEBIAN_12 = """PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"
"""
UBUNTU_2404 = """PRETTY_NAME="Ubuntu 24.04.1 LTS"
NAME="Ubuntu"
VERSION_ID="24.04"
VERSION="24.04.1 LTS (Noble Numbat)"
ID=ubuntu
ID_LIKE=debian
UBUNTU_CODENAME=noble
"""
ORACLE_LINUX_9 = """NAME="Oracle Linux Server"
VERSION="9.4"
ID="ol"
ID_LIKE="fedora"
VARIANT="Server"
VERSION_ID="9.4"
PRETTY_NAME="Oracle Linux Server 9.4"
"""
RASPBIAN_12 = """PRETTY_NAME="Raspbian GNU/Linux 12 (bookworm)"
NAME="Raspbian GNU/Linux"
VERSION_ID="12"
ID=raspbian
ID_LIKE=debian
"""
MINT_22 = """NAME="Linux Mint"
VERSION="22 (Wilma)"
ID=linuxmint
ID_LIKE="ubuntu debian"
PRETTY_NAME="Linux Mint 22"
VERSION_ID="22"
"""

REAL = '{"path": "/usr/bin/chromium", "resolved": "/usr/lib/chromium/chromium", "snap": false}'
SNAP_WRAPPER = (
    '{"path": "/usr/bin/chromium-browser", "resolved": "/usr/bin/chromium-browser", "snap": true}'
)
SNAP = '{"path": "/snap/bin/chromium", "resolved": "/usr/bin/snap", "snap": true}'


def facts(os_release: str, *lines: str) -> str:
    return os_release + "--- gradientlab\n" + "\n".join(lines) + "\n"


def test_os_release_is_read_with_its_quotes() -> None:
    os = parse_os_release(MINT_22)
    assert (os.id, os.id_like, os.version_id) == ("linuxmint", ("ubuntu", "debian"), "22")
    assert os.pretty_name == "Linux Mint 22"
    assert parse_os_release("").family == "other"


@pytest.mark.parametrize(
    ("os_release", "family"),
    [
        (DEBIAN_12, "debian"),
        (RASPBIAN_12, "debian"),
        (UBUNTU_2404, "ubuntu"),
        (MINT_22, "ubuntu"),
        (ORACLE_LINUX_9, "other"),
    ],
)
def test_the_os_family(os_release: str, family: str) -> None:
    assert parse_os_release(os_release).family == family


def test_debian_with_its_package_runs_it() -> None:
    choice = choose_browser(parse_browser_facts(facts(DEBIAN_12, REAL)), None)
    assert (choice.source, choice.path) == ("package", DEBIAN_CHROMIUM)
    assert "Debian GNU/Linux 12" in choice.why


def test_a_raspberry_pi_is_debian_too() -> None:
    assert choose_browser(parse_browser_facts(facts(RASPBIAN_12, REAL)), None).source == "package"


def test_debian_without_the_package_says_how_to_install_it() -> None:
    with pytest.raises(NoUsableBrowser, match="apt-get install -y chromium"):
        choose_browser(parse_browser_facts(facts(DEBIAN_12)), None)


@pytest.mark.parametrize("lines", [(), (SNAP_WRAPPER,), (SNAP_WRAPPER, SNAP)])
def test_ubuntu_gets_playwrights_chromium_whatever_snaps_it_has(lines: tuple[str, ...]) -> None:
    choice = choose_browser(parse_browser_facts(facts(UBUNTU_2404, *lines)), None)
    assert (choice.source, choice.path) == ("playwright", None)
    assert "snap" in choice.why


def test_oracle_linux_gets_playwrights_chromium() -> None:
    choice = choose_browser(parse_browser_facts(facts(ORACLE_LINUX_9)), None)
    assert choice.source == "playwright"
    assert "no real chromium package" in choice.why


def test_a_configured_browser_wins_unless_it_is_a_snap() -> None:
    ok = choose_browser(parse_browser_facts(facts(UBUNTU_2404)), "/opt/chromium/chrome")
    assert (ok.source, ok.path) == ("configured", "/opt/chromium/chrome")
    with pytest.raises(NoUsableBrowser, match="a snap"):
        choose_browser(parse_browser_facts(facts(UBUNTU_2404, SNAP)), "/snap/bin/chromium")


def test_a_line_that_is_not_json_is_skipped() -> None:
    parsed = parse_browser_facts(facts(DEBIAN_12, "{not json", REAL))
    assert [c.path for c in parsed.candidates] == ["/usr/bin/chromium"]
