"""Release: a person hands a quarantined host back to automatic recovery, with fresh budgets.

The same as `gradientlab hosts release <host>`, as a flow run, so that the app's operator
action is recorded in Prefect with who-asked-when beside the health runs it affects."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from gradientlab.health.report import utcnow
from tasks.common import requested_by
from tasks.hosts import release_host


@flow(name="release", log_prints=True)
def release(host: str) -> dict[str, Any]:
    """End `host`'s quarantine; its open incident goes on until the next health run finds it
    Good, and that run may recover it again."""
    at = utcnow()
    by = requested_by()
    before = release_host(host, at, by)
    if before["quarantined_at"] is None:
        what = f"{host} was not quarantined; its recovery budgets start again now"
    else:
        what = (
            f"released {host} (quarantined since {before['quarantined_at']:%Y-%m-%d %H:%M} UTC: "
            f"{before['quarantine_reason'] or 'recovery budget spent'}); the next health run "
            "may recover it again"
        )
    what += f"; requested by {by}"
    get_run_logger().info(what)
    create_markdown_artifact(key="release", markdown=what, description=f"Release of {host}")
    return {
        "host": host,
        "released_at": at.isoformat(),
        "was_quarantined": before["quarantined_at"] is not None,
        "requested_by": by,
        "quarantined_at": before["quarantined_at"].isoformat()
        if before["quarantined_at"]
        else None,
        "quarantine_reason": before["quarantine_reason"],
    }
