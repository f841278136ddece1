"""The browser facts command and the first-boot browser setup, run by /bin/sh on this machine."""

from __future__ import annotations

import subprocess

from gradientlab.node.browser import (
    BROWSER_FACTS_SH,
    DEBIAN_CHROMIUM,
    choose_browser,
    parse_browser_facts,
)


def test_the_facts_command_on_this_machine() -> None:
    """The shell command itself, run here (Debian with the chromium package)."""
    out = subprocess.run(["sh", "-c", BROWSER_FACTS_SH], capture_output=True, text=True, check=True)
    parsed = parse_browser_facts(out.stdout)
    assert parsed.os.family == "debian"
    assert parsed.real(DEBIAN_CHROMIUM) is not None
    assert choose_browser(parsed, None).path == DEBIAN_CHROMIUM


def test_the_first_boot_script_installs_debians_package_or_playwrights_libraries() -> None:
    """The cloud-init part: valid shell, Debian's package on Debian, never Ubuntu's snap."""
    import yaml

    from gradientlab.providers.bootstrap import BROWSER_SETUP_SH, HostKeyPair, cloud_init

    subprocess.run(["sh", "-n", "-c", BROWSER_SETUP_SH], check=True)
    assert "apt-get install -y chromium\n" in BROWSER_SETUP_SH
    assert "chromium-browser" not in BROWSER_SETUP_SH  # Ubuntu's transitional package: a snap
    assert "playwright install-deps chromium" in BROWSER_SETUP_SH
    user_data = yaml.safe_load(
        cloud_init("gl", "ssh-ed25519 AAAA op", HostKeyPair.generate(), "n1").split("\n", 1)[1]
    )
    assert ["sh", "-c", BROWSER_SETUP_SH] in user_data["runcmd"]
