"""What broke, and how fast did the fleet heal? Incidents by cause, how long recoveries took,
which recovery steps work, and each incident with its steps in order."""

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
from gradientlab.store.reads import RECOVERY_BANDS

WHEN = "YYYY-MM-DD HH:mm:ss"


def incidents_per_day_chart(per_day: pd.DataFrame, first: date, last: date) -> alt.Chart:
    """Incidents per UTC day of detection, one band per day from `first` to `last`."""
    frame = per_day.assign(
        band=day_labels(per_day["day"], first, last),
        date=pd.to_datetime(per_day["day"]).dt.strftime("%Y-%m-%d"),
    )
    chart = (
        alt.Chart(frame[["band", "date", "kind", "incidents"]], title="Incidents per day")
        .mark_bar()
        .encode(
            x=day_x("band", first, last),
            y=alt.Y("sum(incidents):Q", title="Incidents", axis=alt.Axis(tickMinStep=1)),
            color=alt.Color("kind:N", title="Detected"),
            tooltip=[
                alt.Tooltip("date:N", title="Day (UTC)"),
                alt.Tooltip("kind:N", title="Detected"),
                alt.Tooltip("sum(incidents):Q", title="Incidents"),
            ],
        )
    )
    return sized_for_days(chart, first, last)


def recovery_bands_chart(bands: pd.DataFrame) -> alt.Chart:
    return (
        alt.Chart(bands, title="Time from detection to recovery")
        .mark_bar()
        .encode(
            x=alt.X(
                "band:N",
                title=None,
                sort=[label for _, label in RECOVERY_BANDS],
                axis=alt.Axis(labelAngle=0),
            ),
            y=alt.Y("incidents:Q", title="Recovered incidents", axis=alt.Axis(tickMinStep=1)),
            tooltip=["band", "incidents"],
        )
    )


url = data.current_database_url()
st.title("Incidents")
st.caption(
    "What broke, and how fast did the fleet heal? Each incident the health flow opened, by "
    "cause; how long recoveries took; how often each recovery step worked."
)

with database_errors(url):
    bounds = data.day_bounds(url, "incidents")
    if bounds is None:
        no_data_yet("Incidents appear when the health flow finds a node down.")
    selection = fleet_filter(data.filter_choices(url), bounds, page="incidents")
    causes = data.incidents_by_cause(url, selection)

if causes.empty:
    st.info("No incidents in the selected days and filters.", icon=":material/filter_alt_off:")
    st.stop()

with database_errors(url):
    bands = data.recovery_time_bands(url, selection)
    steps = data.recovery_step_success(url, selection)
    per_day = data.incidents_per_day(url, selection)

total = int(causes["incidents"].sum())
recovered = int(causes["recovered"].sum())
count_col, open_col, median_col, failed_col = st.columns(4)
count_col.metric("Incidents", f"{total:,}", border=True)
open_col.metric("Open now", int(causes["open"].sum()), border=True)
mean = (causes["mean_recovery_s"] * causes["recovered"]).sum() / recovered if recovered else None
median_col.metric(
    "Mean recovery",
    "—" if mean is None else f"{mean:.0f} s",
    help="From detection to recovery, over recovered incidents.",
    border=True,
)
failed_col.metric(
    "Recovery failed",
    int(causes["failed"].sum()),
    help="Incidents where every step failed and a person was alerted.",
    border=True,
)

left, right = st.columns(2)
left.altair_chart(
    incidents_per_day_chart(per_day, selection.start, selection.end),
    width=day_chart_width(selection.start, selection.end),
)
if recovered == 0:
    right.info("No incident in the selection has recovered yet.")
else:
    right.altair_chart(recovery_bands_chart(bands))

cause_col, step_col = st.columns(2)
with cause_col:
    st.subheader("By cause")
    st.dataframe(
        causes,
        hide_index=True,
        column_config={
            "kind": "Detected",
            "incidents": st.column_config.NumberColumn("Incidents"),
            "recovered": st.column_config.NumberColumn("Recovered"),
            "failed": st.column_config.NumberColumn("Failed"),
            "open": st.column_config.NumberColumn("Open"),
            "mean_recovery_s": st.column_config.NumberColumn("Mean recovery (s)", format="%.0f"),
        },
    )
with step_col:
    st.subheader("Recovery steps")
    st.dataframe(
        steps,
        hide_index=True,
        column_config={
            "step": "Step",
            "tries": st.column_config.NumberColumn("Tries"),
            "ok": st.column_config.NumberColumn("Worked"),
            "failed": st.column_config.NumberColumn("Failed"),
            "success_rate": st.column_config.ProgressColumn(
                "Success rate", format="percent", min_value=0, max_value=1
            ),
            "mean_seconds": st.column_config.NumberColumn("Mean time (s)", format="%.1f"),
        },
    )

st.subheader("Every incident")
limit, offset = page_of(total, key="incidents_page")
with database_errors(url):
    found = data.incident_page(url, selection, limit, offset)
st.dataframe(
    found.assign(node=[node_link(h) for h in found["host"]])[
        [
            "host",
            "detected_at",
            "node",
            "provider",
            "kind",
            "status",
            "recovery_seconds",
            "actions",
            "recovered_at",
            "alerted_at",
            "detail",
        ]
    ],
    hide_index=True,
    column_order=[
        "detected_at",
        "node",
        "provider",
        "kind",
        "status",
        "recovery_seconds",
        "actions",
        "recovered_at",
        "alerted_at",
        "detail",
    ],  # fmt: skip
    column_config={
        "detected_at": st.column_config.DatetimeColumn("Detected (UTC)", format=WHEN),
        "node": node_link_column("Host"),
        "provider": "Provider",
        "kind": "Detected",
        "status": "Status",
        "recovery_seconds": st.column_config.NumberColumn("Recovery (s)", format="%.0f"),
        "actions": st.column_config.TextColumn("Recovery steps", width="large"),
        "recovered_at": st.column_config.DatetimeColumn("Recovered (UTC)", format=WHEN),
        "alerted_at": st.column_config.DatetimeColumn("Alerted (UTC)", format=WHEN),
        "detail": "Detail",
    },
)
st.caption(f"Rows {offset + 1}–{offset + len(found)} of {total:,} incidents, newest first.")
csv_download(
    data.incidents_csv(url, selection),
    f"incidents_{selection.start}_{selection.end}.csv",
    key="incidents_csv",
    label="Download every incident (CSV)",
)
