"""Which nodes earn? Points per UTC day by kind for the account, per provider, region or top
node; cumulative; the best and worst nodes; the days without a point."""

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
    utc_now,
)
from gradientlab.store.reads import NODE_ORDERS, THE_REST, season_text

GROUPINGS = {"Provider": "provider", "Region": "region", "Top 10 nodes": "top"}
TOP_NODES = 10
ORDER_LABELS = {
    "best": "Most points first",
    "worst": "Fewest points first",
    "most_zero_days": "Most days without a point first",
    "host": "By name",
}


def day_bars(
    frame: pd.DataFrame, by: str, legend: str, first: date, last: date, cumulative: bool
) -> alt.Chart:
    """Points per UTC day (or summed up to each day), one band per day, stacked by `by`."""
    shown = frame[["day", by, "points"]].rename(columns={by: "by"})
    shown = shown.groupby(["day", "by"], as_index=False)["points"].sum()
    if cumulative:
        shown = shown.sort_values("day")
        shown["points"] = shown.groupby("by")["points"].cumsum()
    shown["band"] = day_labels(shown["day"], first, last)
    shown["date"] = pd.to_datetime(shown["day"]).dt.strftime("%Y-%m-%d")
    order = [b for b in shown.groupby("by")["points"].sum().sort_values().index if b != THE_REST]
    if (shown["by"] == THE_REST).any():
        order = [THE_REST, *order]
    chart = (
        alt.Chart(shown[["band", "date", "by", "points"]])
        .mark_bar()
        .encode(
            x=day_x("band", first, last),
            y=alt.Y("sum(points):Q", title="Points, cumulative" if cumulative else "Points"),
            color=alt.Color("by:N", title=legend, sort=list(reversed(order))),
            order=alt.Order("by_rank:Q"),
            tooltip=[
                alt.Tooltip("date:N", title="Day (UTC)"),
                alt.Tooltip("by:N", title=legend),
                alt.Tooltip("sum(points):Q", title="Points", format=",.2f"),
            ],
        )
        .transform_calculate(by_rank=f"indexof({order!r}, datum.by)")
    )
    return sized_for_days(chart, first, last)


def node_table(frame: pd.DataFrame) -> None:
    columns = ["node", "provider", "region", "points", "zero_days", "days", "taps", "uptime_hours"]
    st.dataframe(
        frame.assign(node=[node_link(h) for h in frame["host"]])[["host", *columns]],
        hide_index=True,
        column_order=columns,
        column_config={
            "node": node_link_column("Node"),
            "provider": "Provider",
            "region": "Region",
            "points": st.column_config.NumberColumn("Points", format="%.2f"),
            "zero_days": st.column_config.NumberColumn("Days without a point"),
            "days": st.column_config.NumberColumn("Days listed"),
            "taps": st.column_config.NumberColumn("Taps"),
            "uptime_hours": st.column_config.NumberColumn("Uptime (h)", format="%.1f"),
        },
    )


url = data.current_database_url()
today = utc_now().date()
st.title("Rewards")
st.caption(
    "Which nodes earn? The account's points per UTC day by kind, and what each node, provider "
    "and region earned, as the network lists them."
)

with database_errors(url):
    bounds = data.day_bounds(url, "points")
    if bounds is None:
        no_data_yet("Points come from the rewards flow.")
    selection = fleet_filter(data.filter_choices(url), bounds, page="rewards")
    totals = data.selection_totals(url, selection)
    season = data.reward_season(url)

# the network's own answers say whether it pays at all now: zero-point days are then its own
no_season = season_text(season)
if no_season:
    st.info(no_season, icon=":material/event_busy:")

if totals["node_days"] == 0:
    st.info("No points in the selected days and filters.", icon=":material/filter_alt_off:")
    st.stop()

points_col, nodes_col, zero_col, empty_col = st.columns(4)
points_col.metric(
    "Points",
    f"{totals['points']:,.2f}",
    border=True,
    help="Points the selected nodes earned on the selected days.",
)
nodes_col.metric("Nodes", f"{totals['nodes']:,}", border=True)
zero_col.metric(
    "Node-days without a point",
    f"{totals['zero_days']:,}",
    border=True,
    help="A node listed on a day it earned nothing.",
)
empty_col.metric("Days no node earned", f"{totals['days_all_zero']:,}", border=True)

cumulative = st.toggle("Cumulative", key="rewards_cumulative")
st.subheader("Points per day by kind")
with database_errors(url):
    kinds = data.account_points_by_kind(url, selection)
if kinds.empty:
    st.info("No account points in the selected days: the rewards flow reads /point/stats.")
else:
    if selection.providers or selection.regions or selection.hosts:
        st.caption("The account's points by kind do not follow the node filters.")
    st.altair_chart(
        day_bars(kinds, "kind", "Kind", selection.start, selection.end, cumulative),
        width=day_chart_width(selection.start, selection.end),
    )
    st.caption(
        "`node` is what the nodes earned for uptime and taps together: the network's "
        "/point/stats does not split them."
    )

st.subheader("Points per day by node")
grouping = st.segmented_control(
    "Colour by", list(GROUPINGS), default="Provider", key="rewards_group"
)
column = GROUPINGS[grouping or "Provider"]
with database_errors(url):
    if column == "top":
        per_day = data.top_nodes_per_day(url, selection, TOP_NODES, "points_raw").rename(
            columns={"value": "points"}
        )
        by, legend = "node", "Node"
    else:
        per_day = data.points_by_group(url, selection, column)  # type: ignore[arg-type]
        by, legend = column, grouping or "Provider"
st.altair_chart(
    day_bars(per_day, by, legend, selection.start, selection.end, cumulative),
    width=day_chart_width(selection.start, selection.end),
)

best_col, worst_col = st.columns(2)
with database_errors(url):
    best = data.node_totals(url, selection, "best", 10, 0)
    worst = data.node_totals(url, selection, "worst", 10, 0)
with best_col:
    st.subheader("Best nodes")
    node_table(best)
with worst_col:
    st.subheader("Worst nodes")
    node_table(worst)

st.subheader("Every node")
order = st.selectbox(
    "Order", list(NODE_ORDERS), format_func=ORDER_LABELS.__getitem__, key="rewards_order"
)
limit, offset = page_of(totals["nodes"], key="rewards_page")
with database_errors(url):
    page = data.node_totals(url, selection, order, limit, offset)
node_table(page)
st.caption(
    f"Rows {offset + 1}–{offset + len(page)} of {totals['nodes']:,} nodes; "
    f"{totals['points']:,.2f} points over {totals['node_days']:,} node-days in all."
)
csv_download(
    data.node_days_csv(url, selection),
    f"node_days_{selection.start}_{selection.end}.csv",
    key="rewards_csv",
    label="Download every node-day (CSV)",
)
