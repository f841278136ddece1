"""Chart axes that read right at one day of data and at a year.

A day axis has one band per UTC day of the selected range, labelled by its date (not a time
scale that stretches one day across the chart and labels its hours). A time axis pads a short
span and labels it in hours and minutes, longer ones in days."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Literal

import altair as alt
import pandas as pd

DAY_STEP_PX = 56  # a band's width while the whole range fits the page at that width
STRETCH_AFTER_PX = 840  # past this, the chart takes the page's width and bands get thinner
MIN_TIME_PAD = pd.Timedelta(minutes=30)


def days_between(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def day_label_format(first: date, last: date) -> str:
    """ "Nov 30" while no month and day repeat in the range; ISO dates past a year."""
    return "%b %d" if (last - first).days < 365 else "%Y-%m-%d"


def day_labels(days: pd.Series, first: date, last: date) -> pd.Series:
    """Each UTC day (a date, or a timestamp on it) as its band's label."""
    return pd.to_datetime(days, utc=True).dt.strftime(day_label_format(first, last))


def day_x(field: str, first: date, last: date, title: str = "Day (UTC)") -> alt.X:
    """A band per day from `first` to `last` (days without data stay as gaps), in order."""
    fmt = day_label_format(first, last)
    return alt.X(
        f"{field}:O",
        title=title,
        scale=alt.Scale(domain=[d.strftime(fmt) for d in days_between(first, last)]),
        axis=alt.Axis(labelAngle=0, labelOverlap="greedy", labelPadding=4),
    )


def day_chart_width(first: date, last: date) -> Literal["content", "stretch"]:
    """A few days keep bands of a readable width; many days take the page's width."""
    fits = len(days_between(first, last)) * DAY_STEP_PX <= STRETCH_AFTER_PX
    return "content" if fits else "stretch"


def sized_for_days(chart: alt.Chart, first: date, last: date) -> alt.Chart:
    if day_chart_width(first, last) == "content":
        return chart.properties(width=alt.Step(DAY_STEP_PX))
    return chart


def time_format(span: pd.Timedelta) -> str:
    """Hours and minutes within a day or two, with the date up to a week, then dates."""
    if span <= pd.Timedelta(days=1):
        return "%H:%M"
    if span <= pd.Timedelta(days=7):
        return "%b %d %H:%M"
    if span <= pd.Timedelta(days=400):
        return "%b %d"
    return "%Y-%m-%d"


def time_x(field: str, times: pd.Series, title: str) -> alt.X:
    """A UTC time axis over `times`, padded so that one moment or a few seconds still show as a
    readable stretch of clock time (never as milliseconds)."""
    moments = pd.to_datetime(times, utc=True).dropna()
    first, last = moments.min(), moments.max()
    pad = max((last - first) * 0.05, MIN_TIME_PAD)
    low, high = first - pad, last + pad
    return alt.X(
        f"{field}:T",
        title=title,
        # ISO strings: a domain of epoch milliseconds does not reach Streamlit's chart intact
        scale=alt.Scale(type="utc", domain=[low.isoformat(), high.isoformat()]),
        # a utc scale formats its labels in UTC; "formatType" would drop the format here
        axis=alt.Axis(format=time_format(high - low), labelOverlap="greedy"),
    )
