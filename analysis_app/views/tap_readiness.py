"""Why do a node's taps fail? Its host's NAT, as the latest STUN test in the selected days
found it (the poc_taps flow runs one per host per run), beside the taps the network counted."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from analysis_app import cached_queries as data
from analysis_app import queries
from analysis_app.components import csv_download, database_errors
from gradientlab.node.stun import NatType

# What each NAT type means for a peer trying to tap the node, in an operator's words.
TAP_OUTLOOK: dict[str, str] = {
    NatType.OPEN: "good — any peer reaches it",
    NatType.FULL_CONE: "good — any peer reaches its mapping",
    NatType.RESTRICTED_CONE: "fair — peers reach it after it sent to their address",
    NatType.PORT_RESTRICTED_CONE: "fair — hole punching works; relayed peers may fail",
    NatType.FIREWALL: "fair — a stateful firewall; hole punching works",
    NatType.SYMMETRIC: "poor — a new mapping per peer; taps with other strict NATs fail",
    NatType.UDP_BLOCKED: "none — no UDP gets out, so no tap can succeed",
    NatType.BASIC_ONLY: "unknown — the STUN server cannot tell NAT behaviour (no RFC 5780)",
}
NOT_MEASURED = "unknown — the test did not run (see error)"


@st.cache_data(ttl=data.TTL_SECONDS, show_spinner=False)
def _tap_readiness(url: str, selection: queries.FleetFilter) -> pd.DataFrame:
    return queries.tap_readiness(data.fleet_engine(url), selection)


def readiness_beside_taps(readiness: pd.DataFrame, taps: pd.DataFrame) -> pd.DataFrame:
    """Each tested host's latest readiness with its taps and node-days in the same selection
    (`taps`: host, taps, node_days, as `queries.node_taps` sums them)."""
    if taps.empty:
        taps = pd.DataFrame({"host": [], "taps": [], "node_days": []})
    frame = readiness.merge(taps[["host", "taps", "node_days"]], on="host", how="left")
    frame["taps"] = frame["taps"].fillna(0).astype("int64")
    frame["node_days"] = frame["node_days"].fillna(0).astype("int64")
    frame["nat_type"] = frame["nat_type"].fillna("not measured")
    frame["outlook"] = frame["nat_type"].map(TAP_OUTLOOK).fillna(NOT_MEASURED)
    frame["mapped"] = [
        f"{a}:{int(p)}" if isinstance(a, str) and pd.notna(p) else ""
        for a, p in zip(frame["mapped_address"], frame["mapped_port"], strict=True)
    ]
    return frame


def readiness_chart(frame: pd.DataFrame) -> alt.Chart:
    """Taps per node-day by NAT type: one bar per type, readable at any fleet size."""
    by_type = frame.groupby(["nat_type", "outlook"], as_index=False).agg(
        nodes=("host", "count"), taps=("taps", "sum"), node_days=("node_days", "sum")
    )
    by_type["taps_per_node_day"] = by_type["taps"] / by_type["node_days"].where(
        by_type["node_days"] > 0
    )
    by_type["taps_per_node_day"] = by_type["taps_per_node_day"].fillna(0.0)
    return (
        alt.Chart(by_type, title="Taps per node-day, by NAT type")
        .mark_bar()
        .encode(
            x=alt.X("taps_per_node_day:Q", title="Taps per node per day"),
            y=alt.Y("nat_type:N", title=None, sort="-x"),
            color=alt.Color("nat_type:N", title="NAT type", legend=None),
            tooltip=[
                alt.Tooltip("nat_type:N", title="NAT type"),
                alt.Tooltip("outlook:N", title="Tap outlook"),
                alt.Tooltip("nodes:Q", title="Nodes"),
                alt.Tooltip("taps:Q", title="Taps"),
                alt.Tooltip("taps_per_node_day:Q", title="Per node-day", format=".1f"),
            ],
        )
    )


def show_tap_readiness(url: str, selection: queries.FleetFilter, taps: pd.DataFrame) -> None:
    st.subheader("Tap readiness")
    st.caption(
        "Each host's latest STUN test in the selected days, run from the host by the poc_taps "
        "flow against the network's STUN server: whether UDP gets out, the address peers see, "
        "and how its NAT maps and filters. Symmetric NATs and blocked UDP explain nodes that "
        "are up but rarely tapped."
    )
    with database_errors(url):
        readiness = _tap_readiness(url, selection)
    if readiness.empty:
        st.info(
            "No tap-readiness test in the selected days: the poc_taps flow runs one per host.",
            icon=":material/network_check:",
        )
        return
    frame = readiness_beside_taps(readiness, taps).sort_values(["taps", "host"])
    st.altair_chart(readiness_chart(frame))
    shown = frame[
        [
            "host",
            "nat_type",
            "outlook",
            "taps",
            "udp_reachable",
            "mapped",
            "mapping",
            "filtering",
            "checked_at",
            "tests",
            "blocked_tests",
            "failed_tests",
            "error",
        ]
    ]
    st.dataframe(
        shown,
        hide_index=True,
        column_config={
            "host": "Host",
            "nat_type": "NAT type",
            "outlook": "Tap outlook",
            "taps": st.column_config.NumberColumn("Taps"),
            "udp_reachable": st.column_config.CheckboxColumn("UDP out"),
            "mapped": "Address peers see",
            "mapping": "Mapping",
            "filtering": "Filtering",
            "checked_at": st.column_config.DatetimeColumn("Tested (UTC)"),
            "tests": st.column_config.NumberColumn("Tests"),
            "blocked_tests": st.column_config.NumberColumn("UDP blocked"),
            "failed_tests": st.column_config.NumberColumn("Did not run"),
            "error": "Error",
        },
    )
    csv_download(
        shown, f"tap_readiness_{selection.start}_{selection.end}.csv", key="tap_readiness_csv"
    )
