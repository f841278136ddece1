"""What does a point cost me? Each host's running cost against the points its node earned."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from analysis_app import cached_queries as data
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
from gradientlab.store.reads import provider_costs, unsupported_costs

WHEN = "YYYY-MM-DD HH:mm"
NO_POINTS_COLOUR = "#cf222e"
LABEL_COLOUR = "#57606a"


def usd(value: float) -> str:
    """Dollars with cents, and small prices with three significant digits: $0.0947."""
    return f"${value:,.2f}" if value >= 1 else f"${value:.3g}"


def per_point_label(usd_per_point: float, note: str) -> str:
    return note if note else usd(usd_per_point)


def ranked(frame: pd.DataFrame) -> pd.DataFrame:
    """Paying for no points first, then the dearest point, then the free hosts."""
    rank = frame["per_point_note"].map({"no points": 0, "": 1, "free": 2})
    return (
        frame.assign(
            _rank=rank,
            per_point=[
                per_point_label(u, n)
                for u, n in zip(frame["usd_per_point"], frame["per_point_note"], strict=True)
            ],
        )
        .sort_values(["_rank", "usd_per_point", "cost_usd"], ascending=[True, False, False])
        .drop(columns="_rank")
    )


def per_point_chart(frame: pd.DataFrame, by: str, title: str) -> alt.LayerChart | alt.FacetChart:
    """Bars of USD per point; hosts without a price get their reason written where a bar
    would start."""
    columns = dict.fromkeys([by, "provider", "cost_usd", "points", "usd_per_point", "per_point"])
    shown = frame[list(columns)].assign(
        label_at=frame["usd_per_point"].fillna(0.0),
        no_points=frame["per_point_note"] == "no points",
    )
    y = alt.Y(f"{by}:N", title=None, sort=shown[by].tolist())
    tooltip = [
        alt.Tooltip(f"{by}:N", title=by.capitalize()),
        alt.Tooltip("provider:N", title="Provider"),
        alt.Tooltip("cost_usd:Q", title="Cost (USD)", format="$,.2f"),
        alt.Tooltip("points:Q", title="Points", format=",.2f"),
        alt.Tooltip("per_point:N", title="Per point"),
    ]
    base = alt.Chart(shown, title=title).encode(y=y, tooltip=tooltip)
    bars = base.mark_bar().encode(
        x=alt.X("usd_per_point:Q", title="USD per point", axis=alt.Axis(format="$~g")),
        color=alt.Color("provider:N", title="Provider"),
    )
    labels = base.mark_text(align="left", dx=4).encode(
        x="label_at:Q",
        text="per_point:N",
        color=alt.condition(
            alt.datum.no_points, alt.value(NO_POINTS_COLOUR), alt.value(LABEL_COLOUR)
        ),
    )
    return alt.layer(bars, labels).properties(height=alt.Step(28))


url = data.current_database_url()
now = utc_now()  # once per render: "today" for the days, "now" for the hours
st.title("Economics")
st.caption(
    "What does a point cost me? Each host's price per hour times the hours it existed in the "
    "selected UTC days (from its creation, up to now or its termination), against the points "
    "its node earned on those days. Nodes that no host of ours runs cost nothing here and are "
    "left out."
)

with database_errors(url):
    bounds = data.host_day_bounds(url, now.date())
    if bounds is None:
        no_data_yet("Costs appear once the provision flow has created hosts.")
    selection = fleet_filter(data.filter_choices(url), bounds, page="cost")
    costs = data.host_costs(url, selection, as_of=now)
    shares = data.status_shares(url, selection)

if costs.empty:
    st.info("No hosts in the selected days and filters.", icon=":material/filter_alt_off:")
    st.stop()

hosts = ranked(costs)
providers = ranked(provider_costs(costs))
total_cost = float(costs["cost_usd"].sum())
total_points = float(costs["points"].sum())
idle = hosts[hosts["per_point_note"] == "no points"]
wasted = unsupported_costs(costs, shares)

# two rows: at fleet scale five cards in one row cut their figures and labels short
cost_col, points_col, per_point_col = st.columns(3)
cost_col.metric("Cost", usd(total_cost), border=True)
points_col.metric("Points", f"{total_points:,.2f}", border=True)
per_point_col.metric(
    "Cost per point",
    "free"
    if total_cost == 0
    else "no points"
    if total_points <= 0
    else usd(total_cost / total_points),
    help="All the selected hosts' cost divided by all their points.",
    border=True,
)
idle_col, wasted_col = st.columns(2)
idle_col.metric(
    "Paid hosts without points",
    len(idle),
    help="Hosts that cost money in the selected days while their node earned nothing.",
    border=True,
)
wasted_col.metric(
    "Spent on Unsupported",
    usd(float(wasted["wasted_usd"].sum())),
    help="Each host's cost times the share of its checks that found it Unsupported: the "
    "network pays an Unsupported node nothing.",
    border=True,
)

st.subheader("Per host")
CHART_HOSTS = 20
if len(hosts) <= CHART_HOSTS:
    st.altair_chart(per_point_chart(hosts, "host", "USD per point by host"))
else:
    # at fleet scale the hosts paying for nothing would fill the chart with labels and no
    # bar: they are counted above and come first in the table; the chart prices the rest
    priced = hosts[hosts["per_point_note"] == ""]
    if not priced.empty:
        st.altair_chart(
            per_point_chart(
                priced.head(CHART_HOSTS),
                "host",
                f"The {min(CHART_HOSTS, len(priced))} hosts paying most per point",
            )
        )
    if len(idle):
        st.caption(
            f"{len(idle):,} paid host(s) earned no point in the selected days: they come "
            "first in the table."
        )
limit, offset = page_of(len(hosts), key="cost_page")
page = hosts.iloc[offset : offset + limit]
st.dataframe(
    page.assign(node=[node_link(h) for h in page["host"]])[
        [
            "host",
            "node",
            "provider",
            "per_point",
            "cost_usd",
            "points",
            "hours",
            "hourly_cost_usd",
            "counted_from",
            "counted_to",
            "state",
            "region",
        ]
    ],
    hide_index=True,
    column_order=[
        "node",
        "provider",
        "per_point",
        "cost_usd",
        "points",
        "hours",
        "hourly_cost_usd",
        "counted_from",
        "counted_to",
        "state",
        "region",
    ],  # fmt: skip
    column_config={
        "node": node_link_column("Host"),
        "provider": "Provider",
        "region": "Region",
        "state": "State",
        "hourly_cost_usd": st.column_config.NumberColumn("Per hour (USD)", format="$%.4f"),
        "counted_from": st.column_config.DatetimeColumn("Counted from (UTC)", format=WHEN),
        "counted_to": st.column_config.DatetimeColumn("Counted to (UTC)", format=WHEN),
        "hours": st.column_config.NumberColumn("Hours", format="%.1f"),
        "cost_usd": st.column_config.NumberColumn("Cost (USD)", format="$%.2f"),
        "points": st.column_config.NumberColumn("Points", format="%.2f"),
        "per_point": st.column_config.TextColumn("Cost per point"),
    },
)
csv_download(
    hosts.drop(columns="per_point"),
    f"cost_per_point_hosts_{selection.start}_{selection.end}.csv",
    key="cost_hosts_csv",
)

st.subheader("Per provider")
st.altair_chart(per_point_chart(providers, "provider", "USD per point by provider"))
st.dataframe(
    providers[["provider", "per_point", "cost_usd", "points", "hosts", "hours"]],
    hide_index=True,
    column_config={
        "provider": "Provider",
        "hosts": st.column_config.NumberColumn("Hosts"),
        "hours": st.column_config.NumberColumn("Hours", format="%.1f"),
        "cost_usd": st.column_config.NumberColumn("Cost (USD)", format="$%.2f"),
        "points": st.column_config.NumberColumn("Points", format="%.2f"),
        "per_point": st.column_config.TextColumn("Cost per point"),
    },
)
csv_download(
    providers.drop(columns="per_point"),
    f"cost_per_point_providers_{selection.start}_{selection.end}.csv",
    key="cost_providers_csv",
)

st.subheader("What Unsupported nodes cost for nothing")
if wasted.empty:
    st.success("No selected host was Unsupported in the selected days.", icon=":material/check:")
else:
    paid = wasted[wasted["wasted_usd"] > 0]
    st.caption(
        f"{len(wasted)} host(s) were Unsupported for some of the selected days"
        + (f"; {len(paid)} of them cost money meanwhile." if len(paid) else ", all on free hosts.")
        + " Move them to a supported address (not a data centre, proxy or IPv6) or stop them."
    )
    by_provider = wasted.groupby("provider", as_index=False).agg(
        hosts=("host", "count"), wasted_usd=("wasted_usd", "sum"), cost_usd=("cost_usd", "sum")
    )
    st.dataframe(
        by_provider,
        hide_index=True,
        column_config={
            "provider": "Provider",
            "hosts": st.column_config.NumberColumn("Unsupported hosts"),
            "wasted_usd": st.column_config.NumberColumn("Spent while Unsupported", format="$%.2f"),
            "cost_usd": st.column_config.NumberColumn("Their whole cost", format="$%.2f"),
        },
    )
    st.dataframe(
        wasted.head(50).assign(node=[node_link(h) for h in wasted.head(50)["host"]])[
            [
                "host",
                "node",
                "provider",
                "region",
                "unsupported_share",
                "wasted_usd",
                "cost_usd",
                "points",
            ]
        ],
        hide_index=True,
        column_order=[
            "node",
            "provider",
            "region",
            "unsupported_share",
            "wasted_usd",
            "cost_usd",
            "points",
        ],
        column_config={
            "node": node_link_column("Host"),
            "provider": "Provider",
            "region": "Region",
            "unsupported_share": st.column_config.ProgressColumn(
                "Checks Unsupported", format="percent", min_value=0, max_value=1
            ),
            "wasted_usd": st.column_config.NumberColumn("Spent while Unsupported", format="$%.2f"),
            "cost_usd": st.column_config.NumberColumn("Cost (USD)", format="$%.2f"),
            "points": st.column_config.NumberColumn("Points", format="%.2f"),
        },
    )
    csv_download(
        wasted, f"unsupported_cost_{selection.start}_{selection.end}.csv", key="unsupported_csv"
    )
