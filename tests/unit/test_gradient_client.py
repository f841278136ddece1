"""The Gradient client's parsing and error mapping, against canned answers (httpx.MockTransport).

The sandbox integration test checks the same client against a live stand-in server; here each
test scripts exactly what Gradient and Firebase answer.
"""

from __future__ import annotations

import json
import logging
import pickle
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from gradientlab.gradient import (
    FirebaseSession,
    GradientAuthError,
    GradientClient,
    GradientConnectionError,
    GradientEndpoints,
    GradientError,
    GradientNotFound,
    GradientRateLimited,
    GradientResponseError,
    GradientServerError,
    NodeDay,
    PointDay,
    points,
)
from gradientlab.gradient.throttle import NO_RETRY

API = "https://api.test/api"
IDENTITY = "https://identity.test"
TOKEN = "https://token.test"
KEY = "web-key-4f1c"
EMAIL = "operator@example.com"
PASSWORD = "hunter2-correct-horse"
TOKENS = ("id-token-1", "id-token-2", "id-token-3", "refresh-1", "refresh-2")
SECRETS = (PASSWORD, *TOKENS, KEY)

Answer = httpx.Response | Callable[[httpx.Request], httpx.Response]


def envelope(data: Any, code: Any = 200, msg: str = "ok", **extra: Any) -> httpx.Response:
    return httpx.Response(200, json={"code": code, "msg": msg, "data": data, **extra})


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeGradient:
    """Gradient's API and Firebase, scripted per test; records every request."""

    def __init__(self) -> None:
        self.routes: dict[str, list[Answer]] = {}
        self.requests: list[httpx.Request] = []
        self.sign_ins = 0
        self.refreshes = 0
        self.expires_in = "3600"
        self.sign_in_error: str | None = None
        self.refresh_error: str | None = None

    def on(self, method: str, path: str, *answers: Answer) -> None:
        """Queue answers for one API path; the last one repeats."""
        self.routes[f"{method} {path}"] = list(answers)

    def api_requests(self, method: str, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method and _path(r) == f"/api{path}"]

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        url = request.url
        if url.host == "identity.test" and url.path == "/v1/accounts:signInWithPassword":
            assert url.params["key"] == KEY
            body = json.loads(request.content)
            if self.sign_in_error or body["password"] != PASSWORD:
                message = self.sign_in_error or "INVALID_PASSWORD"
                return httpx.Response(400, json={"error": {"code": 400, "message": message}})
            assert body == {"email": EMAIL, "password": PASSWORD, "returnSecureToken": True}
            self.sign_ins += 1
            return httpx.Response(
                200,
                json={
                    "kind": "identitytoolkit#VerifyPasswordResponse",
                    "localId": "uid-1",
                    "email": EMAIL,
                    "idToken": f"id-token-{self.sign_ins + self.refreshes}",
                    "refreshToken": f"refresh-{self.sign_ins}",
                    "expiresIn": self.expires_in,
                    "registered": True,
                },
            )
        if url.host == "token.test" and url.path == "/v1/token":
            assert url.params["key"] == KEY
            form = parse_qs(request.content.decode())
            assert form["grant_type"] == ["refresh_token"]
            if self.refresh_error:
                return httpx.Response(
                    400, json={"error": {"code": 400, "message": self.refresh_error}}
                )
            self.refreshes += 1
            return httpx.Response(
                200,
                json={
                    "access_token": "ignored",
                    "id_token": f"id-token-{self.sign_ins + self.refreshes}",
                    "refresh_token": form["refresh_token"][0],
                    "expires_in": self.expires_in,
                    "token_type": "Bearer",
                    "user_id": "uid-1",
                    "project_id": "123",
                },
            )
        assert url.host == "api.test", url
        key = f"{request.method} {_path(request).removeprefix('/api')}"
        answers = self.routes.get(key)
        if not answers:
            return httpx.Response(404, text="no route")
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        return answer(request) if callable(answer) else answer


def _path(request: httpx.Request) -> str:
    """The path as sent, still percent-encoded."""
    return request.url.raw_path.decode().split("?")[0]


@pytest.fixture
def fake() -> FakeGradient:
    return FakeGradient()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def client(fake: FakeGradient, clock: FakeClock) -> Iterator[GradientClient]:
    endpoints = GradientEndpoints(
        api_base=API + "/", identity_base=IDENTITY, token_base=TOKEN, web_api_key=KEY
    )
    http = httpx.Client(transport=httpx.MockTransport(fake.handle))
    # One try per request: these tests script each answer; retries have their own tests.
    with GradientClient(
        endpoints, EMAIL, PASSWORD, http=http, clock=clock, retry=NO_RETRY
    ) as gradient:
        yield gradient
    http.close()


def assert_no_secret(text: str, secrets: tuple[str, ...] = SECRETS) -> None:
    for secret in secrets:
        assert secret not in text, f"secret {secret[:3]}... leaked into: {text}"


# -- envelope and parsing ------------------------------------------------------------------------

PROFILE = {
    "name": "operator",
    "avatar": "x.png",
    "point": {"total": 1234567, "balance": 1000000, "referral": 234567, "season": 2},
    "node": {"sentryActive": 3, "sentryTotal": 4},
    "inviteCode": "ABC",
}


def test_profile_reads_the_envelope_and_keeps_raw_points(
    client: GradientClient, fake: FakeGradient
) -> None:
    fake.on("POST", "/user/profile", envelope(PROFILE, traceId="t-1"))

    profile = client.profile()

    assert profile.name == "operator"
    assert profile.point_total == 1234567
    assert isinstance(profile.point_total, int)
    assert points(profile.point_total) == Decimal("12.34567")
    assert (profile.point_balance, profile.point_referral, profile.sentry_active) == (
        1000000,
        234567,
        3,
    )
    request = fake.api_requests("POST", "/user/profile")[0]
    assert request.headers["Authorization"] == "Bearer id-token-1"


def test_points_display_is_exact() -> None:
    assert points(1234567) == Decimal("12.34567")
    assert points(0) == 0
    assert points(25000) == Decimal("0.25")
    assert str(points(75000)) == "0.75000"


def test_point_stats_sends_ms_window_and_parses_days(
    client: GradientClient, fake: FakeGradient
) -> None:
    rows = [
        {"id": "20240301", "node": 1234567, "referral": 0, "bonus": 5, "boost": 0, "new": "x"},
        {"id": 20240302, "node": 100000.0, "referral": 1, "bonus": 0, "boost": 2, "extra": {}},
    ]
    fake.on("POST", "/point/stats", envelope(rows))

    days = client.point_stats(
        datetime(2024, 3, 1, tzinfo=UTC),
        datetime(2024, 3, 3),  # naive counts as UTC
    )

    assert days == [
        PointDay(day=date(2024, 3, 1), node=1234567, referral=0, bonus=5, boost=0),
        PointDay(day=date(2024, 3, 2), node=100000, referral=1, bonus=0, boost=2),
    ]
    body = json.loads(fake.api_requests("POST", "/point/stats")[0].content)
    assert body == {"start": 1709251200000, "end": 1709424000000, "type": "DAY"}


def test_node_stats_reads_latency_as_taps(client: GradientClient, fake: FakeGradient) -> None:
    fake.on(
        "POST",
        "/sentrynode/stats/client-a",
        envelope([{"id": "20240301", "duration": 86400, "latency": 12, "unused": [1, 2]}]),
    )

    days = client.node_stats("client-a", datetime(2024, 3, 1), datetime(2024, 3, 2))

    assert days == [NodeDay(day=date(2024, 3, 1), duration=86400, taps=12)]


def test_node_tolerates_missing_location_and_banned_reason(
    client: GradientClient, fake: FakeGradient
) -> None:
    fake.on(
        "GET",
        "/sentrynode/get/client-a",
        envelope(
            {
                "active": True,
                "connect": False,
                "banned": True,
                "ip": "203.0.113.7",
                "today": 250000,
                "season": 2,
                "somethingNew": {"deep": True},
            }
        ),
    )

    node = client.node("client-a")

    assert node is not None
    assert node.banned and not node.connect
    assert node.banned_reason is None and node.country is None and node.place is None
    assert node.today == 250000 and node.season == 2 and node.ip == "203.0.113.7"


def test_node_reads_location_and_banned_reason(client: GradientClient, fake: FakeGradient) -> None:
    data = {
        "active": True,
        "connect": True,
        "banned": True,
        "bannedReason": "Datacenter IP",
        "ip": "198.51.100.1",
        "today": 0,
        "season": "S2",
        "location": {"country": "US", "place": "Oregon", "lat": 1.0},
    }
    fake.on("GET", "/sentrynode/get/client-b", envelope(data))

    node = client.node("client-b")

    assert node is not None
    assert (node.banned_reason, node.country, node.place, node.season) == (
        "Datacenter IP",
        "US",
        "Oregon",
        "S2",
    )


def test_unknown_node_is_none(client: GradientClient, fake: FakeGradient) -> None:
    fake.on("GET", "/sentrynode/get/nope", envelope(None, code=404, msg="node not found"))

    assert client.node("nope") is None


def test_client_id_is_quoted_into_one_path_segment(
    client: GradientClient, fake: FakeGradient
) -> None:
    fake.on("GET", "/sentrynode/get/a%2F..%2Fb", envelope(None, code=404))

    assert client.node("a/../b") is None
    assert fake.requests[-1].url.raw_path == b"/api/sentrynode/get/a%2F..%2Fb"


def node_row(index: int) -> dict[str, Any]:
    return {
        "id": f"c{index}",
        "name": f"node-{index}",
        "connect": True,
        "point": 100000 * index,
        "today": index,
        "latency": index % 3,
        "location": {"country": "DE", "place": "Berlin"},
        "extra": "ignored",
    }


def test_node_list_sends_the_dashboard_query(client: GradientClient, fake: FakeGradient) -> None:
    fake.on("POST", "/sentrynode/list", envelope([node_row(1), {**node_row(2), "ip": "1.2.3.4"}]))

    nodes = client.node_list(page=3, size=50)

    assert [n.name for n in nodes] == ["node-1", "node-2"]
    assert nodes[0].taps == 1 and nodes[0].country == "DE" and nodes[0].ip is None
    assert nodes[1].ip == "1.2.3.4" and nodes[1].banned is None and nodes[1].point == 200000
    body = json.loads(fake.api_requests("POST", "/sentrynode/list")[0].content)
    assert body == {
        "page": 3,
        "size": 50,
        "field": "active",
        "direction": 0,
        "active": True,
        "banned": "",
        "hide": 0,
    }


def test_all_nodes_pages_until_a_short_page(client: GradientClient, fake: FakeGradient) -> None:
    def page(request: httpx.Request) -> httpx.Response:
        number = json.loads(request.content)["page"]
        rows = {1: [node_row(1), node_row(2)], 2: [node_row(3), node_row(4)], 3: [node_row(5)]}
        return envelope(rows.get(number, []))

    fake.on("POST", "/sentrynode/list", page)

    nodes = client.all_nodes(size=2)

    assert [n.name for n in nodes] == [f"node-{i}" for i in range(1, 6)]
    assert len(fake.api_requests("POST", "/sentrynode/list")) == 3


def test_all_nodes_stops_on_an_empty_page(client: GradientClient, fake: FakeGradient) -> None:
    fake.on("POST", "/sentrynode/list", envelope([node_row(1), node_row(2)]), envelope(None))

    assert len(client.all_nodes(size=2)) == 2


def test_all_nodes_refuses_a_server_that_ignores_paging(
    client: GradientClient, fake: FakeGradient
) -> None:
    fake.on("POST", "/sentrynode/list", envelope([node_row(1), node_row(2)]))

    with pytest.raises(GradientResponseError, match="ignores paging"):
        client.all_nodes(size=2)


def test_status_reads_ip_and_time(client: GradientClient, fake: FakeGradient) -> None:
    fake.on(
        "GET",
        "/status",
        envelope({"ip": "203.0.113.9", "time": 1709251200000, "v": 1}),
        envelope({"ip": "203.0.113.9", "time": "2024-03-01T00:00:00"}),
    )

    first, second = client.status(), client.status()

    assert first.ip == "203.0.113.9"
    assert first.time == datetime(2024, 3, 1, tzinfo=UTC) == second.time
    assert second.time.tzinfo is not None


# -- strict about the fields the code uses -------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "call", "data", "field"),
    [
        (
            "POST",
            "/point/stats",
            lambda c: c.point_stats(datetime(2024, 3, 1), datetime(2024, 3, 2)),
            [{"node": 1, "referral": 0, "bonus": 0, "boost": 0}],
            "data[0].id",
        ),
        (
            "POST",
            "/point/stats",
            lambda c: c.point_stats(datetime(2024, 3, 1), datetime(2024, 3, 2)),
            [{"id": "20240301", "referral": 0, "bonus": 0, "boost": 0}],
            "data[0].node",
        ),
        (
            "POST",
            "/point/stats",
            lambda c: c.point_stats(datetime(2024, 3, 1), datetime(2024, 3, 2)),
            [{"id": "2024-03-01", "node": 1, "referral": 0, "bonus": 0, "boost": 0}],
            "data[0].id",
        ),
        (
            "POST",
            "/sentrynode/stats/c1",
            lambda c: c.node_stats("c1", datetime(2024, 3, 1), datetime(2024, 3, 2)),
            [
                {"id": "20240301", "duration": 1, "latency": 0},
                {"id": "20240302", "latency": 0},
            ],
            "data[1].duration",
        ),
        (
            "POST",
            "/sentrynode/stats/c1",
            lambda c: c.node_stats("c1", datetime(2024, 3, 1), datetime(2024, 3, 2)),
            [{"id": "20240301", "duration": "lots", "latency": 0}],
            "data[0].duration",
        ),
        (
            "POST",
            "/sentrynode/stats/c1",
            lambda c: c.node_stats("c1", datetime(2024, 3, 1), datetime(2024, 3, 2)),
            [{"id": "20240301", "duration": 1.5, "latency": 0}],
            "data[0].duration",
        ),
        (
            "POST",
            "/user/profile",
            lambda c: c.profile(),
            {"name": "x", "point": {"total": 1, "balance": 1}, "node": {"sentryActive": 1}},
            "data.point.referral",
        ),
        (
            "POST",
            "/sentrynode/list",
            lambda c: c.node_list(),
            [{"name": "n", "connect": True, "point": True, "today": 0, "latency": 0}],
            "data[0].point",
        ),
        (
            "GET",
            "/sentrynode/get/c1",
            lambda c: c.node("c1"),
            {"active": True, "connect": True, "banned": False, "ip": None},
            "data.today",
        ),
        ("GET", "/status", lambda c: c.status(), {"ip": "1.2.3.4"}, "data.time"),
        ("GET", "/status", lambda c: c.status(), ["1.2.3.4"], "data"),
        (
            "POST",
            "/point/stats",
            lambda c: c.point_stats(datetime(2024, 3, 1), datetime(2024, 3, 2)),
            {"items": []},
            "data",
        ),
    ],
)
def test_missing_or_mistyped_field_names_endpoint_and_field(
    client: GradientClient,
    fake: FakeGradient,
    method: str,
    path: str,
    call: Callable[[GradientClient], object],
    data: Any,
    field: str,
) -> None:
    fake.on(method, path, envelope(data))

    with pytest.raises(GradientResponseError) as caught:
        call(client)

    assert caught.value.endpoint == f"{method} {path}"
    assert caught.value.field == field
    assert f"{method} {path}" in str(caught.value) and field in str(caught.value)


def test_envelope_missing(client: GradientClient, fake: FakeGradient) -> None:
    fake.on("GET", "/status", httpx.Response(200, json={"ip": "1.2.3.4", "time": 1}))

    with pytest.raises(GradientResponseError, match=r"GET /status.*envelope"):
        client.status()


def test_answer_not_json(client: GradientClient, fake: FakeGradient) -> None:
    fake.on("GET", "/status", httpx.Response(200, text="<html>captive portal</html>"))

    with pytest.raises(GradientResponseError, match=r"GET /status.*not JSON"):
        client.status()


def test_envelope_without_data(client: GradientClient, fake: FakeGradient) -> None:
    fake.on("GET", "/status", httpx.Response(200, json={"code": 200, "msg": "ok"}))

    with pytest.raises(GradientResponseError) as caught:
        client.status()
    assert caught.value.field == "data"


def test_unexpected_envelope_code(client: GradientClient, fake: FakeGradient) -> None:
    fake.on("POST", "/point/stats", envelope(None, code=400, msg="bad type"))

    with pytest.raises(GradientResponseError, match=r"POST /point/stats.*code 400: bad type"):
        client.point_stats(datetime(2024, 3, 1), datetime(2024, 3, 2))


def test_not_found_elsewhere_raises(client: GradientClient, fake: FakeGradient) -> None:
    fake.on("POST", "/sentrynode/stats/gone", envelope(None, code=404))

    with pytest.raises(GradientNotFound) as caught:
        client.node_stats("gone", datetime(2024, 3, 1), datetime(2024, 3, 2))
    assert caught.value.endpoint == "POST /sentrynode/stats/gone"


# -- failures to retry later ---------------------------------------------------------------------


def test_http_429_reads_retry_after(client: GradientClient, fake: FakeGradient) -> None:
    fake.on("GET", "/status", httpx.Response(429, headers={"Retry-After": "7"}, text="slow down"))

    with pytest.raises(GradientRateLimited) as caught:
        client.status()

    assert caught.value.retry_after == 7
    assert caught.value.endpoint == "GET /status"
    assert caught.value.retryable
    assert "retry after 7 s" in str(caught.value)
    assert len(fake.api_requests("GET", "/status")) == 1


def test_envelope_429_and_http_date_retry_after(client: GradientClient, fake: FakeGradient) -> None:
    fake.on(
        "GET",
        "/status",
        httpx.Response(
            200,
            json={"code": 429, "msg": "too many", "data": None},
            headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"},
        ),
        envelope(None, code=429),
    )

    with pytest.raises(GradientRateLimited) as past:
        client.status()
    with pytest.raises(GradientRateLimited) as unsaid:
        client.status()

    assert past.value.retry_after == 0.0
    assert unsaid.value.retry_after is None


@pytest.mark.parametrize(
    "answer", [httpx.Response(503, text="upstream down"), envelope(None, code=500, msg="db")]
)
def test_server_error_names_the_endpoint_and_is_not_retried(
    client: GradientClient, fake: FakeGradient, answer: httpx.Response
) -> None:
    fake.on("POST", "/sentrynode/list", answer)

    with pytest.raises(GradientServerError) as caught:
        client.node_list()

    assert caught.value.status in (503, 500)
    assert caught.value.endpoint == "POST /sentrynode/list"
    assert "POST /sentrynode/list" in str(caught.value)
    assert len(fake.api_requests("POST", "/sentrynode/list")) == 1


def test_no_answer_is_a_connection_error(client: GradientClient, fake: FakeGradient) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"refused, headers were {request.headers}", request=request)

    fake.on("GET", "/status", refuse)

    with pytest.raises(GradientConnectionError) as caught:
        client.status()

    assert caught.value.endpoint == "GET /status" and caught.value.retryable
    assert caught.value.__cause__ is None
    assert_no_secret(str(caught.value))


def test_errors_survive_pickling() -> None:
    error = GradientRateLimited("slow", endpoint="GET /status", retry_after=7.0)

    copy = pickle.loads(pickle.dumps(error))

    assert isinstance(copy, GradientRateLimited)
    assert (str(copy), copy.endpoint, copy.retry_after) == ("slow", "GET /status", 7.0)


# -- auth ----------------------------------------------------------------------------------------


def test_401_once_refreshes_and_succeeds(client: GradientClient, fake: FakeGradient) -> None:
    fake.on(
        "GET",
        "/status",
        httpx.Response(401, json={"code": 401, "msg": "token expired"}),
        envelope({"ip": "1.2.3.4", "time": 0}),
    )

    assert client.status().ip == "1.2.3.4"

    tokens = [r.headers["Authorization"] for r in fake.api_requests("GET", "/status")]
    assert tokens == ["Bearer id-token-1", "Bearer id-token-2"]
    assert (fake.sign_ins, fake.refreshes) == (1, 1)


def test_envelope_401_also_refreshes(client: GradientClient, fake: FakeGradient) -> None:
    fake.on(
        "GET",
        "/status",
        envelope(None, code=401, msg="unauthorized"),
        envelope({"ip": "1.2.3.4", "time": 0}),
    )

    assert client.status().ip == "1.2.3.4"
    assert fake.refreshes == 1


def test_401_twice_is_an_auth_error_without_a_loop(
    client: GradientClient, fake: FakeGradient
) -> None:
    fake.on("GET", "/status", httpx.Response(401))

    with pytest.raises(GradientAuthError, match="GET /status"):
        client.status()

    assert len(fake.api_requests("GET", "/status")) == 2
    assert fake.refreshes == 1


def test_refused_refresh_falls_back_to_signing_in(
    client: GradientClient, fake: FakeGradient
) -> None:
    fake.refresh_error = "TOKEN_EXPIRED"
    fake.on("GET", "/status", httpx.Response(401), envelope({"ip": "1.2.3.4", "time": 0}))

    assert client.status().ip == "1.2.3.4"
    assert (fake.sign_ins, fake.refreshes) == (2, 0)


def test_bad_password_is_an_auth_error(fake: FakeGradient) -> None:
    endpoints = GradientEndpoints(
        api_base=API, identity_base=IDENTITY, token_base=TOKEN, web_api_key=KEY
    )
    http = httpx.Client(transport=httpx.MockTransport(fake.handle))
    wrong = "wrong-password-9"
    fake.on("GET", "/status", envelope({"ip": "1.2.3.4", "time": 0}))

    with (
        GradientClient(endpoints, EMAIL, wrong, http=http) as gradient,
        pytest.raises(GradientAuthError) as caught,
    ):
        gradient.status()

    assert "INVALID_PASSWORD" in str(caught.value)
    assert caught.value.endpoint == "POST /v1/accounts:signInWithPassword"
    assert wrong not in str(caught.value) and KEY not in str(caught.value)
    assert fake.api_requests("GET", "/status") == []


def test_firebase_message_echoing_a_secret_is_scrubbed(fake: FakeGradient) -> None:
    fake.sign_in_error = f"INVALID_LOGIN_CREDENTIALS for {PASSWORD} with key {KEY}"
    session = FirebaseSession(
        httpx.Client(transport=httpx.MockTransport(fake.handle)),
        GradientEndpoints(identity_base=IDENTITY, token_base=TOKEN, web_api_key=KEY),
    )

    with pytest.raises(GradientAuthError) as caught:
        session.sign_in(EMAIL, PASSWORD)

    assert "INVALID_LOGIN_CREDENTIALS" in str(caught.value)
    assert_no_secret(str(caught.value))


def test_refresh_uses_form_encoding(fake: FakeGradient, clock: FakeClock) -> None:
    session = FirebaseSession(
        httpx.Client(transport=httpx.MockTransport(fake.handle)),
        GradientEndpoints(identity_base=IDENTITY, token_base=TOKEN, web_api_key=KEY),
        clock=clock,
    )
    session.sign_in(EMAIL, PASSWORD)

    session.refresh()

    request = fake.requests[-1]
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert parse_qs(request.content.decode()) == {
        "grant_type": ["refresh_token"],
        "refresh_token": ["refresh-1"],
    }
    assert session.bearer_token() == "id-token-2"
    assert session.uid == "uid-1" and session.expires_in() == 3600


def test_token_is_refreshed_near_expiry(
    client: GradientClient, fake: FakeGradient, clock: FakeClock
) -> None:
    fake.on("GET", "/status", envelope({"ip": "1.2.3.4", "time": 0}))

    client.status()  # signs in: token valid until 1000 + 3600
    clock.now += 3000  # 600 s left: still used
    client.status()
    clock.now += 301  # 299 s left: renewed first
    client.status()

    tokens = [r.headers["Authorization"] for r in fake.api_requests("GET", "/status")]
    assert tokens == ["Bearer id-token-1", "Bearer id-token-1", "Bearer id-token-2"]
    assert (fake.sign_ins, fake.refreshes) == (1, 1)


def test_short_lived_token_is_refreshed_before_use(
    client: GradientClient, fake: FakeGradient
) -> None:
    fake.expires_in = "120"
    fake.on("GET", "/status", envelope({"ip": "1.2.3.4", "time": 0}))

    client.status()

    assert fake.refreshes == 1


def test_sign_in_answer_missing_token_names_the_field(fake: FakeGradient) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"refreshToken": "r", "expiresIn": "3600"})

    session = FirebaseSession(
        httpx.Client(transport=httpx.MockTransport(handler)),
        GradientEndpoints(web_api_key=KEY),
    )

    with pytest.raises(GradientResponseError) as caught:
        session.sign_in(EMAIL, PASSWORD)
    assert caught.value.field == "idToken"


# -- secrets -------------------------------------------------------------------------------------


def test_no_secret_in_reprs_errors_or_logs(
    client: GradientClient, fake: FakeGradient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.on(
        "GET",
        "/status",
        httpx.Response(401),
        envelope(None, code=400, msg="bad token id-token-2 for refresh-1"),
    )

    with pytest.raises(GradientError) as caught:
        client.status()

    assert "***" in str(caught.value)
    for text in (
        str(caught.value),
        repr(caught.value),
        repr(client),
        repr(client.session),
        repr(client.endpoints),
    ):
        assert_no_secret(text)
    assert EMAIL in repr(client)
    # httpx itself logs request URLs, which carry the (public) web API key; never a credential.
    assert_no_secret(caplog.text, secrets=(PASSWORD, *TOKENS))
    assert "Bearer" not in caplog.text


def test_client_closes_only_its_own_http_client(fake: FakeGradient) -> None:
    endpoints = GradientEndpoints(web_api_key=KEY)
    shared = httpx.Client(transport=httpx.MockTransport(fake.handle))

    with GradientClient(endpoints, EMAIL, PASSWORD, http=shared):
        pass
    with GradientClient(endpoints, EMAIL, PASSWORD) as own:
        owned = own._http

    assert not shared.is_closed
    assert owned.is_closed
