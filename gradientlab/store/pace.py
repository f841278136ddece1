"""The API pace the Gradient client learned, kept between runs in the database every worker
reads (table ``api_pace``, sql/013): one row per API address."""

from __future__ import annotations

from sqlalchemy import Engine, text

from gradientlab.gradient.throttle import LearnedPace


def load_pace(engine: Engine, api_base: str) -> LearnedPace | None:
    """What the last run against ``api_base`` learned, or None when none has run."""
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT pace, refused_at, refusals FROM api_pace WHERE api_base = :base"),
            {"base": api_base},
        ).one_or_none()
    if row is None:
        return None
    return LearnedPace(pace=row.pace, refused_at=row.refused_at, refusals=row.refusals)


def save_pace(engine: Engine, api_base: str, learned: LearnedPace) -> None:
    """Keep what this run learned for the next one (the last writer wins)."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO api_pace (api_base, pace, refused_at, refusals, updated_at)"
                " VALUES (:base, :pace, :refused_at, :refusals, now())"
                " ON CONFLICT (api_base) DO UPDATE SET pace = EXCLUDED.pace,"
                " refused_at = EXCLUDED.refused_at, refusals = EXCLUDED.refusals,"
                " updated_at = now()"
            ),
            {
                "base": api_base,
                "pace": learned.pace,
                "refused_at": learned.refused_at,
                "refusals": learned.refusals,
            },
        )
