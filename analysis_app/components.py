"""Pieces every page shares: the sidebar filter, the CSV button, and the messages for a
database that is empty, unmigrated or out of reach."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any, NoReturn
from urllib.parse import quote

import pandas as pd
import streamlit as st
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, ProgrammingError

from gradientlab.store.reads import FleetFilter

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


FILTER_COLUMNS = (("Provider", "provider"), ("Region", "region"), ("Host", "host"))


def _read_url_once() -> None:
    """A link reproduces a view: on a session's first page, the URL's `provider`, `region`,
    `host` (each repeatable), `from` and `to` seed the filter."""
    if st.session_state.get("_url_read"):
        return
    st.session_state["_url_read"] = True
    for _, column in FILTER_COLUMNS:
        values = st.query_params.get_all(column)
        if values:
            st.session_state[f"kept_filter_{column}"] = list(values)
    for end in ("from", "to"):
        value = st.query_params.get(end)
        if value:
            try:
                st.session_state[f"url_{end}"] = date.fromisoformat(value)
            except ValueError:
                st.warning(
                    f"The link's `{end}={value}` is not a day like 2025-03-14; showing the "
                    "default days instead.",
                    icon=":material/link_off:",
                )


def _write_url(selection: FleetFilter) -> None:
    """Keep the URL in step with the filter, so that copying it shares this view."""
    for column, chosen in (
        ("provider", selection.providers),
        ("region", selection.regions),
        ("host", selection.hosts),
    ):
        if chosen:
            st.query_params[column] = list(chosen)
        elif column in st.query_params:
            del st.query_params[column]
    st.query_params["from"] = selection.start.isoformat()
    st.query_params["to"] = selection.end.isoformat()


def _default_days(first: date, last: date) -> tuple[date, date]:
    start = st.session_state.pop("url_from", None)
    end = st.session_state.pop("url_to", None)
    if start is not None or end is not None:
        end = min(max(end or last, first), last)
        start = min(max(start or first, first), end)
        return start, end
    return max(first, last - timedelta(days=DEFAULT_DAYS - 1)), last


def fleet_filter(choices: pd.DataFrame, days: tuple[date, date], page: str) -> FleetFilter:
    """The sidebar: providers, regions and hosts (kept across pages) and this page's days, all
    kept in the URL's query string."""
    _read_url_once()
    first, last = days
    picks: dict[str, list[str]] = {}
    with st.sidebar:
        st.header("Filter")
        for label, column in FILTER_COLUMNS:
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
        days_key = f"{page}_days"
        default = _default_days(first, last)
        picked = st.date_input(
            "Days (UTC)",
            value=default,
            min_value=first,
            max_value=last,
            key=days_key,
        )
        if st.button("Reload data", icon=":material/refresh:", help="Read the database again"):
            st.cache_data.clear()
    # While the analyst is still picking the range, the widget holds a single day.
    start, end = (picked[0], picked[-1]) if isinstance(picked, tuple) and picked else (first, last)
    selection = FleetFilter(
        start, end, tuple(picks["provider"]), tuple(picks["region"]), tuple(picks["host"])
    )
    _write_url(selection)
    return selection


NODE_PAGE = "node"


def node_link(host: str) -> str:
    """The node page for one host (or unmanaged node), as a link a table cell can hold."""
    return f"{NODE_PAGE}?node={quote(host, safe='')}"


def node_link_column(label: str = "Node") -> Any:
    """A table column of `node_link`s that shows the host's name."""
    return st.column_config.LinkColumn(label, display_text=r"node=(.*)$")


def page_of(total: int, key: str, size: int = 50) -> tuple[int, int]:
    """A page picker under a table: returns (limit, offset) for the query."""
    pages = max(1, -(-total // size))
    page = 1
    if pages > 1:
        page = int(
            st.number_input(
                f"Page (of {pages}, {size} rows each)",
                min_value=1,
                max_value=pages,
                value=1,
                step=1,
                key=key,
            )
        )
    return size, (page - 1) * size


def csv_download(
    frame: pd.DataFrame | Callable[[], bytes], file_name: str, key: str, label: str = "Download CSV"
) -> None:
    """A CSV button; given a callable, the CSV is made only when the button is clicked (the
    full selection, streamed out of Postgres), never on every render."""
    st.download_button(
        label,
        frame if callable(frame) else frame.to_csv(index=False).encode(),
        file_name=file_name,
        mime="text/csv",
        icon=":material/download:",
        key=key,
        on_click="ignore",
    )
