"""Where GradientLab keeps its local state: one project-local folder, never the user's home."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SQL_DIR = PROJECT_ROOT / "sql"


def data_dir() -> Path:
    """The folder for keys, local hosts, embedded Postgres and Prefect's home.

    `GRADIENTLAB_HOME` moves it (tests give each session its own). Made 0700: it holds the
    operator's key, the local secrets (Prefect's auth string and encryption key, the demo's
    password) and the users file; a folder that already exists keeps the mode it was given."""
    root = Path(os.environ.get("GRADIENTLAB_HOME", PROJECT_ROOT / ".gradientlab"))
    if not root.is_dir():
        root.parent.mkdir(parents=True, exist_ok=True)
        try:
            root.mkdir(mode=0o700)
        except FileExistsError:
            pass  # another process made it first
        else:
            os.chmod(root, 0o700)  # whatever the umask
    return root
