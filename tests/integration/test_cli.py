"""The `gradientlab` command on a real Postgres: the fleet table with ages and host metrics, and
releasing a quarantined host."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from gradientlab.cli import main as cli
from gradientlab.cli.demo import DEMO_FLEET
from gradientlab.freshness import age_text
from tests.conftest import add_host


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0, "0s"), (59, "59s"), (245, "4m 5s"), (3 * 3600 + 120, "3h 2m"), (3 * 86400 + 10, "3d 0h")],
)
def test_ages_past_a_minute_hour_and_day_read_right(seconds: int, shown: str) -> None:
    assert age_text(seconds) == shown


def host(engine: Engine, name: str) -> int:
    return add_host(engine, name)


def test_status_shows_the_real_age_metrics_reason_and_quarantine(
    engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    old, full = host(engine, "old-node"), host(engine, "full-node")
    now = datetime.now(UTC)  # the CLI's own clock: both sides read the same one
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO node_status_samples (host_id, sampled_at, status, reachable, reason,"
                " load1, mem_available_kib, disk_free_kib, browser_pss_kib, runner_pss_kib,"
                " clock_offset_s) VALUES"
                " (:old, :t_old, 'Good', true, 'the popup reads Good', 0.5, 800000, 9000000,"
                "  300000, 40000, -0.2),"
                " (:full, :t_full, 'DiskFull', true, '12 MiB free of 2048 MiB', 1.25, 500000,"
                "  12288, NULL, 41000, 3.5)"
            ),
            {
                "old": old,
                "full": full,
                "t_old": now - timedelta(days=3, seconds=10),
                "t_full": now - timedelta(seconds=30),
            },
        )
        conn.execute(
            text(
                "UPDATE hosts SET quarantined_at = :t, quarantine_reason = 'budget spent'"
                " WHERE id = :h"
            ),  # fmt: skip
            {"t": now, "h": full},
        )
    assert cli.main(["status"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "3d 0h ago" in lines["old-node"]  # not "10s ago"
    assert "781M" in lines["old-node"] and "293M" in lines["old-node"]  # memory, browser PSS
    assert "DiskFull [quarantined]" in lines["full-node"]
    assert "12M" in lines["full-node"] and "+3.5s" in lines["full-node"]
    assert "full-node: 12 MiB free of 2048 MiB" in out  # the reason, in words


def test_release_hands_a_quarantined_host_back(
    engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    hid = host(engine, "stuck")
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE hosts SET quarantined_at = now(), quarantine_reason = 'budget spent'"
                " WHERE id = :h"
            ),  # fmt: skip
            {"h": hid},
        )
    assert cli.main(["hosts", "release", "stuck"]) == 0
    assert "released stuck" in capsys.readouterr().out
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT quarantined_at, released_at FROM hosts WHERE id = :h"), {"h": hid}
        ).one()
    assert row.quarantined_at is None and row.released_at is not None
    assert cli.main(["hosts", "release", "nobody"]) == 2
    assert "nobody" in capsys.readouterr().err


def test_status_shows_a_check_older_than_two_health_periods_as_stale(
    engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    """Right after a restart the previous run's last "Good" is not the node's state."""
    ids = {name: host(engine, name) for name in ("fresh", "restarted", "slow", "old-default")}
    now = datetime.now(UTC)
    checks = [  # (host, age, health period): stale past two periods; 300 s when none recorded
        ("fresh", timedelta(seconds=10), 60.0),
        ("restarted", timedelta(minutes=5), 60.0),
        ("slow", timedelta(minutes=15), 600.0),
        ("old-default", timedelta(minutes=20), None),
    ]
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO node_status_samples (host_id, sampled_at, status, reachable,"
                " health_period_s) VALUES (:h, :t, 'Good', true, :p)"
            ),
            [{"h": ids[name], "t": now - age, "p": period} for name, age, period in checks],
        )
    assert cli.main(["status"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert " Good " in lines["fresh"] and "stale" not in lines["fresh"]
    assert " Good " in lines["slow"]
    assert "stale, 5m" in lines["restarted"] and "Good" not in lines["restarted"]
    assert "stale, 20m" in lines["old-default"] and "Good" not in lines["old-default"]
    notes = [line for line in out.splitlines() if line.startswith("  restarted:")]
    assert notes and "2 health periods of 60s" in notes[0] and "said Good" in notes[0]


def test_status_warns_of_hosts_that_share_a_public_ip(
    engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    """Seen by the network (a sample's ip) or by STUN (the mapped address): split rewards."""
    a, b, c, d = (host(engine, n) for n in ("a-node", "b-node", "c-node", "d-node"))
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO node_status_samples (host_id, sampled_at, status, reachable, ip)"
                " VALUES (:a, :t, 'Good', true, '203.0.113.7'), (:b, :t, 'Good', true,"
                " '203.0.113.7'), (:d, :t, 'Good', true, '198.51.100.9')"
            ),
            {"a": a, "b": b, "d": d, "t": now},
        )
        conn.execute(
            text(
                "INSERT INTO tap_readiness (host_id, checked_at, stun_server, udp_reachable,"
                " mapped_address, mapped_port) VALUES (:c, :t, 'stun.example:3478', true,"
                " '203.0.113.7', 40000)"
            ),
            {"c": c, "t": now},
        )
    assert cli.main(["status"]) == 0
    out = capsys.readouterr().out
    assert (
        "warning: a-node, b-node, c-node share the public IP 203.0.113.7 (seen by the network"
        " and by STUN): nodes behind one public IP split their rewards" in out
    )
    assert "d-node share" not in out


def test_commands_print_no_runtime_dir_warning(tmp_path: Path) -> None:
    """root's sessions here have no XDG_RUNTIME_DIR; the embedded Postgres's library asks
    platformdirs for one, which warned on every command."""
    from gradientlab.store.embedded import stop_embedded_postgres

    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "XDG_RUNTIME_DIR")}
    env["GRADIENTLAB_HOME"] = str(tmp_path)
    gradientlab = str(Path(sys.executable).with_name("gradientlab"))
    try:
        # the demo's database, as `gradientlab demo` makes it (status alone makes none)
        made = (
            "from pathlib import Path; from gradientlab.store.embedded import"
            " embedded_postgres_url as u; u(Path(%r))"
        )
        subprocess.run([sys.executable, "-c", made % str(tmp_path / "pgdata")], env=env, check=True)
        for args in (["status"], ["check", str(DEMO_FLEET)]):
            done = subprocess.run([gradientlab, *args], env=env, capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
            assert done.stderr == "", done.stderr  # only what the user needs, on stdout
        assert (
            "no hosts yet"
            in subprocess.run(
                [gradientlab, "status"], env=env, capture_output=True, text=True
            ).stdout
        )
    finally:
        stop_embedded_postgres(tmp_path / "pgdata")
