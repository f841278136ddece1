"""Health: probe each host, judge it, decide a recovery that cannot storm, run it, record it.

status   the vocabulary: verdicts, what each means, the recovery ladder
report   what one check found (and the probe's JSON, parsed)
judge    probe → verdict with its reason; the fleet's network state (pure)
decide   verdict + history → which rung now, or why none; the fleet brake (pure)
act      running the decided rungs on a host
record   samples, incidents, quarantine and the alerts they call for (through store/)
"""

from gradientlab.health.act import ActionResult, Recovery, wait_until
from gradientlab.health.decide import Decision, History, PastAction, apply_brake, decide
from gradientlab.health.judge import (
    NetworkState,
    Observation,
    judge,
    network_state,
    network_state_of,
    observe,
)
from gradientlab.health.record import (
    Alert,
    HealthOutcome,
    record_host,
    record_network,
    record_sweep,
    runner_recoveries,
    settled_cursor,
    standing_network_state,
)
from gradientlab.health.report import HealthReport, HostMetrics, parse_probe
from gradientlab.health.status import ABOUT, HEALTHY, Kind, Rung, Verdict, about

__all__ = [
    "ABOUT",
    "HEALTHY",
    "ActionResult",
    "Alert",
    "Decision",
    "HealthOutcome",
    "HealthReport",
    "History",
    "HostMetrics",
    "Kind",
    "NetworkState",
    "Observation",
    "PastAction",
    "Recovery",
    "Rung",
    "Verdict",
    "about",
    "apply_brake",
    "decide",
    "judge",
    "network_state",
    "network_state_of",
    "observe",
    "parse_probe",
    "record_host",
    "record_network",
    "record_sweep",
    "runner_recoveries",
    "settled_cursor",
    "standing_network_state",
    "wait_until",
]
