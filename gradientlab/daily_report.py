"""The daily report: the fleet now, what it earned, what went wrong, what it cost.

Plain functions to a `DailyReport` (its markdown, its tables and a short summary for a
notification) from the frames the analysis app's pages read (`gradientlab.store.reads`: the
Fleet now, Rewards, Incidents and Economics pages' own reads, so the report's numbers are
the ones the app shows for the same days). The report's own clock (`as_of`) decides what is
stale; nothing here reads one.

Not to be confused with a health check's `HealthReport` (gradientlab/health/report.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import pandas as pd

from gradientlab.agent.pages import GOOD_STATES
from gradientlab.freshness import age_text, is_stale
from gradientlab.gradient.models import POINT_SCALE

STALE = "stale"
NEVER_CHECKED = "never checked"
BEST_AND_WORST = 5  # nodes named in the report's best and worst lines
UNRESOLVED_LISTED = 20  # incidents still open or failed named one by one, newest first


def points_text(points: float) -> str:
    return f"{points:,.2f}"


def usd_text(value: float) -> str:
    """Dollars with cents, and small prices with three significant digits: $0.0947."""
    return f"${value:,.2f}" if abs(value) >= 1 or value == 0 else f"${value:.3g}"


def period_text(start: date, end: date) -> str:
    return f"{start:%Y-%m-%d}" if start == end else f"{start:%Y-%m-%d} to {end:%Y-%m-%d}"


@dataclass(frozen=True)
class DailyReport:
    """One report: a headline per section, and the tables behind them (rows of plain values)."""

    fleet: str
    start: date
    end: date
    as_of: datetime
    headlines: dict[str, str]
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)

    @property
    def title(self) -> str:
        return f"GradientLab report for fleet {self.fleet}, {period_text(self.start, self.end)}"

    def summary(self) -> str:
        """The headlines, one line each: what a notification carries."""
        return "\n".join(f"{name}: {line}" for name, line in self.headlines.items())

    def markdown(self) -> str:
        lines = [
            f"# {self.title}",
            "",
            f"As of {self.as_of:%Y-%m-%d %H:%M} UTC. Points are the network's, per UTC day.",
        ]
        for section, headline in self.headlines.items():
            lines += ["", f"## {section}", "", headline]
            lines += [f"- {note}" for note in self.notes.get(section, [])]
            table = self.tables.get(section)
            if table:
                lines += ["", *_markdown_table(table)]
        return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    return str(value).replace("|", "\\|").replace("\n", " ")


def _markdown_table(rows: list[dict[str, Any]]) -> list[str]:
    columns = list(rows[0])
    return [
        "| " + " | ".join(columns) + " |",
        "| " + " | ".join("---" for _ in columns) + " |",
        *("| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows),
    ]


def check_state(status: Any, last_check: Any, health_period_s: Any, as_of: datetime) -> str:
    """A host's verdict as of the report's clock: its last check's status, or "stale" when
    that check is older than two health periods, or "never checked"."""
    if last_check is None or pd.isna(last_check) or status is None or pd.isna(status):
        return NEVER_CHECKED
    period = None if health_period_s is None or pd.isna(health_period_s) else health_period_s
    if is_stale((as_of - last_check).total_seconds(), period):
        return STALE
    return str(status)


def fleet_section(
    fleet_now: pd.DataFrame, as_of: datetime
) -> tuple[str, list[dict[str, Any]], list[str]]:
    """The Fleet now page's frame (`fleet_now`): the verdicts on the report's clock, per
    provider and region; earning as the page counts it (points on the node's latest listed
    day); the quarantined hosts."""
    if fleet_now.empty:
        return "No live hosts.", [], []
    states = [
        check_state(s, c, p, as_of)
        for s, c, p in zip(
            fleet_now["status"], fleet_now["last_check"], fleet_now["health_period_s"], strict=True
        )
    ]
    frame = fleet_now.assign(
        state_now=states, earning=fleet_now["today_points_raw"].fillna(0).astype("int64") > 0
    )
    counts = frame["state_now"].value_counts()
    by_state = ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda i: (-i[1], i[0])))
    quarantined = frame[frame["quarantined_at"].notna()].sort_values(["quarantined_at", "host"])
    headline = (
        f"{len(frame)} hosts: {by_state}; {int(frame['earning'].sum())} of {len(frame)} "
        f"earning (points on their latest listed day); {len(quarantined)} quarantined."
    )
    table = []
    for (provider, region), group in frame.groupby(["provider", "region"], sort=True):
        table.append(
            {
                "provider": provider,
                "region": region,
                "hosts": len(group),
                "good": int(group["state_now"].isin(GOOD_STATES).sum()),
                "not good": ", ".join(
                    f"{h} ({s})"
                    for h, s in zip(group["host"], group["state_now"], strict=True)
                    if s not in GOOD_STATES
                ),
                "earning": int(group["earning"].sum()),
            }
        )
    notes = [
        f"quarantined: {r.host} for {age_text((as_of - r.quarantined_at).total_seconds())}"
        f" ({r.quarantine_reason or 'recovery budget spent'}); release it once fixed"
        for r in quarantined.itertuples()
    ]
    last = frame["last_check"].dropna()
    if not last.empty:
        notes.append(f"latest check {age_text((as_of - last.max()).total_seconds())} ago")
    return headline, table, notes


def _nodes_text(nodes: pd.DataFrame) -> str:
    return ", ".join(
        f"{h} {points_text(p / POINT_SCALE)}"
        for h, p in zip(nodes["host"], nodes["points_raw"], strict=True)
    )


def earnings_section(
    totals: dict[str, Any],
    by_provider: pd.DataFrame,
    best: pd.DataFrame,
    worst: pd.DataFrame,
    season: str | None = None,
) -> tuple[str, list[dict[str, Any]], list[str]]:
    """The Rewards page's numbers: `selection_totals` for the headline, `points_by_group` by
    provider summed over the days, and the best and worst nodes of `node_totals`. `season`:
    what the Rewards page says when the network pays nothing now (`reads.season_text`), which
    then leads the section."""
    if season:
        notes = (
            []
            if totals["node_days"] == 0
            else [f"{totals['nodes']} nodes listed over {totals['node_days']} node-days"]
        )
        return season, [], notes
    if totals["node_days"] == 0:
        return "The network listed no points for these days.", [], []
    days = totals["days_all_zero"]
    headline = (
        f"{points_text(totals['points_raw'] / POINT_SCALE)} points from {totals['nodes']} "
        f"nodes over {totals['node_days']} node-days; {totals['zero_days']} node-days "
        f"without a point; {days} day{'s' if days != 1 else ''} no node earned."
    )
    table = []
    if not by_provider.empty:
        summed = by_provider.groupby("provider", as_index=False).agg(
            node_days=("nodes", "sum"),
            earning_node_days=("earning_nodes", "sum"),
            points_raw=("points_raw", "sum"),
            taps=("taps", "sum"),
        )
        for r in summed.sort_values(
            ["points_raw", "provider"], ascending=[False, True]
        ).itertuples():
            table.append(
                {
                    "provider": r.provider,
                    "node-days": int(r.node_days),
                    "earning node-days": int(r.earning_node_days),
                    "points": round(int(r.points_raw) / POINT_SCALE, 2),
                    "points_raw": int(r.points_raw),
                    "taps": int(r.taps),
                }
            )
    notes = []
    earned = best[best["points_raw"] > 0]
    if not earned.empty:
        notes.append(f"best: {_nodes_text(earned)}")
    if not worst.empty:
        notes.append(f"worst: {_nodes_text(worst)}")
    return headline, table, notes


def incidents_section(
    causes: pd.DataFrame, steps: pd.DataFrame, unresolved: pd.DataFrame
) -> tuple[str, list[dict[str, Any]], list[str]]:
    """The Incidents page's numbers: `incidents_by_cause` (detected in the period, by cause,
    how they stand) and `recovery_step_success` (how often each step worked); and, by name,
    the incidents of the period still open or failed (`incidents(..., unresolved=True)`, the
    newest `UNRESOLVED_LISTED`): who needs a person."""
    if causes.empty:
        return "No incidents.", [], []
    total, recovered = int(causes["incidents"].sum()), int(causes["recovered"].sum())
    stand = {
        "recovered": recovered,
        "open": int(causes["open"].sum()),
        "failed": int(causes["failed"].sum()),
    }
    headline = f"{total} incidents ({', '.join(f'{n} {s}' for s, n in stand.items() if n)})"
    if recovered:
        mean = float((causes["mean_recovery_s"].fillna(0) * causes["recovered"]).sum()) / recovered
        headline += f"; mean recovery {age_text(mean)}"
    headline += "."
    table = [
        {
            "kind": r.kind,
            "incidents": int(r.incidents),
            "recovered": int(r.recovered),
            "open": int(r.open),
            "failed": int(r.failed),
            "mean recovery s": None if pd.isna(r.mean_recovery_s) else round(r.mean_recovery_s, 1),
        }
        for r in causes.itertuples()
    ]
    still = [
        f"{r.host}: {r.kind}, still {r.status}" + (f" after {r.actions}" if r.actions else "")
        for r in unresolved.itertuples()
    ]
    left = stand["open"] + stand["failed"] - len(still)
    if still and left > 0:
        still.append(f"and {left} more open or failed (the Incidents page lists them)")
    notes = still + [
        f"{r.step}: worked {int(r.ok)} of {int(r.tries)} tries"
        + ("" if pd.isna(r.success_rate) else f" ({r.success_rate:.0%} of those that ended)")
        for r in steps.itertuples()
    ]
    return headline, table, notes


def cost_section(
    host_costs: pd.DataFrame, provider_costs: pd.DataFrame, unsupported: pd.DataFrame
) -> tuple[str, list[dict[str, Any]], list[str]]:
    """The Economics page's numbers: `host_costs` and `provider_costs` for the period (what
    the fleet cost per point) and `unsupported_costs` (what Unsupported nodes cost for
    nothing)."""
    if host_costs.empty:
        return "No host cost anything.", [], []
    cost = float(host_costs["cost_usd"].sum())
    points = int(host_costs["points_raw"].sum()) / POINT_SCALE
    headline = f"{usd_text(cost)} for {points_text(points)} points"
    headline += f" ({usd_text(cost / points)} per point)." if points > 0 else "."
    table = [
        {
            "provider": r.provider,
            "hosts": int(r.hosts),
            "hours": round(float(r.hours), 1),
            "cost usd": round(float(r.cost_usd), 4),
            "points": round(float(r.points), 2),
            "usd per point": r.per_point_note or round(float(r.usd_per_point), 6),
        }
        for r in provider_costs.itertuples()
    ]
    paying = host_costs[(host_costs["cost_usd"] > 0) & (host_costs["points_raw"] <= 0)]
    notes = (
        [
            "paid for no points: "
            + ", ".join(
                f"{h} {usd_text(c)}"
                for h, c in zip(paying["host"], paying["cost_usd"], strict=True)
            )
        ]
        if not paying.empty
        else []
    )
    wasted = unsupported[unsupported["wasted_usd"] > 0]
    if not wasted.empty:
        notes.append(
            f"spent while Unsupported: {usd_text(float(wasted['wasted_usd'].sum()))} ("
            + ", ".join(
                f"{h} {usd_text(w)}"
                for h, w in zip(wasted["host"], wasted["wasted_usd"], strict=True)
            )
            + ")"
        )
    return headline, table, notes


def build_report(
    fleet: str,
    start: date,
    end: date,
    as_of: datetime,
    *,
    fleet_now: pd.DataFrame,
    totals: dict[str, Any],
    by_provider: pd.DataFrame,
    best: pd.DataFrame,
    worst: pd.DataFrame,
    causes: pd.DataFrame,
    steps: pd.DataFrame,
    unresolved: pd.DataFrame,
    host_costs: pd.DataFrame,
    provider_costs: pd.DataFrame,
    unsupported: pd.DataFrame,
    season: str | None = None,
) -> DailyReport:
    """The report for the UTC days `start`..`end` from the frames the app's pages read."""
    if as_of.tzinfo is None:
        raise ValueError(f"as_of must carry its timezone, got {as_of!r}")
    if end < start:
        raise ValueError(f"the report's period ends ({end}) before it starts ({start})")
    sections = {
        "Fleet": fleet_section(fleet_now, as_of),
        "Earnings": earnings_section(totals, by_provider, best, worst, season),
        "Incidents": incidents_section(causes, steps, unresolved),
        "Cost": cost_section(host_costs, provider_costs, unsupported),
    }
    return DailyReport(
        fleet=fleet,
        start=start,
        end=end,
        as_of=as_of,
        headlines={name: s[0] for name, s in sections.items()},
        tables={name: s[1] for name, s in sections.items() if s[1]},
        notes={name: s[2] for name, s in sections.items() if s[2]},
    )
