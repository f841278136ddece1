"""Where GradientLab keeps its local state: one project-local folder, never the user's home."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SQL_DIR = PROJECT_ROOT / "sql"


def data_dir() -> Path:
    """The folder for keys, local hosts, embedded Postgres and Prefect's home.

    `GRADIENTLAB_HOME` moves it (tests give each session its own)."""
    root = Path(os.environ.get("GRADIENTLAB_HOME", PROJECT_ROOT / ".gradientlab"))
    root.mkdir(parents=True, exist_ok=True)
    return root
