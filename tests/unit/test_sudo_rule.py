"""The sudo GradientLab asks of a host: exactly the commands it runs as root, nothing more.

Every `sudo` command line in GradientLab's code comes from `gradientlab.providers.sudo`, and the
rule it writes allows each of them and nothing else. Sudo's own reading of the rule (`visudo
-c`, `cvtsudoers`) is in tests/integration/test_sudo_rule_visudo.py."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

from gradientlab.providers.bootstrap import HostKeyPair, cloud_init
from gradientlab.providers.sudo import HOST_SUDO_COMMANDS, rule_allows, sudoers_rule

PACKAGE = Path(__file__).resolve().parents[2] / "gradientlab"
SUDO_AT_COMMAND_START = re.compile(r"(^|[;&|(]\s*)sudo\s")


def sudo_literals() -> list[str]:
    """String constants in GradientLab's code that start a command with sudo."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and SUDO_AT_COMMAND_START.search(node.value)
            ):
                found.append(f"{path.relative_to(PACKAGE)}: {node.value!r}")
    return found


def test_no_command_runs_sudo_except_through_the_declared_commands() -> None:
    # a new `sudo ...` literal must become a SudoCommand, so that the rule grows with it
    assert sudo_literals() == []
    assert {c.command_line() for c in HOST_SUDO_COMMANDS} == {
        "sudo -n /usr/sbin/reboot",
        "sudo -n /usr/sbin/poweroff",
    }


def test_the_rule_allows_every_command_gradientlab_runs_and_nothing_else() -> None:
    rule = sudoers_rule("gradientlab")
    assert rule == 'gradientlab ALL=(root) NOPASSWD: /usr/sbin/reboot "", /usr/sbin/poweroff ""'
    for command in HOST_SUDO_COMMANDS:
        assert rule_allows(rule, command.command_line()), command
    for other in (
        "sudo -n /usr/sbin/reboot --force",
        "sudo -n /usr/sbin/poweroff --reboot",
        "sudo -n /usr/bin/loginctl enable-linger root",
        "sudo -n /bin/sh",
        "sudo -n reboot",  # only the full path is allowed
    ):
        assert not rule_allows(rule, other), other


def test_cloud_init_grants_no_sudo() -> None:
    """A cloud VM is rebooted and stopped through its cloud's API, and cloud-init enables
    lingering itself as root: GradientLab's user there needs no root at all."""
    config = yaml.safe_load(
        cloud_init("gl", "ssh-ed25519 AAAA op", HostKeyPair.generate(), "n1").split("\n", 1)[1]
    )
    user = next(u for u in config["users"] if isinstance(u, dict) and u["name"] == "gl")
    assert "sudo" not in user
    assert ["loginctl", "enable-linger", "gl"] in config["runcmd"]
