"""What went wrong with a provider, in one vocabulary for every cloud.

Each driver reads its SDK's exception into three facts (HTTP status, the cloud's error codes,
its message) and `classify` turns them into one `Failure`; `provider_error` makes the typed
error. `retryable` says whether the same call can succeed later: a Prefect task's retry
condition reads it (as it does for the Gradient client's errors), so bad credentials or an
exhausted quota fail at once while throttling, capacity and server faults are retried."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import Enum
from typing import ClassVar


class ProviderError(RuntimeError):
    """A provider refused or failed an operation; the message says which host and why."""

    retryable: ClassVar[bool] = False


class ProviderAuthError(ProviderError):
    """The cloud refused the credentials; the message says which block to fix."""


class QuotaError(ProviderError):
    """The account's quota or free-tier limit does not allow this."""


class ProviderNotFound(ProviderError):
    """The host or resource is not there (never made, or removed behind GradientLab's back)."""


class CapacityError(ProviderError):
    """The cloud has no capacity for this shape here now ("Out of host capacity")."""

    retryable = True


class ProviderUnavailable(ProviderError):
    """The cloud failed on its side (5xx) or could not be reached; later may work."""

    retryable = True


class ProviderRateLimited(ProviderError):
    """The cloud API throttled us (429); `retry_after` is in seconds when it said."""

    retryable = True

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Failure(Enum):
    AUTH = "auth"
    RATE_LIMITED = "rate limited"
    CAPACITY = "capacity"
    QUOTA = "quota"
    NOT_FOUND = "not found"
    UNAVAILABLE = "unavailable"
    REFUSED = "refused"  # anything else the cloud said no to: a bad request, a conflict


ERROR_TYPES: dict[Failure, type[ProviderError]] = {
    Failure.AUTH: ProviderAuthError,
    Failure.RATE_LIMITED: ProviderRateLimited,
    Failure.CAPACITY: CapacityError,
    Failure.QUOTA: QuotaError,
    Failure.NOT_FOUND: ProviderNotFound,
    Failure.UNAVAILABLE: ProviderUnavailable,
    Failure.REFUSED: ProviderError,
}

# The three clouds' error codes, compared upper-case without underscores
# (OCI `LimitExceeded`, Google `QUOTA_EXCEEDED` / `quotaExceeded`, ARM `QuotaExceeded`).
CAPACITY_CODES = {
    "OUTOFHOSTCAPACITY",  # OCI
    "OUTOFCAPACITY",
    "SKUNOTAVAILABLE",  # Azure
    "ALLOCATIONFAILED",
    "ZONALALLOCATIONFAILED",
    "OVERCONSTRAINEDALLOCATIONREQUEST",
    "OVERCONSTRAINEDZONALALLOCATIONREQUEST",
}
CAPACITY_CODE_PARTS = ("RESOURCEPOOLEXHAUSTED",)  # Google: ZONE_RESOURCE_POOL_EXHAUSTED[...]
CAPACITY_MESSAGES = ("out of host capacity",)  # OCI says it in a 500's message
QUOTA_CODES = {"LIMITEXCEEDED", "PUBLICIPCOUNTLIMITREACHED"}
QUOTA_CODE_PARTS = ("QUOTAEXCEEDED",)  # QUOTA_EXCEEDED, ResourceQuotaExceeded, ...
QUOTA_WORDS = ("quota", "limit")  # ARM's OperationNotAllowed names a quota only in its message
RATE_CODES = {"TOOMANYREQUESTS", "RATELIMITEXCEEDED", "USERRATELIMITEXCEEDED"}
AUTH_CODES = {
    "NOTAUTHENTICATED",  # OCI
    "AUTHORIZATIONFAILED",  # Azure
    "AUTHENTICATIONFAILED",
    "INVALIDAUTHENTICATIONTOKEN",
    "INVALIDAUTHENTICATIONTOKENTENANT",
    "EXPIREDAUTHENTICATIONTOKEN",
    "LINKEDAUTHORIZATIONFAILED",
}
NOT_FOUND_CODES = {"RESOURCENOTFOUND", "RESOURCEGROUPNOTFOUND", "NOTFOUND"}


def _norm(code: str) -> str:
    return code.upper().replace("_", "")


def classify(status: int | None, codes: Iterable[str] = (), message: str = "") -> Failure:
    """One failure from what a cloud answered. Codes win over the status: Google answers a
    quota or rate limit with 403, and OCI a lack of capacity with 500."""
    norm = {_norm(c) for c in codes if c}
    lowered = message.lower()
    if (
        norm & CAPACITY_CODES
        or any(part in c for c in norm for part in CAPACITY_CODE_PARTS)
        or any(text in lowered for text in CAPACITY_MESSAGES)
    ):
        return Failure.CAPACITY
    if (
        norm & QUOTA_CODES
        or any(part in c for c in norm for part in QUOTA_CODE_PARTS)
        or ("OPERATIONNOTALLOWED" in norm and any(w in lowered for w in QUOTA_WORDS))
    ):
        return Failure.QUOTA
    if status == 429 or norm & RATE_CODES:
        return Failure.RATE_LIMITED
    if status in (401, 403) or norm & AUTH_CODES:
        return Failure.AUTH
    if status == 404 or norm & NOT_FOUND_CODES:
        return Failure.NOT_FOUND
    if status is not None and status >= 500:
        return Failure.UNAVAILABLE
    return Failure.REFUSED


def provider_error(
    failure: Failure,
    said: str,
    advice: Mapping[Failure, str] | None = None,
    retry_after: float | None = None,
) -> ProviderError:
    """The typed error: what the cloud said, then what to do about it (the cloud's advice)."""
    hint = (advice or {}).get(failure)
    message = f"{said}. {hint}" if hint else said
    if failure is Failure.RATE_LIMITED:
        return ProviderRateLimited(message, retry_after)
    return ERROR_TYPES[failure](message)


def error_for(
    said: str,
    status: int | None,
    codes: Iterable[str],
    message: str,
    advice: Mapping[Failure, str] | None = None,
    retry_after: float | None = None,
) -> ProviderError:
    """`classify` what a cloud answered, then `provider_error`: the one step every SDK needs."""
    return provider_error(classify(status, codes, message), said, advice, retry_after)


def retry_wait(error: BaseException, cap: float = 600.0) -> float | None:
    """None when trying again cannot help; otherwise the seconds the cloud asked us to wait
    first (0 when it did not say), at most `cap`."""
    if not isinstance(error, ProviderError) or not error.retryable:
        return None
    asked = getattr(error, "retry_after", None) or 0.0
    return min(max(float(asked), 0.0), cap)
