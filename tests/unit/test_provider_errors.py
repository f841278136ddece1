"""One classification of cloud answers for every provider, and one Retry-After reader."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from gradientlab.providers.errors import (
    CapacityError,
    Failure,
    ProviderAuthError,
    ProviderError,
    ProviderNotFound,
    ProviderRateLimited,
    ProviderUnavailable,
    QuotaError,
    classify,
    error_for,
    retry_wait,
)
from gradientlab.retry_after import MAX_RETRY_AFTER_SECONDS, parse_retry_after, retry_after_header


@pytest.mark.parametrize(
    ("status", "codes", "message", "failure"),
    [
        # OCI
        (401, ["NotAuthenticated"], "", Failure.AUTH),
        (429, ["TooManyRequests"], "", Failure.RATE_LIMITED),
        (500, ["InternalError"], "Out of host capacity.", Failure.CAPACITY),
        (400, ["LimitExceeded"], "standard-a1-core-count", Failure.QUOTA),
        (404, ["NotAuthorizedOrNotFound"], "", Failure.NOT_FOUND),
        (503, ["ServiceUnavailable"], "", Failure.UNAVAILABLE),
        (400, ["InvalidParameter"], "", Failure.REFUSED),
        # Google: quota and rate limits come as 403
        (403, ["quotaExceeded"], "", Failure.QUOTA),
        (403, ["rateLimitExceeded"], "", Failure.RATE_LIMITED),
        (403, ["forbidden"], "", Failure.AUTH),
        (503, ["ZONE_RESOURCE_POOL_EXHAUSTED"], "", Failure.CAPACITY),
        (None, ["QUOTA_EXCEEDED"], "", Failure.QUOTA),
        # Azure
        (409, ["AllocationFailed"], "", Failure.CAPACITY),
        (409, ["OperationNotAllowed"], "exceeds the regional cores quota", Failure.QUOTA),
        (409, ["OperationNotAllowed"], "the VM is being deleted", Failure.REFUSED),
        (403, ["AuthorizationFailed"], "", Failure.AUTH),
        (404, ["ResourceGroupNotFound"], "", Failure.NOT_FOUND),
    ],
)
def test_one_classification_for_every_cloud(
    status: int | None, codes: list[str], message: str, failure: Failure
) -> None:
    assert classify(status, codes, message) is failure


def test_each_failure_has_its_type_and_retryable() -> None:
    made = {
        f: error_for("said", s, c, "", {Failure.QUOTA: "raise it"}, 3.0)
        for f, s, c in [
            (Failure.AUTH, 401, []),
            (Failure.QUOTA, 400, ["LimitExceeded"]),
            (Failure.NOT_FOUND, 404, []),
            (Failure.REFUSED, 400, []),
            (Failure.CAPACITY, 409, ["AllocationFailed"]),
            (Failure.UNAVAILABLE, 502, []),
            (Failure.RATE_LIMITED, 429, []),
        ]
    }
    assert [type(e) for e in made.values()] == [
        ProviderAuthError,
        QuotaError,
        ProviderNotFound,
        ProviderError,
        CapacityError,
        ProviderUnavailable,
        ProviderRateLimited,
    ]
    assert [e.retryable for e in made.values()] == [False] * 4 + [True] * 3
    assert str(made[Failure.QUOTA]) == "said. raise it"
    limited = made[Failure.RATE_LIMITED]
    assert isinstance(limited, ProviderRateLimited) and limited.retry_after == 3.0


def test_retry_wait_reads_retryable_and_retry_after() -> None:
    assert retry_wait(ProviderAuthError("no")) is None
    assert retry_wait(QuotaError("no")) is None
    assert retry_wait(ValueError("not a provider's")) is None
    assert retry_wait(CapacityError("later")) == 0.0
    assert retry_wait(ProviderRateLimited("slow", 42.0)) == 42.0
    assert retry_wait(ProviderRateLimited("slow", 10_000.0), cap=300.0) == 300.0


def test_retry_after_reads_seconds_and_http_dates_clamped() -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    assert parse_retry_after("17") == 17.0
    assert parse_retry_after(" 2.5 ") == 2.5
    assert parse_retry_after("-5") == 0.0  # never a negative wait
    assert parse_retry_after("999999") == MAX_RETRY_AFTER_SECONDS
    assert (
        parse_retry_after(format_datetime(now + timedelta(seconds=90), usegmt=True), now=now) == 90
    )
    assert parse_retry_after(format_datetime(now - timedelta(hours=1), usegmt=True), now=now) == 0
    for bad in (None, "", "soon", "nan"):
        assert parse_retry_after(bad) is None
    assert retry_after_header({"retry-after": "4"}) == 4.0
    assert retry_after_header({"Retry-After": "4"}) == 4.0
    assert retry_after_header({}) is None and retry_after_header(None) is None
