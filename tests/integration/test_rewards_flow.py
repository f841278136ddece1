"""The rewards flow against a throttling network: real Prefect, real Postgres, the sandbox.

The sandbox answers 429 (Retry-After: 1) to every fourth API call. The flow must still complete,
sign in once, store every node's days exactly once, and record (not fail on) a node id the
network does not know."""

from __future__ import annotations

import os
import time as time_module
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from tests.conftest import add_host, rows

NODES = 12
PASSWORD_ENV = "GRADIENTLAB_TEST_THROTTLED_PASSWORD"
EMAIL = "throttled@gradientlab.test"
SEASONLESS_PASSWORD_ENV = "GRADIENTLAB_TEST_SEASONLESS_PASSWORD"


def own_sandbox(password_env: str = PASSWORD_ENV, **config: Any) -> Iterator[Any]:
    """A sandbox of its own: browserless nodes, sim clock from 01:00 today at 60x (a session
    of up to ~20 real minutes stays inside one sim day, see conftest.sandbox)."""
    from gradientlab.sandbox.network import SandboxAccount, SandboxConfig
    from gradientlab.sandbox.server import SandboxServer

    password = uuid.uuid4().hex
    os.environ[password_env] = password
    start = datetime.combine(datetime.now(UTC).date(), time(hour=1), UTC)
    server = SandboxServer(
        SandboxConfig(
            accounts=[SandboxAccount(email=EMAIL, password=password, simulated_nodes=NODES)],
            speed=60,
            start_time=start.timestamp(),
            seed=5,
            **config,
        )
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def throttled() -> Iterator[Any]:
    yield from own_sandbox()


def fleet_on(server: Any, tmp_path: Path, password_env: str = PASSWORD_ENV) -> Path:
    """A fleet file with no hosts on `server`'s network, its password in `password_env`."""
    path = tmp_path / "fleet.yaml"
    path.write_text(
        f"account:\n  email: {EMAIL}\n  password: {{env: {password_env}}}\n"
        + server.fleet_network_yaml()
        + "  requests_per_second: 200\n  node_page_size: 5\n"
        + "providers:\n  local: {kind: local}\nhosts: []\n"
    )
    return path


@pytest.fixture()
def fleet_file(throttled: Any, tmp_path: Path) -> Path:
    return fleet_on(throttled, tmp_path)


def test_rewards_completes_through_429s_and_stores_everything_once(
    prefect_server: None, engine: Engine, throttled: Any, fleet_file: Path
) -> None:
    from flows.rewards import rewards

    net = throttled.network
    host_id = add_host(engine, "gone-host")
    with engine.begin() as conn:  # a node GradientLab knows and the network no longer does
        conn.execute(
            text("INSERT INTO nodes (host_id, client_id) VALUES (:h, 'gone-node')"), {"h": host_id}
        )
        conn.execute(text("TRUNCATE network_unknown_nodes"))
    net.clear_faults()
    net.add_fault({"kind": "rate_limit", "every": 4, "retry_after": 1, "path": "/api/"})
    before = dict(net.counters)
    try:
        summary = rewards(fleet_path=str(fleet_file), days=3)
    finally:
        net.clear_faults()
    counters = {k: v - before[k] for k, v in net.counters.items()}

    state = net.state()
    ids = sorted(n["clientid"] for n in state["nodes"])
    assert len(ids) == NODES
    network_days = sorted((n["clientid"], day) for n in state["nodes"] for day in n["days"])
    stored = rows(engine, "SELECT client_id, to_char(day, 'YYYYMMDD') FROM node_daily_stats")
    assert sorted(stored) == network_days  # every node's days, once each
    assert summary["node_stats"]["inserted"] == len(network_days)
    assert summary["node_stats"]["unknown"] == 1
    assert rows(engine, "SELECT client_id, times FROM network_unknown_nodes") == [("gone-node", 1)]
    assert sorted(r[0] for r in rows(engine, "SELECT client_id FROM node_daily_points")) == ids
    assert summary["node_points"]["inserted"] == NODES
    assert rows(engine, "SELECT count(*) FROM account_daily_points") == [(1,)]

    # the network throttled a quarter of the calls; the flow obeyed and went on, signed in once
    assert counters["apiRequests"] == summary["api"]["requests"]
    assert counters["faulted"] == counters["apiRequests"] // 4 >= 5
    assert counters["signIns"] == 1

    # a second run: nothing new is inserted, the unknown node is counted again
    again = rewards(fleet_path=str(fleet_file), days=3)
    assert again["node_stats"]["inserted"] == 0
    assert again["account_points"]["inserted"] == 0
    assert rows(engine, "SELECT times FROM network_unknown_nodes") == [(2,)]
    assert sorted(
        rows(engine, "SELECT client_id, to_char(day, 'YYYYMMDD') FROM node_daily_stats")
    ) == (network_days)


def test_a_default_run_starts_at_the_pace_learned_before_and_keeps_what_it_finds(
    prefect_server: None, engine: Engine, throttled: Any, tmp_path: Path
) -> None:
    """No fixed pace in the fleet file: the run starts where the database says the last run
    left off (not at the initial 10/s), meets the network's limit it is not told, and keeps
    what it learned for the next run on any worker."""
    from flows.rewards import rewards
    from gradientlab.gradient.throttle import INITIAL_PACE, LearnedPace
    from gradientlab.store.pace import load_pace, save_pace

    path = tmp_path / "fleet.yaml"
    path.write_text(
        f"account:\n  email: {EMAIL}\n  password: {{env: {PASSWORD_ENV}}}\n"
        + throttled.fleet_network_yaml()
        + "  max_requests_per_second: 60\n  node_page_size: 5\n"
        + "providers:\n  local: {kind: local}\nhosts: []\n"
    )
    api_base = throttled.fleet_network_yaml().split("api_base:")[1].split()[0]
    save_pace(engine, api_base, LearnedPace(pace=40, refused_at=44, refusals=3))
    net = throttled.network
    net.clear_faults()
    net.config.api_rate_burst = 2
    net.config.api_rate_limit = 8  # below what was learned: the network got stricter
    try:
        summary = rewards(fleet_path=str(path), days=2)
    finally:
        net.config.api_rate_limit = None
        net.config.api_rate_burst = 10

    api = summary["api"]
    assert api["refusals"] >= 1  # it started at 40/s, as learned, and met the new limit
    kept = load_pace(engine, api_base)
    assert kept is not None and kept.refusals == api["refusals"]
    assert kept.pace == pytest.approx(api["next_run_starts_at"], abs=0.01)
    assert kept.pace < 40  # slower than before, as refused
    assert kept.refused_at is not None and kept.refused_at < 44
    assert kept.pace >= 0.5 and kept.pace != INITIAL_PACE


def fleet_without_key(throttled: Any, tmp_path: Path, key_line: str = "") -> Path:
    network = "\n".join(
        line
        for line in throttled.fleet_network_yaml().splitlines()
        if not line.strip().startswith("web_api_key:")
    )
    path = tmp_path / "fleet.yaml"
    path.write_text(
        f"account:\n  email: {EMAIL}\n  password: {{env: {PASSWORD_ENV}}}\n"
        + network
        + "\n"
        + key_line
        + "  requests_per_second: 200\n  node_page_size: 5\n"
        + "providers:\n  local: {kind: local}\nhosts: []\n"
    )
    return path


def test_without_a_key_in_the_fleet_file_the_bundle_s_key_signs_in(
    prefect_server: None, engine: Engine, throttled: Any, tmp_path: Path
) -> None:
    from flows.rewards import rewards
    from gradientlab.config import FleetFileError, load_fleet
    from gradientlab.store.webkeys import record_web_key

    path = fleet_without_key(throttled, tmp_path)
    fleet = load_fleet(path)
    assert fleet.network.web_api_key is None
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE extension_web_keys"))
    with pytest.raises(FleetFileError, match="deploy a host first, or set network.web_api_key"):
        rewards(fleet_path=str(path), days=1)

    # what deploy records after reading the deployed extension's bundle (test_deploy reads it)
    record_web_key(
        engine, fleet.network.extension_id, throttled.config.api_key, "0.1.0", "deploy-a"
    )
    try:
        summary = rewards(fleet_path=str(path), days=1)
    finally:
        with engine.begin() as conn:
            conn.execute(text("TRUNCATE extension_web_keys"))
    assert summary["api"]["requests"] > 0  # signed in with the bundle's key, and read


@pytest.mark.parametrize(
    ("key_line", "password", "setting"),
    [
        ("  web_api_key: AIzaSyWrongWrongWrongWrongWrongWrong123\n", None, "network.web_api_key"),
        ("", "not-the-password", "account.password"),
    ],
)
def test_a_refused_sign_in_is_the_account_s_verdict_naming_the_setting(
    prefect_server: None,
    engine: Engine,
    throttled: Any,
    tmp_path: Path,
    key_line: str,
    password: str | None,
    setting: str,
) -> None:
    from flows.rewards import rewards
    from gradientlab.gradient import GradientSignInRefused
    from tests.integration.test_daily_report_flow import artifacts

    if not key_line:
        key_line = f"  web_api_key: {throttled.config.api_key}\n"
    path = fleet_without_key(throttled, tmp_path, key_line)
    right = os.environ[PASSWORD_ENV]
    if password is not None:
        os.environ[PASSWORD_ENV] = password
    try:
        state = rewards(fleet_path=str(path), days=1, return_state=True)
    finally:
        os.environ[PASSWORD_ENV] = right
    assert state.is_failed()
    with pytest.raises(GradientSignInRefused) as caught:
        state.result()
    assert caught.value.setting == setting
    assert f"fix {setting}" in str(caught.value)
    run_id = state.state_details.flow_run_id
    assert run_id is not None
    verdict = artifacts(run_id)["account-verdict"]
    assert f"fix `{setting}`" in verdict


def test_a_refused_sign_in_is_one_account_incident_across_runs_and_flows_not_a_network_outage(
    prefect_server: None, engine: Engine, throttled: Any, tmp_path: Path
) -> None:
    """Hourly rewards runs and every health sweep see the same refusal: one incident for the
    account with one alert naming the setting; the health flow does not call it the network
    down (which would pause every host's recovery); the first sign-in that works closes it."""
    from flows.health import health
    from flows.rewards import rewards

    path = fleet_without_key(throttled, tmp_path, f"  web_api_key: {throttled.config.api_key}\n")
    right = os.environ[PASSWORD_ENV]
    os.environ[PASSWORD_ENV] = "not-the-password"
    try:
        for _ in range(2):
            assert rewards(fleet_path=str(path), days=1, return_state=True).is_failed()
        health(fleet_path=str(path))
    finally:
        os.environ[PASSWORD_ENV] = right
    incidents = rows(engine, "SELECT kind, status, alerts, detail FROM incidents")
    assert len(incidents) == 1, incidents
    [(kind, status, alerts, detail)] = incidents
    assert (kind, status, alerts) == ("SignInRefused", "open", ["refused"])
    assert "fix account.password" in detail

    rewards(fleet_path=str(path), days=1)
    assert rows(engine, "SELECT kind, status FROM incidents") == [("SignInRefused", "recovered")]


@pytest.fixture()
def between_seasons() -> Iterator[Any]:
    """A network between seasons, as Gradient's is now: uptime and taps counted, no point
    credited."""
    yield from own_sandbox(SEASONLESS_PASSWORD_ENV, season_active=False)


def ingest_until_online(engine: Engine, path: Path, hours: float) -> None:
    """Rewards runs until the network has reported `hours` of node uptime (sim time runs 60x)."""
    from flows.rewards import rewards

    deadline = time_module.monotonic() + 120
    while True:
        rewards(fleet_path=str(path), days=1)
        seconds = rows(engine, "SELECT coalesce(sum(duration), 0) FROM node_daily_stats")[0][0]
        if seconds >= hours * 3600 or time_module.monotonic() > deadline:
            return
        time_module.sleep(2)


def test_between_seasons_the_reads_say_the_network_pays_nothing_from_its_own_answers(
    prefect_server: None, engine: Engine, between_seasons: Any, tmp_path: Path
) -> None:
    from gradientlab.store import reads

    ingest_until_online(
        engine, fleet_on(between_seasons, tmp_path, SEASONLESS_PASSWORD_ENV), hours=3
    )
    season = reads.reward_season(engine)
    assert season["paying"] is False, season
    assert season["points_raw"] == 0 and season["last_paid_day"] is None
    assert season["online_hours"] >= 2
    text_ = reads.season_text(season)
    assert text_ is not None
    assert "The network pays no points now" in text_
    assert "no point was ever credited to this account" in text_
    # ingestion still works: the days and the nodes are all there, ready for a new season
    assert rows(engine, "SELECT count(DISTINCT client_id) FROM node_daily_stats") == [(NODES,)]


def test_in_a_season_the_reads_say_the_network_pays(
    prefect_server: None, engine: Engine, throttled: Any, fleet_file: Path
) -> None:
    from gradientlab.store import reads

    throttled.network.clear_faults()
    ingest_until_online(engine, fleet_file, hours=3)
    season = reads.reward_season(engine)
    assert season["paying"] is True, season
    assert season["points_raw"] > 0 and season["last_paid_day"] is not None
    assert reads.season_text(season) is None
