"""Are the nodes up, and where do taps fail? The network's uptime and taps per node per day,
per provider and for the nodes that tap most, and each host's NAT beside its taps."""

from __future__ import annotations

from datetime import date

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
    node_link,
    node_link_column,
    page_of,
)
from analysis_app.views.tap_readiness import show_tap_readiness
from gradientlab.store.reads import THE_REST

TOP_NODES = 10


def uptime_chart(per_day: pd.DataFrame, first: date, last: date) -> alt.Chart:
    """Mean hours online per node per day, a line per provider."""
    frame = per_day.dropna(subset=["uptime_hours"]).assign(
        band=lambda f: day_labels(f["day"], first, last)
    )
    chart = (
        alt.Chart(
            frame[["band", "provider", "uptime_hours"]],
            title="Hours online per node per day, by provider",
        )
        .mark_line(point=True)
        .encode(
            x=day_x("band", first, last),
            y=alt.Y("uptime_hours:Q", title="Hours", scale=alt.Scale(domain=[0, 24])),
            color=alt.Color("provider:N", title="Provider"),
            tooltip=["band", "provider", alt.Tooltip("uptime_hours:Q", format=".1f")],
        )
    )
    return sized_for_days(chart, first, last)


def taps_chart(top: pd.DataFrame, first: date, last: date) -> alt.Chart:
    frame = top.assign(band=day_labels(top["day"], first, last))
    order = [*sorted(set(frame["node"]) - {THE_REST}), THE_REST]
    chart = (
        alt.Chart(
            frame[["band", "node", "value"]],
            title=f"Taps per day: the {TOP_NODES} nodes with most, and the rest",
        )
        .mark_bar()
        .encode(
            x=day_x("band", first, last),
            y=alt.Y("sum(value):Q", title="Taps"),
            color=alt.Color("node:N", title="Node", sort=order),
            tooltip=["band", "node", alt.Tooltip("sum(value):Q", title="Taps")],
        )
    )
    return sized_for_days(chart, first, last)


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
    totals = data.selection_totals(url, selection)

if totals["stat_node_days"] == 0:
    st.info(
        "No node statistics in the selected days and filters.", icon=":material/filter_alt_off:"
    )
    st.stop()

uptime_col, taps_col, silent_col = st.columns(3)
uptime_col.metric(
    "Mean uptime per node-day",
    f"{totals['uptime_hours'] / totals['stat_node_days']:.1f} h",
    help="Average of each node's daily uptime over the selected days.",
    border=True,
)
taps_col.metric("Taps", f"{totals['taps']:,}", border=True)
silent_col.metric(
    "Nodes without a tap",
    totals["untapped_nodes"],
    help="Up on some of the selected days but never tapped: check their NAT type.",
    border=True,
)

with database_errors(url):
    per_day = data.points_by_group(url, selection, "provider")
    top = data.top_nodes_per_day(url, selection, TOP_NODES, "taps")
left, right = st.columns(2)
left.altair_chart(
    uptime_chart(per_day, selection.start, selection.end),
    width=day_chart_width(selection.start, selection.end),
)
right.altair_chart(
    taps_chart(top, selection.start, selection.end),
    width=day_chart_width(selection.start, selection.end),
)

limit, offset = page_of(totals["stat_nodes"], key="uptime_page")
with database_errors(url):
    nodes = data.node_totals(url, selection, "host", limit, offset, with_stats=True)
st.dataframe(
    nodes.assign(
        node=[node_link(h) for h in nodes["host"]], taps_per_day=nodes["taps"] / nodes["days"]
    )[["host", "node", "provider", "region", "uptime_hours", "taps", "taps_per_day", "days"]],
    hide_index=True,
    column_order=["node", "provider", "region", "uptime_hours", "taps", "taps_per_day", "days"],
    column_config={
        "node": node_link_column("Node"),
        "provider": "Provider",
        "region": "Region",
        "uptime_hours": st.column_config.NumberColumn("Uptime (h)", format="%.1f"),
        "taps": st.column_config.NumberColumn("Taps"),
        "taps_per_day": st.column_config.NumberColumn("Taps per day", format="%.1f"),
        "days": st.column_config.NumberColumn("Days"),
    },
)
st.caption(
    f"Rows {offset + 1}–{offset + len(nodes)} of {totals['stat_nodes']:,} nodes; "
    f"{totals['taps']:,} taps and {totals['uptime_hours']:,.0f} hours online in all."
)
csv_download(
    data.node_days_csv(url, selection),
    f"uptime_taps_{selection.start}_{selection.end}.csv",
    key="uptime_csv",
)
show_tap_readiness(url, selection)
