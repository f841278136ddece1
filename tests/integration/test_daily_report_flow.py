"""The report flow on the real Postgres and the session's Prefect server: its artifacts carry
the numbers the app's Fleet now, Rewards, Incidents and Economics pages show for the same days
(the same queries), and its summary reaches a webhook through a notification block.

Every row and clock derive from one reference time far from the real date, handed to the flow
as `as_of`: a report that read the real clock would see other days and fail on any run."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import Engine, text

from analysis_app.fleet import stale_checks, verdicts
from gradientlab.agent.pages import GOOD_STATES
from gradientlab.daily_report import BEST_AND_WORST, points_text
from gradientlab.store import reads
from gradientlab.store.rollups import refresh_rollups

NOW = datetime(2025, 3, 14, 10, 30, tzinfo=UTC)
END = NOW.date() - timedelta(days=1)  # the report's period: the two days before NOW's day
START = END - timedelta(days=1)
HANG_GUARD = 60  # seconds; a deadline for a webhook call to arrive, never a timing claim

Webhook = tuple[str, list[dict[str, Any]]]


def seed(engine: Engine) -> None:
    """Three live hosts (one quarantined, one checked long ago, one Unsupported inside the
    period), one node the network lists that no host owns, points inside and outside the
    period, incidents, costs; then the rollups the pages read, as the flows keep them."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO hosts (id, name, provider, region, address, state, hourly_cost_usd,"
                " created_at, updated_at, quarantined_at, quarantine_reason) VALUES"
                " (1, 'oci-a', 'oci', 'us-ashburn-1', '10.0.0.2', 'running', 0.01, :c, :c,"
                "  NULL, NULL),"
                " (2, 'gcp-b', 'gcp', 'us-west1', '10.0.0.3', 'running', 0.02, :c, :c,"
                "  NULL, NULL),"
                " (3, 'pi-c', 'static', NULL, '192.168.1.20', 'running', 0, :c, :c,"
                "  :q, 'recovery budget spent on BrowserDown')"
            ),
            {"c": NOW - timedelta(days=30), "q": NOW - timedelta(hours=3)},
        )
        conn.execute(
            text(
                "INSERT INTO nodes (host_id, client_id) VALUES"
                " (1, 'node-oci'), (2, 'node-gcp'), (3, 'node-pi')"
            )
        )
        points = {  # raw integers per day: before the period, then its two days
            "node-oci": [9_000_000, 0, 0],
            "node-gcp": [9_000_000, 1_234_567, 2_500_000],
            "node-pi": [9_000_000, 3_000_000, 2_875_000],
            "laptop-node": [9_000_000, 500_000, 500_000],
        }
        days = [START - timedelta(days=1), START, END]
        conn.execute(
            text(
                "INSERT INTO node_daily_points (client_id, day, points, taps)"
                " VALUES (:c, :d, :p, 0)"
            ),
            [
                {"c": c, "d": d, "p": p}
                for c, raws in points.items()
                for d, p in zip(days, raws, strict=True)
            ],
        )
        conn.execute(
            text(
                "INSERT INTO node_status_samples"
                " (host_id, sampled_at, status, reachable, health_period_s)"
                " VALUES (:h, :at, :s, true, 300)"
            ),
            [
                {"h": 1, "at": NOW - timedelta(days=1, hours=12), "s": "Unsupported"},  # in it
                {"h": 1, "at": NOW - timedelta(minutes=2), "s": "Unsupported"},
                {"h": 2, "at": NOW - timedelta(minutes=3), "s": "Good"},
                {"h": 3, "at": NOW - timedelta(hours=3), "s": "Good"},  # stale
            ],
        )
        end_of_period = datetime.combine(END, datetime.min.time(), UTC)
        conn.execute(
            text(
                "INSERT INTO incidents (id, host_id, kind, detected_at, status, recovered_at)"
                " VALUES (1, 3, 'BrowserDown', :d1, 'recovered', :r1),"
                " (2, 3, 'BrowserDown', :d2, 'failed', NULL),"
                " (3, 2, 'LoggedOut', :d3, 'open', NULL),"
                " (4, 2, 'LoggedOut', :d4, 'recovered', :r4)"  # before the period
            ),
            {
                "d1": end_of_period + timedelta(hours=2),
                "r1": end_of_period + timedelta(hours=2, seconds=90),
                "d2": end_of_period + timedelta(hours=5),
                "d3": end_of_period - timedelta(hours=3),
                "d4": end_of_period - timedelta(days=3),
                "r4": end_of_period - timedelta(days=3) + timedelta(seconds=30),
            },
        )
        conn.execute(
            text(
                "INSERT INTO recovery_actions (incident_id, step, started_at, finished_at, ok)"
                " VALUES (2, 'restart_browser', :t, :t, false)"
            ),
            {"t": end_of_period + timedelta(hours=5, minutes=1)},
        )
    refresh_rollups(engine)


@pytest.fixture()
def fleet_file(tmp_path: Path) -> str:
    path = tmp_path / "fleet.yaml"
    path.write_text(
        "name: lab-report\n"
        "account: {email: operator@gradientlab.test, password: {env: REPORT_TEST_PASSWORD}}\n"
        "providers:\n  local: {kind: local, base_address: 127.0.0.10, ssh_port: 2222}\n"
    )
    return str(path)


@pytest.fixture()
def webhook() -> Iterator[Webhook]:
    received: list[dict[str, Any]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - stdlib name
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append(json.loads(body or b"{}"))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()


@pytest.fixture()
def report_hook(prefect_server: None, webhook: Webhook) -> Webhook:
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    url, _ = webhook
    CustomWebhookNotificationBlock(
        name="report",
        url=url,
        json_data={"text": "{{subject}}\n{{body}}"},
    ).save("report-hook", overwrite=True)
    return webhook


@pytest.fixture()
def no_alert_automations(prefect_server: None) -> Iterator[None]:
    """No GradientLab alert automation before or after (an earlier test's may be left,
    notifying a webhook that is gone)."""
    from prefect.client.orchestration import get_client

    def clear() -> None:
        with get_client(sync_client=True) as client:
            for automation in client.read_automations():
                if automation.name.startswith("gradientlab: "):
                    client.delete_automation(automation.id)

    clear()
    yield
    clear()


def artifacts(flow_run_id: UUID) -> dict[str, Any]:
    """The run's artifacts by key: table data as rows, markdown as text."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    out: dict[str, Any] = {}
    for a in found:
        data = json.loads(a.data) if a.type == "table" and isinstance(a.data, str) else a.data
        out[str(a.key)] = data
    return out


def run_report(fleet_file: str, **params: Any) -> tuple[dict[str, Any], UUID]:
    from flows.daily_report import report

    state = report(fleet_path=fleet_file, end=END, days=2, as_of=NOW, return_state=True, **params)
    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None
    return state.result(), flow_run_id


def test_the_report_shows_the_apps_numbers_and_reaches_the_webhook(
    engine: Engine, report_hook: Webhook, fleet_file: str
) -> None:
    seed(engine)
    # what the pages read for the same days: Rewards, Incidents, Economics, Fleet now
    selection = reads.FleetFilter(start=START, end=END)
    totals = reads.selection_totals(engine, selection)
    by_provider = reads.points_by_group(engine, selection, "provider")
    best = reads.node_totals(engine, selection, "best", BEST_AND_WORST, 0)
    worst = reads.node_totals(engine, selection, "worst", BEST_AND_WORST, 0)
    causes = reads.incidents_by_cause(engine, selection)
    steps = reads.recovery_step_success(engine, selection)
    costs = reads.host_costs(engine, selection, NOW)
    unsupported = reads.unsupported_costs(costs, reads.status_shares(engine, selection))
    fleet_now = reads.fleet_now(engine)

    result, run_id = run_report(fleet_file, notify_block="custom-webhook/report-hook")
    found = artifacts(run_id)
    headlines, markdown = result["headlines"], found["report"]

    # earnings: the Rewards page's totals, per-provider sums, best and worst nodes
    assert headlines["Earnings"] == (
        f"{points_text(totals['points'])} points from {totals['nodes']} nodes over "
        f"{totals['node_days']} node-days; {totals['zero_days']} node-days without a point; "
        f"{totals['days_all_zero']} days no node earned."
    )
    assert totals["points_raw"] == 1_234_567 + 2_500_000 + 3_000_000 + 2_875_000 + 1_000_000
    assert totals["nodes"] == 4 and totals["zero_days"] == 2  # node-oci on both days
    earnings = {r["provider"]: r for r in found["report-earnings"]}
    per_provider = by_provider.groupby("provider")["points_raw"].sum()
    assert {p: r["points_raw"] for p, r in earnings.items()} == {
        p: int(v) for p, v in per_provider.items()
    }
    assert earnings["static"]["points_raw"] == 5_875_000  # inside the period only
    assert earnings[reads.UNMANAGED_PROVIDER]["points_raw"] == 1_000_000
    assert sum(r["points_raw"] for r in earnings.values()) == totals["points_raw"]
    best_line = ", ".join(
        f"{h} {points_text(p)}" for h, p in zip(best["host"], best["points"], strict=True)
    )
    worst_line = ", ".join(
        f"{h} {points_text(p)}" for h, p in zip(worst["host"], worst["points"], strict=True)
    )
    assert best["host"].tolist() == ["pi-c", "gcp-b", "laptop-node", "oci-a"]
    assert f"- best: {best_line.removesuffix(', oci-a 0.00')}" in markdown  # earners only
    assert f"- worst: {worst_line}" in markdown
    # incidents: the Incidents page's counts by cause and its recovery steps
    incidents = {r["kind"]: r for r in found["report-incidents"]}
    assert {k: (r["incidents"], r["recovered"], r["open"], r["failed"])
            for k, r in incidents.items()} == {
        r.kind: (r.incidents, r.recovered, r.open, r.failed) for r in causes.itertuples()
    }  # fmt: skip
    assert (incidents["BrowserDown"]["recovered"], incidents["BrowserDown"]["failed"]) == (1, 1)
    assert incidents["BrowserDown"]["mean recovery s"] == 90.0
    assert "LoggedOut" in incidents  # detected inside the period; the one before it is not
    assert int(causes["incidents"].sum()) == 3
    assert steps["step"].tolist() == ["restart_browser"]
    assert "- restart_browser: worked 0 of 1 tries (0% of those that ended)" in markdown
    # who needs a person: the period's incidents still open or failed, by name, newest first
    assert "- pi-c: BrowserDown, still failed after restart_browser ✗\n" in markdown
    assert "- gcp-b: LoggedOut, still open\n" in markdown
    assert markdown.index("pi-c: BrowserDown") < markdown.index("gcp-b: LoggedOut")
    assert "more open or failed" not in markdown
    # cost: the Economics page's provider roll-up and what Unsupported cost for nothing
    app_provider_costs = reads.provider_costs(costs).set_index("provider")
    cost = {r["provider"]: r for r in found["report-cost"]}
    assert set(cost) == set(app_provider_costs.index)
    for provider, row in cost.items():
        assert row["cost usd"] == round(float(app_provider_costs.at[provider, "cost_usd"]), 4)
    assert cost["oci"]["cost usd"] == 0.48  # 48 hours at $0.01
    assert cost["oci"]["usd per point"] == "no points"
    assert unsupported["host"].tolist() == ["oci-a"]
    assert "- paid for no points: oci-a $0.48" in markdown
    assert "- spent while Unsupported: $0.48 (oci-a $0.48)" in markdown  # its only checks
    # the fleet now, on the report's clock, counted as the Fleet now page counts it
    good = int((fleet_now["status"].isin(GOOD_STATES) & ~stale_checks(fleet_now, NOW)).sum())
    earning = int((fleet_now["today_points"].fillna(0) > 0).sum())
    fleet = {(r["provider"], r["region"]): r for r in found["report-fleet"]}
    assert sum(r["good"] for r in fleet.values()) == good == 1
    assert sum(r["earning"] for r in fleet.values()) == earning == 2
    assert sorted(verdicts(fleet_now, NOW)) == ["Good", "Stale", "Unsupported"]
    assert fleet[("gcp", "us-west1")]["good"] == 1
    assert fleet[("static", reads.UNKNOWN_REGION)]["not good"] == "pi-c (stale)"
    assert fleet[("oci", "us-ashburn-1")]["not good"] == "oci-a (Unsupported)"
    assert headlines["Fleet"] == (
        "3 hosts: 1 Good, 1 Unsupported, 1 stale; 2 of 3 earning (points on their latest "
        "listed day); 1 quarantined."
    )
    assert "# GradientLab report for fleet lab-report, 2025-03-12 to 2025-03-13" in markdown
    assert "quarantined: pi-c for 3h 0m (recovery budget spent on BrowserDown)" in markdown

    # the summary went through the block, once, with every headline
    _, received = report_hook
    assert result["notified"] == "the block custom-webhook/report-hook"
    assert len(received) == 1
    sent = received[0]["text"]
    assert sent.startswith("GradientLab report for fleet lab-report")
    for line in result["headlines"].values():
        assert line in sent


def test_without_a_block_the_report_uses_the_alerts_block_or_none(
    engine: Engine, report_hook: Webhook, fleet_file: str, no_alert_automations: None
) -> None:
    from prefect.automations import AutomationCore, EventTrigger, SendNotification
    from prefect.client.orchestration import get_client
    from prefect.events.schemas.automations import Posture

    seed(engine)
    _, received = report_hook
    result, _ = run_report(fleet_file)
    assert result["notified"] is None
    assert received == []

    with get_client(sync_client=True) as client:
        block = client.read_block_document_by_name("report-hook", "custom-webhook")
        client.create_automation(
            AutomationCore(
                name="gradientlab: report test",
                trigger=EventTrigger(
                    expect={"gradientlab.test.never-emitted"},
                    posture=Posture.Reactive,
                    threshold=1,
                    within=timedelta(0),
                ),
                actions=[SendNotification(block_document_id=block.id, subject="s", body="b")],
            )
        )
    result, _ = run_report(fleet_file)
    assert result["notified"] == "the alerts' block custom-webhook/report-hook"
    deadline = time.monotonic() + HANG_GUARD
    while not received and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [m["text"].splitlines()[0] for m in received] == [
        "GradientLab report for fleet lab-report, 2025-03-12 to 2025-03-13"
    ]


def test_a_missing_or_wrong_block_is_named(
    engine: Engine, report_hook: Webhook, fleet_file: str
) -> None:
    from tasks.daily_report import NotificationBlockError, notification_block

    with pytest.raises(NotificationBlockError, match="'report-hook' must be"):
        notification_block("report-hook")
    with pytest.raises(NotificationBlockError, match="no notification block 'slack-webhook/nope'"):
        notification_block("slack-webhook/nope")
