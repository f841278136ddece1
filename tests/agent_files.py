"""The host side as deploy ships it, for tests that run the runner as a process."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from gradientlab.node.deploy import agent_files


@functools.cache
def shipped_runner() -> Path:
    """runner.py beside agent/, written once per test process the way deploy writes them."""
    folder = Path(tempfile.mkdtemp(prefix="gradientlab-agent-"))
    atexit.register(shutil.rmtree, folder, True)
    (folder / "agent").mkdir()
    for name, data in agent_files().items():
        (folder / name).write_bytes(data)
    return folder / "runner.py"
