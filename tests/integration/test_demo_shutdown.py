"""The demo's stop on real local hosts: a Ctrl-C followed by more signals (SIGTERM, Ctrl-C again,
over and over) still stops every host's sshd and processes and every service, and a demo that
was killed outright has what it left running stopped by the next one.

The run under test is a real process with the demo's own stopping machinery
(`demo.stopping_everything`, `demo._start`, `demo._stop_hosts`): two local hosts, each with a
process of its user that ignores SIGTERM (as a busy runner may), and a service that ignores
SIGTERM so that its stop takes its whole grace period while signals keep arriving."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gradientlab.agent.procs import pid_alive
from gradientlab.cli import demo, services
from gradientlab.config import load_fleet
from gradientlab.inventory import provider_for
from gradientlab.providers.local import LocalProvider

HOSTS = ("stop-1", "stop-2")

RUN = textwrap.dedent(
    """
    import subprocess, sys
    from pathlib import Path
    from gradientlab.cli import services
    from gradientlab.cli import demo
    from gradientlab.config import load_fleet
    from gradientlab.inventory import provider_for
    from gradientlab.remote.keys import operator_public_key

    fleet_path, home = Path(sys.argv[1]), Path(sys.argv[2])
    fleet = load_fleet(fleet_path)
    ledger = services.Ledger(home / "processes.json")
    with demo.stopping_everything(ledger) as stopper:
        stopper.add("the hosts", lambda: demo._stop_hosts(fleet_path, []))
        provider = provider_for(fleet, "local")
        for spec in fleet.hosts:
            record = provider.create(spec, operator_public_key())
            subprocess.Popen(  # the host's own work, deaf to SIGTERM
                ["/bin/sh", "-c", "trap '' TERM INT HUP; while :; do sleep 1; done"],
                user=record.ssh_user, start_new_session=True, cwd="/",
                # not the run's output pipe: the test reads that to its end
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        slow = demo._start(
            stopper,
            ledger,
            lambda on_start: services.start(
                "slow-to-stop",
                [sys.executable, "-c",
                 "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
                 " time.sleep(600)"],
                home / "logs",
                on_start=on_start,
            ),
            "a service slow to stop",
        )
        print("READY", flush=True)
        demo.watch([slow])
    """
)


@pytest.fixture()
def fleet_path(tmp_path: Path, base_address: str) -> Iterator[Path]:
    address = base_address.rsplit(".", 1)[0] + ".200"
    path = tmp_path / "fleet.yaml"
    path.write_text(
        "account: {email: a@b.c, password: {env: UNUSED}}\n"
        f"providers: {{local: {{kind: local, base_address: {address}}}}}\n"
        "hosts:\n" + "".join(f"  - {{name: {h}, provider: local}}\n" for h in HOSTS)
    )
    yield path
    provider = provider_for(load_fleet(path), "local")
    for name in HOSTS:
        provider.terminate(name)


class Output:
    """The run's output, read by a thread, so that a test waits for a line with a deadline and
    never hangs on a run that went quiet."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        self.proc = proc
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        stream = proc.stdout

        def pump() -> None:
            for line in stream:
                self.lines.put(line)
            self.lines.put(None)

        threading.Thread(target=pump, daemon=True).start()

    def line(self, timeout: float = 120) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(
                f"the run printed nothing for {timeout:.0f} s (exit code {self.proc.poll()});"
                f" so far:\n{''.join(self.seen)}"
            )
        if line is None:
            return ""
        self.seen.append(line)
        return line

    def rest(self, timeout: float = 120) -> str:
        """Everything else it prints, up to its end."""
        out = []
        while line := self.line(timeout):
            out.append(line)
        return "".join(out)


def start_run(fleet_path: Path, home: Path) -> tuple[subprocess.Popen[str], Output]:
    proc = subprocess.Popen(
        [sys.executable, "-c", RUN, str(fleet_path), str(home)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    output = Output(proc)
    while line := output.line():
        if line.strip() == "READY":
            return proc, output
    pytest.fail(f"the run did not start:\n{''.join(output.seen)}")


def host_processes(fleet_path: Path) -> dict[str, set[int]]:
    """What runs of each host: its sshd, and the processes of its user."""
    provider = provider_for(load_fleet(fleet_path), "local")
    assert isinstance(provider, LocalProvider)
    out: dict[str, set[int]] = {}
    for name in HOSTS:
        record = provider.get(name)
        assert record is not None
        found = subprocess.run(["pgrep", "-u", record.ssh_user], capture_output=True, text=True)
        pidfile = provider.root / name / "sshd" / "sshd.pid"  # sshd removes it as it exits
        sshd = [int(pidfile.read_text())] if pidfile.exists() else []
        out[name] = {int(p) for p in found.stdout.split() + sshd if pid_alive(int(p))}
    return out


def all_stopped(before: dict[str, set[int]], fleet_path: Path) -> bool:
    return all(not pid_alive(p) for pids in before.values() for p in pids) and not any(
        host_processes(fleet_path).values()
    )


def ledger_groups(home: Path) -> dict[str, int]:
    return {n: e["pid"] for n, e in json.loads((home / "processes.json").read_text()).items()}


def test_a_second_and_third_signal_during_shutdown_do_not_abandon_it(
    fleet_path: Path, tmp_path: Path
) -> None:
    proc, run_output = start_run(fleet_path, tmp_path)
    groups = ledger_groups(tmp_path)
    hosts = host_processes(fleet_path)
    assert all(len(pids) >= 2 for pids in hosts.values()), hosts  # sshd and the host's work

    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
    assert "stopping everything" in run_output.line()
    # people press Ctrl-C again, and service managers send SIGTERM: keep at it until it exits
    sent = 0
    while proc.poll() is None:
        os.killpg(proc.pid, (signal.SIGTERM, signal.SIGINT)[sent % 2])
        sent += 1
        time.sleep(0.25)
    output = run_output.rest()

    assert proc.returncode == 0, output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output
    assert "still stopping a service slow to stop, then the hosts" in output
    assert output.rstrip().endswith("[demo] stopped"), output
    assert sent >= 3  # signals kept coming while the slow service used its grace period
    assert all_stopped(hosts, fleet_path)
    assert not any(services.group_members(pgid) for pgid in groups.values() if pgid != proc.pid)
    assert json.loads((tmp_path / "processes.json").read_text()) == {}


def test_what_a_killed_run_left_running_is_stopped_by_the_next(
    fleet_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    proc, _ = start_run(fleet_path, tmp_path)
    groups = ledger_groups(tmp_path)
    os.killpg(proc.pid, signal.SIGKILL)  # no chance to stop anything
    proc.wait()
    hosts = host_processes(fleet_path)
    assert all(len(pids) >= 2 for pids in hosts.values()), hosts
    slow = groups["slow-to-stop"]
    assert services.group_members(slow)

    ledger = services.Ledger(tmp_path / "processes.json")
    assert ledger.owner("demo") is None  # the killed run is not taken for a running one
    demo._stop_leftovers(ledger, fleet_path, tmp_path)

    out = capsys.readouterr().out
    assert "left running: slow-to-stop, stop-1, stop-2" in out
    assert all_stopped(hosts, fleet_path)
    assert not services.group_members(slow)
    assert set(ledger_groups(tmp_path)) == {"demo"}  # the next run writes its own pid there


def test_a_second_demo_refuses_to_start_beside_a_running_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from gradientlab.paths import data_dir

    other = subprocess.Popen(["sleep", "60"])  # stands in for the running demo's process
    ledger = services.Ledger(data_dir() / "demo-processes.json")
    try:
        ledger.add("demo", other.pid)
        assert demo.run_demo(demo.DEMO_FLEET) == 1
        assert f"another demo is running (pid {other.pid})" in capsys.readouterr().out
        assert ledger.owner("demo") is not None  # untouched
    finally:
        other.kill()
        other.wait()
        ledger.remove("demo")
