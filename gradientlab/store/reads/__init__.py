"""The read model: what the analysis app's pages and the daily report read, as plain functions
from an engine to pandas DataFrames (SQL and pandas: no Streamlit, no Prefect).

One module per page's question:

- `filters`: the analyst's selection (`FleetFilter`), what there is to select, the days with rows
- `fleet_status`: is the fleet up right now (Fleet now)
- `rewards`: what the fleet earned (Rewards; Uptime & taps draws its charts from it too)
- `taps`: which hosts can take taps (tap readiness, on Uptime & taps)
- `recovery`: what went wrong and how recovery went (Incidents)
- `economics`: what the fleet cost (Economics)
- `node`: how one node is doing (Node)
- `_sql`: what they share (a query to a frame or to CSV, the running totals' edge-day joins)

Every value reaches SQL as a bound parameter. Points stay raw integers (1 point =
`POINT_SCALE`, gradientlab.gradient.models) in the database and in the `*_raw` columns;
`to_points` divides them for display.

No query reads a clock: "today" and "now" are the caller's (`today`, `as_of`), so a page counts
on its own clock, once per render, and never on the database server's `now()`.
"""

from gradientlab.store.reads._sql import UPTIME_SECONDS_PER_UNIT, to_points
from gradientlab.store.reads.economics import (
    host_costs,
    provider_costs,
    status_shares,
    unsupported_costs,
)
from gradientlab.store.reads.filters import (
    DaySource,
    FleetFilter,
    day_bounds,
    filter_choices,
    host_day_bounds,
)
from gradientlab.store.reads.fleet_status import fleet_now, fleet_status_per_day
from gradientlab.store.reads.node import (
    node_days,
    node_profile,
    node_recent_checks,
    node_status_days,
    node_tap_readiness,
)
from gradientlab.store.reads.recovery import (
    RECOVERY_BANDS,
    incident_page,
    incidents,
    incidents_by_cause,
    incidents_csv,
    incidents_per_day,
    recovery_actions,
    recovery_step_success,
    recovery_time_bands,
)
from gradientlab.store.reads.rewards import (
    NODE_ORDERS,
    POINT_KINDS,
    THE_REST,
    Grouping,
    account_points_by_kind,
    node_days_csv,
    node_totals,
    points_by_group,
    reward_season,
    season_text,
    selection_totals,
    top_nodes_per_day,
)
from gradientlab.store.reads.taps import (
    TAP_READINESS_ORDERS,
    tap_readiness,
    tap_readiness_csv,
    tap_readiness_summary,
)
from gradientlab.store.rollups import UNKNOWN_REGION, UNMANAGED_PROVIDER, UNSUPPORTED_STATUSES

__all__ = [
    "NODE_ORDERS",
    "POINT_KINDS",
    "RECOVERY_BANDS",
    "TAP_READINESS_ORDERS",
    "THE_REST",
    "UNKNOWN_REGION",
    "UNMANAGED_PROVIDER",
    "UNSUPPORTED_STATUSES",
    "UPTIME_SECONDS_PER_UNIT",
    "DaySource",
    "FleetFilter",
    "Grouping",
    "account_points_by_kind",
    "day_bounds",
    "filter_choices",
    "fleet_now",
    "fleet_status_per_day",
    "host_costs",
    "host_day_bounds",
    "incident_page",
    "incidents",
    "incidents_by_cause",
    "incidents_csv",
    "incidents_per_day",
    "node_days",
    "node_days_csv",
    "node_profile",
    "node_recent_checks",
    "node_status_days",
    "node_tap_readiness",
    "node_totals",
    "points_by_group",
    "provider_costs",
    "recovery_actions",
    "recovery_step_success",
    "recovery_time_bands",
    "reward_season",
    "season_text",
    "selection_totals",
    "status_shares",
    "tap_readiness",
    "tap_readiness_csv",
    "tap_readiness_summary",
    "to_points",
    "top_nodes_per_day",
    "unsupported_costs",
]
