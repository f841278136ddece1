"""Each word of the vocabulary is declared once and every layer that keys on it knows all of it."""

from __future__ import annotations

from deployments.alerts import ALERT_EVENTS
from gradientlab.agent.pages import BADGE_TEXTS, GOOD_STATES, SETTLED_STATES, PopupState
from gradientlab.health.events import FLEET_EVENTS, AlertEvent


def names(namespace: type) -> set[str]:
    return {v for k, v in vars(namespace).items() if k.isupper()}


def test_every_event_the_health_cycle_emits_has_an_automation() -> None:
    assert set(ALERT_EVENTS) == names(AlertEvent)
    assert names(AlertEvent) >= FLEET_EVENTS


def test_the_popups_states_are_its_badge_words_and_logged_out() -> None:
    assert names(PopupState) == {*BADGE_TEXTS, PopupState.LOGGED_OUT}
    assert set(GOOD_STATES) <= set(SETTLED_STATES) <= names(PopupState)
    assert PopupState.DISCONNECTED not in SETTLED_STATES
