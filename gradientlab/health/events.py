"""The names of the events the health cycle emits (Prefect events, through the flow) and the
statuses an incident moves through. Declared once: health/record.py emits and stores them,
deployments/alerts.py keys its automations on them, the store and the app read them."""

from __future__ import annotations


class AlertEvent:
    INCIDENT_OPENED = "gradientlab.incident.opened"
    INCIDENT_RESOLVED = "gradientlab.incident.resolved"
    HOST_QUARANTINED = "gradientlab.host.quarantined"
    HOST_KEY_CHANGED = "gradientlab.security.host-key-changed"
    NETWORK_DOWN = "gradientlab.network.down"
    NETWORK_RESTORED = "gradientlab.network.restored"
    NODE_UNSUPPORTED = "gradientlab.node.unsupported"
    FLEET_UNREACHABLE = "gradientlab.fleet.unreachable"  # the control plane cannot reach it
    FLEET_REACHABLE = "gradientlab.fleet.reachable"
    LOGIN_REFUSED = "gradientlab.account.login-refused"
    # the control plane's own API sign-in (rewards, the network view) refused: `setting` names
    # the fleet-file setting to fix (network.web_api_key, account.email, account.password)
    SIGN_IN_REFUSED = "gradientlab.account.sign-in-refused"


# a run a person starts from the app carries `requested-by:<who>` among its tags: the Prefect
# UI shows it, and the flow records it (tasks.common.requested_by)
REQUESTED_BY_TAG = "requested-by:"

# every alert automation's name begins with this (deployments/alerts.py names them so)
ALERTS_AUTOMATION_PREFIX = "gradientlab: "

# events about the whole fleet (their resource is the fleet, not one host)
FLEET_EVENTS = frozenset(
    {
        AlertEvent.NETWORK_DOWN,
        AlertEvent.NETWORK_RESTORED,
        AlertEvent.FLEET_UNREACHABLE,
        AlertEvent.FLEET_REACHABLE,
        AlertEvent.LOGIN_REFUSED,
        AlertEvent.SIGN_IN_REFUSED,
    }
)


class IncidentStatus:
    """An incident's `status` column; a HealthOutcome's incident_status adds QUARANTINED."""

    OPEN = "open"
    RECOVERED = "recovered"
    FAILED = "failed"  # recovery gave up: the host is quarantined
    QUARANTINED = "quarantined"  # an outcome's word for a host left to a person
