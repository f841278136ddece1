"""Health sweep benchmark: probing N real sshd hosts, four ways, plus the whole health flow.

    .venv/bin/python -m bench.health_sweep [--hosts 60] [--parallel 20] [--repeat 5] [--ansible]

Prints one JSON line per figure (median seconds over the repeats). Needs root (local hosts).
`--ansible` installs ansible-core into bench/.venv-ansible once and times `ansible -m command`
with the same forks, against the same pinned host keys (StrictHostKeyChecking=yes)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

BENCH_HOME = Path(tempfile.mkdtemp(prefix="gradientlab-bench-"))
os.chmod(BENCH_HOME, 0o755)
os.environ["GRADIENTLAB_HOME"] = str(BENCH_HOME)
os.environ.setdefault("PREFECT_HOME", str(BENCH_HOME / "prefect"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import paramiko  # noqa: E402

from gradientlab import health  # noqa: E402
from gradientlab.config import parse_fleet  # noqa: E402
from gradientlab.health.report import utcnow  # noqa: E402
from gradientlab.inventory import executor_for  # noqa: E402
from gradientlab.node.deploy import (  # noqa: E402
    NODE_DIR,
    PROBE_SH,
    agent_files,
)
from gradientlab.providers.base import HostRecord  # noqa: E402
from gradientlab.providers.local import LocalProvider  # noqa: E402
from gradientlab.remote.executor import POOL  # noqa: E402
from gradientlab.remote.keys import (  # noqa: E402
    load_operator_key,
    operator_key_path,
    operator_public_key,
)

ROOT = Path(__file__).resolve().parents[1]


def emit(figure: str, value: float, **extra: Any) -> None:
    print(
        json.dumps({"bench": "health_sweep", "figure": figure, "value": round(value, 4), **extra}),
        flush=True,
    )


def timed(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def make_hosts(n: int, base: str) -> tuple[LocalProvider, list[HostRecord]]:
    names = [f"b{i:03d}" for i in range(n)]
    text = (
        "account: {email: a@b.c, password: {env: X}}\nproviders: {bench: {kind: local}}\n"
        "hosts:\n" + "".join(f"  - {{name: {h}, provider: bench}}\n" for h in names)
    )
    fleet = parse_fleet(text)
    provider = LocalProvider(name="bench", base_address=base)
    key = operator_public_key()
    records = [provider.create(spec, key) for spec in fleet.hosts]
    for r in records:  # the node's files are all a probe needs
        ex = executor_for(r)
        ex.ensure_dir(f"{NODE_DIR}/agent", 0o700)
        for name, data in agent_files().items():
            ex.write_file(f"{NODE_DIR}/{name}", data, 0o644)
    return provider, records


def remove_hosts(provider: LocalProvider, records: list[HostRecord]) -> None:
    """Close this process's connections, remove the hosts and the bench's folder."""
    POOL.close_all()
    for r in records:
        provider.terminate(r.name)
    shutil.rmtree(BENCH_HOME, ignore_errors=True)


def bare_clients(records: list[HostRecord]) -> list[paramiko.SSHClient]:
    pkey = load_operator_key()
    clients = []
    for r in records:
        c = paramiko.SSHClient()
        c.set_missing_host_key_policy(paramiko.RejectPolicy())
        kind, blob = r.host_key.split()[:2]
        c.get_host_keys().add(
            f"[{r.address}]:{r.ssh_port}",
            kind,
            paramiko.PKey.from_type_string(kind, __import__("base64").b64decode(blob)),
        )
        c.connect(
            r.address, r.ssh_port, r.ssh_user, pkey=pkey, allow_agent=False, look_for_keys=False
        )
        clients.append(c)
    return clients


def bare_run(client: paramiko.SSHClient, command: str) -> str:
    _, out, _ = client.exec_command(command)
    data = out.read().decode()
    out.channel.recv_exit_status()
    return data


def ansible_figures(records: list[HostRecord], command: str, parallel: int, repeat: int) -> None:
    venv = ROOT / "bench" / ".venv-ansible"
    ansible = venv / "bin" / "ansible"
    if not ansible.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "ansible-core"], check=True)
    work = BENCH_HOME / "ansible"
    work.mkdir(exist_ok=True)
    known = work / "known_hosts"
    known.write_text("".join(f"[{r.address}]:{r.ssh_port} {r.host_key}\n" for r in records))
    inventory = work / "hosts.ini"
    inventory.write_text(
        "[fleet]\n"
        + "".join(
            f"{r.name} ansible_host={r.address} ansible_port={r.ssh_port}"
            f" ansible_user={r.ssh_user}\n"
            for r in records
        )
    )
    env = {
        **os.environ,
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3",
        "ANSIBLE_SSH_ARGS": (
            f"-o UserKnownHostsFile={known} -o StrictHostKeyChecking=yes -o ControlMaster=no"
        ),
        "ANSIBLE_PRIVATE_KEY_FILE": str(operator_key_path()),
        "ANSIBLE_LOCAL_TEMP": str(work / "tmp"),
        "ANSIBLE_HOME": str(work),
    }

    def run() -> None:
        proc = subprocess.run(
            [
                str(ansible),
                "fleet",
                "-i",
                str(inventory),
                "-m",
                "shell",
                "-a",
                command,
                "-f",
                str(parallel),
                "-o",
            ],
            capture_output=True,
            text=True,
            env=env,
        )
        if proc.returncode != 0:
            raise RuntimeError(proc.stdout[-2000:] + proc.stderr[-2000:])

    emit("ansible_shell_s", timed(run, max(1, repeat // 2)), hosts=len(records), parallel=parallel)


def flow_figure(records: list[HostRecord], repeat: int) -> None:
    """The whole health flow (probe, network list, Prefect, database writes), recover=False."""
    from bench.scratch import scratch_database

    with scratch_database() as engine:
        _flow_figure(engine, records, repeat)


@contextmanager
def sandbox_fleet() -> Iterator[Path]:
    """The sandbox network on a free port, and a fleet file that points at it."""
    from gradientlab.sandbox.network import SandboxAccount, SandboxConfig
    from gradientlab.sandbox.server import SandboxServer

    os.environ["BENCH_PASSWORD"] = "bench-password"
    sandbox = SandboxServer(
        SandboxConfig(accounts=[SandboxAccount(email="a@b.c", password="bench-password")]), port=0
    )
    sandbox.start()
    fleet_file = BENCH_HOME / "fleet.yaml"
    fleet_file.write_text(
        "account: {email: a@b.c, password: {env: BENCH_PASSWORD}}\n"
        + sandbox.fleet_network_yaml()
        + "providers: {bench: {kind: local}}\n"
    )
    try:
        yield fleet_file
    finally:
        sandbox.stop()


def _flow_figure(engine: Any, records: list[HostRecord], repeat: int) -> None:
    from prefect.testing.utilities import prefect_test_harness

    from gradientlab.store.fleet import upsert_host

    for r in records:
        upsert_host(engine, r)
    with sandbox_fleet() as fleet_file, prefect_test_harness(server_startup_timeout=180):
        from flows.health import health as health_flow

        health_flow(fleet_path=str(fleet_file), recover=False)  # warm: connections, imports
        emit(
            "health_flow_s",
            timed(lambda: health_flow(fleet_path=str(fleet_file), recover=False), repeat),
            hosts=len(records),
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, default=60)
    parser.add_argument("--parallel", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--base-address", default="127.0.3.10")
    parser.add_argument("--ansible", action="store_true")
    parser.add_argument("--flow", action="store_true", help="also time the whole health flow")
    args = parser.parse_args()
    provider, records = make_hosts(args.hosts, args.base_address)
    command = PROBE_SH
    pool = ThreadPoolExecutor(args.parallel)
    try:
        # GradientLab's probing core: pooled, pinned connections kept open between sweeps
        def sweep() -> None:
            reports = list(
                pool.map(
                    lambda r: health.observe(r.name, lambda: executor_for(r), utcnow()), records
                )
            )
            assert all(o.data is not None for o in reports), [o.error for o in reports]

        sweep()  # connect once; later sweeps reuse the connections
        emit(
            "gradientlab_probe_sweep_s",
            timed(sweep, args.repeat),
            hosts=len(records),
            parallel=args.parallel,
        )

        clients = bare_clients(records)
        emit(
            "bare_paramiko_open_s",
            timed(lambda: list(pool.map(lambda c: bare_run(c, command), clients)), args.repeat),
            hosts=len(records),
            parallel=args.parallel,
        )
        for c in clients:
            c.close()

        def fresh() -> None:
            def one(r: HostRecord) -> str:
                c = bare_clients([r])[0]
                try:
                    return bare_run(c, command)
                finally:
                    c.close()

            list(pool.map(one, records))

        emit(
            "bare_paramiko_fresh_s",
            timed(fresh, args.repeat),
            hosts=len(records),
            parallel=args.parallel,
        )
        if args.ansible:
            ansible_figures(records, command, args.parallel, args.repeat)
        if args.flow:
            flow_figure(records, args.repeat)
    finally:
        remove_hosts(provider, records)


if __name__ == "__main__":
    main()
