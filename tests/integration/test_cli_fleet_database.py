"""Which fleet database the `gradientlab` command uses without `DATABASE_URL`, on a real
Postgres: a production machine's configuration (its env files, the units that name them) or a
refusal that says what was found and what to set; never an empty embedded database made on the
spot (the quarantine alert sends the operator to `gradientlab hosts release`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from gradientlab.cli import main as cli
from gradientlab.cli.fleet_database import (
    CONFIG_DIR_VAR,
    UNITS_DIR_VAR,
    FleetDatabaseUnknown,
    ProductionLayout,
    fleet_database,
)
from gradientlab.paths import PROJECT_ROOT
from tests.conftest import add_host


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str) -> Path:
    """A machine's /etc: its config folder and its units folder, both empty; no DATABASE_URL
    in the command's environment, and a data folder of its own with no database in it."""
    (tmp_path / "etc" / "gradientlab").mkdir(parents=True)
    (tmp_path / "etc" / "systemd" / "system").mkdir(parents=True)
    monkeypatch.setenv(CONFIG_DIR_VAR, str(tmp_path / "etc" / "gradientlab"))
    monkeypatch.setenv(UNITS_DIR_VAR, str(tmp_path / "etc" / "systemd" / "system"))
    monkeypatch.setenv("GRADIENTLAB_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DATABASE_URL")
    return tmp_path


def _quarantine(engine: Engine, name: str) -> None:
    """As the health flow quarantines a host whose recovery budget is spent."""
    from gradientlab.store.fleet import quarantine_host

    hid = add_host(engine, name)
    with engine.begin() as conn:
        assert quarantine_host(conn, hid, datetime.now(UTC), "budget spent")


def test_status_and_release_use_the_workers_env_file(
    machine: Path, engine: Engine, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    env = machine / "etc" / "gradientlab" / "worker.env"
    env.write_text(
        f"# the workers' settings\nPREFECT_API_URL=http://x/api\nDATABASE_URL={database_url}\n"
    )
    _quarantine(engine, "edge-cedar")

    assert cli.main(["status"]) == 0
    out, err = capsys.readouterr()
    assert "edge-cedar" in out and "[quarantined]" in out and "no hosts yet" not in out
    assert f"DATABASE_URL in {env}" in err  # where it came from, on stderr

    assert cli.main(["hosts", "release", "edge-cedar"]) == 0
    assert "released edge-cedar" in capsys.readouterr().out
    with engine.connect() as conn:
        assert conn.execute(text("SELECT quarantined_at FROM hosts")).scalar_one() is None
    assert not (machine / "home" / "pgdata").exists()


def test_the_env_file_an_installed_unit_names_is_read(
    machine: Path, engine: Engine, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    elsewhere = machine / "srv" / "gl.env"
    elsewhere.parent.mkdir()
    elsewhere.write_text(f'DATABASE_URL="{database_url}"\n')
    (machine / "etc" / "systemd" / "system" / "gradientlab-worker.service").write_text(
        "[Service]\nEnvironmentFile=-" + str(elsewhere) + "\n"
        "Environment=GRADIENTLAB_HOME=/var/lib/gradientlab\n"
    )
    _quarantine(engine, "unit-host")
    assert cli.main(["hosts", "release", "unit-host"]) == 0
    out, err = capsys.readouterr()
    assert "released unit-host" in out and str(elsewhere) in err


def test_the_apps_read_only_url_serves_reads_and_is_refused_for_writes(
    machine: Path, engine: Engine, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    app_env = machine / "etc" / "gradientlab" / "app.env"
    app_env.write_text(f"GRADIENTLAB_APP_DATABASE_URL={database_url}\n")
    _quarantine(engine, "read-me")
    assert cli.main(["status"]) == 0
    out, err = capsys.readouterr()
    assert "read-me" in out and "read-only" in err

    assert cli.main(["hosts", "release", "read-me"]) == 2
    err = capsys.readouterr().err
    assert str(app_env) in err and "read-only role" in err and "DATABASE_URL" in err
    with engine.connect() as conn:  # still quarantined: nothing was written anywhere
        assert conn.execute(text("SELECT quarantined_at FROM hosts")).scalar_one() is not None


def test_a_configuration_without_a_database_is_refused_not_replaced_by_an_empty_one(
    machine: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = machine / "etc" / "gradientlab" / "worker.env"
    env.write_text("PREFECT_API_URL=http://x/api\n#DATABASE_URL=commented out\n")
    for argv in (["status"], ["hosts", "release", "any"], ["refresh-rollups"]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert f"{env} sets neither DATABASE_URL nor GRADIENTLAB_APP_DATABASE_URL" in err
        assert f"set -a; . {env}; set +a" in err
    assert not (machine / "home" / "pgdata").exists()


def test_a_units_data_folder_without_env_files_still_counts_as_production(
    machine: Path,
) -> None:
    state = machine / "var" / "lib" / "gradientlab"
    state.mkdir(parents=True)
    (machine / "etc" / "systemd" / "system" / "gradientlab-app.service").write_text(
        f"[Service]\nEnvironment=GRADIENTLAB_HOME={state} PREFECT_HOME=/x\n"
    )
    with pytest.raises(FleetDatabaseUnknown, match=f"data folder {state} but no environment"):
        fleet_database(writes=False)


def test_no_configuration_and_no_demo_database_is_refused_and_nothing_is_made(
    machine: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["status"]) == 2
    err = capsys.readouterr().err
    assert "DATABASE_URL is not set" in err and "gradientlab demo" in err
    assert str(machine / "etc" / "gradientlab") in err and "nothing was created" in err
    assert not (machine / "home" / "pgdata").exists()


def test_the_demos_embedded_database_is_used_when_it_exists(
    machine: Path, database_url: str
) -> None:
    from gradientlab.paths import data_dir

    session_home = Path(os.environ["GRADIENTLAB_TEST_SESSION_HOME"])
    if not (session_home / "pgdata" / "PG_VERSION").exists():
        pytest.skip("this session's database is DATABASE_URL's, not the embedded one")
    db = fleet_database(True, ProductionLayout.from_environment(), session_home)
    assert db.embedded and str(session_home / "pgdata") in db.source
    assert data_dir() == machine / "home"


def test_an_env_file_this_user_cannot_read_is_named_in_the_refusal(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As production's /etc/gradientlab (0750 root) is to an operator's own account: the
    command runs as `nobody`."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run the command as another user")
    root = Path(tempfile.mkdtemp(prefix="gl-machine-"))
    try:
        root.chmod(0o755)
        config = root / "etc" / "gradientlab"
        config.mkdir(parents=True)
        (root / "etc").chmod(0o755)
        config.chmod(0o750)
        env = config / "worker.env"
        env.write_text(f"DATABASE_URL={database_url}\n")
        env.chmod(0o600)
        home = root / "nobody-home"
        home.mkdir()
        home.chmod(0o777)
        environ = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        environ.update(
            {CONFIG_DIR_VAR: str(config), UNITS_DIR_VAR: str(root), "GRADIENTLAB_HOME": str(home)}
        )
        run = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
             "-m", "gradientlab.cli.main", "hosts", "release", "edge-cedar"],
            cwd=PROJECT_ROOT, env=environ, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert run.returncode == 2, run.stderr
        assert f"{env} cannot be read by this user (uid 65534" in run.stderr
        assert "sudo" in run.stderr and database_url not in run.stderr
        assert not (home / "pgdata").exists()
    finally:
        shutil.rmtree(root)
