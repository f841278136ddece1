"""Tap readiness as a fact read from a host: the command that runs `stun.py` there and the
parser that turns its JSON line into a `TapReadiness`. Control-plane side (not shipped)."""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from gradientlab.agent.stun import TapReadiness, TapReadinessError
from gradientlab.node.deploy import NODE_DIR, STUN_SOURCE, VENV_PYTHON, put_file
from gradientlab.providers.base import HostRecord
from gradientlab.remote.executor import Executor

STUN_PATH = f"{NODE_DIR}/agent/stun.py"


@dataclass(frozen=True)
class TapCheck:
    """One host's tap-readiness test in one run: its result, or why there is none."""

    host: str
    checked_at: datetime
    stun_server: str
    result: TapReadiness | None = None
    error: str | None = None

    @property
    def message(self) -> str | None:
        """What went wrong, from the host's side or the test's."""
        if self.error:
            return self.error
        return self.result.error if self.result else None

    def as_row(self) -> dict[str, str]:
        """This check in words, for a report's table."""
        r = self.result
        udp = "?" if r is None else ("reachable" if r.udp_reachable else "blocked")
        mapped = f"{r.mapped_address}:{r.mapped_port}" if r and r.mapped_address else ""
        return {
            "host": self.host,
            "nat type": (r.nat_type.value if r and r.nat_type else "unknown"),
            "udp": udp,
            "mapped address": mapped,
            "mapping": r.mapping.value if r and r.mapping else "",
            "filtering": r.filtering.value if r and r.filtering else "",
            "error": self.message or "",
        }


def stun_command(python: str | None, server: str, rto: float, attempts: int) -> str:
    py = python or VENV_PYTHON
    return " ".join(
        [
            shlex.quote(py),
            STUN_PATH,
            shlex.quote(server),
            f"--rto {rto:g}",
            f"--attempts {int(attempts)}",
        ]
    )


def parse_stun_output(host: str, exit_code: int, stdout: str, stderr: str) -> TapReadiness:
    """The last JSON line `stun.py` printed; TapReadinessError naming the host otherwise."""
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if exit_code != 0 or not lines:
        said = (stderr or stdout).strip()[-300:]
        raise TapReadinessError(
            f"{host}: the STUN test printed no result (exit {exit_code}): {said!r}"
        )
    try:
        return TapReadiness.from_json(lines[-1])
    except TapReadinessError as exc:
        raise TapReadinessError(f"{host}: the STUN test's result is unreadable: {exc}") from None


def read_tap_readiness(
    host: str,
    connect: Callable[[], Executor],
    python: str | None,
    server: str,
    checked_at: datetime,
    *,
    rto: float = 0.25,
    attempts: int = 4,
) -> TapCheck:
    """Ship the current stun.py if the host's differs, run it, parse it. Whatever goes wrong on
    this host (SSH, no node folder, no Python, an unreadable answer) is this check's error."""
    try:
        ex = connect()
        ex.ensure_dir(NODE_DIR, 0o700)  # a host deploy has not reached yet is measured too
        ex.ensure_dir(f"{NODE_DIR}/agent", 0o700)
        put_file(ex, STUN_PATH, STUN_SOURCE.read_bytes(), 0o644, [])
        # a test that hears nothing waits out each of its (at most six) transactions
        budget = 6 * rto * (2**attempts) + 30
        done = ex.run(stun_command(python, server, rto, attempts), timeout=budget)
        result = parse_stun_output(host, done.exit_code, done.stdout, done.stderr)
    except Exception as exc:  # noqa: BLE001 - one host's trouble is that host's row
        return TapCheck(host, checked_at, server, error=str(exc) or type(exc).__name__)
    return TapCheck(host, checked_at, server, result=result)


def sweep_tap_readiness(
    records: Sequence[HostRecord],
    connect: Callable[[HostRecord], Executor],
    server: str,
    checked_at: datetime,
    *,
    parallel: int = 20,
    rto: float = 0.25,
    attempts: int = 4,
) -> list[TapCheck]:
    """Every host's test at once (`parallel` at a time), one check per host, in their order.

    All share one `checked_at`: the run's, so a host's rows line up across runs."""
    if not records:
        return []

    def one(record: HostRecord) -> TapCheck:
        return read_tap_readiness(
            record.name,
            lambda: connect(record),
            record.meta.get("python"),
            server,
            checked_at,
            rto=rto,
            attempts=attempts,
        )

    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(records)))) as pool:
        return list(pool.map(one, records))
