"""The one client for Gradient's internal API and its Firebase sign-in.

All transport lives in ``GradientClient._call``: the bearer token, the ``{code, msg, data}``
envelope, and the mapping of failures to ``gradientlab.gradient.errors``. Each request waits its
turn under the client's rate limit and is tried again by itself on 429 (after its Retry-After),
5xx or no answer, within ``RetryPolicy``'s bounds, so one throttled call never restarts a batch;
a token Gradient rejects is renewed once.

Every address comes from ``GradientEndpoints``, so the same code talks to the real network or to
any stand-in with the same paths and fields.
"""

from __future__ import annotations

import copy
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from gradientlab.gradient.errors import (
    GradientAuthError,
    GradientConnectionError,
    GradientError,
    GradientNotFound,
    GradientRateLimited,
    GradientResponseError,
    GradientServerError,
    GradientSignInRefused,
)
from gradientlab.gradient.models import (
    NetworkStatus,
    NodeDay,
    NodeInfo,
    NodeListItem,
    PointDay,
    Profile,
)
from gradientlab.gradient.throttle import LearnedPace, RateLimiter, RetryPolicy
from gradientlab.retry_after import parse_retry_after

logger = logging.getLogger(__name__)

REFRESH_MARGIN = 300.0
"""Seconds before an ID token expires at which it is renewed instead of used."""

DEFAULT_TIMEOUT = 30.0
USER_AGENT = "gradientlab"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_QUOTED = 200

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, kw_only=True)
class GradientEndpoints:
    """Where Gradient and its Firebase project live. Defaults are the real network."""

    api_base: str = "https://api.gradient.network/api"
    identity_base: str = "https://identitytoolkit.googleapis.com"
    token_base: str = "https://securetoken.googleapis.com"
    web_api_key: str = field(repr=False)

    def __post_init__(self) -> None:
        for name in ("api_base", "identity_base", "token_base"):
            object.__setattr__(self, name, getattr(self, name).rstrip("/"))


class _Secrets:
    """The strings that must never reach a log line or an exception message."""

    def __init__(self) -> None:
        self._values: set[str] = set()

    def add(self, *values: str | None) -> None:
        self._values.update(v for v in values if v)

    def discard(self, *values: str | None) -> None:
        self._values.difference_update(v for v in values if v)

    def scrub(self, text: str) -> str:
        for value in sorted(self._values, key=len, reverse=True):
            text = text.replace(value, "***")
        return text[:_MAX_QUOTED] + ("..." if len(text) > _MAX_QUOTED else "")


def _ms(moment: datetime) -> int:
    """Milliseconds since the epoch; a naive datetime is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def request_within(
    http: httpx.Client, method: str, url: str, timeout: float | httpx.Timeout, **kwargs: Any
) -> httpx.Response:
    """One request with a deadline for the whole exchange, not only per phase: a server that
    trickles its answer byte by byte still ends by the deadline (plus one phase's wait)."""
    total = timeout if isinstance(timeout, int | float) else (timeout.read or DEFAULT_TIMEOUT)
    deadline = time.monotonic() + total
    with http.stream(method, url, timeout=timeout, **kwargs) as response:
        chunks = []
        for chunk in response.iter_bytes():
            chunks.append(chunk)
            if time.monotonic() > deadline:
                raise httpx.ReadTimeout(f"no complete answer within {total:g} s")
        response._content = b"".join(chunks)  # what Response.read() keeps  # noqa: SLF001
    return response


def _retry_after(response: httpx.Response) -> float | None:
    """The answer's Retry-After in seconds (the project's one parser: seconds or HTTP-date),
    not cut: the retry policy bounds the wait and hands a longer one to the caller as said."""
    return parse_retry_after(response.headers.get("Retry-After"), maximum=math.inf)


_NOT_JSON: Any = object()


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return _NOT_JSON


def _field_path(prefix: str, loc: Iterable[int | str]) -> str:
    path = prefix
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _parse(model: type[M], data: Any, *, endpoint: str, where: str) -> M:
    if not isinstance(data, dict):
        raise GradientResponseError(
            f"Gradient's answer to {endpoint} has {where} of type {type(data).__name__}, "
            "expected an object; the internal API may have changed: update "
            "gradientlab.gradient.models.",
            endpoint=endpoint,
            field=where,
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        path = _field_path(where, first["loc"])
        problem = "is missing" if first["type"] == "missing" else f"is invalid ({first['msg']})"
        raise GradientResponseError(
            f"Gradient's answer to {endpoint}: field {path} {problem}; the internal API may "
            "have changed: update gradientlab.gradient.models.",
            endpoint=endpoint,
            field=path,
        ) from None


def _parse_list(model: type[M], data: Any, *, endpoint: str) -> list[M]:
    if data is None:
        return []
    if not isinstance(data, list):
        raise GradientResponseError(
            f"Gradient's answer to {endpoint} has data of type {type(data).__name__}, expected "
            "a list; the internal API may have changed: update gradientlab.gradient.models.",
            endpoint=endpoint,
            field="data",
        )
    return [
        _parse(model, item, endpoint=endpoint, where=f"data[{index}]")
        for index, item in enumerate(data)
    ]


class FirebaseSession:
    """A Firebase Auth session over its REST API: sign in, then keep the ID token fresh.

    ``bearer_token()`` hands out the current ID token and renews it first when it expires
    within ``REFRESH_MARGIN`` seconds. ``clock`` is injectable so tests can move time.
    """

    def __init__(
        self,
        http: httpx.Client,
        endpoints: GradientEndpoints,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
        secrets: _Secrets | None = None,
    ) -> None:
        self._http = http
        self._endpoints = endpoints
        self._timeout = timeout
        self._clock = clock
        self._secrets = secrets or _Secrets()
        self._secrets.add(endpoints.web_api_key)
        self._lock = threading.RLock()
        self._id_token: str | None = None
        self._refresh_token: str | None = None
        self._expires_at = 0.0
        self.uid: str | None = None

    def __repr__(self) -> str:
        if self._id_token is None:
            return "<FirebaseSession signed out>"
        return f"<FirebaseSession uid={self.uid!r} expires_in={self.expires_in():.0f}s>"

    @property
    def signed_in(self) -> bool:
        return self._id_token is not None

    @property
    def can_refresh(self) -> bool:
        return self._refresh_token is not None

    @property
    def current_token(self) -> str | None:
        """The ID token held now, as it is (``bearer_token()`` renews it when due)."""
        return self._id_token

    def expires_in(self) -> float:
        """Seconds until the ID token expires; 0 when signed out or expired."""
        return max(self._expires_at - self._clock(), 0.0) if self._id_token else 0.0

    def sign_in(self, email: str, password: str) -> None:
        """Sign in with email and password (``accounts:signInWithPassword``)."""
        endpoint = "POST /v1/accounts:signInWithPassword"
        self._secrets.add(password)
        with self._lock:
            started = self._clock()
            body = self._post(
                endpoint,
                f"{self._endpoints.identity_base}/v1/accounts:signInWithPassword",
                json={"email": email, "password": password, "returnSecureToken": True},
                action="sign-in",
                advice="check the Gradient account's email and password",
            )
            self._store(
                endpoint,
                started,
                id_token=self._text(body, "idToken", endpoint),
                refresh_token=self._text(body, "refreshToken", endpoint),
                expires_in=self._seconds(body, "expiresIn", endpoint),
                uid=body.get("localId") if isinstance(body.get("localId"), str) else None,
            )
        logger.info("Firebase sign-in succeeded (uid %s)", self.uid)

    def refresh(self) -> None:
        """Trade the refresh token for a new ID token (``grant_type=refresh_token``)."""
        endpoint = "POST /v1/token"
        with self._lock:
            if self._refresh_token is None:
                raise GradientAuthError(
                    f"Cannot refresh the Firebase token at {endpoint}: not signed in; "
                    "sign in first.",
                    endpoint=endpoint,
                )
            started = self._clock()
            body = self._post(
                endpoint,
                f"{self._endpoints.token_base}/v1/token",
                data={"grant_type": "refresh_token", "refresh_token": self._refresh_token},
                action="token refresh",
                advice="sign in again with the account's email and password",
            )
            uid = body.get("user_id")
            self._store(
                endpoint,
                started,
                id_token=self._text(body, "id_token", endpoint),
                refresh_token=self._text(body, "refresh_token", endpoint),
                expires_in=self._seconds(body, "expires_in", endpoint),
                uid=uid if isinstance(uid, str) else self.uid,
            )
        logger.info("Firebase token refreshed (uid %s)", self.uid)

    def bearer_token(self) -> str:
        """The ID token to send, renewed first when it is within ``REFRESH_MARGIN`` of expiry."""
        with self._lock:
            if self._id_token is None:
                raise GradientAuthError(
                    "No Firebase ID token: sign in first.", endpoint="Firebase session"
                )
            if self._expires_at - self._clock() <= REFRESH_MARGIN:
                self.refresh()
            assert self._id_token is not None
            return self._id_token

    def _store(
        self,
        endpoint: str,
        started: float,
        *,
        id_token: str,
        refresh_token: str,
        expires_in: float,
        uid: str | None,
    ) -> None:
        with self._lock:
            self._secrets.discard(self._id_token, self._refresh_token)
            self._secrets.add(id_token, refresh_token)
            self._id_token = id_token
            self._refresh_token = refresh_token
            self._expires_at = started + expires_in
            self.uid = uid

    def _post(
        self, endpoint: str, url: str, *, action: str, advice: str, **kwargs: Any
    ) -> dict[str, Any]:
        try:
            response = request_within(
                self._http,
                "POST",
                url,
                self._timeout,
                params={"key": self._endpoints.web_api_key},
                headers={"User-Agent": USER_AGENT},
                **kwargs,
            )
        except httpx.HTTPError as exc:
            raise GradientConnectionError(
                f"Firebase {action} at {endpoint} got no answer "
                f"({type(exc).__name__}: {self._secrets.scrub(str(exc))}); check the token "
                "service address and the network, then retry.",
                endpoint=endpoint,
            ) from None
        body = _json(response)
        if response.status_code == 429:
            retry_after = _retry_after(response)
            raise GradientRateLimited(
                f"Firebase rate-limited {action} at {endpoint} (HTTP 429); "
                + (
                    f"retry after {retry_after:g} s." if retry_after is not None else "retry later."
                ),
                endpoint=endpoint,
                retry_after=retry_after,
            )
        if response.status_code >= 500:
            raise GradientServerError(
                f"Firebase answered HTTP {response.status_code} to {action} at {endpoint}; "
                "the auth service is failing, retry later.",
                endpoint=endpoint,
                status=response.status_code,
            )
        if response.status_code != 200:
            reason = "no reason given"
            error = body.get("error") if isinstance(body, dict) else None
            if isinstance(error, dict) and isinstance(error.get("message"), str):
                reason = self._secrets.scrub(error["message"])
            setting = _setting_to_fix(reason)
            if action == "sign-in" and setting is not None:
                raise GradientSignInRefused(
                    f"Firebase refused the account's sign-in at {endpoint} (HTTP "
                    f"{response.status_code}: {reason}); fix {setting} in the fleet file"
                    + (
                        " (or remove it: deploy reads the key from the extension's bundle)."
                        if setting == "network.web_api_key"
                        else "."
                    ),
                    endpoint=endpoint,
                    setting=setting,
                    reason=reason,
                )
            raise GradientAuthError(
                f"Firebase refused {action} at {endpoint} (HTTP {response.status_code}: "
                f"{reason}); {advice}.",
                endpoint=endpoint,
            )
        if not isinstance(body, dict):
            raise GradientResponseError(
                f"Firebase's answer to {action} at {endpoint} is not a JSON object; check the "
                "identity and token service addresses.",
                endpoint=endpoint,
            )
        return body

    @staticmethod
    def _text(body: dict[str, Any], name: str, endpoint: str) -> str:
        value = body.get(name)
        if not isinstance(value, str) or not value:
            raise GradientResponseError(
                f"Firebase's answer to {endpoint}: field {name} is missing or not a string; "
                "check the identity and token service addresses.",
                endpoint=endpoint,
                field=name,
            )
        return value

    @staticmethod
    def _seconds(body: dict[str, Any], name: str, endpoint: str) -> float:
        value = body.get(name)
        try:
            if isinstance(value, bool) or value is None:
                raise ValueError
            return float(value)
        except (TypeError, ValueError):
            raise GradientResponseError(
                f"Firebase's answer to {endpoint}: field {name} is missing or not a number of "
                "seconds; check the identity and token service addresses.",
                endpoint=endpoint,
                field=name,
            ) from None


class GradientClient:
    """Reads an account's rewards and Sentry Nodes from Gradient's API.

    Signs in lazily on the first call and keeps one session for its lifetime (renewed with the
    refresh token). Thread-safe: threads share the session and the rate limit: a fixed
    ``requests_per_second``, or, with ``max_requests_per_second`` instead, a pace the client
    finds below that ceiling (starting from ``learned_pace``, what an earlier run learned).
    Use as a context manager, or call ``close()``; an ``httpx.Client`` passed in is left open
    for its owner.
    """

    def __init__(
        self,
        endpoints: GradientEndpoints,
        email: str,
        password: str,
        http: httpx.Client | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        *,
        requests_per_second: float | None = None,
        max_requests_per_second: float | None = None,
        learned_pace: LearnedPace | None = None,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.endpoints = endpoints
        self.email = email
        self._password = password
        self._owns_http = http is None
        self._http = http or httpx.Client(
            timeout=timeout,
            headers={"User-Agent": USER_AGENT},
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=32),
        )
        self._timeout = timeout
        self._sleep = sleep
        self.retry = retry or RetryPolicy()
        # A ceiling without a fixed pace: the limiter finds the network's limit below it.
        self.limiter = RateLimiter(
            requests_per_second,
            ceiling=max_requests_per_second if requests_per_second is None else None,
            learned=learned_pace,
            clock=clock,
            sleep=sleep,
        )
        self._auth_lock = threading.Lock()
        self._sent = _Count()
        self._secrets = _Secrets()
        self._secrets.add(password)
        self.session = FirebaseSession(
            self._http, endpoints, timeout=timeout, clock=clock, secrets=self._secrets
        )

    def __repr__(self) -> str:
        return f"GradientClient(api_base={self.endpoints.api_base!r}, email={self.email!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    @property
    def requests_sent(self) -> int:
        """API requests sent (each try counts), for benchmarks and run summaries."""
        return self._sent.value

    def with_retry(self, retry: RetryPolicy) -> GradientClient:
        """The same client (session, rate limit, connections, count) with other retry bounds,
        e.g. a quick look that gives up early. Closing it leaves the original open."""
        view = copy.copy(self)
        view.retry = retry
        view._owns_http = False
        return view

    # -- endpoints ---------------------------------------------------------------------------

    def profile(self) -> Profile:
        endpoint = "POST /user/profile"
        data = self._call("POST", "/user/profile")
        return _parse(Profile, data, endpoint=endpoint, where="data")

    def point_stats(self, start: datetime, end: datetime) -> list[PointDay]:
        """Raw points per UTC day between ``start`` and ``end`` (naive datetimes are UTC)."""
        body = {"start": _ms(start), "end": _ms(end), "type": "DAY"}
        data = self._call("POST", "/point/stats", json=body)
        return _parse_list(PointDay, data, endpoint="POST /point/stats")

    def node_stats(self, clientid: str, start: datetime, end: datetime) -> list[NodeDay]:
        """Uptime and taps per UTC day of one node (naive datetimes are UTC)."""
        path = f"/sentrynode/stats/{quote(clientid, safe='')}"
        body = {"start": _ms(start), "end": _ms(end), "type": "DAY"}
        data = self._call("POST", path, json=body)
        return _parse_list(NodeDay, data, endpoint=f"POST {path}")

    def node(self, clientid: str) -> NodeInfo | None:
        """One node's state, or ``None`` when Gradient does not know the client id."""
        path = f"/sentrynode/get/{quote(clientid, safe='')}"
        try:
            data = self._call("GET", path)
        except GradientNotFound:
            return None
        if data is None:
            return None
        return _parse(NodeInfo, data, endpoint=f"GET {path}", where="data")

    def node_list(self, page: int = 1, size: int = 100) -> list[NodeListItem]:
        """One page of the account's active Sentry Nodes."""
        body = {
            "page": page,
            "size": size,
            "field": "active",
            "direction": 0,
            "active": True,
            "banned": "",
            "hide": 0,
        }
        data = self._call("POST", "/sentrynode/list", json=body)
        return _parse_list(NodeListItem, data, endpoint="POST /sentrynode/list")

    def all_nodes(self, size: int = 100, workers: int = 1) -> list[NodeListItem]:
        """Every page of ``node_list``, until a page comes back shorter than ``size``.

        With ``workers`` > 1, up to that many pages are asked at once (still under the rate
        limit); pages past the short one are dropped. A node that moved between pages while
        they were read is listed once."""
        pages: dict[int, list[NodeListItem]] = {1: self.node_list(page=1, size=size)}
        last = 1 if len(pages[1]) < size else None
        if last is None:
            last = self._more_pages(pages, size, max(1, workers))
        nodes: list[NodeListItem] = []
        seen: set[str] = set()
        for page in range(1, last + 1):
            for item in pages[page]:
                if item.name not in seen:
                    seen.add(item.name)
                    nodes.append(item)
        return nodes

    def _more_pages(self, pages: dict[int, list[NodeListItem]], size: int, workers: int) -> int:
        """Fetch pages 2, 3, ... into ``pages``, ``workers`` at a time; the last page's number.
        No page past the first short one is asked for once that one is in hand."""
        last: int | None = None  # the first page known to be short
        checked = 1  # pages 1..checked are in hand and compared with the page before
        next_page = 2
        running: dict[Future[list[NodeListItem]], int] = {}
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="node-list") as pool:
            try:
                while last is None or checked < last:
                    while (last is None or next_page <= last) and len(running) < workers:
                        running[pool.submit(self.node_list, next_page, size)] = next_page
                        next_page += 1
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        page = running.pop(future)
                        pages[page] = future.result()
                        if len(pages[page]) < size and (last is None or page < last):
                            last = page
                    while checked + 1 in pages and (last is None or checked < last):
                        checked += 1
                        self._check_paging(pages, checked)
                    for future in [f for f, p in running.items() if last and p > last]:
                        future.cancel()
                        del running[future]
            except BaseException:
                for future in running:
                    future.cancel()
                raise
        assert last is not None
        return last

    @staticmethod
    def _check_paging(pages: dict[int, list[NodeListItem]], page: int) -> None:
        if pages[page] and pages[page] == pages[page - 1]:
            raise GradientResponseError(
                f"Gradient answered page {page} of POST /sentrynode/list with the same "
                "nodes as the page before; it ignores paging, so the list cannot be read "
                "whole. Try a larger page size.",
                endpoint="POST /sentrynode/list",
                field="page",
            )

    def status(self) -> NetworkStatus:
        """The address Gradient sees this machine at, and Gradient's clock."""
        data = self._call("GET", "/status")
        return _parse(NetworkStatus, data, endpoint="GET /status", where="data")

    # -- transport ---------------------------------------------------------------------------

    def _call(self, method: str, path: str, json: Any = None) -> Any:
        """Send one request and return the envelope's ``data``, or raise a GradientError.
        A transient failure is tried again here, within the retry policy's bounds."""
        endpoint = f"{method} {path}"
        attempt = 1
        while True:
            try:
                return self._call_once(method, path, json, endpoint)
            except GradientError as exc:
                delay = self.retry.wait_before_retry(attempt, exc)
                if delay is None:
                    raise
                logger.info(
                    "%s: %s; try %d of %d in %.1f s",
                    endpoint,
                    type(exc).__name__,
                    attempt + 1,
                    self.retry.attempts,
                    delay,
                )
                if isinstance(exc, GradientRateLimited):
                    self.limiter.refused(delay)  # every thread waits it out, in acquire()
                else:
                    self._sleep(delay)
                attempt += 1

    def _call_once(self, method: str, path: str, json: Any, endpoint: str) -> Any:
        token, response, payload = self._exchange(method, path, json, endpoint)
        if _token_rejected(response, payload):
            logger.info("%s rejected the ID token; renewing it once", endpoint)
            self._renew_auth(token)
            _, response, payload = self._exchange(method, path, json, endpoint)
        return self._unwrap(endpoint, response, payload)

    def _exchange(
        self, method: str, path: str, json: Any, endpoint: str
    ) -> tuple[str, httpx.Response, Any]:
        self.limiter.acquire()  # before the token: a sign-in waits out a 429's hold as well
        token = self._bearer_token()
        headers = {"Authorization": f"Bearer {token}", "User-Agent": USER_AGENT}
        self._sent.add()
        try:
            response = request_within(
                self._http,
                method,
                f"{self.endpoints.api_base}{path}",
                self._timeout,
                json=json,
                headers=headers,
            )
        except httpx.HTTPError as exc:
            raise GradientConnectionError(
                f"{endpoint} got no answer from Gradient ({type(exc).__name__}: "
                f"{self._secrets.scrub(str(exc))}); check api_base and the network, then retry.",
                endpoint=endpoint,
            ) from None
        payload = _json(response)
        code = payload.get("code") if isinstance(payload, dict) else None
        logger.debug("%s -> HTTP %s, code %s", endpoint, response.status_code, code)
        return token, response, payload

    # One thread at a time signs in or renews: threads that find the token missing or rejected
    # together must not each sign in (Firebase locks out accounts that sign in too often).
    def _bearer_token(self) -> str:
        with self._auth_lock:
            if not self.session.signed_in:
                self.session.sign_in(self.email, self._password)
            try:
                return self.session.bearer_token()
            except GradientAuthError:
                # A refresh token can be revoked; the password still signs in.
                logger.info("Firebase token refresh was refused; signing in again")
                self.session.sign_in(self.email, self._password)
                return self.session.bearer_token()

    def _renew_auth(self, rejected: str) -> None:
        with self._auth_lock:
            if self.session.current_token not in (None, rejected):
                return  # another thread renewed it since this one sent its request
            try:
                self.session.refresh()
            except GradientAuthError:
                logger.info("Firebase token refresh was refused; signing in again")
                self.session.sign_in(self.email, self._password)

    def _unwrap(self, endpoint: str, response: httpx.Response, payload: Any) -> Any:
        status = response.status_code
        if status == 401:
            raise GradientAuthError(
                f"Gradient rejected the ID token for {endpoint} (HTTP 401) even after renewing "
                "it; check that the account can use the API.",
                endpoint=endpoint,
            )
        if status == 429:
            raise self._rate_limited(endpoint, response, f"HTTP {status}")
        if status >= 500:
            raise GradientServerError(
                f"Gradient answered HTTP {status} to {endpoint}; the API is failing, retry later.",
                endpoint=endpoint,
                status=status,
            )
        if not isinstance(payload, dict) or "code" not in payload:
            if status == 403:
                raise GradientAuthError(
                    f"Gradient refused {endpoint} (HTTP 403); check that the account may read it.",
                    endpoint=endpoint,
                )
            what = (
                "not JSON" if payload is _NOT_JSON else "JSON without a {code, msg, data} envelope"
            )
            raise GradientResponseError(
                f"Gradient's answer to {endpoint} (HTTP {status}) is {what}; check api_base "
                "points at Gradient's API.",
                endpoint=endpoint,
                field="code",
            )
        return self._open_envelope(endpoint, response, payload)

    def _open_envelope(
        self, endpoint: str, response: httpx.Response, payload: dict[str, Any]
    ) -> Any:
        code = _envelope_code(payload.get("code"))
        msg = payload.get("msg")
        said = f": {self._secrets.scrub(msg)}" if isinstance(msg, str) and msg else ""
        if code == 200:
            if "data" not in payload:
                raise GradientResponseError(
                    f"Gradient's answer to {endpoint}: field data is missing; the internal API "
                    "may have changed: update gradientlab.gradient.models.",
                    endpoint=endpoint,
                    field="data",
                )
            return payload["data"]
        if code == 401:
            raise GradientAuthError(
                f"Gradient rejected the ID token for {endpoint} (code 401{said}) even after "
                "renewing it; check that the account can use the API.",
                endpoint=endpoint,
            )
        if code == 403:
            raise GradientAuthError(
                f"Gradient refused {endpoint} (code 403{said}); check that the account may "
                "read it.",
                endpoint=endpoint,
            )
        if code == 404:
            raise GradientNotFound(
                f"Gradient does not know what {endpoint} asks for (code 404{said}); check the "
                "client id.",
                endpoint=endpoint,
            )
        if code == 429:
            raise self._rate_limited(endpoint, response, f"code 429{said}")
        if code is not None and 500 <= code < 600:
            raise GradientServerError(
                f"Gradient answered code {code}{said} to {endpoint}; the API is failing, "
                "retry later.",
                endpoint=endpoint,
                status=code,
            )
        shown = code if code is not None else repr(payload.get("code"))
        raise GradientResponseError(
            f"Gradient answered {endpoint} with code {shown}{said}, not 200; the request may "
            "no longer match the internal API.",
            endpoint=endpoint,
            field="code",
        )

    @staticmethod
    def _rate_limited(endpoint: str, response: httpx.Response, what: str) -> GradientRateLimited:
        retry_after = _retry_after(response)
        later = f"retry after {retry_after:g} s" if retry_after is not None else "retry later"
        return GradientRateLimited(
            f"Gradient rate-limited {endpoint} ({what}); {later}.",
            endpoint=endpoint,
            retry_after=retry_after,
        )


class _Count:
    """A thread-safe counter shared by a client and its ``with_retry`` views."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def add(self) -> None:
        with self._lock:
            self.value += 1


# Firebase Auth's words for a refused sign-in, and the fleet-file setting each points at.
_KEY_REFUSED = ("API key not valid", "API_KEY_INVALID", "API_KEY_EXPIRED", "PERMISSION_DENIED")
_CREDENTIALS_REFUSED = {
    "INVALID_PASSWORD": "account.password",
    "INVALID_LOGIN_CREDENTIALS": "account.email and account.password",
    "EMAIL_NOT_FOUND": "account.email",
    "INVALID_EMAIL": "account.email",
    "USER_DISABLED": "account.email (the account is disabled)",
    "MISSING_PASSWORD": "account.password",
}


def _setting_to_fix(reason: str) -> str | None:
    """The setting a refused sign-in's reason points at; None for other refusals (throttling
    such as TOO_MANY_ATTEMPTS_TRY_LATER is not a setting to fix)."""
    if any(word in reason for word in _KEY_REFUSED):
        return "network.web_api_key"
    word = reason.split(":")[0].split()[0] if reason.strip() else ""
    return _CREDENTIALS_REFUSED.get(word)


def _envelope_code(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _token_rejected(response: httpx.Response, payload: Any) -> bool:
    if response.status_code == 401:
        return True
    return isinstance(payload, dict) and _envelope_code(payload.get("code")) == 401


__all__ = [
    "DEFAULT_TIMEOUT",
    "REFRESH_MARGIN",
    "FirebaseSession",
    "GradientClient",
    "GradientEndpoints",
    "LearnedPace",
    "RateLimiter",
    "RetryPolicy",
]
