"""The health probe: one JSON report of a node, read over SSH on every health check.

Shipped beside runner.py and run as `python3 -I -S probe.py [--since N]`. It imports almost
nothing (no site-packages, no Playwright) because it runs on every host on every sweep: its cost
is the health check's cost."""

from __future__ import annotations

import json
import os
import socket
import sys
from datetime import UTC, datetime
from typing import Any

PROBE_VERSION = "1"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


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


def probe(home: str, since: int = 0) -> dict[str, Any]:
    runner_pid = read_pid(os.path.join(home, "runner.pid"))
    browser_pid = read_pid(os.path.join(home, "browser.pid"))
    runner_alive = pid_alive(runner_pid)
    browser_alive = runner_alive and pid_alive(browser_pid)
    try:
        with open(os.path.join(home, "status.json")) as f:
            status = json.load(f)
    except (OSError, ValueError):
        status = {}
    alive = [p for p in (runner_pid, browser_pid) if p and pid_alive(p)]
    return {
        "probe_version": PROBE_VERSION,
        "now": now_iso(),
        "hostname": socket.gethostname(),
        "runner_alive": runner_alive,
        "runner_pid": runner_pid if runner_alive else None,
        "browser_alive": browser_alive,
        "browser_pid": browser_pid if browser_alive else None,
        "installed": os.path.exists(os.path.join(home, "config.json")),
        "status": status,
        "pss_kib": pss_kib(process_tree(alive)),
        "events": read_events(os.path.join(home, "events.jsonl"), since),
    }


def main(argv: list[str]) -> int:
    since = 0
    if len(argv) >= 2 and argv[0] == "--since":
        try:
            since = int(argv[1])
        except ValueError:
            print(json.dumps({"error": f"--since takes an event id, not {argv[1]!r}"}))
            return 2
    home = os.environ.get("GRADIENTLAB_NODE_HOME") or os.path.dirname(os.path.abspath(__file__))
    print(json.dumps(probe(home, since)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
