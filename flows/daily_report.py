"""Report: the fleet now, what it earned, what went wrong and what it cost, for the last UTC
day (or `days` ending on `end`), as Prefect artifacts, and its summary through the
notification block when one is configured. The numbers are the analysis app's own reads
(gradientlab.store.reads)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from gradientlab.daily_report import build_report
from tasks.common import fleet_from
from tasks.daily_report import notification_block, notify, read_report

TABLE_KEYS = {
    "Fleet": "report-fleet",
    "Earnings": "report-earnings",
    "Incidents": "report-incidents",
    "Cost": "report-cost",
}


@flow(name="report", log_prints=True)
def report(
    fleet_path: str = "fleet.yaml",
    end: date | None = None,
    days: int = 1,
    as_of: datetime | None = None,
    notify_block: str | None = None,
) -> dict[str, Any]:
    """The report for the `days` UTC days ending on `end` (default: yesterday on `as_of`'s
    clock, default now). `notify_block` is "<block type slug>/<name>"; without it the summary
    goes through the block the alert automations use, if they are installed."""
    logger = get_run_logger()
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    now = as_of or datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError(f"as_of must carry its timezone, got {as_of!r}")
    last = end or (now.astimezone(UTC).date() - timedelta(days=1))
    first = last - timedelta(days=days - 1)
    fleet = fleet_from(fleet_path)
    built = build_report(fleet.name, first, last, now, **read_report(first, last, now))
    create_markdown_artifact(key="report", markdown=built.markdown(), description=built.title)
    for section, key in TABLE_KEYS.items():
        if section in built.tables:
            create_table_artifact(
                key=key,
                table=built.tables[section],
                description=f"{section}: {built.headlines[section]}",
            )
    block, where = notification_block(notify_block)
    if block is None:
        logger.info("no notification sent: %s", where)
    else:
        notify(block, built.title, built.summary())
        logger.info("summary sent through %s", where)
    for section, line in built.headlines.items():
        logger.info("%s: %s", section, line)
    return {
        "start": first.isoformat(),
        "end": last.isoformat(),
        "headlines": built.headlines,
        "tables": built.tables,
        "notified": where if block is not None else None,
    }
