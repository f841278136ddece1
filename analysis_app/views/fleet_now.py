"""Is the fleet up right now? Nodes by verdict, provider and region; which earn; shared IPs;
quarantined hosts; the age of the last check. Redraws itself without reloading the page."""

from __future__ import annotations

from datetime import date, timedelta

import altair as alt
import pandas as pd
import streamlit as st

from analysis_app import cached_queries as data
from analysis_app.actions import render_release_action
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
from analysis_app.fleet import (
    age,
    selected,
    stale_checks,
    status_colour,
    status_label,
    status_scale,
    verdicts,
)
from gradientlab.agent.pages import GOOD_STATES, PopupState
from gradientlab.freshness import STALE_AFTER_PERIODS
from gradientlab.store.reads import UNSUPPORTED_STATUSES, FleetFilter

REFRESH_SECONDS = 15
RELEASE_BUTTONS = 20  # the oldest quarantines first would need a page of their own beyond this
VERDICT_ORDER = [
    PopupState.GOOD,
    PopupState.EXCELLENT,
    PopupState.DISCONNECTED,
    PopupState.UNSUPPORTED,
    "Suspended",
    "BrowserDown",
    "RunnerDown",
    "LoggedOut",
    "Unreachable",
    "Starting",
    "Stale",
    "Not checked yet",
]
PROBLEM_FIRST = {v: i for i, v in enumerate(VERDICT_ORDER)}  # sorted high to low


def verdict_chart(fleet: pd.DataFrame) -> alt.Chart:
    counts = fleet.groupby(["provider", "verdict"], as_index=False).size()
    return (
        alt.Chart(counts, title="Nodes by verdict and provider")
        .mark_bar()
        .encode(
            x=alt.X("size:Q", title="Nodes"),
            y=alt.Y("provider:N", title=None),
            color=alt.Color("verdict:N", title="Verdict", scale=status_scale(counts["verdict"])),
            tooltip=["provider", "verdict", alt.Tooltip("size:Q", title="Nodes")],
        )
    )


def status_days_chart(per_day: pd.DataFrame, start: date, end: date) -> alt.Chart:
    """Share of the day's checks per status, one band per UTC day."""
    frame = per_day.groupby(["day", "status"], as_index=False)["samples"].sum()
    frame["band"] = day_labels(frame["day"], start, end)
    chart = (
        alt.Chart(frame[["band", "status", "samples"]], title="Checks per day by status")
        .mark_bar()
        .encode(
            x=day_x("band", start, end),
            y=alt.Y(
                "samples:Q", stack="normalize", title="Share of checks", axis=alt.Axis(format="%")
            ),
            color=alt.Color("status:N", title="Status", scale=status_scale(frame["status"])),
            tooltip=["band", "status", alt.Tooltip("samples:Q", title="Checks")],
        )
    )
    return sized_for_days(chart, start, end)


def shared_ip_groups(fleet: pd.DataFrame) -> pd.DataFrame:
    """Nodes whose latest check saw the same public IP: the network splits their rewards."""
    seen = fleet.dropna(subset=["ip"])
    groups = seen.groupby("ip").agg(nodes=("host", "count"), hosts=("host", ", ".join))
    return groups[groups["nodes"] > 1].reset_index().sort_values("nodes", ascending=False)


@st.fragment(run_every=timedelta(seconds=REFRESH_SECONDS))
def live_fleet(url: str, selection: FleetFilter) -> None:
    now = utc_now()
    with database_errors(url):
        status = data.fleet_now(url)
    fleet = selected(status, selection).copy()
    stale = stale_checks(fleet, now)
    fleet["verdict"] = verdicts(fleet, now)
    good = int((fleet["status"].isin(GOOD_STATES) & ~stale).sum())
    unsupported = fleet[fleet["verdict"].isin(UNSUPPORTED_STATUSES)]
    earning = int((fleet["today_points"].fillna(0) > 0).sum())
    quarantined = fleet[fleet["quarantined_at"].notna()]
    last_check = fleet["last_check"].max() if not fleet.empty else pd.NaT

    cols = st.columns(5)
    # counts alone, the fleet's size in their help: "512 / 1000" does not fit five cards
    of_all = f"Of {len(fleet):,} node{'' if len(fleet) == 1 else 's'}"
    cols[0].metric(
        "Nodes Good",
        f"{good:,}",
        border=True,
        help=f"{of_all}, Good at a check younger than two health periods.",
    )
    cols[1].metric(
        "Unsupported",
        len(unsupported),
        border=True,
        help="Banned by the network (data-centre IPs, proxies, IPv6, risky IPs): "
        "they earn nothing.",
    )
    cols[2].metric(
        "Earning",
        f"{earning:,}",
        border=True,
        help=f"{of_all}, those with points on their latest listed day.",
    )
    cols[3].metric(
        "Quarantined",
        len(quarantined),
        border=True,
        help="Recovery gave up on these hosts; a person releases them.",
    )
    cols[4].metric(
        "Since last check",
        "never" if pd.isna(last_check) else age(last_check, now).removesuffix(" ago"),
        help=None if pd.isna(last_check) else f"{last_check:%Y-%m-%d %H:%M:%S} UTC",
        border=True,
    )
    if fleet.empty:
        st.info("No hosts match the filters.", icon=":material/filter_alt_off:")
        return
    if stale.any():
        names = fleet.loc[stale, "host"].tolist()
        st.warning(
            f"No check for more than {STALE_AFTER_PERIODS} health periods on "
            + ", ".join(f"**{h}**" for h in names[:20])
            + (f" and {len(names) - 20} more" if len(names) > 20 else "")
            + ": what they last said is not their state now. Is the health flow running?",
            icon=":material/schedule:",
        )

    left, right = st.columns(2)
    left.altair_chart(verdict_chart(fleet))
    by_region = (
        fleet.pivot_table(
            index=["provider", "region"],
            columns="verdict",
            values="host",
            aggfunc="count",
            fill_value=0,
        )
        .reset_index()
        .rename_axis(columns=None)
    )
    right.caption("Nodes by region and verdict")
    right.dataframe(by_region, hide_index=True)

    shared = shared_ip_groups(fleet)
    if not shared.empty:
        st.warning(
            f"{len(shared)} public IP(s) are shared by several nodes: the network splits their "
            "rewards.",
            icon=":material/call_split:",
        )
        st.dataframe(
            shared, hide_index=True, column_config={"ip": "IP", "nodes": "Nodes", "hosts": "Hosts"}
        )
    if not quarantined.empty:
        st.subheader("Quarantined")
        st.dataframe(
            quarantined.assign(node=[node_link(h) for h in quarantined["host"]])[
                ["node", "provider", "quarantined_at", "quarantine_reason"]
            ],
            hide_index=True,
            column_config={
                "node": node_link_column("Host"),
                "provider": "Provider",
                "quarantined_at": st.column_config.DatetimeColumn("Since (UTC)"),
                "quarantine_reason": "Why",
            },
        )
        for host in quarantined["host"].head(RELEASE_BUTTONS):  # the operator's, only
            render_release_action(host)

    st.subheader("Every node")
    ordered = fleet.assign(
        _rank=fleet["verdict"].map(PROBLEM_FIRST).fillna(len(PROBLEM_FIRST)),
    ).sort_values(["_rank", "host"], ascending=[False, True])
    limit, offset = page_of(len(ordered), key="fleet_page")
    page = ordered.iloc[offset : offset + limit]
    old = stale_checks(page, now)
    shown = page.assign(
        node=[node_link(h) for h in page["host"]],
        status_shown=[
            status_label(s, r, age(at, now) if o else None)
            for s, r, at, o in zip(
                page["status"], page["banned_reason"], page["last_check"], old, strict=True
            )
        ],
    )
    columns = ["node", "provider", "region", "ip", "status_shown", "today_points", "taps_today",
               "last_check", "extension_version"]  # fmt: skip
    st.dataframe(
        shown[["host", *columns]].style.map(status_colour, subset=["status_shown"]),
        hide_index=True,
        column_order=columns,  # the host's name is the link's text
        column_config={
            "node": node_link_column("Host"),
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
        },
    )
    st.caption(f"Rows {offset + 1}–{offset + len(page)} of {len(ordered)} nodes.")
    csv_download(fleet.drop(columns=["verdict"]), "fleet_now.csv", key="fleet_csv")


url = data.current_database_url()
today = utc_now().date()
st.title("Fleet now")
st.caption(
    "Is the fleet up? Each node's verdict at its latest check, by provider and region; which "
    f"earn; shared IPs and quarantined hosts. Redraws every {REFRESH_SECONDS} s."
)
with database_errors(url):
    status = data.fleet_now(url)
    if status.empty:
        no_data_yet("Hosts appear once the provision flow has created them.")
    bounds = data.day_bounds(url, "checks") or (today, today)
    selection = fleet_filter(
        data.filter_choices(url), (bounds[0], max(bounds[1], today)), page="fleet"
    )
live_fleet(url, selection)

with database_errors(url):
    per_day = data.fleet_status_per_day(url, selection)
if not per_day.empty:
    st.altair_chart(
        status_days_chart(per_day, selection.start, selection.end),
        width=day_chart_width(selection.start, selection.end),
    )
