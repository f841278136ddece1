"""The commands GradientLab runs as root on a host, and the sudo rule that allows exactly those.

Only hosts from an SSH inventory are rebooted or powered off from inside (a cloud VM is
rebooted and stopped through its cloud's API), so only they need a rule; cloud-init writes
none. Each command is allowed with exactly its arguments (`""` in sudoers: none at all)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass


@dataclass(frozen=True)
class SudoCommand:
    path: str
    args: tuple[str, ...] = ()

    def command_line(self) -> str:
        """As GradientLab runs it: `-n` fails at once instead of asking for a password."""
        return shlex.join(["sudo", "-n", self.path, *self.args])

    def sudoers_spec(self) -> str:
        return f"{self.path} {' '.join(self.args)}" if self.args else f'{self.path} ""'


REBOOT = SudoCommand("/usr/sbin/reboot")
POWER_OFF = SudoCommand("/usr/sbin/poweroff")
HOST_SUDO_COMMANDS = (REBOOT, POWER_OFF)


def sudoers_rule(user: str, commands: tuple[SudoCommand, ...] = HOST_SUDO_COMMANDS) -> str:
    """One sudoers line for `user` (a file in /etc/sudoers.d/), e.g.
    `gradientlab ALL=(root) NOPASSWD: /usr/sbin/reboot "", /usr/sbin/poweroff ""`."""
    return f"{user} ALL=(root) NOPASSWD: " + ", ".join(c.sudoers_spec() for c in commands)


def rule_allows(rule: str, command_line: str) -> bool:
    """Whether a rule written by `sudoers_rule` lets `command_line` (`sudo -n PATH ARGS...`)
    run, read as sudo reads it: the path and the exact arguments; `""` means no arguments."""
    words = shlex.split(command_line)
    if words[:2] != ["sudo", "-n"] or len(words) < 3:
        return False
    wanted_path, wanted_args = words[2], words[3:]
    specs = rule.split("NOPASSWD:", 1)[1]
    for spec in specs.split(","):
        path, _, args = spec.strip().partition(" ")
        if path != wanted_path:
            continue
        allowed_args = [] if args.strip() == '""' else shlex.split(args)
        if not args.strip():
            return True  # a bare path allows any arguments
        if allowed_args == wanted_args:
            return True
    return False
