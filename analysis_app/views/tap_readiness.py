"""Why do a node's taps fail? Its host's NAT, as the latest STUN test in the selected days
found it (the poc_taps flow runs one per host per run), beside the taps the network counted:
a chart per NAT type and a page of hosts, fewest taps first, read from Postgres a page at a
time, with the full selection as a CSV made when asked for."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from analysis_app import cached_queries as data
from analysis_app.components import (
    csv_download,
    database_errors,
    node_link,
    node_link_column,
    page_of,
)
from gradientlab.agent.stun import NatType
from gradientlab.store import reads

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


def with_outlook(frame: pd.DataFrame) -> pd.DataFrame:
    """`nat_type` named where the test did not run, and what it means for taps."""
    nat_type = frame["nat_type"].fillna("not measured")
    return frame.assign(nat_type=nat_type, outlook=nat_type.map(TAP_OUTLOOK).fillna(NOT_MEASURED))


def readiness_rows(page: pd.DataFrame) -> pd.DataFrame:
    """A page of `reads.tap_readiness` as the table shows it: the outlook, the address peers
    see, the link to each node's page."""
    frame = with_outlook(page)
    frame["mapped"] = [
        f"{a}:{int(p)}" if isinstance(a, str) and pd.notna(p) else ""
        for a, p in zip(frame["mapped_address"], frame["mapped_port"], strict=True)
    ]
    frame["node"] = [node_link(h) for h in frame["host"]]
    return frame


def readiness_chart(summary: pd.DataFrame) -> alt.Chart:
    """Taps per node-day by NAT type (`reads.tap_readiness_summary`): one bar per type,
    readable at any fleet size."""
    by_type = with_outlook(summary).rename(columns={"hosts": "nodes"})
    by_type["taps_per_node_day"] = (
        by_type["taps"] / by_type["node_days"].where(by_type["node_days"] > 0)
    ).fillna(0.0)
    return (
        alt.Chart(
            by_type[["nat_type", "outlook", "nodes", "taps", "taps_per_node_day"]],
            title="Taps per node-day, by NAT type",
        )
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


COLUMNS = ["node", "nat_type", "outlook", "taps", "udp_reachable", "mapped", "mapping",
           "filtering", "checked_at", "tests", "blocked_tests", "failed_tests",
           "error"]  # fmt: skip


def show_tap_readiness(url: str, selection: reads.FleetFilter) -> None:
    st.subheader("Tap readiness")
    st.caption(
        "Each host's latest STUN test in the selected days, run from the host by the poc_taps "
        "flow against the network's STUN server: whether UDP gets out, the address peers see, "
        "and how its NAT maps and filters. Symmetric NATs and blocked UDP explain nodes that "
        "are up but rarely tapped."
    )
    with database_errors(url):
        summary = data.tap_readiness_summary(url, selection)
    if summary.empty:
        st.info(
            "No tap-readiness test in the selected days: the poc_taps flow runs one per host.",
            icon=":material/network_check:",
        )
        return
    st.altair_chart(readiness_chart(summary))
    hosts = int(summary["hosts"].sum())
    limit, offset = page_of(hosts, key="tap_readiness_page")
    with database_errors(url):
        page = readiness_rows(data.tap_readiness(url, selection, "fewest_taps", limit, offset))
    st.dataframe(
        page[["host", *COLUMNS]],
        hide_index=True,
        column_order=COLUMNS,  # the host's name is the link's text
        column_config={
            "node": node_link_column("Host"),
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
    st.caption(
        f"Rows {offset + 1}–{offset + len(page)} of {hosts:,} tested hosts, fewest taps first; "
        f"at their latest test {int(summary['udp_blocked'].sum()):,} had UDP blocked and "
        f"{int(summary['not_run'].sum()):,} could not be tested."
    )
    csv_download(
        data.tap_readiness_csv(url, selection),
        f"tap_readiness_{selection.start}_{selection.end}.csv",
        key="tap_readiness_csv",
        label="Download every host's tap readiness (CSV)",
    )
