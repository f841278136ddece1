"""Accrual rules of the simulated network, driven with a fake clock (no sleeping)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

import pytest

from gradientlab.sandbox.network import (
    DATACENTER_REASON,
    IPV6_REASON,
    AuthError,
    Fault,
    SandboxAccount,
    SandboxConfig,
    SandboxNetwork,
    day_id,
    uid_for_email,
)

EMAIL = "alice@example.test"
UID = uid_for_email(EMAIL)
START = datetime(2025, 3, 1, 0, 0, tzinfo=UTC).timestamp()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make(**overrides: object) -> tuple[SandboxNetwork, FakeClock]:
    values: dict[str, object] = {
        "accounts": [
            SandboxAccount(email=EMAIL, password="pw", name="Alice"),
            SandboxAccount(email="bob@example.test", password="pw2", name="Bob"),
        ],
        "start_time": START,
        "seed": 7,
    }
    values.update(overrides)
    clock = FakeClock()
    return SandboxNetwork(SandboxConfig.model_validate(values), clock=clock), clock


def run(
    net: SandboxNetwork,
    clock: FakeClock,
    nodes: Iterable[tuple[str, str]],
    seconds: float,
    step: float = 5.0,
) -> None:
    """Keep ``nodes`` (clientid, ip) heartbeating for ``seconds`` real seconds."""
    nodes = list(nodes)
    for clientid, ip in nodes:
        net.heartbeat(UID, clientid, ip, "0.1.0")
    elapsed = 0.0
    while elapsed < seconds - 1e-9:
        dt = min(step, seconds - elapsed)
        clock.advance(dt)
        elapsed += dt
        for clientid, ip in nodes:
            net.heartbeat(UID, clientid, ip, "0.1.0")
    net.tick()


def today(net: SandboxNetwork, clientid: str) -> dict[str, int]:
    stats = net.node_stats(UID, clientid, 0, 2**62)
    assert stats is not None
    return stats[-1]


def test_uptime_quarter_point_per_ten_sim_minutes() -> None:
    net, clock = make()
    run(net, clock, [("n1", "198.51.100.10")], 600)
    view = net.node_view(UID, "n1")
    assert view is not None
    assert view["today"] == 25_000
    assert view["season"] == 25_000
    assert view["connect"] is True and view["banned"] is False
    assert today(net, "n1")["duration"] == 600
    run(net, clock, [("n1", "198.51.100.10")], 1200)
    assert net.node_view(UID, "n1")["today"] == 75_000  # type: ignore[index]


def test_speed_factor_runs_sim_time_faster() -> None:
    net, clock = make(speed=60)
    sim0 = net.sim_now()
    run(net, clock, [("n1", "198.51.100.10")], 10)  # 10 real s == 10 sim minutes
    assert net.sim_now() - sim0 == pytest.approx(600)
    assert net.node_view(UID, "n1")["today"] == 25_000  # type: ignore[index]
    assert today(net, "n1")["duration"] == 600


def test_rare_ticks_integrate_the_same_and_stop_after_timeout() -> None:
    net, clock = make(connected_timeout_seconds=90)
    net.heartbeat(UID, "n1", "198.51.100.10")
    clock.advance(60)
    net.heartbeat(UID, "n1", "198.51.100.10")
    # No heartbeat for an hour, one tick at the end: online until 90 s after the last beat.
    clock.advance(3600)
    net.tick()
    view = net.node_view(UID, "n1")
    assert view is not None
    assert view["connect"] is False
    assert today(net, "n1")["duration"] == 150
    assert view["today"] == 25_000 * 150 // 600
    # Coming back starts a new streak; the gap earns nothing.
    run(net, clock, [("n1", "198.51.100.10")], 600, step=60)
    assert today(net, "n1")["duration"] == 150 + 600


def test_nodes_sharing_an_ip_split_uptime_points() -> None:
    net, clock = make()
    shared = "198.51.100.20"
    run(net, clock, [("a", shared), ("b", shared), ("solo", "198.51.100.30")], 600)
    assert net.node_view(UID, "a")["today"] == 12_500  # type: ignore[index]
    assert net.node_view(UID, "b")["today"] == 12_500  # type: ignore[index]
    assert net.node_view(UID, "solo")["today"] == 25_000  # type: ignore[index]
    # Uptime itself is not split.
    assert today(net, "a")["duration"] == 600
    # When "b" drops out for good, "a" earns the whole share again once b's timeout passes.
    clock.advance(0)
    run(net, clock, [("a", shared)], 90 + 600, step=30)
    a = net.node_view(UID, "a")["today"]  # type: ignore[index]
    b = net.node_view(UID, "b")["today"]  # type: ignore[index]
    assert b == 12_500 + 25_000 * 90 // 600 // 2
    assert a == 12_500 + 25_000 * 90 // 600 // 2 + 25_000


def test_three_way_split_stays_integral() -> None:
    net, clock = make(tap_interval_minutes=10_000)
    ip = "198.51.100.40"
    run(net, clock, [("x", ip), ("y", ip), ("z", ip)], 1800)
    points = [net.node_view(UID, c)["today"] for c in ("x", "y", "z")]  # type: ignore[index]
    assert points == [25_000, 25_000, 25_000]


def test_datacenter_ip_is_unsupported_and_earns_nothing() -> None:
    net, clock = make(datacenter_ranges=["34.64.0.0/10"])
    answer = net.heartbeat(UID, "vm", "34.70.1.2", "0.1.0")
    assert answer == {
        "connect": True,
        "banned": True,
        "bannedReason": DATACENTER_REASON,
        "ip": "34.70.1.2",
    }
    run(net, clock, [("vm", "34.70.1.2"), ("home", "198.51.100.50")], 3600)
    view = net.node_view(UID, "vm")
    assert view is not None
    assert view["banned"] is True and view["bannedReason"] == DATACENTER_REASON
    assert view["today"] == 0 and view["season"] == 0
    assert today(net, "vm")["latency"] == 0
    assert net.node_view(UID, "home")["today"] == 150_000  # type: ignore[index]
    listed = {row["name"]: row for row in net.node_list(UID, size=50)}
    assert listed["vm"]["banned"] is True and listed["vm"]["point"] == 0


def test_default_ranges_ban_cloud_but_not_loopback_and_ipv6_is_unsupported() -> None:
    net, _ = make()
    assert net.classify_ip("127.0.0.1") == (False, "")
    assert net.classify_ip("129.146.10.10") == (True, DATACENTER_REASON)
    assert net.classify_ip("2001:db8::1") == (True, IPV6_REASON)


def test_taps_credit_both_sides_and_respect_the_daily_cap() -> None:
    net, clock = make(
        speed=60,
        tap_interval_minutes=30,
        daily_tap_cap=3,
        tap_success={"full-cone:full-cone": 1.0},
    )
    # 300 real s at 60x == 5 sim hours == 10 tap rounds.
    run(net, clock, [("a", "198.51.100.60"), ("b", "198.51.100.61")], 300)
    assert net.tap_rounds == 10
    for clientid in ("a", "b"):
        stats = today(net, clientid)
        assert stats["latency"] == 10  # every successful tap counts
        days = net.state()["nodes"]
        node = next(n for n in days if n["clientid"] == clientid)
        day = node["days"][stats["id"]]
        assert day["tapPoints"] == 3 * 75_000  # only the first 3 are rewarded
        assert day["uptimePoints"] == 30 * 25_000


def test_tap_success_depends_on_nat_type() -> None:
    net, clock = make(
        speed=600,
        tap_interval_minutes=10,
        daily_tap_cap=10_000,
        nat_types={"198.51.100.0/28": "open", "203.0.113.0/28": "symmetric"},
    )
    open_pair = [("o1", "198.51.100.1"), ("o2", "198.51.100.2")]
    run(net, clock, open_pair, 200, step=1)  # 200 rounds
    sym, sym_clock = make(
        speed=600,
        tap_interval_minutes=10,
        daily_tap_cap=10_000,
        nat_types={"198.51.100.0/28": "open", "203.0.113.0/28": "symmetric"},
    )
    run(sym, sym_clock, [("s1", "203.0.113.1"), ("s2", "203.0.113.2")], 200, step=1)
    open_taps = sum(d["latency"] for d in net.node_stats(UID, "o1", 0, 2**62) or [])
    sym_taps = sum(d["latency"] for d in sym.node_stats(UID, "s1", 0, 2**62) or [])
    assert open_taps >= 180
    assert sym_taps <= 30


def test_a_lone_node_cannot_be_tapped() -> None:
    net, clock = make(speed=60, tap_success={"full-cone:full-cone": 1.0})
    run(net, clock, [("alone", "198.51.100.70")], 300)
    assert net.tap_rounds == 10
    assert today(net, "alone")["latency"] == 0


def test_sim_days_split_at_utc_midnight_and_point_stats_sum_nodes() -> None:
    start = datetime(2025, 3, 1, 23, 55, tzinfo=UTC).timestamp()
    net, clock = make(start_time=start, tap_interval_minutes=10_000)
    run(net, clock, [("n1", "198.51.100.80"), ("n2", "198.51.100.81")], 600)
    stats = net.node_stats(UID, "n1", 0, 2**62)
    assert stats == [
        {"id": "20250301", "duration": 300, "latency": 0},
        {"id": "20250302", "duration": 300, "latency": 0},
    ]
    points = net.point_stats(UID, 0, int(net.sim_now() * 1000))
    assert [p["id"] for p in points] == ["20250301", "20250302"]
    assert [p["node"] for p in points] == [25_000, 25_000]
    assert all(p["referral"] == 0 and p["bonus"] == 0 and p["boost"] == 0 for p in points)
    # Range filtering by ms timestamps.
    day2 = datetime(2025, 3, 2, tzinfo=UTC).timestamp() * 1000
    assert [p["id"] for p in net.point_stats(UID, int(day2), int(day2) + 1)] == ["20250302"]
    profile = net.profile(UID)
    assert profile["point"]["total"] == 50_000
    assert profile["node"]["sentryActive"] == 2


def test_configured_referral_bonus_and_boost() -> None:
    net, _ = make(
        accounts=[
            SandboxAccount(
                email=EMAIL, password="pw", referral_per_day=10, bonus_per_day=20, boost_per_day=5
            )
        ]
    )
    [item] = net.point_stats(UID, 0, 2**62)
    assert item == {"id": day_id(START), "node": 0, "referral": 10, "bonus": 20, "boost": 5}
    assert net.profile(UID)["point"] == {"total": 35, "balance": 35, "referral": 10}


def test_nodes_are_private_to_their_account() -> None:
    net, _ = make()
    net.heartbeat(UID, "mine", "198.51.100.90")
    other = uid_for_email("bob@example.test")
    assert net.node_view(other, "mine") is None
    assert net.node_stats(other, "mine", 0, 2**62) is None
    assert net.node_list(other) == []
    assert [r["name"] for r in net.node_list(UID)] == ["mine"]


def test_list_filters_and_paging() -> None:
    net, clock = make(connected_timeout_seconds=90)
    for i in range(5):
        net.heartbeat(UID, f"n{i}", f"198.51.100.{100 + i}")
    clock.advance(100)
    net.heartbeat(UID, "n0", "198.51.100.100")
    rows = net.node_list(UID, size=10, field="active", direction=0)
    assert rows[0]["name"] == "n0" and rows[0]["connect"] is True
    assert [r["name"] for r in net.node_list(UID, size=10, hide=1)] == ["n0"]
    assert len(net.node_list(UID, page=2, size=2)) == 2
    assert len(net.node_list(UID, page=3, size=2)) == 1
    assert net.node_list(UID, banned=True) == []


def test_tokens_expire_and_refresh() -> None:
    net, clock = make(token_ttl_seconds=10)
    with pytest.raises(AuthError, match="INVALID_PASSWORD"):
        net.sign_in(EMAIL, "nope")
    with pytest.raises(AuthError, match="EMAIL_NOT_FOUND"):
        net.sign_in("nobody@example.test", "pw")
    grant = net.sign_in(EMAIL, "pw")
    assert net.authenticate(grant.id_token) == UID
    clock.advance(11)
    with pytest.raises(AuthError, match="token expired"):
        net.authenticate(grant.id_token)
    renewed = net.refresh(grant.refresh_token)
    assert net.authenticate(renewed.id_token) == UID
    net.expire_tokens()
    with pytest.raises(AuthError, match="token expired"):
        net.authenticate(renewed.id_token)
    with pytest.raises(AuthError, match="unauthorized"):
        net.authenticate("garbage")
    with pytest.raises(AuthError, match="INVALID_REFRESH_TOKEN"):
        net.refresh("garbage")


def test_faults_count_down_by_path() -> None:
    net, _ = make()
    net.add_fault(Fault(kind="error", path="/api/user", count=2))
    net.add_fault({"kind": "extra_fields"})
    assert [f.kind for f in net.take_faults("/api/status")] == ["extra_fields"]
    assert [f.kind for f in net.take_faults("/api/user/profile")] == ["error", "extra_fields"]
    assert [f.kind for f in net.take_faults("/api/user/profile")] == ["error", "extra_fields"]
    assert [f.kind for f in net.take_faults("/api/user/profile")] == ["extra_fields"]
    net.clear_faults()
    assert net.take_faults("/api/user/profile") == []


def test_config_from_yaml(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "sandbox.yaml"
    path.write_text(
        "accounts:\n"
        "  - {email: a@b.test, password: x, name: A}\n"
        "speed: 120\n"
        "start_time: '2025-01-01T00:00:00Z'\n"
        "nat_types: {'10.0.0.0/8': symmetric}\n"
        "datacenter_ranges: ['192.0.2.0/24']\n"
    )
    cfg = SandboxConfig.from_yaml(path)
    assert cfg.speed == 120
    assert cfg.start_time == datetime(2025, 1, 1, tzinfo=UTC).timestamp()
    net = SandboxNetwork(cfg)
    assert net.nat_type_of("10.1.2.3") == "symmetric"
    assert net.nat_type_of("11.1.2.3") == "full-cone"
    assert net.classify_ip("192.0.2.7") == (True, DATACENTER_REASON)


def test_example_config_loads() -> None:
    from pathlib import Path

    import gradientlab.sandbox as sandbox

    example = Path(sandbox.__file__).with_name("sandbox.example.yaml")
    cfg = SandboxConfig.from_yaml(example)
    assert cfg.accounts and cfg.speed > 0


def test_the_sandbox_spells_nat_types_as_the_stun_test_classifies_them() -> None:
    from gradientlab.agent.stun import NatType as StunNatType
    from gradientlab.sandbox.network import NAT_TYPES

    assert set(NAT_TYPES) <= {t.value for t in StunNatType}
