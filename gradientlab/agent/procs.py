"""Facts about the node's processes on a host: liveness, the browser's process tree, its PSS,
the runner's event log. Shipped beside runner.py (standard library only); the health check itself
is a shell command (`gradientlab.node.deploy.PROBE_SH`) that reads what the runner writes."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from typing import Any


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def iso_in(seconds: float) -> str:
    """The time `seconds` from now on this host's clock, as now_iso writes it."""
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).isoformat(
        timespec="milliseconds"
    )


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def read_pid(path: str | os.PathLike[str]) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def read_events(path: str | os.PathLike[str], since: int) -> list[dict[str, Any]]:
    """Events after `since`, the newest 200; a line a crash cut short is skipped."""
    out = []
    try:
        with open(path) as f:
            for line in f:
                try:
                    event = json.loads(line)
                    if int(event.get("id", 0)) > since:
                        out.append(event)
                except (ValueError, AttributeError):
                    continue
    except OSError:
        pass
    return out[-200:]


def pss_kib(pids: list[int]) -> int | None:
    total = 0
    found = False
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        found = True
                        break
        except OSError:
            continue
    return total if found else None


def _children(pid: int) -> list[int] | None:
    """Direct children from /proc/PID/task/*/children; None where the kernel lacks it."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.extend(int(c) for c in f.read().split())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            continue
    return out


def process_tree(root_pids: list[int]) -> list[int]:
    out: list[int] = []
    seen: set[int] = set()  # the browser is both a root and the runner's child
    todo = [p for p in root_pids if p]
    scanned: dict[int, list[int]] | None = None
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        out.append(pid)
        kids = _children(pid)
        if kids is None:  # fall back to one scan of /proc
            if scanned is None:
                scanned = _scan_parents()
            kids = scanned.get(pid, [])
        todo.extend(kids)
    return out


def _scan_parents() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    return children


def cmdline_has(pid: int | None, needle: str) -> bool:
    """Whether process `pid`'s command line has an argument containing `needle`."""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except OSError:
        return False
    wanted = needle.encode()
    return any(wanted in arg for arg in args)
