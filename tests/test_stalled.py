"""Stalled for a known reason: inactivity signals wait for the resumption date, others do not."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.core.exceptions import ValidationError

from example_project.crm.models import Lead
from followup_visibility.alerting import sweep
from followup_visibility.choices import AlertSignal, AlertStatus, Resolution
from followup_visibility.ingest import stalls
from followup_visibility.ingest.next_actions import schedule_next_action
from followup_visibility.models import Alert, TrackedOpportunity
from tests.factories_sla import (
    change_host,
    deadlines_of,
    install_defaults,
    lead_at,
    ny,
    opportunity,
)
from tests.test_signals import (
    HOUR,
    MINUTE,
    SECOND,
    T0,
    alerts_of,
    call,
    company,  # noqa: F401 - the 24/7 company calendar, used by every test here
    email_in,
    new_lead,
)

STALE_DUE = T0 + 17 * HOUR  # the rep's call at T0 + 1h, plus 16h
UNTIL = T0 + 2 * 24 * HOUR
REASON = "Budget round closes in April"


@pytest.fixture
def rep(make_user: Callable[..., Any]) -> Any:
    return make_user("rep")


@pytest.fixture
def manager(make_user: Callable[..., Any]) -> Any:
    return make_user("manager")


@pytest.fixture
def lead(rep: Any) -> Lead:
    """A lead the rep called an hour after it arrived: stale at T0 + 17h."""
    lead = new_lead(rep)
    call(lead, T0 + HOUR, actor=rep)
    return lead


def stall(lead: Lead, by: Any, now: datetime, until: datetime = UNTIL) -> TrackedOpportunity:
    return stalls.set_stalled(opportunity(lead), until=until, reason=REASON, by=by, now=now)


def written(lead: Lead) -> tuple[Any, ...]:
    """Everything a refused stall must leave alone."""
    opp = opportunity(lead)
    return (
        opp.stalled_until,
        opp.stalled_reason,
        opp.stalled_at,
        opp.stalled_by_id,
        opp.history.count(),
        sorted((d.signal, d.due_at, d.computed_at) for d in deadlines_of(lead).values()),
        sorted(Alert.objects.values_list("pk", "status")),
    )


NOW = T0 + 2 * HOUR


@pytest.mark.parametrize(
    ("until", "reason", "fields"),
    [
        (UNTIL, "", {"reason"}),
        (UNTIL, "   ", {"reason"}),
        (UNTIL, "x" * 256, {"reason"}),
        (NOW, REASON, {"until"}),
        (NOW - SECOND, REASON, {"until"}),
        (NOW + timedelta(days=366, seconds=1), REASON, {"until"}),
        (UNTIL.replace(tzinfo=None), REASON, {"until"}),
        (NOW - HOUR, "", {"reason", "until"}),
    ],
    ids=["empty", "blank", "long", "now", "past", "beyond-a-year", "naive", "both"],
)
def test_bad_input_is_refused_and_writes_nothing(
    until: datetime, reason: str, fields: set[str], lead: Lead, manager: Any
) -> None:
    sweep.sweep(STALE_DUE)  # something to resolve, were the stall accepted
    before = written(lead)
    with pytest.raises(ValidationError) as err:
        stalls.set_stalled(opportunity(lead), until=until, reason=reason, by=manager, now=NOW)
    assert set(err.value.message_dict) == fields
    assert written(lead) == before


def test_a_closed_opportunity_cannot_be_stalled(lead: Lead, manager: Any) -> None:
    change_host(lead, NOW, status=Lead.Status.LOST)
    before = written(lead)
    with pytest.raises(ValidationError) as err:
        stall(lead, manager, NOW + MINUTE)
    assert set(err.value.message_dict) == {"opportunity"}
    assert "lost" in err.value.message_dict["opportunity"][0]
    assert written(lead) == before


def test_exactly_a_year_ahead_is_allowed(lead: Lead, manager: Any) -> None:
    opp = stall(lead, manager, NOW, until=NOW + stalls.MAX_STALL)
    assert opp.stalled_until == NOW + stalls.MAX_STALL


def test_a_stall_resolves_a_stale_alert_and_names_the_reason(lead: Lead, manager: Any) -> None:
    sweep.sweep(STALE_DUE)
    (alert,) = alerts_of(lead, AlertSignal.STALE)
    now = STALE_DUE + HOUR
    returned = stall(lead, manager, now)

    alert.refresh_from_db()
    assert (alert.status, alert.resolution) == (AlertStatus.RESOLVED, Resolution.AUTO)
    assert alert.resolution_note == f"stalled: {REASON}"
    assert (alert.resolved_at, alert.resolved_touch) == (now, None)
    # The record says who stalled it, when and why, in its history too.
    opp = opportunity(lead)
    assert (opp.stalled_until, opp.stalled_reason, opp.stalled_at, opp.stalled_by) == (
        UNTIL,
        REASON,
        now,
        manager,
    )
    assert returned.stalled_until == UNTIL
    entry = opp.history.first()  # newest first
    assert (entry.history_user, entry.history_date) == (manager, now)
    assert entry.history_change_reason == f"stalled: {REASON}"
    # Nothing is pretended: the clock still runs from the rep's call.
    row = deadlines_of(lead)[AlertSignal.STALE]
    assert (row.event_at, row.due_at) == (T0 + HOUR, UNTIL)


def test_a_long_reason_is_kept_whole_on_the_record(lead: Lead, manager: Any) -> None:
    reason = "The customer's board meets quarterly; " * 6  # 228 characters
    sweep.sweep(STALE_DUE)
    stalls.set_stalled(
        opportunity(lead), until=UNTIL, reason=reason, by=manager, now=STALE_DUE + HOUR
    )
    assert opportunity(lead).stalled_reason == reason.strip()
    (alert,) = alerts_of(lead, AlertSignal.STALE)
    assert alert.status == AlertStatus.RESOLVED
    assert alert.resolution_note.startswith("stalled: The customer's board")
    # History keeps a shortened reason (its column holds 100 characters).
    assert opportunity(lead).history.first().history_change_reason.startswith("stalled: ")


def test_no_stale_alert_until_the_stall_ends_then_one_of_the_same_episode(
    lead: Lead, manager: Any
) -> None:
    stall(lead, manager, NOW)
    sweep.sweep(STALE_DUE)
    sweep.sweep(UNTIL - SECOND)
    assert alerts_of(lead, AlertSignal.STALE) == []

    sweep.sweep(UNTIL)
    (alert,) = alerts_of(lead, AlertSignal.STALE)
    assert (alert.status, alert.episode_at, alert.due_at) == (
        AlertStatus.OPEN,
        T0 + HOUR,
        UNTIL,
    )


def test_no_next_action_and_stage_stalled_wait_too(lead: Lead, manager: Any) -> None:
    before = deadlines_of(lead)
    assert before[AlertSignal.NO_NEXT_ACTION].due_at < UNTIL  # the call + 5h
    assert before[AlertSignal.STAGE_STALLED].due_at < UNTIL  # arrival + 7h
    stall(lead, manager, NOW)
    after = deadlines_of(lead)
    for signal in (AlertSignal.STALE, AlertSignal.NO_NEXT_ACTION, AlertSignal.STAGE_STALLED):
        assert after[signal].due_at == UNTIL
        assert after[signal].event_at == before[signal].event_at


def test_a_stall_ending_after_hours_resumes_at_the_next_opening(rep: Any, manager: Any) -> None:
    install_defaults()  # New York, Monday to Friday 09:00-17:00; stale after 16 business hours
    lead = lead_at(ny(3, 2, 9), owner=rep)
    call(lead, ny(3, 2, 10), actor=rep)
    assert deadlines_of(lead)[AlertSignal.STALE].due_at == ny(3, 4, 10)  # Wednesday
    stalls.set_stalled(
        opportunity(lead), until=ny(3, 7, 12), reason=REASON, by=manager, now=ny(3, 2, 11)
    )
    row = deadlines_of(lead)[AlertSignal.STALE]
    # Saturday noon: nobody works until Monday 09:00 (EDT from the 8th).
    assert (row.event_at, row.due_at) == (ny(3, 2, 10), ny(3, 9, 9))


def test_a_waiting_customer_and_an_overdue_next_action_still_alert(
    lead: Lead, manager: Any
) -> None:
    stall(lead, manager, NOW)
    email_in(lead, NOW + HOUR)
    schedule_next_action(opportunity(lead), NOW + 2 * HOUR, now=NOW + HOUR)
    rows = deadlines_of(lead)
    assert rows[AlertSignal.CUSTOMER_WAITING].due_at == NOW + 4 * HOUR  # reply: 3h
    assert rows[AlertSignal.NEXT_ACTION_OVERDUE].due_at == NOW + 2 * HOUR + 45 * MINUTE

    sweep.sweep(NOW + 4 * HOUR)
    (waiting,) = alerts_of(lead, AlertSignal.CUSTOMER_WAITING)
    (overdue,) = alerts_of(lead, AlertSignal.NEXT_ACTION_OVERDUE)
    assert waiting.status == overdue.status == AlertStatus.OPEN


def test_clearing_restores_the_clocks(lead: Lead, manager: Any) -> None:
    stall(lead, manager, NOW)
    cleared_at = NOW + HOUR
    opp = stalls.clear_stalled(opportunity(lead), by=manager, now=cleared_at)
    assert (opp.stalled_until, opp.stalled_reason, opp.stalled_at, opp.stalled_by_id) == (
        None,
        "",
        None,
        None,
    )
    entry = opportunity(lead).history.first()
    assert (entry.history_user, entry.history_date, entry.history_change_reason) == (
        manager,
        cleared_at,
        "stall cleared",
    )
    assert deadlines_of(lead)[AlertSignal.STALE].due_at == STALE_DUE
    sweep.sweep(STALE_DUE)
    (alert,) = alerts_of(lead, AlertSignal.STALE)
    assert alert.episode_at == T0 + HOUR


def test_clearing_what_is_not_stalled_is_refused(lead: Lead, manager: Any) -> None:
    before = written(lead)
    with pytest.raises(ValidationError):
        stalls.clear_stalled(opportunity(lead), by=manager, now=NOW)
    assert written(lead) == before


def test_a_stall_that_ended_defers_nothing(lead: Lead, manager: Any) -> None:
    """No job ends a stall: once its date has passed, the deadline is simply the date or later."""
    stall(lead, manager, NOW, until=NOW + HOUR)
    assert deadlines_of(lead)[AlertSignal.STALE].due_at == STALE_DUE
    # A touch after the stall ended starts the clock as usual.
    call(lead, NOW + 2 * HOUR)
    assert deadlines_of(lead)[AlertSignal.STALE].due_at == NOW + 18 * HOUR


def test_an_alert_the_stall_resolved_returns_when_the_stall_ends(lead: Lead, manager: Any) -> None:
    sweep.sweep(STALE_DUE)
    stall(lead, manager, STALE_DUE + HOUR)
    sweep.sweep(UNTIL)
    active = [a for a in alerts_of(lead, AlertSignal.STALE) if a.is_active]
    assert [(a.episode_at, a.due_at) for a in active] == [(T0 + HOUR, UNTIL)]
    # The same episode, reopened and raised anew: the history says so, and a second pass
    # changes nothing.
    (alert,) = active
    assert (alert.raised_at, alert.resolution, alert.resolved_at) == (UNTIL, "", None)
    assert alert.history.filter(history_type="~", history_change_reason__contains="reopened")
    assert sweep.sweep(UNTIL + HOUR, full=True).raised == 0
