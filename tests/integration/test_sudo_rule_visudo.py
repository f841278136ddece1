"""The sudo rule GradientLab installs on hosts, read by sudo's own tools (visudo, cvtsudoers)."""

from __future__ import annotations

import json
import pwd
import shutil
import subprocess
from pathlib import Path

import pytest

from gradientlab.providers.sudo import HOST_SUDO_COMMANDS, sudoers_rule


@pytest.mark.skipif(shutil.which("cvtsudoers") is None, reason="sudo is not installed here")
def test_sudo_itself_reads_the_rule_the_same_way(tmp_path: Path) -> None:
    user = pwd.getpwuid(65534).pw_name  # nobody: any real user will do
    rule_file = tmp_path / "gradientlab"
    rule_file.write_text(sudoers_rule(user) + "\n")
    rule_file.chmod(0o440)
    checked = subprocess.run(["visudo", "-cf", str(rule_file)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    # sudo's own parser, as JSON: who, as whom, without a password, which commands
    parsed = subprocess.run(
        ["cvtsudoers", "-f", "json", str(rule_file)], capture_output=True, text=True, check=True
    )
    (spec,) = json.loads(parsed.stdout)["User_Specs"]
    assert spec["User_List"] == [{"username": user}]
    (commands,) = spec["Cmnd_Specs"]
    assert commands["runasusers"] == [{"username": "root"}]
    assert {"authenticate": False} in commands["Options"]
    assert [c["command"] for c in commands["Commands"]] == [
        f'{c.path} ""'
        for c in HOST_SUDO_COMMANDS  # "": with no arguments at all
    ]
