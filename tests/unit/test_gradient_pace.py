"""The client's search for the network's request limit, on a simulated clock against a token
bucket it is not told about (as the sandbox and real APIs throttle)."""

from __future__ import annotations

import math

import pytest

from gradientlab.gradient.throttle import (
    FLOOR,
    INITIAL_PACE,
    LearnedPace,
    RateLimiter,
)


class Bucket:
    """A network's limit: `rate` requests/s on average, bursts of `burst`; a refusal says
    Retry-After in whole seconds, as the sandbox does."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.then = burst, 0.0

    def admit(self, now: float) -> float | None:
        self.tokens = min(self.burst, self.tokens + (now - self.then) * self.rate)
        self.then = now
        if self.tokens >= 1:
            self.tokens -= 1
            return None
        return float(max(1, math.ceil((1 - self.tokens) / self.rate)))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def run(limiter: RateLimiter, clock: Clock, bucket: Bucket, answers: int) -> tuple[float, int]:
    """One caller that always has work, `answers` requests answered: (seconds, refusals)."""
    started, refused, done = clock.now, 0, 0
    while done < answers:
        limiter.acquire()
        clock.now += 0.002  # the request's own time on the wire
        retry_after = bucket.admit(clock.now)
        if retry_after is None:
            done += 1
        else:
            refused += 1
            limiter.refused(retry_after)
    return clock.now - started, refused


def searching(
    clock: Clock, learned: LearnedPace | None = None, ceiling: float = 100
) -> RateLimiter:
    return RateLimiter(None, ceiling=ceiling, learned=learned, clock=clock, sleep=clock.sleep)


@pytest.mark.parametrize(("rate", "burst"), [(50, 50), (50, 10), (20, 5), (80, 80)])
def test_a_default_run_finds_a_limit_it_is_not_told_within_1_5x(rate: float, burst: float) -> None:
    clock = Clock()
    limiter = searching(clock)
    answers = int(rate * 200)  # 10,000 requests at 50/s: 200 s if paced at the limit itself
    seconds, refused = run(limiter, clock, Bucket(rate, burst), answers)

    ideal = answers / rate
    assert seconds <= 1.5 * ideal  # the bound (a fixed 10/s would take rate/10 x)
    assert seconds <= 1.2 * ideal  # and in fact well within it
    assert refused > 0  # it found the limit by meeting it...
    assert refused < answers / 100  # ...not by leaning on it
    learned = limiter.learned()
    assert learned is not None and learned.refused_at is not None
    assert 0.6 * rate <= learned.pace <= 1.1 * rate  # what the next run starts at


def test_the_next_run_starts_at_what_was_learned_and_is_refused_less() -> None:
    clock, bucket = Clock(), Bucket(50, 50)
    first = searching(clock)
    first_seconds, first_refused = run(first, clock, bucket, 2000)
    learned = first.learned()
    assert learned is not None

    clock.now += 3600  # the next hourly run, on a bucket refilled
    second = searching(clock, learned)
    assert second.pace == pytest.approx(learned.pace)  # not INITIAL_PACE again
    second_seconds, second_refused = run(second, clock, bucket, 2000)
    assert second_seconds < first_seconds
    assert second_refused <= first_refused


def test_the_ceiling_bounds_the_search_when_the_network_refuses_nothing() -> None:
    clock = Clock()
    limiter = searching(clock, ceiling=40)
    run(limiter, clock, Bucket(10_000, 10_000), 4000)
    assert limiter.pace == pytest.approx(40)
    learned = limiter.learned()
    assert learned == LearnedPace(40, None, 0)
    # a learned pace above a lowered ceiling starts at the ceiling
    assert searching(clock, LearnedPace(90, 95, 2), ceiling=40).pace == pytest.approx(40)


def test_an_idle_spell_earns_no_speed_up() -> None:
    clock = Clock()
    limiter = searching(clock)
    for _ in range(60):  # one request every 2 s for two minutes: the pace is never filled
        limiter.acquire()
        clock.now += 2
    assert limiter.pace == pytest.approx(INITIAL_PACE)


def test_refusals_back_off_but_never_below_the_floor() -> None:
    clock = Clock()
    limiter = searching(clock)
    limiter.acquire()
    limiter.refused(1.0)
    limiter.refused(1.0)  # the same episode (threads refused together): one cut, not two
    assert limiter.refusals == 1 and limiter.pace == pytest.approx(INITIAL_PACE * 0.8)
    for _ in range(40):
        clock.now += 2  # past the last Retry-After: each a new episode
        limiter.refused(1.0)
    assert limiter.pace == pytest.approx(FLOOR)
    assert limiter.acquire() >= 0  # still usable


def test_a_fixed_pace_does_not_search() -> None:
    clock = Clock()
    limiter = RateLimiter(10, clock=clock, sleep=clock.sleep)
    run(limiter, clock, Bucket(10_000, 10_000), 200)
    assert limiter.pace == pytest.approx(10) and limiter.learned() is None


def test_a_learned_pace_must_be_a_pace() -> None:
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="learned pace"):
            LearnedPace(bad)
