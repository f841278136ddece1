"""A one-line progress display for the CLI's long commands: on stderr, and only on a terminal.

stdout stays the command's answer (a table, or `--json` for scripts); a pipe, a log file or a
service manager sees no progress at all, not carriage returns and bars."""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO

BAR_WIDTH = 20


class Progress:
    def __init__(self, label: str, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled and _is_terminal(self.stream)
        self.started = time.monotonic()
        self._shown = False

    def update(self, done: int, total: int, note: str = "") -> None:
        if not self.enabled:
            return
        filled = min(BAR_WIDTH, BAR_WIDTH * done // total) if total else 0
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        elapsed = int(time.monotonic() - self.started)
        line = f"{self.label} [{bar}] {done}/{total} {elapsed // 60}:{elapsed % 60:02d}"
        if note:
            line += f" {note}"
        width = shutil.get_terminal_size((100, 24)).columns - 1
        self.stream.write("\r\x1b[K" + line[:width])
        self.stream.flush()
        self._shown = True

    def finish(self) -> None:
        """Clear the line, so that what the command prints next starts on a clean one."""
        if self.enabled and self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = False


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed, or not a file at all
        return False
