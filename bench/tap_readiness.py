"""Tap-readiness benchmark: one STUN test by kind of answer, and poc_taps's STUN step over N
real sshd hosts against the sandbox's STUN server.

    .venv/bin/python -m bench.tap_readiness [--hosts 20] [--parallel 20] [--repeat 5]

Prints one JSON line per figure (median seconds over the repeats). The sweep needs root
(local hosts). A test that hears nothing (UDP blocked, or a NAT that filters the RFC 5780
change requests) waits out its retransmit budget, so those figures are the budget, by design."""

from __future__ import annotations

import argparse
import json
import shutil
import socket
from typing import Any

from bench.health_sweep import BENCH_HOME, make_hosts, timed
from gradientlab.agent.stun import NatType, run_test
from gradientlab.health.report import utcnow
from gradientlab.inventory import executor_for
from gradientlab.node.readiness import sweep_tap_readiness
from gradientlab.remote.executor import POOL
from gradientlab.sandbox.stun import StunServer


def emit(figure: str, value: float, **extra: Any) -> None:
    line = {"bench": "tap_readiness", "figure": figure, "value": round(value, 4), **extra}
    print(json.dumps(line), flush=True)


def single_test_figures(repeat: int) -> None:
    with StunServer() as full, StunServer(rfc5780=False) as basic:
        assert run_test(full.address).nat_type == NatType.OPEN
        emit("stun_test_open_rfc5780_s", timed(lambda: run_test(full.address), repeat))
        assert run_test(basic.address).nat_type == NatType.BASIC_ONLY
        emit("stun_test_basic_only_s", timed(lambda: run_test(basic.address), repeat))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        emit("stun_test_udp_blocked_s", timed(lambda: run_test(address), 1), rto=0.25, attempts=4)


def sweep_figures(hosts: int, parallel: int, repeat: int, base: str) -> None:
    provider, records = make_hosts(hosts, base)
    try:
        with StunServer() as server:

            def sweep() -> None:
                checks = sweep_tap_readiness(
                    records, executor_for, server.address, utcnow(), parallel=parallel
                )
                bad = [c.message for c in checks if c.result is None or c.message]
                assert not bad, bad

            emit("tap_readiness_first_sweep_s", timed(sweep, 1), hosts=hosts, parallel=parallel)
            emit(
                "tap_readiness_sweep_s",
                timed(sweep, repeat),
                hosts=hosts,
                parallel=parallel,
                note="stun.py already on the hosts; connections kept open",
            )
    finally:
        POOL.close_all()
        for r in records:
            provider.terminate(r.name)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--parallel", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--base-address", default="127.0.4.10")
    args = parser.parse_args()
    try:
        single_test_figures(args.repeat)
        sweep_figures(args.hosts, args.parallel, args.repeat, args.base_address)
    finally:
        shutil.rmtree(BENCH_HOME, ignore_errors=True)


if __name__ == "__main__":
    main()
