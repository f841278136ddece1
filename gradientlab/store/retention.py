"""Growth of the stored history: raw status samples are kept for a window, rollups for ever.

A day's raw samples are deleted only once that day is rolled up and nothing arrived for it since
(the raw count still equals the count its last refresh recorded), and each host's latest sample
is always kept (the fleet's "now" reads it). A pruned day is marked so that no later refresh
rebuilds its rollups from what is left of it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

from sqlalchemy import Engine, text

from gradientlab.store.rollups import refresh_sample_days, utc_start


@dataclass
class PruneResult:
    cutoff: date  # raw samples of days before this one were candidates
    pruned_days: list[date] = field(default_factory=list)
    deleted: int = 0
    unrolled_days: list[date] = field(default_factory=list)  # kept: not rolled up yet


def sample_days_before(engine: Engine, cutoff: date) -> dict[date, tuple[int, int | None, bool]]:
    """Each day before `cutoff` that still has raw samples: (raw count, the count its last
    refresh recorded or None, whether it was pruned already)."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                """
                SELECT r.day, r.samples, d.samples AS rolled, d.pruned_at IS NOT NULL AS pruned
                FROM (SELECT (sampled_at AT TIME ZONE 'UTC')::date AS day, count(*) AS samples
                      FROM node_status_samples WHERE sampled_at < :cutoff GROUP BY 1) r
                LEFT JOIN rollup_sample_days d ON d.day = r.day
                ORDER BY r.day
                """
            ),
            {"cutoff": utc_start(cutoff)},
        )
        return {r.day: (int(r.samples), r.rolled, bool(r.pruned)) for r in rows}


def unrolled_days(engine: Engine, cutoff: date) -> list[date]:
    """Days before `cutoff` whose raw samples are not (all) in the rollups yet."""
    return [
        day
        for day, (raw, rolled, pruned) in sample_days_before(engine, cutoff).items()
        if not pruned and rolled != raw
    ]


def prune_samples(engine: Engine, keep_days: int, today: date) -> PruneResult:
    """Delete raw status samples of the rolled-up days more than `keep_days` before `today`
    (the caller's UTC day), one day per transaction, keeping each host's latest sample."""
    if keep_days < 1:
        raise ValueError(f"retention.raw_samples_days must be at least 1, got {keep_days}")
    result = PruneResult(cutoff=today - timedelta(days=keep_days))
    for day, (raw, rolled, pruned) in sample_days_before(engine, result.cutoff).items():
        if pruned:
            continue  # only hosts' latest samples are left of it
        if rolled != raw:
            result.unrolled_days.append(day)
            continue
        with engine.begin() as conn:
            # the count is read again under a lock: a sample written since is not lost unrolled
            conn.execute(text("LOCK TABLE rollup_sample_days IN SHARE ROW EXCLUSIVE MODE"))
            params = {"day": day, "since": utc_start(day), "until": utc_start(day + timedelta(1))}
            now_raw = conn.execute(
                text(
                    "SELECT count(*) FROM node_status_samples"
                    " WHERE sampled_at >= :since AND sampled_at < :until"
                ),
                params,
            ).scalar_one()
            if now_raw != rolled:
                result.unrolled_days.append(day)
                continue
            deleted = conn.execute(
                text(
                    """
                    DELETE FROM node_status_samples s
                    WHERE s.sampled_at >= :since AND s.sampled_at < :until
                      AND s.id <> ALL(ARRAY(
                          SELECT (SELECT l.id FROM node_status_samples l WHERE l.host_id = h.id
                                  ORDER BY l.sampled_at DESC LIMIT 1)
                          FROM hosts h))
                    """
                ),
                params,
            ).rowcount
            conn.execute(
                text("UPDATE rollup_sample_days SET pruned_at = now() WHERE day = :day"), params
            )
        result.pruned_days.append(day)
        result.deleted += deleted
    return result


def roll_up_then_prune(engine: Engine, keep_days: int, today: date) -> PruneResult:
    """What the scheduled prune runs: roll up the old days not rolled up yet, then prune."""
    for day in unrolled_days(engine, today - timedelta(days=keep_days)):
        with engine.begin() as conn:
            refresh_sample_days(conn, day, day)
    return prune_samples(engine, keep_days, today)
