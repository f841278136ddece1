"""Which nodes earn? Points per node per UTC day, and the fleet as it stands now."""

from __future__ import annotations

from datetime import date, datetime

import altair as alt
import pandas as pd
import streamlit as st

from analysis_app import cached_queries as data
from analysis_app.charts import day_chart_width, day_labels, day_x, sized_for_days
from analysis_app.components import (
    csv_download,
    database_errors,
    fleet_filter,
    no_data_yet,
    utc_now,
)
from analysis_app.queries import GOOD_STATUSES, FleetFilter
from gradientlab.freshness import STALE_AFTER_PERIODS, is_stale

# Text colours for the status cell, in the popup's own terms.
STATUS_COLOURS = {
    "Good": "#1a7f37",
    "Excellent": "#1a7f37",
    "Disconnected": "#bc4c00",
    "Unsupported": "#cf222e",
    "Suspended": "#cf222e",
    "Stale": "#6e7781",
}
GROUPINGS = {"Node": "host", "Provider": "provider", "Region": "region"}


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


def points_chart(points: pd.DataFrame, group: str, first: date, last: date) -> alt.Chart:
    """Points per UTC day, one band per day from `first` to `last`, stacked by `group`."""
    by_group = (
        points.groupby(["day", group], as_index=False)["points"].sum().rename(columns={group: "by"})
    )
    by_group["band"] = day_labels(by_group["day"], first, last)
    by_group["date"] = pd.to_datetime(by_group["day"]).dt.strftime("%Y-%m-%d")
    legend = next(label for label, column in GROUPINGS.items() if column == group)
    chart = (
        alt.Chart(by_group[["band", "date", "by", "points"]])
        .mark_bar()
        .encode(
            x=day_x("band", first, last),
            y=alt.Y("sum(points):Q", title="Points"),
            color=alt.Color("by:N", title=legend),
            tooltip=[
                alt.Tooltip("date:N", title="Day (UTC)"),
                alt.Tooltip("by:N", title=legend),
                alt.Tooltip("sum(points):Q", title="Points", format=",.2f"),
            ],
        )
    )
    return sized_for_days(chart, first, last)


url = data.current_database_url()
now = utc_now()  # once per render: what "today" and "ago" mean on this page
today = now.date()
st.title("Points")
st.caption(
    "Which nodes earn? Points the network lists per node per UTC day, and each node's status "
    "at its latest check."
)

with database_errors(url):
    bounds = data.day_bounds(url, "points")
    status = data.fleet_status(url)
    if bounds is None and status.empty:
        no_data_yet()
    choices = data.filter_choices(url)
    selection = fleet_filter(choices, bounds or (today, today), page="points")
    points = data.node_points(url, selection) if bounds else pd.DataFrame()

fleet = selected(status, selection)
stale = stale_checks(fleet, now)
good = int((fleet["status"].isin(GOOD_STATUSES) & ~stale).sum())
unsupported = fleet[fleet["status"].isin(["Unsupported", "Suspended"]) & ~stale]
latest_day = fleet["points_day"].dropna().max() if not fleet.empty else None
points_today = (
    fleet.loc[fleet["points_day"] == latest_day, "today_points"].sum()
    if latest_day is not None and not pd.isna(latest_day)
    else 0.0
)
last_check = fleet["last_check"].max() if not fleet.empty else pd.NaT

good_col, unsupported_col, points_col, check_col = st.columns(4)
good_col.metric(
    "Nodes Good",
    f"{good} / {len(fleet)}",
    help="Good at a check younger than two health periods.",
    border=True,
)
unsupported_col.metric(
    "Unsupported",
    len(unsupported),
    help="Banned by the network (data-centre IPs, proxies, IPv6, risky IPs): they earn nothing.",
    border=True,
)
points_col.metric(
    "Points today"
    if latest_day is None or pd.isna(latest_day) or latest_day == today
    else f"Points on {latest_day:%Y-%m-%d}",
    f"{points_today:,.2f}",
    help="Sum of each node's points on the latest day the network listed them.",
    border=True,
)
check_col.metric(
    "Last check",
    "never" if pd.isna(last_check) else age(last_check, now),
    help=None if pd.isna(last_check) else f"{last_check:%Y-%m-%d %H:%M:%S} UTC",
    border=True,
)

st.subheader("Points per day")
if points.empty:
    st.info("No points in the selected days and filters.", icon=":material/filter_alt_off:")
else:
    grouping = st.segmented_control(
        "Colour by", list(GROUPINGS), default="Node", key="points_group"
    )
    st.altair_chart(
        points_chart(points, GROUPINGS[grouping or "Node"], selection.start, selection.end),
        width=day_chart_width(selection.start, selection.end),
    )
    st.dataframe(
        points[["day", "host", "provider", "region", "client_id", "points", "taps"]].sort_values(
            ["day", "host"], ascending=[False, True]
        ),
        hide_index=True,
        column_config={
            "day": st.column_config.DateColumn("Day (UTC)"),
            "host": "Host",
            "provider": "Provider",
            "region": "Region",
            "client_id": "Node id",
            "points": st.column_config.NumberColumn("Points", format="%.2f"),
            "taps": st.column_config.NumberColumn("Taps"),
        },
    )
    csv_download(points, f"points_{selection.start}_{selection.end}.csv", key="points_csv")

st.subheader("Fleet now")
if stale.any():
    st.warning(
        f"No check for more than {STALE_AFTER_PERIODS} health periods on "
        + ", ".join(f"**{h}**" for h in fleet.loc[stale, "host"])
        + ": what they last said is not their state now. Is the health flow running?",
        icon=":material/schedule:",
    )
if not unsupported.empty:
    st.warning(
        "Unsupported nodes earn nothing until they move to a supported address:\n\n"
        + "\n".join(
            f"- **{row.host}** ({row.provider}, {row.ip or 'no IP'}):"
            f" {row.banned_reason or 'no reason given'}"
            for row in unsupported.itertuples()
        ),
        icon=":material/block:",
    )
if fleet.empty:
    st.info("No hosts match the filters.", icon=":material/filter_alt_off:")
else:
    shown = fleet.assign(
        status_shown=[
            status_label(s, r, age(at, now) if old else None)
            for s, r, at, old in zip(
                fleet["status"], fleet["banned_reason"], fleet["last_check"], stale, strict=True
            )
        ]
    )[
        [
            "host",
            "provider",
            "region",
            "ip",
            "status_shown",
            "today_points",
            "taps_today",
            "last_check",
            "extension_version",
            "client_id",
        ]
    ]
    st.dataframe(
        shown.style.map(status_colour, subset=["status_shown"]),
        hide_index=True,
        column_config={
            "host": "Host",
            "provider": "Provider",
            "region": "Region",
            "ip": "IP",
            "status_shown": st.column_config.TextColumn("Status"),
            "today_points": st.column_config.NumberColumn(
                "Points today", format="%.2f", help="On the node's latest listed day"
            ),
            "taps_today": st.column_config.NumberColumn("Taps today"),
            "last_check": st.column_config.DatetimeColumn("Last check", format="distance"),
            "extension_version": "Extension",
            "client_id": "Node id",
        },
    )
    csv_download(fleet, "fleet_status.csv", key="fleet_csv")
