"""The one `Retry-After` reader: every HTTP client and cloud driver in GradientLab uses it.

RFC 9110 allows two forms: a number of seconds, or an HTTP-date. An answer in the past means
"now", a number beyond `maximum` is cut to it (a server's hour-long hint must not park a worker
for an hour), and anything unreadable is `None`: the caller's own backoff applies then."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

MAX_RETRY_AFTER_SECONDS = 600.0


def parse_retry_after(
    value: str | None,
    *,
    now: datetime | None = None,
    maximum: float = MAX_RETRY_AFTER_SECONDS,
) -> float | None:
    """Seconds to wait, in [0, maximum], from a `Retry-After` value; None when absent or bad."""
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), maximum)


def retry_after_header(
    headers: Mapping[str, str] | None, *, now: datetime | None = None
) -> float | None:
    """`parse_retry_after` of a header mapping, whatever the case of the header's name."""
    for name, value in (headers or {}).items():
        if str(name).lower() == "retry-after":
            return parse_retry_after(value, now=now)
    return None
