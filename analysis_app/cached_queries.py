"""The app's connection to the fleet database and its cached reads.

One engine per database URL for the whole server; query results cached for `TTL_SECONDS`,
keyed by the URL so that two databases never share a cache entry, and by the page's clock
(`today`, `as_of`) where a query needs one."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from datetime import date, datetime
from typing import Any

import pandas as pd
import streamlit as st
from sqlalchemy import Engine

from gradientlab.store import reads
from gradientlab.store.database import database_url, make_engine, normalise_url

TTL_SECONDS = 60
# The fleet as it stands is read again sooner: health runs every few seconds in the demo.
LIVE_TTL_SECONDS = 10


@st.cache_resource(show_spinner=False)
def _embedded_database_url() -> str:
    # Starting (or finding) the embedded server is slow; do it once per app process.
    return database_url()


APP_DATABASE_URL_VAR = "GRADIENTLAB_APP_DATABASE_URL"


def current_database_url() -> str:
    """`GRADIENTLAB_APP_DATABASE_URL` (the read-only role `gradientlab db-roles` makes) when
    set, then `DATABASE_URL`, otherwise the embedded Postgres GradientLab starts."""
    if os.environ.get(APP_DATABASE_URL_VAR):
        return normalise_url(os.environ[APP_DATABASE_URL_VAR])
    if os.environ.get("DATABASE_URL"):
        return database_url()
    return _embedded_database_url()


@st.cache_resource(show_spinner=False)
def fleet_engine(url: str) -> Engine:
    return make_engine(url)


def unless_empty(cached: Any) -> Any:
    """Keep an answer unless it is empty: an empty table fills in soon (the demo opens the app
    before the flows have written anything), and the page says "no data yet" until then."""

    @functools.wraps(cached)
    def read(*args: Any) -> Any:
        answer = cached(*args)
        if answer is None or (isinstance(answer, pd.DataFrame) and answer.empty):
            cached.clear(*args)
        return answer

    return read


@unless_empty
@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def day_bounds(url: str, source: reads.DaySource) -> tuple[date, date] | None:
    return reads.day_bounds(fleet_engine(url), source)


@unless_empty
@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def filter_choices(url: str) -> pd.DataFrame:
    return reads.filter_choices(fleet_engine(url))


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def incidents(url: str, selection: reads.FleetFilter) -> pd.DataFrame:
    return reads.incidents(fleet_engine(url), selection)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def recovery_actions(url: str, incident_ids: tuple[int, ...]) -> pd.DataFrame:
    return reads.recovery_actions(fleet_engine(url), list(incident_ids))


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def host_day_bounds(url: str, today: date) -> tuple[date, date] | None:
    return reads.host_day_bounds(fleet_engine(url), today)


def host_costs(url: str, selection: reads.FleetFilter, as_of: datetime) -> pd.DataFrame:
    """Costs up to `as_of`, taken to the whole minute: renders within one minute share a
    cached result (the page shows times to the minute)."""
    return _host_costs(url, selection, as_of.replace(second=0, microsecond=0))


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def _host_costs(url: str, selection: reads.FleetFilter, as_of: datetime) -> pd.DataFrame:
    return reads.host_costs(fleet_engine(url), selection, as_of)


# ---- fleet scale: the rollups


@unless_empty
@st.cache_data(ttl=LIVE_TTL_SECONDS, show_spinner=False)
def fleet_now(url: str) -> pd.DataFrame:
    return reads.fleet_now(fleet_engine(url))


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def fleet_status_per_day(url: str, selection: reads.FleetFilter) -> pd.DataFrame:
    return reads.fleet_status_per_day(fleet_engine(url), selection)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def account_points_by_kind(url: str, selection: reads.FleetFilter) -> pd.DataFrame:
    return reads.account_points_by_kind(fleet_engine(url), selection)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def points_by_group(url: str, selection: reads.FleetFilter, group: reads.Grouping) -> pd.DataFrame:
    return reads.points_by_group(fleet_engine(url), selection, group)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def top_nodes_per_day(
    url: str, selection: reads.FleetFilter, top: int, measure: str
) -> pd.DataFrame:
    return reads.top_nodes_per_day(fleet_engine(url), selection, top, measure)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def node_totals(
    url: str,
    selection: reads.FleetFilter,
    order: str,
    limit: int,
    offset: int,
    with_stats: bool = False,
) -> pd.DataFrame:
    return reads.node_totals(fleet_engine(url), selection, order, limit, offset, with_stats)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def reward_season(url: str) -> dict[str, Any]:
    return reads.reward_season(fleet_engine(url))


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def selection_totals(url: str, selection: reads.FleetFilter) -> dict[str, Any]:
    return reads.selection_totals(fleet_engine(url), selection)


def node_days_csv(url: str, selection: reads.FleetFilter) -> Callable[[], bytes]:
    """The full selection's node-days as CSV, made when the download button is clicked."""
    return functools.partial(reads.node_days_csv, fleet_engine(url), selection)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def incidents_by_cause(url: str, selection: reads.FleetFilter) -> pd.DataFrame:
    return reads.incidents_by_cause(fleet_engine(url), selection)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def incidents_per_day(url: str, selection: reads.FleetFilter) -> pd.DataFrame:
    return reads.incidents_per_day(fleet_engine(url), selection)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def recovery_time_bands(url: str, selection: reads.FleetFilter) -> pd.DataFrame:
    return reads.recovery_time_bands(fleet_engine(url), selection)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def recovery_step_success(url: str, selection: reads.FleetFilter) -> pd.DataFrame:
    return reads.recovery_step_success(fleet_engine(url), selection)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def incident_page(url: str, selection: reads.FleetFilter, limit: int, offset: int) -> pd.DataFrame:
    return reads.incident_page(fleet_engine(url), selection, limit, offset)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def status_shares(url: str, selection: reads.FleetFilter) -> pd.DataFrame:
    return reads.status_shares(fleet_engine(url), selection)


@st.cache_data(ttl=LIVE_TTL_SECONDS, show_spinner=False)
def node_profile(url: str, host: str) -> dict[str, Any] | None:
    return reads.node_profile(fleet_engine(url), host)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def node_days(url: str, host: str, start: date, end: date) -> pd.DataFrame:
    return reads.node_days(fleet_engine(url), host, start, end)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def node_status_days(url: str, host: str, start: date, end: date) -> pd.DataFrame:
    return reads.node_status_days(fleet_engine(url), host, start, end)


def node_recent_checks(url: str, host: str, since: datetime) -> pd.DataFrame:
    return _node_recent_checks(url, host, since.replace(second=0, microsecond=0))


@st.cache_data(ttl=LIVE_TTL_SECONDS, show_spinner=False)
def _node_recent_checks(url: str, host: str, since: datetime) -> pd.DataFrame:
    return reads.node_recent_checks(fleet_engine(url), host, since)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def node_tap_readiness(url: str, host: str) -> pd.DataFrame:
    return reads.node_tap_readiness(fleet_engine(url), host)


def incidents_csv(url: str, selection: reads.FleetFilter) -> Callable[[], bytes]:
    """Every incident of the selection as CSV, made when the download button is clicked."""
    return functools.partial(reads.incidents_csv, fleet_engine(url), selection)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def tap_readiness(
    url: str, selection: reads.FleetFilter, order: str, limit: int, offset: int
) -> pd.DataFrame:
    return reads.tap_readiness(fleet_engine(url), selection, limit, offset, order)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def tap_readiness_summary(url: str, selection: reads.FleetFilter) -> pd.DataFrame:
    return reads.tap_readiness_summary(fleet_engine(url), selection)


def tap_readiness_csv(url: str, selection: reads.FleetFilter) -> Callable[[], bytes]:
    """Every selected host's latest test as CSV, made when the download button is clicked."""
    return functools.partial(reads.tap_readiness_csv, fleet_engine(url), selection)
