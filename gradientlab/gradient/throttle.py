"""How the client paces its requests and when it tries one again.

``RateLimiter`` spaces requests evenly, shared by every thread of one client. Nobody publishes
Gradient's request limit, so by default the limiter finds it (``ceiling`` given): it raises the
pace while the network refuses nothing and the callers fill it, backs off when the network
answers 429, and hands back what it learned (``learned()``, a ``LearnedPace``) so the next run
starts there instead of from scratch; ``ceiling`` (a fleet-file setting) bounds the search. An
operator who knows the limit sets a fixed pace instead (``per_second`` without ``ceiling``).
On a 429 every thread waits out its ``Retry-After``. ``RetryPolicy`` decides, per request,
whether a transient failure is worth another try and how long to wait first: bounded in tries
and in each wait.
"""

from __future__ import annotations

import math
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

# Finding the network's limit (a limiter with a ceiling):
INITIAL_PACE = 10.0
"""Requests per second a search starts at when nothing was learned before."""
PROBE_SECONDS = 1.0
"""A step up is earned by this long without a refusal, with the callers filling the pace."""
FILLED_SHARE = 0.8
"""The callers fill the pace when they asked for at least this share of its slots in a step."""
SLOW_START = 1.4
"""Before any refusal, each step multiplies the pace by this."""
APPROACH = 1.1
"""After a refusal, each step multiplies the pace by this, up to CAUTION of the refused pace."""
CREEP = 1.01
"""Above CAUTION of the last refused pace, each step multiplies the pace by this only."""
CAUTION = 0.9
BACKOFF = 0.8
"""A refusal (one episode: the threads refused together count once) cuts the pace to this
share of the pace that was refused."""
FLOOR = 0.5
"""The search never goes slower than this many requests per second."""


@dataclass(frozen=True)
class LearnedPace:
    """What a search learned about the network's limit, kept between runs.

    ``pace``: requests per second the next run starts at; ``refused_at``: the last pace the
    network refused (None: it refused none); ``refusals``: refusal episodes in the run."""

    pace: float
    refused_at: float | None = None
    refusals: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.pace) and self.pace > 0):
            raise ValueError(f"a learned pace must be > 0, got {self.pace}")


class RateLimiter:
    """At most ``pace`` requests per second on average, evenly spaced; thread-safe.

    Each ``acquire`` reserves the next slot on an even grid and sleeps until it, so concurrent
    callers queue in arrival order without a busy loop. A caller that wakes late (a busy
    machine) does not push the grid back: up to ``burst`` requests may go at once to catch up,
    by default a tenth of a second's worth.

    Fixed (``per_second`` without ``ceiling``): when the network refuses a request anyway
    (``refused``), every thread waits out its Retry-After and the pace slows by ``SLOWDOWN``
    (once per refusal episode); it returns to the set rate a step each
    ``RECOVER_AFTER_SECONDS`` without one.

    Searching (``ceiling`` given; ``per_second`` is where to start, by default ``learned``'s
    pace or ``INITIAL_PACE``): each ``PROBE_SECONDS`` without a refusal in which the callers
    asked for most of the slots, the pace goes up (``SLOW_START`` until the first refusal, then
    ``APPROACH`` up to ``CAUTION`` of the refused pace, then ``CREEP``), never past ``ceiling``;
    a refusal episode cuts it to ``BACKOFF`` of the refused pace. Idle spells earn nothing, so a
    quiet phase of a run does not inflate the pace. ``clock`` and ``sleep`` are injectable.
    """

    def __init__(
        self,
        per_second: float | None,
        *,
        ceiling: float | None = None,
        learned: LearnedPace | None = None,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if per_second is not None and per_second <= 0:
            raise ValueError(f"requests per second must be > 0, got {per_second}")
        if ceiling is not None and ceiling <= 0:
            raise ValueError(f"the pace's ceiling must be > 0, got {ceiling}")
        self.ceiling = ceiling
        self._refused_at: float | None = None
        self.refusals = 0
        if ceiling is not None:
            start = per_second or (learned.pace if learned else INITIAL_PACE)
            per_second = max(FLOOR, min(start, ceiling))
            if learned is not None and learned.refused_at is not None:
                self._refused_at = min(learned.refused_at, ceiling)
        self.per_second = per_second
        self._base = 1.0 / per_second if per_second else 0.0
        self._interval = self._base
        self._fixed_burst = burst
        self.burst = self._burst_at(per_second)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_slot = float("-inf")
        self._held_until = float("-inf")
        self._calm_since = float("-inf")  # the last refusal, or the last step back up
        self._step_started: float | None = None  # the search's current step, and its requests
        self._step_requests = 0

    def _burst_at(self, pace: float | None) -> float:
        return max(1.0, self._fixed_burst if self._fixed_burst is not None else (pace or 0) / 10)

    @property
    def searching(self) -> bool:
        return self.ceiling is not None

    @property
    def pace(self) -> float | None:
        """Requests per second the limiter keeps now (None: no limit)."""
        return 1.0 / self._interval if self._interval else None

    def learned(self) -> LearnedPace | None:
        """What a search has learned so far (None for a fixed or unlimited pace): the next run
        starts at the pace kept now, or at ``CAUTION`` of the last refused pace if lower."""
        if self.ceiling is None:
            return None
        with self._lock:
            pace = 1.0 / self._interval
            if self._refused_at is not None:
                pace = min(pace, CAUTION * self._refused_at)
            return LearnedPace(max(FLOOR, pace), self._refused_at, self.refusals)

    def acquire(self) -> float:
        """Wait for this request's turn; returns the seconds waited."""
        with self._lock:
            now = self._clock()
            if self.ceiling is not None:
                self._probe(now)
            slack = (self.burst - 1.0) * self._interval
            slot = max(now - slack, self._next_slot, self._held_until)
            self._next_slot = slot + self._interval
            if (
                self.ceiling is None
                and self._interval > self._base
                and now - self._calm_since >= RECOVER_AFTER_SECONDS
            ):
                self._interval = max(self._base, self._interval / SLOWDOWN)
                self._calm_since = now
        wait = slot - now
        if wait > 0:
            self._sleep(wait)
        return max(wait, 0.0)

    def _probe(self, now: float) -> None:
        """The search's step (under the lock): up one notch after a calm, filled step."""
        assert self.ceiling is not None
        if self._step_started is None or now < self._held_until:
            self._step_started, self._step_requests = max(now, self._held_until), 0
        self._step_requests += 1
        elapsed = now - self._step_started
        if elapsed < PROBE_SECONDS:
            return
        pace = 1.0 / self._interval
        filled = self._step_requests >= FILLED_SHARE * pace * elapsed
        self._step_started, self._step_requests = now, 0
        if not filled or pace >= self.ceiling:
            return
        if self._refused_at is None:
            pace *= SLOW_START
        elif pace < CAUTION * self._refused_at:
            pace = min(pace * APPROACH, CAUTION * self._refused_at)
        else:
            pace *= CREEP
        self._set_pace(min(pace, self.ceiling))

    def _set_pace(self, pace: float) -> None:
        self._interval = 1.0 / pace
        self.burst = self._burst_at(pace)

    def refused(self, retry_after: float) -> None:
        """The network answered 429: no request from any thread for ``retry_after`` seconds,
        and a slower pace from then on."""
        with self._lock:
            now = self._clock()
            if now >= self._held_until:  # a new episode, not its echoes
                if self.ceiling is not None:
                    pace = 1.0 / self._interval
                    self._refused_at = pace
                    self.refusals += 1
                    self._set_pace(max(FLOOR, pace * BACKOFF))
                elif self._base:
                    self._interval = min(self._interval * SLOWDOWN, 2 * self._base)
            self._calm_since = now
            self._held_until = max(self._held_until, now + retry_after)
            self._step_started = None


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
