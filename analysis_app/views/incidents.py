"""What broke, and how fast did the fleet heal? Incidents and the recovery steps taken."""

from __future__ import annotations

from datetime import date

import altair as alt
import pandas as pd
import streamlit as st

from analysis_app import cached_queries as data
from analysis_app.charts import day_chart_width, day_labels, day_x, sized_for_days, time_x
from analysis_app.components import csv_download, database_errors, fleet_filter, no_data_yet


def incidents_per_day_chart(found: pd.DataFrame, first: date, last: date) -> alt.Chart:
    """Incidents per UTC day, one band per day from `first` to `last`."""
    frame = found[["detected_at", "kind"]].assign(
        band=day_labels(found["detected_at"], first, last),
        date=found["detected_at"].dt.strftime("%Y-%m-%d"),
    )
    chart = (
        alt.Chart(frame[["band", "date", "kind"]], title="Incidents per day")
        .mark_bar()
        .encode(
            x=day_x("band", first, last),
            y=alt.Y("count():Q", title="Incidents", axis=alt.Axis(tickMinStep=1)),
            color=alt.Color("kind:N", title="Detected"),
            tooltip=[
                alt.Tooltip("date:N", title="Day (UTC)"),
                alt.Tooltip("kind:N", title="Detected"),
                alt.Tooltip("count():Q", title="Incidents"),
            ],
        )
    )
    return sized_for_days(chart, first, last)


def recovery_time_chart(found: pd.DataFrame) -> alt.Chart:
    recovered = found.dropna(subset=["recovery_seconds"])
    return (
        alt.Chart(
            recovered[["detected_at", "recovery_seconds", "kind", "host", "actions"]],
            title="Seconds from detection to recovery",
        )
        .mark_circle(size=80)
        .encode(
            x=time_x("detected_at", recovered["detected_at"], "Detected (UTC)"),
            y=alt.Y("recovery_seconds:Q", title="Seconds to recover"),
            color=alt.Color("kind:N", title="Detected"),
            tooltip=[
                "host",
                "kind",
                alt.Tooltip("recovery_seconds:Q", title="Seconds", format=".0f"),
                "actions",
            ],
        )
    )


WHEN = "YYYY-MM-DD HH:mm:ss"

url = data.current_database_url()
st.title("Incidents")
st.caption(
    "What broke, and how fast did the fleet heal? Each incident the health flow opened, the "
    "recovery steps it took in order (✓ worked, ✗ failed), and the time to recover."
)

with database_errors(url):
    bounds = data.day_bounds(url, "incidents")
    if bounds is None:
        no_data_yet("Incidents appear when the health flow finds a node down.")
    selection = fleet_filter(data.filter_choices(url), bounds, page="incidents")
    found = data.incidents(url, selection)

if found.empty:
    st.info("No incidents in the selected days and filters.", icon=":material/filter_alt_off:")
    st.stop()

recovered = found["recovery_seconds"].dropna()
count_col, open_col, median_col, failed_col = st.columns(4)
count_col.metric("Incidents", len(found), border=True)
open_col.metric("Open now", int((found["status"] == "open").sum()), border=True)
median_col.metric(
    "Median recovery",
    "—" if recovered.empty else f"{recovered.median():.0f} s",
    help="From detection to recovery, over recovered incidents.",
    border=True,
)
failed_col.metric(
    "Recovery failed",
    int((found["status"] == "failed").sum()),
    help="Incidents where every step failed and a person was alerted.",
    border=True,
)

left, right = st.columns(2)
left.altair_chart(
    incidents_per_day_chart(found, selection.start, selection.end),
    width=day_chart_width(selection.start, selection.end),
)
if recovered.empty:
    right.info("No incident in the selection has recovered yet.")
else:
    right.altair_chart(recovery_time_chart(found))

st.dataframe(
    found[
        [
            "detected_at",
            "host",
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
    column_config={
        "detected_at": st.column_config.DatetimeColumn("Detected (UTC)", format=WHEN),
        "host": "Host",
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
csv_download(found, f"incidents_{selection.start}_{selection.end}.csv", key="incidents_csv")

with st.expander("Recovery steps, one row each"):
    with database_errors(url):
        steps = data.recovery_actions(url, tuple(int(i) for i in found["id"]))
    st.dataframe(
        steps,
        hide_index=True,
        column_config={
            "incident_id": "Incident",
            "step": "Step",
            "started_at": st.column_config.DatetimeColumn("Started (UTC)", format=WHEN),
            "finished_at": st.column_config.DatetimeColumn("Finished (UTC)", format=WHEN),
            "seconds": st.column_config.NumberColumn("Seconds", format="%.1f"),
            "ok": st.column_config.CheckboxColumn("Worked"),
            "detail": "Detail",
        },
    )
    csv_download(steps, "recovery_steps.csv", key="steps_csv")
