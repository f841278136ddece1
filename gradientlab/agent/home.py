"""The node's home on a host: its files, its config, its event log, the runner's constants."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any

from .procs import now_iso

RUNNER_VERSION = "4"  # 4: DevTools over a pipe and a private socket, no TCP port
UNIT_NAME = "gradientlab-node.service"  # the systemd user unit deploy writes
EXIT_LOCKED = 3  # `run` while another runner holds runner.lock

log = logging.getLogger("gradientlab.runner")


def node_home() -> Path:
    """GRADIENTLAB_NODE_HOME, else the folder the agent is shipped into (runner.py's, the parent
    of agent/)."""
    return Path(os.environ.get("GRADIENTLAB_NODE_HOME") or Path(__file__).resolve().parent.parent)


class Paths:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.config = home / "config.json"
        self.runner_pid = home / "runner.pid"
        self.lock = home / "runner.lock"
        self.browser_pid = home / "browser.pid"
        self.status = home / "status.json"
        self.events = home / "events.jsonl"
        self.events_id = home / "events.id"
        self.log = home / "runner.log"
        self.chrome_log = home / "chrome.log"
        self.profile = home / "profile"
        self.extensions = home / "extension"
        self.current_extension = home / "extension" / "current"
        self.crx_cache = home / "extension-cache"


def load_config(paths: Paths) -> dict[str, Any]:
    with open(paths.config) as f:
        config: dict[str, Any] = json.load(f)
    return config


def write_json_atomic(path: Path, data: Any, mode: int = 0o644) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


# ---------------------------------------------------------------- events


class EventLog:
    """Append-only JSON lines; each event has an increasing id so the control plane can resume.

    events.id beside the log names this log: a random id made whenever the log starts afresh (a
    new install, a deleted file), so a control plane that keeps (log id, cursor) knows when ids
    start again from 1."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.id_path = path.with_suffix(".id")

    def log_id(self) -> str | None:
        try:
            return self.id_path.read_text().strip() or None
        except OSError:
            return None

    def _ensure_id(self, fresh: bool) -> None:
        """Under the log's lock: a new id when the log is new, or when there is none yet."""
        if not fresh and self.log_id():
            return
        tmp = self.id_path.with_suffix(".id.tmp")
        try:
            tmp.write_text(uuid.uuid4().hex + "\n")
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.id_path)
        except OSError as exc:  # a full disk: the event may still fit; the next add tries again
            log.warning("could not write %s: %s", self.id_path, exc)

    def last_id(self) -> int:
        return self._last_id()

    def _last_id(self) -> int:
        try:
            with open(self.path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 4096))
                lines = f.read().splitlines()
            for line in reversed(lines):
                with contextlib.suppress(ValueError, KeyError):
                    return int(json.loads(line)["id"])
        except OSError:
            pass
        return 0

    def add(self, kind: str, detail: str = "") -> None:
        # The runner and one-shot commands (login) append to one file: take the next id under
        # a lock, from the file itself, so ids never repeat.
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._ensure_id(fresh=not self.path.exists())
            event = {"id": self._last_id() + 1, "at": now_iso(), "kind": kind, "detail": detail}
            with open(self.path, "a+b") as f:
                f.seek(0, os.SEEK_END)
                if f.tell():
                    f.seek(f.tell() - 1)
                    if f.read(1) != b"\n":
                        f.write(b"\n")  # end a line a crash cut short
                f.write(json.dumps(event).encode() + b"\n")
            self._trim()
        log.info("event %s %s", kind, detail)

    def _trim(self, keep: int = 500) -> None:
        if self.path.stat().st_size < 256 * 1024:
            return
        lines = self.path.read_text().splitlines()[-keep:]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, self.path)
