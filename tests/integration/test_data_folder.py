"""GradientLab's data folder (keys, local secrets, users file) is made for its owner only."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from gradientlab.paths import data_dir


def test_the_data_folder_is_made_0700_whatever_the_umask(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "deep" / "gradientlab"
    monkeypatch.setenv("GRADIENTLAB_HOME", str(home))
    old = os.umask(0)  # the widest umask a shell could have
    try:
        assert data_dir() == home
    finally:
        os.umask(old)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    os.chmod(home, 0o750)  # an operator's own choice for a folder that exists is kept
    assert data_dir() == home and stat.S_IMODE(home.stat().st_mode) == 0o750
