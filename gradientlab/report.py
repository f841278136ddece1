"""The daily report: the fleet now, what it earned, what went wrong, what it cost.

Plain functions from the analysis app's query frames (`analysis_app.queries`, the same numbers
the app shows) to a `FleetReport`: its markdown, its tables and a short summary for a
notification. The report's own clock (`as_of`) decides what is stale; nothing here reads one."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import pandas as pd

from gradientlab.freshness import age_text, is_stale

POINT_SCALE = 100_000  # the API's integers per point; the frames carry both raw and points
GOOD_STATUSES = ("Good", "Excellent")
STALE = "stale"
NEVER_CHECKED = "never checked"
BEST_AND_WORST = 5


def points_text(points: float) -> str:
    return f"{points:,.2f}"


def usd_text(value: float) -> str:
    """Dollars with cents, and small prices with three significant digits: $0.0947."""
    return f"${value:,.2f}" if abs(value) >= 1 or value == 0 else f"${value:.3g}"


def period_text(start: date, end: date) -> str:
    return f"{start:%Y-%m-%d}" if start == end else f"{start:%Y-%m-%d} to {end:%Y-%m-%d}"


@dataclass(frozen=True)
class FleetReport:
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
    status: pd.DataFrame, quarantined: pd.DataFrame, earning: set[str], as_of: datetime
) -> tuple[str, list[dict[str, Any]], list[str]]:
    """`fleet_status` and `quarantined_hosts` frames: the verdicts now, per provider and region."""
    if status.empty:
        return "No live hosts.", [], []
    states = [
        check_state(s, c, p, as_of)
        for s, c, p in zip(
            status["status"], status["last_check"], status["health_period_s"], strict=True
        )
    ]
    frame = status.assign(state_now=states)
    counts = frame["state_now"].value_counts()
    by_state = ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda i: (-i[1], i[0])))
    earning_nodes = int(frame["client_id"].isin(earning).sum())
    nodes = int(frame["client_id"].notna().sum())
    headline = (
        f"{len(frame)} hosts: {by_state}; {earning_nodes} of {nodes} nodes "
        f"earned points; {len(quarantined)} quarantined."
    )
    table = []
    for (provider, region), group in frame.groupby(["provider", "region"], sort=True):
        table.append(
            {
                "provider": provider,
                "region": region,
                "hosts": len(group),
                "good": int(group["state_now"].isin(GOOD_STATUSES).sum()),
                "not good": ", ".join(
                    f"{h} ({s})"
                    for h, s in zip(group["host"], group["state_now"], strict=True)
                    if s not in GOOD_STATUSES
                ),
                "earning": int(group["client_id"].isin(earning).sum()),
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


def earnings_section(
    points: pd.DataFrame, status: pd.DataFrame
) -> tuple[str, list[dict[str, Any]], list[str], set[str]]:
    """`node_points` for the period: totals per provider, best and worst nodes, nodes at zero.
    Also returns the client ids that earned."""
    per_node = (
        points.groupby(["host", "client_id", "provider"], as_index=False)["points_raw"].sum()
        if not points.empty
        else pd.DataFrame(columns=["host", "client_id", "provider", "points_raw"])
    )
    earning = set(per_node.loc[per_node["points_raw"] > 0, "client_id"])
    total_raw = int(per_node["points_raw"].sum()) if not per_node.empty else 0
    days = points["day"].nunique() if not points.empty else 0
    headline = (
        f"{points_text(total_raw / POINT_SCALE)} points from {len(earning)} nodes"
        f" over {days} day{'s' if days != 1 else ''} with points."
    )
    table = []
    if not per_node.empty:
        by_provider = per_node.groupby("provider", as_index=False).agg(
            nodes=("client_id", "nunique"), points_raw=("points_raw", "sum")
        )
        for r in by_provider.sort_values(
            ["points_raw", "provider"], ascending=[False, True]
        ).itertuples():
            table.append(
                {
                    "provider": r.provider,
                    "nodes": int(r.nodes),
                    "points": round(int(r.points_raw) / POINT_SCALE, 2),
                    "points_raw": int(r.points_raw),
                }
            )
    ranked = per_node.sort_values(["points_raw", "host"], ascending=[False, True])
    notes = []
    best = ranked[ranked["points_raw"] > 0].head(BEST_AND_WORST)
    if not best.empty:
        notes.append(
            "best: "
            + ", ".join(
                f"{h} {points_text(p / POINT_SCALE)}"
                for h, p in zip(best["host"], best["points_raw"], strict=True)
            )
        )
    listed = set(per_node["client_id"])
    zero = set(per_node.loc[per_node["points_raw"] <= 0, "host"])
    if not status.empty:  # managed nodes the network listed no points for
        zero |= {
            h
            for h, c in zip(status["host"], status["client_id"], strict=True)
            if isinstance(c, str) and c not in listed
        }
    if zero:
        notes.append(f"no points: {', '.join(sorted(zero))}")
    return headline, table, notes, earning


def incidents_section(incidents: pd.DataFrame) -> tuple[str, list[dict[str, Any]], list[str]]:
    """`incidents` detected in the period, by kind, with how they ended and recovery times."""
    if incidents.empty:
        return "No incidents.", [], []
    recovered = incidents["recovery_seconds"].dropna()
    statuses = incidents["status"].value_counts()
    headline = (
        f"{len(incidents)} incidents ({', '.join(f'{n} {s}' for s, n in sorted(statuses.items()))})"
    )
    if not recovered.empty:
        headline += f"; median recovery {age_text(float(recovered.median()))}"
    headline += "."
    table = []
    for kind, group in incidents.groupby("kind", sort=True):
        times = group["recovery_seconds"].dropna()
        table.append(
            {
                "kind": kind,
                "incidents": len(group),
                "recovered": int((group["status"] == "recovered").sum()),
                "open": int((group["status"] == "open").sum()),
                "failed": int((group["status"] == "failed").sum()),
                "median recovery s": round(float(times.median()), 1) if not times.empty else None,
                "max recovery s": round(float(times.max()), 1) if not times.empty else None,
            }
        )
    table.sort(key=lambda r: (-r["incidents"], r["kind"]))
    notes = [
        f"{r.host}: {r.kind}, still {r.status}" + (f" after {r.actions}" if r.actions else "")
        for r in incidents.itertuples()
        if r.status != "recovered"
    ]
    return headline, table, notes


def cost_section(
    host_costs: pd.DataFrame, provider_costs: pd.DataFrame
) -> tuple[str, list[dict[str, Any]], list[str]]:
    """`host_costs` and `provider_costs` for the period: what the fleet cost per point."""
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
    return headline, table, notes


def build_report(
    fleet: str,
    start: date,
    end: date,
    as_of: datetime,
    *,
    status: pd.DataFrame,
    quarantined: pd.DataFrame,
    points: pd.DataFrame,
    incidents: pd.DataFrame,
    host_costs: pd.DataFrame,
    provider_costs: pd.DataFrame,
) -> FleetReport:
    """The report for the UTC days `start`..`end` from the app's query frames."""
    if as_of.tzinfo is None:
        raise ValueError(f"as_of must carry its timezone, got {as_of!r}")
    if end < start:
        raise ValueError(f"the report's period ends ({end}) before it starts ({start})")
    earned, earned_table, earned_notes, earning = earnings_section(points, status)
    sections = {
        "Fleet": fleet_section(status, quarantined, earning, as_of),
        "Earnings": (earned, earned_table, earned_notes),
        "Incidents": incidents_section(incidents),
        "Cost": cost_section(host_costs, provider_costs),
    }
    return FleetReport(
        fleet=fleet,
        start=start,
        end=end,
        as_of=as_of,
        headlines={name: s[0] for name, s in sections.items()},
        tables={name: s[1] for name, s in sections.items() if s[1]},
        notes={name: s[2] for name, s in sections.items() if s[2]},
    )
