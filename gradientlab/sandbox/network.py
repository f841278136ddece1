"""The simulated Gradient network: accounts, tokens, nodes, reward accrual and fault injection.

Pure Python and thread-safe (one re-entrant lock guards all state). The HTTP layer lives in
``server.py``; everything here can be driven directly from tests with a fake clock.

Time
    Two clocks exist. *Real* time (``clock``, monotonic seconds) drives heartbeats, the connected
    timeout and token lifetimes. *Sim* time (``sim_now()``) runs ``speed`` times faster than real
    time from ``start_time`` and drives points, days and tap rounds.

Presence
    A node an extension registered (``register``) is online while its MQTT connection to the
    sandbox's broker is open (``mqtt_connected`` / ``mqtt_disconnected``, told by the broker),
    as the real extension is Good while connected. Browserless nodes (``simulated_nodes``, and
    tests that drive the network directly) use ``heartbeat`` instead: online until
    ``connected_timeout_seconds`` after the last one.

Accrual
    State is advanced lazily: every public read or write first integrates over the real time that
    passed since the previous advance, so the numbers are exact whether ``tick()`` is called every
    second or once an hour. A node is online from its first heartbeat of a streak until
    ``connected_timeout_seconds`` after its last one, exactly when the API reports ``connect``.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import math
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from gradientlab.gradient.models import POINT_SCALE

# Points are integers scaled by 100000 (1 point == 100000 raw units).
POINT = POINT_SCALE
UPTIME_POINTS_PER_PERIOD = 25_000  # 0.25 points ...
UPTIME_PERIOD_SECONDS = 600.0  # ... per 10 sim minutes online
TAP_POINTS = 75_000  # 0.75 points to both nodes of a successful tap
DAY_SECONDS = 86_400
_EPS = 1e-6

# A sandbox node's NAT, spelt as the STUN test (gradientlab.agent.stun.NatType) classifies it.
NatType = Literal["open", "full-cone", "restricted-cone", "port-restricted-cone", "symmetric"]
NAT_TYPES: tuple[str, ...] = get_args(NatType)

DATACENTER_REASON = "Data center IP is not supported"
IPV6_REASON = "IPv6 is not supported"

# Probability that a tap (a WebRTC connection between two nodes) succeeds, by NAT pair.
_TAP_SUCCESS: dict[tuple[str, str], float] = {
    ("open", "open"): 0.98,
    ("open", "full-cone"): 0.97,
    ("open", "restricted-cone"): 0.96,
    ("open", "port-restricted-cone"): 0.95,
    ("open", "symmetric"): 0.90,
    ("full-cone", "full-cone"): 0.95,
    ("full-cone", "restricted-cone"): 0.92,
    ("full-cone", "port-restricted-cone"): 0.90,
    ("full-cone", "symmetric"): 0.80,
    ("restricted-cone", "restricted-cone"): 0.85,
    ("restricted-cone", "port-restricted-cone"): 0.80,
    ("restricted-cone", "symmetric"): 0.50,
    ("port-restricted-cone", "port-restricted-cone"): 0.70,
    ("port-restricted-cone", "symmetric"): 0.10,
    ("symmetric", "symmetric"): 0.05,
}

# Sample public-cloud ranges (AWS, Google Cloud, Azure, Oracle Cloud, DigitalOcean, Hetzner).
DEFAULT_DATACENTER_RANGES: list[str] = [
    "3.0.0.0/9",
    "52.0.0.0/11",
    "34.64.0.0/10",
    "35.184.0.0/13",
    "20.33.0.0/16",
    "40.112.0.0/13",
    "129.146.0.0/16",
    "132.145.0.0/16",
    "150.136.0.0/16",
    "159.203.0.0/16",
    "167.99.0.0/16",
    "88.99.0.0/16",
]


def tap_success_probability(a: str, b: str, overrides: Mapping[str, float] | None = None) -> float:
    """Chance that a tap between NAT types ``a`` and ``b`` succeeds (order does not matter)."""
    if overrides:
        for key in (f"{a}:{b}", f"{b}:{a}"):
            if key in overrides:
                return float(overrides[key])
    if (a, b) in _TAP_SUCCESS:
        return _TAP_SUCCESS[(a, b)]
    return _TAP_SUCCESS.get((b, a), 0.5)


def day_id(sim_ts: float) -> str:
    """UTC ``YYYYMMDD`` of a sim timestamp (epoch seconds)."""
    return datetime.fromtimestamp(sim_ts, UTC).strftime("%Y%m%d")


def day_start(sim_ts: float) -> float:
    return math.floor(sim_ts / DAY_SECONDS) * DAY_SECONDS


def uid_for_email(email: str) -> str:
    """A stable 28-character Firebase-style uid for an account."""
    digest = hashlib.sha256(email.strip().lower().encode()).digest()
    return base64.b32encode(digest).decode().lower()[:28]


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


class SandboxAccount(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str
    password: str
    name: str = ""
    # Raw points credited to the account for every sim day (0 unless configured).
    referral_per_day: int = 0
    bonus_per_day: int = 0
    boost_per_day: int = 0
    # Nodes of this account that run without a browser: they heartbeat on their own, each from
    # its own home address, so that a large fleet (10,000 nodes) can be simulated cheaply.
    simulated_nodes: int = Field(default=0, ge=0)


# Home addresses of simulated nodes: 100.64.0.0/10 (shared address space) is not data-centre.
SIMULATED_NODE_NETWORK = ipaddress.ip_network("100.64.0.0/10")


class Location(BaseModel):
    country: str
    place: str


def _default_accounts() -> list[SandboxAccount]:
    return [
        SandboxAccount(
            email="operator@sandbox.local", password="sandbox-password", name="Sandbox Operator"
        )
    ]


def _default_locations() -> dict[str, Location]:
    return {"127.0.0.0/8": Location(country="ZZ", place="Sandbox loopback")}


class SandboxConfig(BaseModel):
    """Settings of the simulated network. Every field has a working default."""

    model_config = ConfigDict(extra="forbid")

    accounts: list[SandboxAccount] = Field(default_factory=_default_accounts)
    api_key: str = "sandbox-web-api-key"
    project_id: str = "gradient-sandbox"
    token_ttl_seconds: float = 3600.0  # REAL seconds
    speed: float = 1.0  # sim time runs this many times faster than real time
    datacenter_ranges: list[str] = Field(default_factory=lambda: list(DEFAULT_DATACENTER_RANGES))
    nat_types: dict[str, NatType] = Field(default_factory=dict)  # CIDR -> NAT type
    default_nat_type: NatType = "full-cone"
    tap_success: dict[str, float] = Field(default_factory=dict)  # "a:b" -> probability
    locations: dict[str, Location] = Field(default_factory=_default_locations)
    default_location: Location = Field(
        default_factory=lambda: Location(country="ZZ", place="Unknown")
    )
    tap_interval_minutes: float = 30.0  # sim minutes between tap rounds
    daily_tap_cap: int = 50  # rewarded taps per node per sim day
    # False: a network between seasons, as Gradient's is now (Seasons 0 and 1 concluded): uptime
    # and taps are still counted and reported, and no point is credited for them
    season_active: bool = True
    connected_timeout_seconds: float = 90.0  # REAL seconds after the last heartbeat
    start_time: float | None = None  # sim epoch seconds at start; None = now
    seed: int | None = None  # seeds the tap RNG for reproducible runs
    extension_heartbeat_seconds: float = 10.0  # baked into the served extension's config.js
    # A token bucket per caller address on /api/, as real APIs throttle: at most this many
    # requests per REAL second on average, bursts of up to api_rate_burst; beyond it HTTP 429
    # with Retry-After (whole seconds). None = no limit.
    api_rate_limit: float | None = Field(default=None, gt=0)
    api_rate_burst: int = Field(default=10, ge=1)
    # REAL seconds between accrual steps: 0 integrates at every read (exact to the moment);
    # a large simulated fleet uses about 1, so that a read does not pay for 10,000 nodes.
    accrual_step_seconds: float = Field(default=0.0, ge=0)

    @field_validator("start_time", mode="before")
    @classmethod
    def _start_time(cls, value: Any) -> Any:
        if isinstance(value, datetime):
            if value.tzinfo is None:
                value = value.replace(tzinfo=UTC)
            return value.timestamp()
        if isinstance(value, str):
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            return parsed.timestamp()
        return value

    @field_validator("speed", "token_ttl_seconds", "tap_interval_minutes")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be > 0")
        return value

    @field_validator("datacenter_ranges")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            ipaddress.ip_network(cidr, strict=False)
        return value

    @classmethod
    def from_yaml(cls, path: str | Path) -> SandboxConfig:
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping")
        return cls.model_validate(data)


# --------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------

FaultKind = Literal["error", "rate_limit", "slow", "expire_tokens", "extra_fields"]


def _default_extra_fields() -> dict[str, Any]:
    return {"sandboxUnknownField": "ignore me", "futureFeature": {"enabled": True, "tier": [1, 2]}}


class Fault(BaseModel):
    """One injected misbehaviour.

    kind
        ``error``: answer HTTP ``status`` (5xx) with an error envelope.
        ``rate_limit``: answer HTTP 429 with a ``Retry-After: retry_after`` header.
        ``slow``: sleep ``delay`` seconds before answering normally.
        ``expire_tokens``: expire every issued ID token at once (applied when set, not stored).
        ``extra_fields``: add ``fields`` to every answer's data (and to the envelope).
    path
        Requests whose path starts with this prefix are affected.
    every
        Only every ``every``-th matching request is affected (4: the 4th, 8th, ...).
    count
        How many matching requests are affected; ``None`` means until cleared.
    """

    model_config = ConfigDict(extra="forbid")

    kind: FaultKind
    path: str = "/api/"
    every: int = Field(default=1, ge=1)
    count: int | None = None
    status: int = 503
    retry_after: int = 5
    delay: float = 1.0
    fields: dict[str, Any] = Field(default_factory=_default_extra_fields)
    _seen: int = PrivateAttr(0)  # matching requests so far, for `every`


# --------------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------------


class AuthError(Exception):
    """Sign-in or token failure; ``reason`` is the Firebase / API message."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class TokenGrant:
    uid: str
    email: str
    name: str
    id_token: str
    refresh_token: str
    expires_in: int


@dataclass
class SimulatedDay:
    duration: float = 0.0  # sim seconds online
    latency: int = 0  # successful taps
    rewarded_taps: int = 0
    uptime_points: int = 0
    tap_points: int = 0

    @property
    def points(self) -> int:
        return self.uptime_points + self.tap_points


@dataclass
class Node:
    clientid: str
    uid: str
    ip: str
    version: str
    first_seen_sim: float
    seg_start: float  # real time the current online streak started
    last_hb: float  # real time of the last heartbeat
    banned: bool = False
    banned_reason: str = ""
    ban: str | None = None  # the network's own ban (risk review), whatever the address
    simulated: bool = False  # heartbeats on its own (no browser)
    presence: Literal["heartbeat", "mqtt"] = "heartbeat"
    live: bool = False  # an MQTT connection of this node is open now
    username: str = ""  # the MQTT credentials register handed out
    password: str = field(default="", repr=False)
    connections: int = 0  # MQTT connections opened so far
    messages: dict[str, int] = field(default_factory=dict)  # kind -> MQTT messages received
    fingerprints: int = 0  # fp/add reports
    nat_type: str = "full-cone"
    location: Location = field(default_factory=lambda: Location(country="ZZ", place="Unknown"))
    carry: float = 0.0  # fractional uptime points not yet credited
    total_points: int = 0
    days: dict[str, SimulatedDay] = field(default_factory=dict)

    def day(self, did: str) -> SimulatedDay:
        nd = self.days.get(did)
        if nd is None:
            nd = self.days[did] = SimulatedDay()
        return nd


@dataclass
class _Task:
    """A tap the network asked a node to run (a `latency` task on client/task/<clientid>)."""

    taskid: str
    clientid: str
    destcid: str
    did: str  # the sim day of the round that sent it
    success: bool  # whether the pair's NAT types let the tap through (the tap model)
    expires: float  # real time after which an answer no longer counts


TASK_TTL_SECONDS = 60.0  # REAL seconds a node has to answer a latency task


@dataclass
class _Account:
    config: SandboxAccount
    uid: str
    node_points: dict[str, int] = field(default_factory=dict)  # day id -> raw points


class SandboxNetwork:
    """Thread-safe state of the simulated network."""

    def __init__(
        self,
        config: SandboxConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.config = config or SandboxConfig()
        self._clock = clock
        self._wall = wall
        self._lock = threading.RLock()
        self._real0 = clock()
        self._last_real = self._real0
        self.start_time: float = (
            self.config.start_time if self.config.start_time is not None else wall()
        )
        self._rng = random.Random(self.config.seed)
        self._accounts: dict[str, _Account] = {}
        self._by_email: dict[str, str] = {}
        for acc in self.config.accounts:
            uid = uid_for_email(acc.email)
            self._accounts[uid] = _Account(config=acc, uid=uid)
            self._by_email[acc.email.strip().lower()] = uid
        self._id_tokens: dict[str, tuple[str, float]] = {}  # token -> (uid, real expiry)
        self._refresh_tokens: dict[str, str] = {}  # token -> uid
        self._nodes: dict[str, Node] = {}
        self._faults: list[Fault] = []
        self._dc_nets = [
            ipaddress.ip_network(c, strict=False) for c in self.config.datacenter_ranges
        ]
        self._nat_nets = sorted(
            ((ipaddress.ip_network(c, strict=False), t) for c, t in self.config.nat_types.items()),
            key=lambda item: item[0].prefixlen,
            reverse=True,
        )
        self._loc_nets = sorted(
            (
                (ipaddress.ip_network(c, strict=False), loc)
                for c, loc in self.config.locations.items()
            ),
            key=lambda item: item[0].prefixlen,
            reverse=True,
        )
        self.tap_rounds = 0
        # What callers did, for tests and benchmarks: requests, throttled ones, sign-ins.
        self.counters: dict[str, int] = {
            "apiRequests": 0,
            "throttled": 0,
            "faulted": 0,
            "signIns": 0,
            "refreshes": 0,
        }
        self._buckets: dict[str, tuple[float, float]] = {}  # caller -> (tokens, real time)
        # latency tasks sent to MQTT nodes and not answered yet: taskid -> _Task
        self._tasks: dict[str, _Task] = {}
        # (topic, payload) the broker is to publish: drained by the server (take_outbox)
        self._outbox: list[tuple[str, str]] = []
        self.calls: dict[str, int] = {}  # the extension's other calls, by name, answered
        self._simulated: list[Node] = []
        for account in self._accounts.values():
            self._add_simulated_nodes(account)

    # ---- clocks ------------------------------------------------------------------------------

    def _sim_at(self, real: float) -> float:
        return self.start_time + (real - self._real0) * self.config.speed

    def _real_at(self, sim: float) -> float:
        return self._real0 + (sim - self.start_time) / self.config.speed

    def sim_now(self) -> float:
        """Current sim time, epoch seconds."""
        return self._sim_at(self._clock())

    def sim_now_ms(self) -> int:
        return int(self.sim_now() * 1000)

    # ---- addresses ---------------------------------------------------------------------------

    def classify_ip(self, ip: str) -> tuple[bool, str]:
        """(banned, bannedReason) for an address."""
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return True, "Invalid IP address"
        if isinstance(addr, ipaddress.IPv6Address):
            mapped = addr.ipv4_mapped
            if mapped is None:
                return True, IPV6_REASON
            addr = mapped
        for net in self._dc_nets:
            if addr.version == net.version and addr in net:
                return True, DATACENTER_REASON
        return False, ""

    def nat_type_of(self, ip: str) -> str:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return self.config.default_nat_type
        for net, nat in self._nat_nets:
            if addr.version == net.version and addr in net:
                return nat
        return self.config.default_nat_type

    def location_of(self, ip: str) -> Location:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return self.config.default_location
        for net, loc in self._loc_nets:
            if addr.version == net.version and addr in net:
                return loc
        return self.config.default_location

    # ---- auth --------------------------------------------------------------------------------

    def check_api_key(self, key: str | None) -> bool:
        return key == self.config.api_key

    def _issue(self, uid: str, refresh_token: str | None = None) -> TokenGrant:
        acc = self._accounts[uid]
        ttl = self.config.token_ttl_seconds
        now_wall = int(self._wall())

        def b64(obj: Mapping[str, Any]) -> str:
            raw = json.dumps(obj, separators=(",", ":")).encode()
            return base64.urlsafe_b64encode(raw).decode().rstrip("=")

        header = {"alg": "none", "typ": "JWT", "kid": "sandbox"}
        payload = {
            "iss": f"https://securetoken.google.com/{self.config.project_id}",
            "aud": self.config.project_id,
            "auth_time": now_wall,
            "user_id": uid,
            "sub": uid,
            "iat": now_wall,
            "exp": now_wall + int(ttl),
            "email": acc.config.email,
            "email_verified": True,
            "firebase": {"sign_in_provider": "password"},
            "jti": secrets.token_hex(8),
        }
        id_token = f"{b64(header)}.{b64(payload)}.{secrets.token_urlsafe(32)}"
        self._id_tokens[id_token] = (uid, self._clock() + ttl)
        if refresh_token is None:
            refresh_token = "sbx-" + secrets.token_urlsafe(48)
            self._refresh_tokens[refresh_token] = uid
        return TokenGrant(
            uid=uid,
            email=acc.config.email,
            name=acc.config.name,
            id_token=id_token,
            refresh_token=refresh_token,
            expires_in=int(ttl),
        )

    def _prune_tokens(self) -> None:
        if len(self._id_tokens) < 1000:
            return
        now = self._clock()
        for tok in [t for t, (_, exp) in self._id_tokens.items() if exp < now]:
            del self._id_tokens[tok]

    def sign_in(self, email: str, password: str) -> TokenGrant:
        """Password sign-in. Raises AuthError("EMAIL_NOT_FOUND" | "INVALID_PASSWORD")."""
        with self._lock:
            uid = self._by_email.get((email or "").strip().lower())
            if uid is None:
                raise AuthError("EMAIL_NOT_FOUND")
            if self._accounts[uid].config.password != password:
                raise AuthError("INVALID_PASSWORD")
            self._prune_tokens()
            self.counters["signIns"] += 1
            return self._issue(uid)

    def refresh(self, refresh_token: str) -> TokenGrant:
        """Exchange a refresh token for a new ID token (the refresh token stays the same)."""
        with self._lock:
            uid = self._refresh_tokens.get(refresh_token or "")
            if uid is None:
                raise AuthError("INVALID_REFRESH_TOKEN")
            self._prune_tokens()
            self.counters["refreshes"] += 1
            return self._issue(uid, refresh_token=refresh_token)

    def authenticate(self, id_token: str | None) -> str:
        """uid of a valid ID token. Raises AuthError("unauthorized" | "token expired")."""
        with self._lock:
            entry = self._id_tokens.get(id_token or "")
            if entry is None:
                raise AuthError("unauthorized")
            uid, expiry = entry
            if self._clock() >= expiry:
                raise AuthError("token expired")
            return uid

    def expire_tokens(self) -> int:
        """Expire every ID token issued so far; returns how many."""
        with self._lock:
            for tok, (uid, _) in list(self._id_tokens.items()):
                self._id_tokens[tok] = (uid, -math.inf)
            return len(self._id_tokens)

    def ban(self, clientid: str, reason: str | None) -> bool:
        """Ban a node as the network's risk review does (`reason`), or lift it (None)."""
        with self._lock:
            node = self._nodes.get(clientid)
            if node is None:
                return False
            node.ban = reason
            if reason is not None:
                node.banned, node.banned_reason = True, reason
            else:
                node.banned, node.banned_reason = self.classify_ip(node.ip)
            return True

    def revoke_sessions(self) -> int:
        """Revoke every session (refresh and ID tokens), as a password change does: each
        extension finds itself logged out and must be logged in again."""
        with self._lock:
            count = len(self._refresh_tokens)
            self._refresh_tokens.clear()
            for tok, (uid, _) in list(self._id_tokens.items()):
                self._id_tokens[tok] = (uid, -math.inf)
            return count

    def change_password(self, email: str, password: str) -> bool:
        """The account's password changed on the dashboard: the old one is refused from now
        on and every session is revoked. False when no account has that email."""
        with self._lock:
            uid = self._by_email.get((email or "").strip().lower())
            if uid is None:
                return False
            account = self._accounts[uid]
            account.config = account.config.model_copy(update={"password": password})
        self.revoke_sessions()
        return True

    def account_name(self, uid: str) -> str:
        with self._lock:
            return self._accounts[uid].config.name

    # ---- accrual -----------------------------------------------------------------------------

    def tick(self) -> None:
        """Integrate accrual up to now. Safe to call at any rate."""
        with self._lock:
            self._advance()

    def _advance(self) -> None:
        t1 = self._clock()
        t0 = self._last_real
        if t1 <= t0 or t1 - t0 < self.config.accrual_step_seconds:
            return
        for node in self._simulated:
            node.last_hb = t1
        self._accrue_uptime(t0, t1)
        self._run_taps(t0, t1)
        self._last_real = t1

    def _online_until(self, node: Node) -> float:
        if node.presence == "mqtt":
            return math.inf if node.live else node.last_hb
        return node.last_hb + self.config.connected_timeout_seconds

    def _accrue_uptime(self, t0: float, t1: float) -> None:
        groups: dict[str, list[tuple[Node, float, float]]] = {}
        for node in self._nodes.values():
            a = max(t0, node.seg_start)
            b = min(t1, self._online_until(node))
            if b > a:
                groups.setdefault(node.ip, []).append((node, a, b))
        for members in groups.values():
            cuts = sorted({t for _, a, b in members for t in (a, b)})
            for lo, hi in zip(cuts, cuts[1:], strict=False):
                online = [n for n, a, b in members if a <= lo and b >= hi]
                earners = [n for n in online if not n.banned]
                share = 1.0 / len(earners) if earners else 0.0
                for node in online:
                    self._credit_uptime(node, lo, hi, 0.0 if node.banned else share)

    def _credit_uptime(self, node: Node, lo: float, hi: float, share: float) -> None:
        s_lo, s_hi = self._sim_at(lo), self._sim_at(hi)
        while s_lo < s_hi:
            boundary = day_start(s_lo) + DAY_SECONDS
            piece_end = min(s_hi, boundary)
            did = day_id(s_lo)
            dur = piece_end - s_lo
            nd = node.day(did)
            nd.duration += dur
            if share > 0 and self.config.season_active:
                node.carry += dur / UPTIME_PERIOD_SECONDS * UPTIME_POINTS_PER_PERIOD * share
                whole = int(node.carry + _EPS)
                if whole > 0:
                    node.carry -= whole
                    nd.uptime_points += whole
                    self._credit_account(node, did, whole)
            s_lo = piece_end

    def _credit_account(self, node: Node, did: str, points: int) -> None:
        node.total_points += points
        acc = self._accounts.get(node.uid)
        if acc is not None:
            acc.node_points[did] = acc.node_points.get(did, 0) + points

    def _run_taps(self, t0: float, t1: float) -> None:
        interval = self.config.tap_interval_minutes * 60.0
        s0, s1 = self._sim_at(t0), self._sim_at(t1)
        n = math.floor((s0 - self.start_time) / interval + _EPS) + 1
        while True:
            r_sim = self.start_time + n * interval
            if r_sim > s1 + _EPS:
                break
            self._tap_round(self._real_at(r_sim), r_sim)
            n += 1

    def _tap_round(self, r_real: float, r_sim: float) -> None:
        self.tap_rounds += 1
        eligible = sorted(
            (
                node
                for node in self._nodes.values()
                if not node.banned
                and node.seg_start <= r_real + _EPS
                and r_real <= self._online_until(node) + _EPS
            ),
            key=lambda node: node.clientid,
        )
        self._rng.shuffle(eligible)
        did = day_id(r_sim)
        now = self._clock()
        for task in [t for t in self._tasks.values() if t.expires < now]:
            del self._tasks[task.taskid]
        for a, b in zip(eligible[0::2], eligible[1::2], strict=False):
            p = tap_success_probability(a.nat_type, b.nat_type, self.config.tap_success)
            success = self._rng.random() < p
            asked = a if a.presence == "mqtt" else b if b.presence == "mqtt" else None
            if asked is not None:
                # the node runs the tap itself: it is credited when its answer comes back
                peer = b if asked is a else a
                taskid = secrets.token_hex(8)
                self._tasks[taskid] = _Task(
                    taskid, asked.clientid, peer.clientid, did, success, now + TASK_TTL_SECONDS
                )
                message = {
                    "type": "latency",
                    "clientid": asked.clientid,
                    "destcid": peer.clientid,
                    "taskid": taskid,
                    "timestamp": int(r_sim * 1000),
                }
                self._outbox.append((f"client/task/{asked.clientid}", json.dumps(message)))
                continue
            if success:
                self._credit_tap([a, b], did)

    def _credit_tap(self, nodes: list[Node], did: str) -> None:
        for node in nodes:
            nd = node.day(did)
            nd.latency += 1
            if self.config.season_active and nd.rewarded_taps < self.config.daily_tap_cap:
                nd.rewarded_taps += 1
                nd.tap_points += TAP_POINTS
                self._credit_account(node, did, TAP_POINTS)

    # ---- throttling --------------------------------------------------------------------------

    def admit(self, caller: str) -> int | None:
        """Count one API request from ``caller``; None when admitted, else the Retry-After
        (whole seconds) of a 429, by a token bucket of ``api_rate_limit`` per second."""
        with self._lock:
            self.counters["apiRequests"] += 1
            rate = self.config.api_rate_limit
            if rate is None:
                return None
            burst = float(self.config.api_rate_burst)
            now = self._clock()
            tokens, then = self._buckets.get(caller, (burst, now))
            tokens = min(burst, tokens + (now - then) * rate)
            if tokens >= 1.0:
                self._buckets[caller] = (tokens - 1.0, now)
                return None
            self._buckets[caller] = (tokens, now)
            self.counters["throttled"] += 1
            return max(1, math.ceil((1.0 - tokens) / rate))

    # ---- nodes -------------------------------------------------------------------------------

    def _add_simulated_nodes(self, acc: _Account) -> None:
        now = self._clock()
        base = SIMULATED_NODE_NETWORK.network_address
        prefix = acc.uid[:8]
        for index in range(acc.config.simulated_nodes):
            ip = str(base + len(self._simulated) + 1)
            node = Node(
                clientid=f"sim-{prefix}-{index:05d}",
                uid=acc.uid,
                ip=ip,
                version="simulated",
                first_seen_sim=self._sim_at(now),
                seg_start=now,
                last_hb=now,
                simulated=True,
                nat_type=self.nat_type_of(ip),
                location=self.location_of(ip),
            )
            node.banned, node.banned_reason = self.classify_ip(ip)
            self._nodes[node.clientid] = node
            self._simulated.append(node)

    def _connected(self, node: Node, now: float) -> bool:
        if node.presence == "mqtt":
            return node.live
        return now - node.last_hb <= self.config.connected_timeout_seconds

    # ---- the extension's node: register and MQTT presence -------------------------------------

    def register(self, uid: str, ip: str, version: str = "") -> dict[str, str]:
        """``POST /sentrynode/register``: a new node of this account, with the MQTT credentials
        it connects with. The extension keeps the answer per account in its browser profile and
        registers again only when it has none: one node per account per profile."""
        with self._lock:
            self._advance()
            now = self._clock()
            clientid = secrets.token_hex(16)
            node = Node(
                clientid=clientid,
                uid=uid,
                ip=ip,
                version=version,
                first_seen_sim=self._sim_at(now),
                seg_start=now,
                last_hb=now,
                presence="mqtt",
                username=f"node-{clientid[:12]}",
                password=secrets.token_urlsafe(24),
                nat_type=self.nat_type_of(ip),
                location=self.location_of(ip),
            )
            node.banned, node.banned_reason = self.classify_ip(ip)
            self._nodes[clientid] = node
            self.counters["registers"] = self.counters.get("registers", 0) + 1
            return {"clientid": clientid, "username": node.username, "password": node.password}

    def mqtt_connected(self, clientid: str, ip: str, username: str = "") -> bool:
        """The broker let ``clientid`` in from ``ip``: the node is online from now on. False
        (and nothing changes) for a client that is no registered node of these credentials."""
        with self._lock:
            node = self._nodes.get(clientid)
            if node is None or node.presence != "mqtt" or (username and username != node.username):
                return False
            self._advance()
            now = self._clock()
            if not node.live or node.ip != ip:
                node.seg_start = now  # a new online streak (a new IP starts afresh)
            node.live = True
            node.last_hb = now
            node.connections += 1
            node.ip = ip
            banned, reason = self.classify_ip(ip)
            if node.ban is not None:
                banned, reason = True, node.ban
            node.banned, node.banned_reason = banned, reason
            node.nat_type = self.nat_type_of(ip)
            node.location = self.location_of(ip)
            return True

    def mqtt_disconnected(self, clientid: str) -> None:
        """The node's MQTT connection closed: it is offline from now on."""
        with self._lock:
            node = self._nodes.get(clientid)
            if node is None or node.presence != "mqtt" or not node.live:
                return
            self._advance()  # credit the streak up to this moment
            node.live = False
            node.last_hb = self._clock()

    def mqtt_message(self, topic: str, payload: bytes) -> None:
        """A message a node published: ``client/<kind>/<clientid>`` with a JSON body. Online
        and version messages are recorded; a latency answer completes the tap it was asked."""
        parts = topic.split("/")
        if len(parts) != 3 or parts[0] != "client" or parts[1] == "task":
            return
        kind, clientid = parts[1], parts[2]
        try:
            body = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            body = None
        with self._lock:
            node = self._nodes.get(clientid)
            if node is None:
                return
            node.messages[kind] = node.messages.get(kind, 0) + 1
            if not isinstance(body, dict):
                return
            if kind == "version" and body.get("version"):
                node.version = str(body["version"])[:32]
            elif kind == "latency":
                self._answer_task(node, body)

    def _answer_task(self, node: Node, body: dict[str, Any]) -> None:
        task = self._tasks.get(str(body.get("taskid") or ""))
        if (
            task is None
            or task.clientid != node.clientid
            or str(body.get("destcid")) != (task.destcid)
        ):
            return
        del self._tasks[task.taskid]
        if self._clock() > task.expires or not isinstance(body.get("ttl"), int | float):
            return
        self.counters["tapAnswers"] = self.counters.get("tapAnswers", 0) + 1
        if task.success:
            pair = [n for n in (node, self._nodes.get(task.destcid)) if n is not None]
            self._credit_tap(pair, task.did)

    def take_outbox(self) -> list[tuple[str, str]]:
        """The MQTT messages the network wants published (tasks), oldest first."""
        with self._lock:
            self._advance()
            out, self._outbox = self._outbox, []
            return out

    def record_call(self, name: str, clientid: str | None = None) -> None:
        """One of the extension's calls the network answers without using it for status
        (fingerprint, geocode, announcements, ...)."""
        with self._lock:
            self.calls[name] = self.calls.get(name, 0) + 1
            node = self._nodes.get(clientid or "")
            if node is not None and name == "fp/add":
                node.fingerprints += 1

    def heartbeat(self, uid: str, clientid: str, ip: str, version: str = "") -> dict[str, Any]:
        """Register or refresh a node; answers what the extension stores."""
        if not clientid or len(clientid) > 128:
            raise ValueError("clientid required")
        with self._lock:
            self._advance()
            now = self._clock()
            node = self._nodes.get(clientid)
            banned, reason = self.classify_ip(ip)
            if node is None:
                node = Node(
                    clientid=clientid,
                    uid=uid,
                    ip=ip,
                    version=version,
                    first_seen_sim=self._sim_at(now),
                    seg_start=now,
                    last_hb=now,
                )
                self._nodes[clientid] = node
            else:
                if node.uid != uid:
                    # The extension was logged into another account: the node moves with it.
                    node.uid = uid
                if not self._connected(node, now) or node.ip != ip:
                    node.seg_start = now  # a new online streak (a new IP starts afresh)
                node.last_hb = now
                node.ip = ip
                if version:
                    node.version = version
            if node.ban is not None:
                banned, reason = True, node.ban
            node.banned, node.banned_reason = banned, reason
            node.nat_type = self.nat_type_of(ip)
            node.location = self.location_of(ip)
            return {"connect": True, "banned": banned, "bannedReason": reason, "ip": ip}

    def _today(self) -> str:
        return day_id(self._sim_at(self._clock()))

    def _active(self, node: Node, now: float) -> bool:
        """Seen online within the last sim day."""
        return self._sim_at(self._online_until(node)) >= self._sim_at(now) - DAY_SECONDS

    def _owned(self, uid: str, clientid: str) -> Node | None:
        node = self._nodes.get(clientid)
        if node is None or node.uid != uid:
            return None
        return node

    def node_view(self, uid: str, clientid: str) -> dict[str, Any] | None:
        """``GET /sentrynode/get/{clientid}`` data, or None when unknown / not the caller's."""
        with self._lock:
            self._advance()
            node = self._owned(uid, clientid)
            if node is None:
                return None
            now = self._clock()
            today = node.days.get(self._today())
            return {
                "active": self._active(node, now),
                "connect": self._connected(node, now),
                "banned": node.banned,
                "bannedReason": node.banned_reason,
                "ip": node.ip,
                "today": today.points if today else 0,
                "season": node.total_points,
                "location": node.location.model_dump(),
            }

    def node_list(
        self,
        uid: str,
        *,
        page: int = 1,
        size: int = 10,
        field: str = "active",
        direction: int = 0,
        active: bool | None = None,
        banned: bool | None = None,
        hide: int = 0,
    ) -> list[dict[str, Any]]:
        """``POST /sentrynode/list`` data. direction 0 sorts descending, 1 ascending;
        ``hide`` 1 leaves out disconnected nodes."""
        with self._lock:
            self._advance()
            now = self._clock()
            today_id = self._today()
            rows: list[dict[str, Any]] = []
            for node in self._nodes.values():
                if node.uid != uid:
                    continue
                connect = self._connected(node, now)
                is_active = self._active(node, now)
                if active is not None and is_active != active:
                    continue
                if banned is not None and node.banned != banned:
                    continue
                if hide and not connect:
                    continue
                today = node.days.get(today_id)
                rows.append(
                    {
                        "name": node.clientid,
                        "connect": connect,
                        "point": node.total_points,
                        "today": today.points if today else 0,
                        "latency": today.latency if today else 0,
                        "location": node.location,  # dumped for the page's rows only
                        "ip": node.ip,
                        "banned": node.banned,
                    }
                )
        # "active" orders connected nodes first (they are the active ones).
        key = {"active": "connect"}.get(field, field)
        if key not in {"connect", "point", "today", "latency", "name", "ip"}:
            key = "name"
        rows.sort(key=lambda r: r["name"])  # stable tie-break
        rows.sort(key=lambda r: r[key], reverse=(direction == 0))
        page = max(1, int(page or 1))
        size = max(1, min(int(size or 10), 1000))
        return [
            {**row, "location": row["location"].model_dump()}
            for row in rows[(page - 1) * size : page * size]
        ]

    def _day_ids(self, first_sim: float, start_ms: int, end_ms: int) -> list[str]:
        lo = max(day_start(first_sim), day_start(start_ms / 1000.0))
        hi = min(self._sim_at(self._clock()), end_ms / 1000.0)
        out: list[str] = []
        d = lo
        while d <= hi and len(out) < 3700:
            out.append(day_id(d))
            d += DAY_SECONDS
        return out

    def node_stats(
        self, uid: str, clientid: str, start_ms: int, end_ms: int
    ) -> list[dict[str, Any]] | None:
        """``POST /sentrynode/stats/{clientid}`` data, or None when unknown / not the caller's."""
        with self._lock:
            self._advance()
            node = self._owned(uid, clientid)
            if node is None:
                return None
            out = []
            for did in self._day_ids(node.first_seen_sim, start_ms, end_ms):
                nd = node.days.get(did) or SimulatedDay()
                out.append(
                    {
                        "id": did,
                        "duration": int(nd.duration + _EPS),
                        "latency": nd.latency,
                    }
                )
            return out

    def point_stats(self, uid: str, start_ms: int, end_ms: int) -> list[dict[str, Any]]:
        """``POST /point/stats`` data (type DAY)."""
        with self._lock:
            self._advance()
            acc = self._accounts[uid]
            return [
                {
                    "id": did,
                    "node": acc.node_points.get(did, 0),
                    "referral": acc.config.referral_per_day,
                    "bonus": acc.config.bonus_per_day,
                    "boost": acc.config.boost_per_day,
                }
                for did in self._day_ids(self.start_time, start_ms, end_ms)
            ]

    def profile(self, uid: str) -> dict[str, Any]:
        """``POST /user/profile`` data."""
        with self._lock:
            self._advance()
            acc = self._accounts[uid]
            days = len(self._day_ids(self.start_time, 0, 2**62))
            referral = acc.config.referral_per_day * days
            extra = (acc.config.bonus_per_day + acc.config.boost_per_day) * days
            total = sum(acc.node_points.values()) + referral + extra
            now = self._clock()
            active = sum(
                1
                for n in self._nodes.values()
                if n.uid == uid and self._connected(n, now) and not n.banned
            )
            return {
                "name": acc.config.name,
                "point": {"total": total, "balance": total, "referral": referral},
                "node": {"sentryActive": active},
                # what the extension's popup also reads of the profile (bundle v1.0.16)
                "email": acc.config.email,
                "code": uid[:8].upper(),
                "stats": {"invitee": 0, "pending": 0},
            }

    # ---- faults ------------------------------------------------------------------------------

    def _coerce_fault(self, fault: Fault | Mapping[str, Any]) -> Fault:
        return fault if isinstance(fault, Fault) else Fault.model_validate(dict(fault))

    def add_fault(self, fault: Fault | Mapping[str, Any]) -> None:
        f = self._coerce_fault(fault)
        with self._lock:
            if f.kind == "expire_tokens":
                self.expire_tokens()
            else:
                self._faults.append(f)

    def set_faults(self, faults: Iterable[Fault | Mapping[str, Any]]) -> None:
        """Replace the active faults."""
        coerced = [self._coerce_fault(f) for f in faults]
        with self._lock:
            self._faults = []
            for f in coerced:
                self.add_fault(f)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults = []

    def faults(self) -> list[dict[str, Any]]:
        with self._lock:
            return [f.model_dump() for f in self._faults]

    def take_faults(self, path: str) -> list[Fault]:
        """Faults that apply to one request on ``path``; consumes one of each one's count."""
        with self._lock:
            hits: list[Fault] = []
            keep: list[Fault] = []
            for f in self._faults:
                if path.startswith(f.path) and (f.count is None or f.count > 0):
                    f._seen += 1  # noqa: SLF001 - the fault's own counter
                    if f._seen % f.every == 0:  # noqa: SLF001
                        hits.append(f.model_copy())
                        if f.count is not None:
                            f.count -= 1
                if f.count is None or f.count > 0:
                    keep.append(f)
            self._faults = keep
            self.counters["faulted"] += sum(1 for f in hits if f.kind in ("error", "rate_limit"))
            return hits

    # ---- inspection --------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Everything, for ``GET /__sandbox/state`` and tests."""
        with self._lock:
            self._advance()
            now = self._clock()
            sim = self._sim_at(now)
            today_id = day_id(sim)
            return {
                "simTime": int(sim * 1000),
                "simDay": today_id,
                "startTime": int(self.start_time * 1000),
                "speed": self.config.speed,
                "tapRounds": self.tap_rounds,
                "counters": dict(self.counters),
                "accounts": [
                    {
                        "uid": acc.uid,
                        "email": acc.config.email,
                        "name": acc.config.name,
                        "nodePoints": sum(acc.node_points.values()),
                    }
                    for acc in self._accounts.values()
                ],
                "nodes": [
                    {
                        "clientid": n.clientid,
                        "uid": n.uid,
                        "ip": n.ip,
                        "version": n.version,
                        "connect": self._connected(n, now),
                        "banned": n.banned,
                        "bannedReason": n.banned_reason,
                        "natType": n.nat_type,
                        "location": n.location.model_dump(),
                        "point": n.total_points,
                        "today": n.days[today_id].points if today_id in n.days else 0,
                        "secondsSinceHeartbeat": round(now - n.last_hb, 3),
                        "presence": n.presence,
                        "mqttConnections": n.connections,
                        "mqttMessages": dict(n.messages),
                        "fingerprints": n.fingerprints,
                        "days": {
                            did: {
                                "duration": int(nd.duration + _EPS),
                                "latency": nd.latency,
                                "uptimePoints": nd.uptime_points,
                                "tapPoints": nd.tap_points,
                            }
                            for did, nd in sorted(n.days.items())
                        },
                    }
                    for n in self._nodes.values()
                ],
                "faults": [f.model_dump() for f in self._faults],
                "calls": dict(self.calls),
                "pendingTasks": len(self._tasks),
            }
