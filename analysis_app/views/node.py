"""How is this one node doing? Its status over time, incidents and the steps that recovered
them, points and taps per day, tap readiness, its host's load, memory, disk and browser memory,
its versions and what it costs. Every table that lists nodes links here (`?node=<host>`)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from analysis_app import cached_queries as data
from analysis_app.actions import render_node_actions
from analysis_app.charts import day_chart_width, day_labels, day_x, sized_for_days, time_x
from analysis_app.components import database_errors, no_data_yet, utc_now
from analysis_app.fleet import age, status_label, status_scale
from gradientlab.store.reads import FleetFilter

WINDOWS = {"7 days": 7, "30 days": 30, "90 days": 90, "1 year": 365}
WHEN = "YYYY-MM-DD HH:mm:ss"
RECENT_HOURS = 48


def daily_chart(
    frame: pd.DataFrame,
    field: str,
    title: str,
    axis: str,
    first: date,
    last: date,
    mark: str = "bar",
) -> alt.Chart:
    shown = frame.dropna(subset=[field]).assign(band=lambda f: day_labels(f["day"], first, last))
    base = alt.Chart(shown[["band", field]], title=title)
    chart = (base.mark_bar() if mark == "bar" else base.mark_line(point=True)).encode(
        x=day_x("band", first, last),
        y=alt.Y(f"{field}:Q", title=axis),
        tooltip=["band", alt.Tooltip(f"{field}:Q", title=axis, format=",.2f")],
    )
    return sized_for_days(chart, first, last)


def status_days_chart(days: pd.DataFrame, first: date, last: date) -> alt.Chart:
    shown = days.assign(band=day_labels(days["day"], first, last))
    chart = (
        alt.Chart(shown[["band", "status", "samples"]], title="Checks per day by status")
        .mark_bar()
        .encode(
            x=day_x("band", first, last),
            y=alt.Y(
                "samples:Q", stack="normalize", title="Share of checks", axis=alt.Axis(format="%")
            ),
            color=alt.Color("status:N", title="Status", scale=status_scale(shown["status"])),
            tooltip=["band", "status", alt.Tooltip("samples:Q", title="Checks")],
        )
    )
    return sized_for_days(chart, first, last)


def recent_chart(checks: pd.DataFrame) -> alt.Chart:
    return (
        alt.Chart(checks, title=f"Every check, last {RECENT_HOURS} h")
        .mark_tick(thickness=3, size=24)
        .encode(
            x=time_x("sampled_at", checks["sampled_at"], "Checked (UTC)"),
            y=alt.Y("status:N", title=None),
            color=alt.Color("status:N", legend=None, scale=status_scale(checks["status"])),
            tooltip=[
                alt.Tooltip("sampled_at:T", format="%Y-%m-%d %H:%M:%S"),
                "status",
                "reason",
                "decision",
            ],
        )
    )


def pick_node(choices: list[str]) -> str | None:
    """The node in the URL (`?node=`), or the one picked here, kept in the URL."""
    wanted = st.query_params.get("node")
    if wanted and wanted not in choices:
        st.warning(f"No host or node is named `{wanted}`; pick one below.", icon=":material/help:")
        wanted = None
    if wanted and st.session_state.get("node_pick") != wanted:
        st.session_state["node_pick"] = wanted
    picked = st.selectbox(
        "Node", choices, key="node_pick", index=None, placeholder="Pick a host or node"
    )
    if picked:
        st.query_params["node"] = picked
    return picked


def show_versions(profile: dict[str, Any]) -> None:
    rows = {
        "Extension": profile.get("extension_version"),
        "Runner": profile.get("runner_version"),
        "Browser": profile.get("browser"),
        "Host OS": profile.get("host_os"),
        "Deployed": profile.get("deployed_at"),
        "Node id": profile.get("client_id"),
        "Address": profile.get("address"),
    }
    st.dataframe(
        pd.DataFrame(
            {
                "what": list(rows),
                "value": [
                    "—" if v is None or (not isinstance(v, str) and pd.isna(v)) else str(v)
                    for v in rows.values()
                ],
            }
        ),
        hide_index=True,
        column_config={"what": "Version", "value": "Value"},
    )


url = data.current_database_url()
now = utc_now()
today = now.date()
st.title("Node")
with database_errors(url):
    choices = data.filter_choices(url)
if choices.empty:
    no_data_yet("Nodes appear once the provision flow has created hosts.")
host = pick_node(sorted(choices["host"]))
if host is None:
    st.info(
        "Pick a node above, or open one from any table that lists nodes.",
        icon=":material/touch_app:",
    )
    st.stop()

window = st.segmented_control("Days", list(WINDOWS), default="30 days", key="node_window")
first = today - timedelta(days=WINDOWS[window or "30 days"] - 1)
with database_errors(url):
    profile = data.node_profile(url, host)
    if profile is None:
        no_data_yet(f"Nothing is stored about {host} yet.")
    days = data.node_days(url, host, first, today)
    statuses = data.node_status_days(url, host, first, today)
    recent = data.node_recent_checks(url, host, now - timedelta(hours=RECENT_HOURS))
    found = data.incidents(url, FleetFilter(first, today, hosts=(host,)))
    readiness = data.node_tap_readiness(url, host)
assert profile is not None

st.subheader(host)
st.caption(
    f"{profile['provider']} · {profile['region']}"
    + (f" · {profile['state']}" if profile.get("state") else "")
    + (
        f" · since {profile['created_at']:%Y-%m-%d}"
        if profile.get("created_at") is not None and not pd.isna(profile["created_at"])
        else ""
    )
)
if profile.get("quarantined_at") is not None and not pd.isna(profile["quarantined_at"]):
    st.error(
        f"Quarantined since {profile['quarantined_at']:%Y-%m-%d %H:%M} UTC: "
        f"{profile['quarantine_reason']}. Recovery leaves it alone until a person releases it.",
        icon=":material/block:",
    )

points = float(days["points"].fillna(0).sum()) if not days.empty else 0.0
samples = days["samples"].fillna(0).sum() if not days.empty else 0
good = (days["good_share"].fillna(0) * days["samples"].fillna(0)).sum() if samples else 0
hours = max(
    0.0,
    (
        pd.Timestamp(now)
        - max(
            pd.Timestamp(first, tz="UTC"),
            pd.Timestamp(profile["created_at"])
            if profile.get("created_at") is not None and not pd.isna(profile["created_at"])
            else pd.Timestamp(now),
        )
    ).total_seconds()
    / 3600,
)
cost = hours * float(profile.get("hourly_cost_usd") or 0.0)
last_check = profile.get("last_check")
status_col, points_col, good_col, incidents_col, cost_col = st.columns(5)
status_col.metric(
    "Status",
    status_label(profile.get("status"), profile.get("banned_reason")),
    help=None
    if last_check is None or pd.isna(last_check)
    else f"Checked {age(pd.Timestamp(last_check), now)}",
    border=True,
)
points_col.metric("Points", f"{points:,.2f}", help="Over the chosen days.", border=True)
good_col.metric("Checks Good", "—" if not samples else f"{good / samples:.0%}", border=True)
incidents_col.metric("Incidents", len(found), border=True)
cost_col.metric("Cost", f"${cost:,.2f}", help="Its hourly price over the chosen days.", border=True)

render_node_actions(profile)

st.subheader("Status")
if statuses.empty and recent.empty:
    st.info("No health check of this node in the chosen days.")
else:
    left, right = st.columns(2)
    if not statuses.empty:
        left.altair_chart(
            status_days_chart(statuses, first, today), width=day_chart_width(first, today)
        )
    if not recent.empty:
        right.altair_chart(recent_chart(recent))

st.subheader("Points and taps")
if days["points"].notna().any():
    left, right = st.columns(2)
    left.altair_chart(
        daily_chart(days, "points", "Points per day", "Points", first, today),
        width=day_chart_width(first, today),
    )
    right.altair_chart(
        daily_chart(days, "taps", "Taps per day", "Taps", first, today),
        width=day_chart_width(first, today),
    )
else:
    st.info("The network listed no points for this node in the chosen days.")

st.subheader("Host")
if days["samples"].notna().any():
    charts = st.columns(4)
    for col, (field, title, axis) in zip(
        charts,
        (
            ("load1_avg", "Load (1 min), daily mean", "Load"),
            ("mem_available_mib_min", "Memory available, daily low", "MiB"),
            ("disk_free_gib_min", "Disk free, daily low", "GiB"),
            ("browser_pss_mib_avg", "Browser memory (PSS), daily mean", "MiB"),
        ),
        strict=True,
    ):
        col.altair_chart(daily_chart(days, field, title, axis, first, today, mark="line"))
show_versions(profile)

st.subheader("Incidents")
if found.empty:
    st.success("No incident in the chosen days.", icon=":material/check:")
else:
    st.dataframe(
        found[
            [
                "detected_at",
                "kind",
                "status",
                "recovery_seconds",
                "actions",
                "recovered_at",
                "detail",
            ]
        ],
        hide_index=True,
        column_config={
            "detected_at": st.column_config.DatetimeColumn("Detected (UTC)", format=WHEN),
            "kind": "Detected",
            "status": "Status",
            "recovery_seconds": st.column_config.NumberColumn("Recovery (s)", format="%.0f"),
            "actions": st.column_config.TextColumn("Recovery steps", width="large"),
            "recovered_at": st.column_config.DatetimeColumn("Recovered (UTC)", format=WHEN),
            "detail": "Detail",
        },
    )

st.subheader("Tap readiness")
if readiness.empty:
    st.info("No STUN test of this host yet: the poc_taps flow runs one per host.")
else:
    st.dataframe(
        readiness,
        hide_index=True,
        column_config={"checked_at": st.column_config.DatetimeColumn("Tested (UTC)")},
    )
