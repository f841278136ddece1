"""Pieces every page shares: the sidebar filter, the CSV button, and the messages for a
database that is empty, unmigrated or out of reach."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import NoReturn

import pandas as pd
import streamlit as st
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, ProgrammingError

from analysis_app.queries import FleetFilter

NO_DATA_MESSAGE = (
    "No data yet — run the demo or the rewards flow, then come back: "
    "this page fills in as soon as the flows have written to the database."
)
DEFAULT_DAYS = 30


def utc_now() -> datetime:
    """The page's clock. A page reads it once per render and hands it to every query that
    needs "now" or "today"; no query reads the database server's clock."""
    return datetime.now(UTC)


def no_data_yet(detail: str = "") -> NoReturn:
    """Say the database has nothing to show yet, and stop the page there."""
    st.info(NO_DATA_MESSAGE + (f"\n\n{detail}" if detail else ""), icon=":material/hourglass:")
    st.stop()


@contextmanager
def database_errors(url: str) -> Iterator[None]:
    """Turn an unreachable or unmigrated database into a message that says what to do."""
    shown = make_url(url).render_as_string(hide_password=True)
    try:
        yield
    except OperationalError as error:
        st.error(
            f"Cannot reach the fleet database at `{shown}`.\n\n"
            "Check that Postgres is running and that `DATABASE_URL` points at it.\n\n"
            f"```\n{str(error.orig).strip()}\n```",
            icon=":material/database_off:",
        )
        st.stop()
    except ProgrammingError as error:
        if getattr(error.orig, "pgcode", None) != "42P01":  # undefined_table
            raise
        st.info(
            f"No data yet — the database at `{shown}` has no GradientLab tables. "
            "Run the demo or the rewards flow: they create the tables, then fill them.",
            icon=":material/hourglass:",
        )
        st.stop()


def _remembered(key: str) -> str:
    """A widget key whose value follows the analyst from page to page.

    Streamlit forgets a widget's value once a page without it runs; a plain session entry
    under another name survives, and seeds the widget when the next page draws it."""
    kept = f"kept_{key}"
    if kept in st.session_state and key not in st.session_state:
        st.session_state[key] = st.session_state[kept]
    return key


def _remember(key: str) -> None:
    st.session_state[f"kept_{key}"] = st.session_state[key]


def fleet_filter(choices: pd.DataFrame, days: tuple[date, date], page: str) -> FleetFilter:
    """The sidebar: providers, regions and hosts (kept across pages) and this page's days."""
    first, last = days
    picks: dict[str, list[str]] = {}
    with st.sidebar:
        st.header("Filter")
        for label, column in (("Provider", "provider"), ("Region", "region"), ("Host", "host")):
            options = sorted(choices[column].unique())
            key = _remembered(f"filter_{column}")
            # A kept choice that is no longer in the data (a host terminated) is dropped.
            if key in st.session_state:
                st.session_state[key] = [v for v in st.session_state[key] if v in options]
            picks[column] = st.multiselect(
                label,
                options,
                key=key,
                placeholder=f"All {label.lower()}s",
            )
            _remember(key)
        picked = st.date_input(
            "Days (UTC)",
            value=(max(first, last - timedelta(days=DEFAULT_DAYS - 1)), last),
            min_value=first,
            max_value=last,
            key=f"{page}_days",
        )
        if st.button("Reload data", icon=":material/refresh:", help="Read the database again"):
            st.cache_data.clear()
    # While the analyst is still picking the range, the widget holds a single day.
    start, end = (picked[0], picked[-1]) if isinstance(picked, tuple) and picked else (first, last)
    return FleetFilter(
        start, end, tuple(picks["provider"]), tuple(picks["region"]), tuple(picks["host"])
    )


def csv_download(frame: pd.DataFrame, file_name: str, key: str) -> None:
    st.download_button(
        "Download CSV",
        frame.to_csv(index=False).encode(),
        file_name=file_name,
        mime="text/csv",
        icon=":material/download:",
        key=key,
        on_click="ignore",
    )
