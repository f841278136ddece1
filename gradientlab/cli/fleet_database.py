"""Which fleet database a `gradientlab` command reads and writes.

`DATABASE_URL` when it is set. Otherwise this machine's production configuration, when it has
one: the environment files the installed `gradientlab-*` systemd units name
(`EnvironmentFile=`) and those of `/etc/gradientlab/` (`worker.env`: the flows' read-write
role; `app.env`: the app's read-only role, enough for a read). Only on a machine with neither,
the demo's embedded PostgreSQL, and only when the demo made it. Anything else is refused with
what was found and what to set: an operator told "no hosts yet" by an empty database made on
the spot would believe it."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from gradientlab.paths import data_dir

CONFIG_DIR_VAR = "GRADIENTLAB_CONFIG_DIR"  # where the production env files are
UNITS_DIR_VAR = "GRADIENTLAB_SYSTEMD_DIR"  # where the installed units are
DEFAULT_CONFIG_DIR = Path("/etc/gradientlab")
DEFAULT_UNITS_DIR = Path("/etc/systemd/system")
READ_WRITE_VAR = "DATABASE_URL"
READ_ONLY_VAR = "GRADIENTLAB_APP_DATABASE_URL"
# the files docs/production.md installs, the flows' first: their role may also write
CONFIG_FILES = ("worker.env", "app.env")


class FleetDatabaseUnknown(RuntimeError):
    """No fleet database can be named without guessing; the message says what to set."""


@dataclass(frozen=True)
class FleetDatabase:
    url: str
    source: str  # where the URL came from, in words (never the URL's password)
    embedded: bool = False

    def shown(self) -> str:
        """The URL without its password, for a person to recognise."""
        try:
            return make_url(self.url).render_as_string(hide_password=True)
        except ArgumentError:
            return "(a URL SQLAlchemy cannot read)"

    def engine(self) -> Engine:
        from gradientlab.store.database import make_engine

        return make_engine(self.url)


@dataclass(frozen=True)
class ProductionLayout:
    """Where a production machine keeps its units and its settings (docs/production.md)."""

    config_dir: Path = DEFAULT_CONFIG_DIR
    units_dir: Path = DEFAULT_UNITS_DIR

    @classmethod
    def from_environment(cls) -> ProductionLayout:
        return cls(
            Path(os.environ.get(CONFIG_DIR_VAR) or DEFAULT_CONFIG_DIR),
            Path(os.environ.get(UNITS_DIR_VAR) or DEFAULT_UNITS_DIR),
        )

    def units(self) -> list[Path]:
        try:
            return sorted(self.units_dir.glob("gradientlab-*.service"))
        except OSError:
            return []

    def env_files(self) -> list[Path]:
        """The environment files of this machine's configuration that exist, flows' first."""
        named: list[Path] = []
        for unit in self.units():
            for key, value in _unit_settings(unit):
                if key == "EnvironmentFile":
                    named.append(Path(value.lstrip("-")))
        candidates = [self.config_dir / name for name in CONFIG_FILES] + named
        found: list[Path] = []
        for path in sorted(set(candidates), key=_flows_first):
            try:
                path.stat()
            except FileNotFoundError:
                continue
            except OSError:  # its folder is closed to this user (0750): reading it will say so
                pass
            found.append(path)
        return found

    def data_folders(self) -> list[Path]:
        """The data folders (`GRADIENTLAB_HOME`) the installed units give their services."""
        folders = set()
        for unit in self.units():
            for key, value in _unit_settings(unit):
                if key == "Environment":
                    for word in shlex.split(value):
                        name, _, folder = word.partition("=")
                        if name == "GRADIENTLAB_HOME" and folder:
                            folders.add(Path(folder))
        return sorted(folders)


def _flows_first(path: Path) -> tuple[int, str]:
    order = {name: i for i, name in enumerate(CONFIG_FILES)}
    return order.get(path.name, len(CONFIG_FILES)), str(path)


def _unit_settings(unit: Path) -> list[tuple[str, str]]:
    try:
        lines = unit.read_text(errors="replace").splitlines()
    except OSError:
        return []
    settings = []
    for line in lines:
        key, sep, value = line.strip().partition("=")
        if sep and not key.startswith(("#", ";")):
            settings.append((key.strip(), value.strip()))
    return settings


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as systemd's `EnvironmentFile=` reads them (comments, quotes)."""
    values: dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def fleet_database(
    writes: bool, layout: ProductionLayout | None = None, home: Path | None = None
) -> FleetDatabase:
    """The fleet database a command uses (`writes`: it changes rows, so a read-only role will
    not do), or `FleetDatabaseUnknown` saying what was found and what to set."""
    from gradientlab.store.database import normalise_url

    url = os.environ.get(READ_WRITE_VAR)
    if url:
        return FleetDatabase(normalise_url(url), READ_WRITE_VAR)
    layout = layout or ProductionLayout.from_environment()
    files = layout.env_files()
    folders = [f for f in layout.data_folders() if f.exists()]
    if files or folders:
        return _from_production(files, folders, layout, writes)
    home = home or data_dir()
    pgdata = home / "pgdata"
    if (pgdata / "PG_VERSION").exists():
        from gradientlab.store.embedded import embedded_postgres_url

        return FleetDatabase(
            embedded_postgres_url(pgdata), f"the demo's embedded PostgreSQL in {pgdata}", True
        )
    raise FleetDatabaseUnknown(
        f"which fleet database? {READ_WRITE_VAR} is not set, this machine has no production "
        f"configuration (no {' or '.join(CONFIG_FILES)} in {layout.config_dir}, no "
        f"gradientlab-*.service in {layout.units_dir}), and no demo database in {pgdata}. "
        f"Set {READ_WRITE_VAR} to the fleet's database (the one the workers' worker.env "
        f"names), or start the demo (`gradientlab demo`); nothing was created"
    )


def _from_production(
    files: list[Path], folders: list[Path], layout: ProductionLayout, writes: bool
) -> FleetDatabase:
    from gradientlab.store.database import normalise_url

    said: list[str] = []
    for path in files:
        try:
            values = read_env_file(path)
        except PermissionError:
            said.append(
                f"{path} cannot be read by this user (uid {os.geteuid()}; the file is 0600 and "
                "its folder 0750)"
            )
            continue
        except OSError as exc:
            said.append(f"{path} cannot be read: {exc.strerror or exc}")
            continue
        if values.get(READ_WRITE_VAR):
            return FleetDatabase(
                normalise_url(values[READ_WRITE_VAR]), f"{READ_WRITE_VAR} in {path}"
            )
        if values.get(READ_ONLY_VAR):
            if not writes:
                return FleetDatabase(
                    normalise_url(values[READ_ONLY_VAR]), f"{READ_ONLY_VAR} in {path} (read-only)"
                )
            said.append(
                f"{path} names only {READ_ONLY_VAR}, the app's read-only role, and this "
                "command writes"
            )
            continue
        said.append(f"{path} sets neither {READ_WRITE_VAR} nor {READ_ONLY_VAR}")
    if not files:
        said.append(
            "the gradientlab units use the data folder "
            + ", ".join(str(f) for f in folders)
            + f" but no environment file exists (looked in {layout.config_dir} and the units' "
            "EnvironmentFile= lines)"
        )
    first = files[0] if files else layout.config_dir / CONFIG_FILES[0]
    raise FleetDatabaseUnknown(
        f"this machine has a production configuration, and it gives no fleet database to use: "
        f"{'; '.join(said)}. Run as the user that may read it (root, with sudo), or set "
        f"{READ_WRITE_VAR} from it: `set -a; . {first}; set +a`. Not starting an empty demo "
        "database instead"
    )
