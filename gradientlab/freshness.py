"""When a recorded check still tells a node's state.

A check older than two health periods is stale: the CLI and the app show it as stale, with its
age, never as the node's current state (right after a restart, the previous run's last "Good"
is not news). Each check records the period it ran under; each reader judges on its own clock."""

from __future__ import annotations

from gradientlab.config import ScheduleSettings

STALE_AFTER_PERIODS = 2
# The fleet file's default `schedules.health_seconds`: the period of checks recorded without one.
DEFAULT_HEALTH_PERIOD_SECONDS: int = ScheduleSettings.model_fields["health_seconds"].default


def stale_after(health_period_s: float | None) -> float:
    """Seconds after which a check taken under `health_period_s` no longer tells the state."""
    period = health_period_s if health_period_s and health_period_s > 0 else None
    return STALE_AFTER_PERIODS * (period or DEFAULT_HEALTH_PERIOD_SECONDS)


def is_stale(age_seconds: float, health_period_s: float | None) -> bool:
    return age_seconds > stale_after(health_period_s)


def age_text(seconds: float) -> str:
    """A check's age in words: 10s, 4m 5s, 3h 2m, 3d 0h (a day or more is not shown as seconds)."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"
