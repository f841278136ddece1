"""Are the nodes up, and where do taps fail? The network's uptime and taps per node per day."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from analysis_app import cached_queries as data
from analysis_app.components import csv_download, database_errors, fleet_filter, no_data_yet
from analysis_app.views.tap_readiness import show_tap_readiness


def uptime_chart(stats: pd.DataFrame) -> alt.Chart:
    """A node-by-day grid: pale cells and gaps are the days a node was not up."""
    frame = stats[["day", "host", "uptime_hours"]].assign(day=pd.to_datetime(stats["day"]))
    return (
        alt.Chart(frame, title="Hours online per node per day")
        .mark_rect()
        .encode(
            x=alt.X("utcyearmonthdate(day):O", title="Day (UTC)", axis=alt.Axis(format="%b %d")),
            y=alt.Y("host:N", title=None),
            color=alt.Color(
                "uptime_hours:Q",
                title="Hours",
                scale=alt.Scale(domain=[0, 24], scheme="greens"),
            ),
            tooltip=[
                alt.Tooltip("utcyearmonthdate(day):T", title="Day"),
                alt.Tooltip("host:N", title="Node"),
                alt.Tooltip("uptime_hours:Q", title="Hours", format=".1f"),
            ],
        )
    )


def taps_chart(stats: pd.DataFrame) -> alt.Chart:
    totals = stats.groupby(["host", "provider"], as_index=False)["taps"].sum()
    return (
        alt.Chart(totals, title="Taps per node over the selected days")
        .mark_bar()
        .encode(
            x=alt.X("taps:Q", title="Taps"),
            y=alt.Y("host:N", title=None, sort="x"),
            color=alt.Color("provider:N", title="Provider"),
            tooltip=["host", "provider", alt.Tooltip("taps:Q", title="Taps")],
        )
    )


url = data.current_database_url()
st.title("Uptime & taps")
st.caption(
    "Are the nodes online, and where do taps fail? Uptime and taps as the network reports them "
    "per node per UTC day. Taps depend on the host's NAT: a node that is up but never tapped "
    "usually sits behind a NAT that peers cannot reach."
)

with database_errors(url):
    bounds = data.day_bounds(url, "stats")
    if bounds is None:
        no_data_yet("Uptime and taps come from the rewards flow's node statistics.")
    selection = fleet_filter(data.filter_choices(url), bounds, page="uptime")
    stats = data.node_uptime_taps(url, selection)

if stats.empty:
    st.info(
        "No node statistics in the selected days and filters.", icon=":material/filter_alt_off:"
    )
    st.stop()

node_days = len(stats)
never_tapped = stats.groupby("host")["taps"].sum().eq(0).sum()
uptime_col, taps_col, silent_col = st.columns(3)
uptime_col.metric(
    "Mean uptime per node-day",
    f"{stats['uptime_hours'].mean():.1f} h",
    help="Average of each node's daily uptime over the selected days.",
    border=True,
)
taps_col.metric("Taps", f"{int(stats['taps'].sum()):,}", border=True)
silent_col.metric(
    "Nodes without a tap",
    int(never_tapped),
    help="Up on some of the selected days but never tapped: check their NAT type.",
    border=True,
)

left, right = st.columns(2)
left.altair_chart(uptime_chart(stats))
right.altair_chart(taps_chart(stats))

st.dataframe(
    stats[
        ["day", "host", "provider", "region", "client_id", "uptime_hours", "taps", "duration"]
    ].sort_values(["day", "host"], ascending=[False, True]),
    hide_index=True,
    column_config={
        "day": st.column_config.DateColumn("Day (UTC)"),
        "host": "Host",
        "provider": "Provider",
        "region": "Region",
        "client_id": "Node id",
        "uptime_hours": st.column_config.NumberColumn("Uptime (h)", format="%.1f"),
        "taps": st.column_config.NumberColumn("Taps"),
        "duration": st.column_config.NumberColumn("Duration (as reported)"),
    },
)
csv_download(stats, f"uptime_taps_{selection.start}_{selection.end}.csv", key="uptime_csv")
show_tap_readiness(url, selection, stats)
