"""How the client paces its requests and when it tries one again.

``RateLimiter`` spaces requests evenly at a set rate (a fleet-file setting), shared by every
thread of one client, so a large fleet stays under the network's limit instead of finding it by
being refused. When the network still answers 429, ``hold`` pauses every thread until its
``Retry-After`` has passed. ``RetryPolicy`` decides, per request, whether a transient failure is
worth another try and how long to wait first: bounded in tries and in each wait.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from gradientlab.gradient.errors import GradientError, GradientRateLimited

SLOWDOWN = 1.05
"""A refusal (429) slows the pace by this factor, down to half the set rate at most."""
RECOVER_AFTER_SECONDS = 5.0
"""Seconds without a refusal after which a slowed pace speeds up one step."""


class RateLimiter:
    """At most ``per_second`` requests per second on average, evenly spaced; thread-safe.

    Each ``acquire`` reserves the next slot on an even grid and sleeps until it, so concurrent
    callers queue in arrival order without a busy loop. A caller that wakes late (a busy
    machine) does not push the grid back: up to ``burst`` requests may go at once to catch up,
    by default a tenth of a second's worth.

    When the network refuses a request anyway (``refused``), every thread waits out its
    Retry-After and the pace slows by ``SLOWDOWN`` (once per refusal episode); it returns to the
    set rate a step each ``RECOVER_AFTER_SECONDS`` without one. A rate set a little above the
    network's own limit thus settles near it instead of meeting 429s all run long, while a
    stray refusal costs little. ``clock`` and ``sleep`` are injectable.
    """

    def __init__(
        self,
        per_second: float | None,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if per_second is not None and per_second <= 0:
            raise ValueError(f"requests per second must be > 0, got {per_second}")
        self.per_second = per_second
        self._base = 1.0 / per_second if per_second else 0.0
        self._interval = self._base
        self.burst = max(1.0, burst if burst is not None else (per_second or 0) / 10)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_slot = float("-inf")
        self._held_until = float("-inf")
        self._calm_since = float("-inf")  # the last refusal, or the last step back up

    @property
    def pace(self) -> float | None:
        """Requests per second the limiter keeps now (None: no limit)."""
        return 1.0 / self._interval if self._interval else None

    def acquire(self) -> float:
        """Wait for this request's turn; returns the seconds waited."""
        with self._lock:
            now = self._clock()
            slack = (self.burst - 1.0) * self._interval
            slot = max(now - slack, self._next_slot, self._held_until)
            self._next_slot = slot + self._interval
            if self._interval > self._base and now - self._calm_since >= RECOVER_AFTER_SECONDS:
                self._interval = max(self._base, self._interval / SLOWDOWN)
                self._calm_since = now
        wait = slot - now
        if wait > 0:
            self._sleep(wait)
        return max(wait, 0.0)

    def refused(self, retry_after: float) -> None:
        """The network answered 429: no request from any thread for ``retry_after`` seconds,
        and a slower pace from then on."""
        with self._lock:
            now = self._clock()
            if now >= self._held_until and self._base:  # a new episode, not its echoes
                self._interval = min(self._interval * SLOWDOWN, 2 * self._base)
            self._calm_since = now
            self._held_until = max(self._held_until, now + retry_after)


@dataclass(frozen=True)
class RetryPolicy:
    """Per-request retries of transient failures (429, 5xx, no answer).

    ``attempts`` counts the first try. A 429's ``Retry-After`` is obeyed when it is at most
    ``max_retry_after`` seconds (a longer one is the network saying "not now": the error goes
    to the caller); without one, and for 5xx or no answer, the wait doubles from ``backoff``
    up to ``max_backoff``, with jitter so that threads do not retry in step.
    """

    attempts: int = 6
    backoff: float = 0.5
    max_backoff: float = 30.0
    max_retry_after: float = 120.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {self.attempts}")

    def wait_before_retry(
        self, attempt: int, error: GradientError, rng: random.Random | None = None
    ) -> float | None:
        """Seconds to wait before try ``attempt + 1`` after ``error``; None to give up."""
        if not error.retryable or attempt >= self.attempts:
            return None
        if isinstance(error, GradientRateLimited) and error.retry_after is not None:
            if error.retry_after > self.max_retry_after:
                return None
            return error.retry_after
        ceiling = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        return ceiling * (0.5 + 0.5 * (rng or random).random())


NO_RETRY = RetryPolicy(attempts=1)
"""Each request tried once; the caller decides what to do with a transient failure."""
