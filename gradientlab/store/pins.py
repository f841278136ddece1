"""Pinned host keys in the database every worker reads (table host_key_pins, sql/015).

`gradientlab hosts trust HOST` records the key here after the operator compared its
fingerprint; the SSH inventory provider reads it when it adopts the host, on whichever worker
that runs. Pins an older GradientLab kept in a `known_hosts` file in one machine's data folder
are moved in by `migrate_file_pins` (the file is renamed `known_hosts.migrated` after); a file
pin for a host the database pins differently replaces it only when the file was written after
the database's pin (the later explicit trust wins), else the conflict is reported."""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, text

from gradientlab.providers.ssh import KnownHosts, known_hosts_path
from gradientlab.store.database import database_url, make_engine, migrate

_ENGINES: dict[str, Engine] = {}
_ENGINES_LOCK = threading.Lock()


def _engine() -> Engine:
    url = database_url()
    with _ENGINES_LOCK:
        engine = _ENGINES.get(url)
        if engine is None:
            engine = make_engine(url)
            migrate(engine)  # one query when the schema is current
            _ENGINES[url] = engine
        return engine


class DbKnownHosts(KnownHosts):
    """`KnownHosts` kept in the database: the same `get` and `set`, seen by every worker."""

    def __init__(self, engine: Engine | None = None, pinned_by: str = "hosts trust") -> None:
        super().__init__(known_hosts_path())
        self._engine = engine
        self.pinned_by = pinned_by

    @property
    def engine(self) -> Engine:
        return self._engine or _engine()

    def get(self, name: str, address: str, port: int) -> str | None:
        with self.engine.connect() as conn:
            value = conn.execute(
                text(
                    "SELECT host_key FROM host_key_pins"
                    " WHERE name = :name AND address = :address AND port = :port"
                ),
                {"name": name, "address": address, "port": port},
            ).scalar_one_or_none()
        return str(value) if value is not None else None

    def set(self, name: str, address: str, port: int, host_key: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO host_key_pins (name, address, port, host_key, pinned_by)"
                    " VALUES (:name, :address, :port, :key, :by)"
                    " ON CONFLICT (name) DO UPDATE SET address = EXCLUDED.address,"
                    " port = EXCLUDED.port, host_key = EXCLUDED.host_key,"
                    " pinned_at = now(), pinned_by = EXCLUDED.pinned_by"
                ),
                {
                    "name": name,
                    "address": address,
                    "port": port,
                    "key": " ".join(host_key.split()[:2]),
                    "by": self.pinned_by,
                },
            )


@dataclass(frozen=True)
class FilePinsMigrated:
    moved: list[str]  # hosts whose pin moved into the database
    kept: list[str]  # already pinned there with the same key
    conflicts: list[str]  # pinned there with another key: left for the operator, explained


def migrate_file_pins(engine: Engine, path: Path | None = None) -> FilePinsMigrated:
    """Move the pins of a `known_hosts` file into the database, then rename the file (it is
    kept, renamed, while any pin conflicts, so nothing is lost)."""
    path = path or known_hosts_path()
    if not path.exists():
        return FilePinsMigrated([], [], [])
    moved: list[str] = []
    kept: list[str] = []
    conflicts: list[str] = []
    db = DbKnownHosts(engine, pinned_by=f"file {path}")
    written = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT name, address, port, host_key, pinned_at FROM host_key_pins")
        ).all()
    pinned = {row.name: (row.address, row.port, row.host_key) for row in rows}
    pinned_at = {row.name: row.pinned_at for row in rows}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) != 4 or ":" not in parts[1]:
            continue
        name, where, key = parts[0], parts[1], f"{parts[2]} {parts[3]}"
        address, _, port_text = where.rpartition(":")
        if not port_text.isdigit():
            continue
        have = pinned.get(name)
        if have is None or (have != (address, int(port_text), key) and pinned_at[name] < written):
            db.set(name, address, int(port_text), key)
            moved.append(name)
        elif have == (address, int(port_text), key):
            kept.append(name)
        else:
            conflicts.append(
                f"{name}: the file {path} pins {key.split()[0]} for {where}, the database "
                f"pins another key for {have[0]}:{have[1]}; the database's pin stands: check "
                f"the host's own key and run `gradientlab hosts trust {name}` if it changed"
            )
    with contextlib.suppress(FileNotFoundError):  # another process moved it at the same time
        path.replace(path.with_name(path.name + ".migrated"))
    return FilePinsMigrated(moved, kept, conflicts)
