"""How the fleet's latest checks read: a status as the popup shows it, stale checks, ages."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import altair as alt
import pandas as pd

from gradientlab.agent.pages import PopupState
from gradientlab.freshness import is_stale
from gradientlab.store.reads import FleetFilter

# Text colours for the status cell, in the popup's own terms.
STATUS_COLOURS = {
    PopupState.GOOD: "#1a7f37",
    PopupState.EXCELLENT: "#1a7f37",
    PopupState.DISCONNECTED: "#bc4c00",
    PopupState.UNSUPPORTED: "#cf222e",
    "Suspended": "#cf222e",
    "Stale": "#6e7781",
}


# Each status's colour in charts, in legend order: earning greens first, then what the
# network says (orange, red), then what went wrong on the host (browns and purples), then what
# GradientLab cannot tell (greys). A status not listed here is drawn grey.
STATUS_CHART_COLOURS = {
    PopupState.EXCELLENT: "#116329",
    PopupState.GOOD: "#2da44e",
    "Starting": "#8fd19e",
    PopupState.DISCONNECTED: "#fb8f44",
    PopupState.UNSUPPORTED: "#cf222e",
    "Suspended": "#82071e",
    "LoggedOut": "#d4a72c",
    "BrowserDown": "#bf8700",
    "BrowserHung": "#9a6700",
    "RunnerDown": "#a0522d",
    "RunnerCrashLoop": "#6e3b1a",
    "PageChanged": "#8250df",
    "Unreachable": "#6639ba",
    "DiskFull": "#bc4c00",
    "MemoryLow": "#953800",
    "AuthRefused": "#a475f9",
    "HostKeyChanged": "#4c2889",
    "HostKeyInvalid": "#4c2889",
    "ProbeInvalid": "#57606a",
    "Provisioning": "#54aeff",
    "NotDeployed": "#0969da",
    "Stale": "#8c959f",
    "Not checked yet": "#d0d7de",
}
OTHER_STATUS_COLOUR = "#6e7781"


def status_scale(statuses: Iterable[str]) -> alt.Scale:
    """A colour scale for the statuses a chart draws: Good is green and Unsupported red on
    every chart, whatever else the chart holds."""
    present = set(statuses)
    domain = [s for s in STATUS_CHART_COLOURS if s in present]
    domain += sorted(present - set(domain))
    return alt.Scale(
        domain=domain,
        range=[STATUS_CHART_COLOURS.get(s, OTHER_STATUS_COLOUR) for s in domain],
    )


def status_label(
    status: str | None, banned_reason: str | None, stale_since: str | None = None
) -> str:
    """The status as the popup shows it, with the reason when the network gives one; a stale
    check (`stale_since`: how long ago) is shown as such, never as the node's state now."""
    if status is None or pd.isna(status):
        return "Not checked yet"
    label = str(status)
    if banned_reason and not pd.isna(banned_reason):
        label = f"{status}: {banned_reason}"
    if stale_since:
        return f"Stale: last check {stale_since} said {label}"
    return label


def status_colour(label: str) -> str:
    colour = STATUS_COLOURS.get(label.split(":", 1)[0])
    return f"color: {colour}; font-weight: 600" if colour else ""


def age(moment: pd.Timestamp, now: datetime) -> str:
    """How long ago, in the largest whole unit: "4 min ago", "3 h ago", "2 days ago"."""
    seconds = max(0, int((now - moment.to_pydatetime()).total_seconds()))
    for unit, size in (("day", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if unit == 'day' and count > 1 else ''} ago"
    return "just now"


def stale_checks(fleet: pd.DataFrame, now: datetime) -> pd.Series:
    """True where a host's latest check is older than two of its health periods."""
    ages = (pd.Timestamp(now) - fleet["last_check"]).dt.total_seconds()
    return pd.Series(
        [
            not pd.isna(a) and is_stale(a, None if pd.isna(p) else p)
            for a, p in zip(ages, fleet["health_period_s"], strict=True)
        ],
        index=fleet.index,
        dtype=bool,
    )


def verdicts(fleet: pd.DataFrame, now: datetime) -> pd.Series:
    """Each host's verdict now: its latest status, "Stale" when that is too old to tell, "Not
    checked yet" when there is none."""
    stale = stale_checks(fleet, now)
    return pd.Series(
        [
            "Not checked yet" if pd.isna(s) else "Stale" if old else str(s)
            for s, old in zip(fleet["status"], stale, strict=True)
        ],
        index=fleet.index,
        dtype=object,
    )


def selected(frame: pd.DataFrame, selection: FleetFilter) -> pd.DataFrame:
    """Apply the sidebar's provider/region/host choices to an already loaded frame."""
    keep = pd.Series(True, index=frame.index)
    for column, chosen in (
        ("provider", selection.providers),
        ("region", selection.regions),
        ("host", selection.hosts),
    ):
        if chosen:
            keep &= frame[column].isin(chosen)
    return frame[keep]
