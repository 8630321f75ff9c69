"""Deadlines: each signal's clock start, business time, team calendars, recompute on change.

The company default here is a New York Monday-Friday 09:00-17:00 calendar with the durations
of ``factories_sla.DURATIONS`` (first response 1h, never contacted 2h, reply 3h, call retry 30m,
next action grace 45m, no next action 5h, stale 16h, owner 90m, handoff 4h).
"""

from __future__ import annotations

from datetime import datetime, time, timedelta

import pytest
from django.db import transaction

from example_project.crm.models import Lead
from followup_visibility.alerting import refresh
from followup_visibility.choices import AlertSignal, Channel, Direction, Outcome
from followup_visibility.engine import calendars
from followup_visibility.ingest import crm
from followup_visibility.ingest.handoffs import accept_handoff
from followup_visibility.ingest.merge import merge_opportunities
from followup_visibility.ingest.next_actions import complete_next_action, schedule_next_action
from followup_visibility.ingest.touches import record_touch
from followup_visibility.models import Calendar, ClosedDate, Deadline, SpecialHours
from tests.factories_sla import (
    DURATIONS,
    deadlines_of,
    due,
    install_defaults,
    lead_at,
    make_calendar,
    make_team,
    ny,
    opportunity,
)

S = AlertSignal


@pytest.fixture(autouse=True)
def defaults(db):
    yield install_defaults()
    calendars._cache.clear()


def touch(target, at, now=None, *, channel=Channel.EMAIL, direction, outcome="", **kwargs):
    return record_touch(
        target,
        channel=channel,
        direction=direction,
        outcome=outcome,
        occurred_at=at,
        now=now or at + timedelta(minutes=1),
        **kwargs,
    ).touch


def inbound(target, at, **kwargs):
    return touch(target, at, direction=Direction.INBOUND, outcome=Outcome.RECEIVED, **kwargs)


def call(target, at, outcome=Outcome.CONNECTED, **kwargs):
    return touch(
        target, at, channel=Channel.PHONE, direction=Direction.OUTBOUND, outcome=outcome, **kwargs
    )


# 1. Each signal from its own clock start


def test_arrival_clocks_run_in_business_time(defaults):
    arrived = ny(3, 6, 16, 30)  # Friday afternoon, EST; Monday is already EDT
    lead = lead_at(arrived, now=arrived + timedelta(minutes=5))
    rows = deadlines_of(lead)
    # New: no owner, no touch, no next action; stage "new" has no limit, nothing to go stale.
    assert set(rows) == {S.NO_FIRST_RESPONSE, S.NEVER_CONTACTED, S.NO_OWNER, S.NO_NEXT_ACTION}
    assert {signal: row.due_at for signal, row in rows.items()} == {
        S.NO_FIRST_RESPONSE: ny(3, 9, 9, 30),  # 30 min on Friday + 30 min on Monday
        S.NEVER_CONTACTED: ny(3, 9, 10, 30),
        S.NO_OWNER: ny(3, 9, 10, 0),
        S.NO_NEXT_ACTION: ny(3, 9, 13, 30),
    }
    for row in rows.values():
        assert row.event_at == row.clock_start == arrived
        assert row.policy_version_id == defaults.version.pk
        assert row.calendar_id == defaults.calendar.pk
        assert row.computed_at == arrived + timedelta(minutes=5)
    assert rows[S.NO_FIRST_RESPONSE].sla == DURATIONS["first_response"]
    assert rows[S.NO_OWNER].sla == DURATIONS["owner_assignment"]


def test_customer_waiting_from_the_meaningful_inbound():
    lead = lead_at(ny(3, 9, 9))
    # An auto-reply is no customer waiting; the real message after it starts the clock.
    inbound(lead, ny(3, 10, 9, 30), metadata={"auto_reply": True})
    assert S.CUSTOMER_WAITING not in due(lead)
    inbound(lead, ny(3, 10, 10))
    rows = deadlines_of(lead)
    waiting = rows[S.CUSTOMER_WAITING]
    assert (waiting.event_at, waiting.due_at) == (ny(3, 10, 10), ny(3, 10, 13))
    assert waiting.sla == DURATIONS["reply"]
    # A second inbound while still unanswered does not restart the wait.
    inbound(lead, ny(3, 10, 11))
    assert deadlines_of(lead)[S.CUSTOMER_WAITING].event_at == ny(3, 10, 10)
    # The first-response clock still runs from arrival.
    assert rows[S.NO_FIRST_RESPONSE].event_at == ny(3, 9, 9)


def test_call_retry_from_the_last_unanswered_outbound_call():
    lead = lead_at(ny(3, 9, 9))
    call(lead, ny(3, 10, 10), Outcome.NO_ANSWER)
    rows = deadlines_of(lead)
    assert (rows[S.CALL_RETRY_DUE].event_at, rows[S.CALL_RETRY_DUE].due_at) == (
        ny(3, 10, 10),
        ny(3, 10, 10, 30),
    )
    # An unanswered call is an attempt (never contacted is over) but no first response.
    assert S.NEVER_CONTACTED not in rows
    assert S.NO_FIRST_RESPONSE in rows
    call(lead, ny(3, 10, 16, 45), Outcome.VOICEMAIL)
    retry = deadlines_of(lead)[S.CALL_RETRY_DUE]
    assert (retry.event_at, retry.due_at) == (ny(3, 10, 16, 45), ny(3, 11, 9, 15))
    call(lead, ny(3, 11, 9, 5))
    assert S.CALL_RETRY_DUE not in due(lead)
    assert S.NO_FIRST_RESPONSE not in due(lead)


def test_next_action_overdue_from_its_due_date_plus_grace():
    lead = lead_at(ny(3, 9, 9))
    opp = opportunity(lead)
    schedule_next_action(opp, ny(3, 11, 14), now=ny(3, 10, 10))
    rows = deadlines_of(lead)
    overdue = rows[S.NEXT_ACTION_OVERDUE]
    assert (overdue.event_at, overdue.clock_start, overdue.due_at) == (
        ny(3, 11, 14),
        ny(3, 11, 14),
        ny(3, 11, 14, 45),
    )
    assert overdue.computed_at == ny(3, 10, 10)
    assert S.NO_NEXT_ACTION not in rows  # something is planned


def test_next_action_due_after_hours_starts_its_grace_at_the_next_opening():
    opp = opportunity(lead_at(ny(3, 9, 9)))
    schedule_next_action(opp, ny(3, 11, 20), now=ny(3, 10, 10))
    overdue = deadlines_of(opp)[S.NEXT_ACTION_OVERDUE]
    assert (overdue.clock_start, overdue.due_at) == (ny(3, 12, 9), ny(3, 12, 9, 45))


@pytest.mark.parametrize(
    ("planned", "clock_start"),
    [(ny(3, 11, 14), ny(3, 11, 14)), (ny(3, 11, 20), ny(3, 12, 9))],
    ids=["in-hours", "after-hours"],
)
def test_zero_grace_is_due_at_the_date_itself(planned, clock_start):
    install_defaults(durations={**DURATIONS, "next_action_grace": timedelta(0)})
    opp = opportunity(lead_at(ny(3, 9, 9)))
    schedule_next_action(opp, planned, now=ny(3, 10, 10))
    overdue = deadlines_of(opp)[S.NEXT_ACTION_OVERDUE]
    assert (overdue.sla, overdue.clock_start, overdue.due_at) == (
        timedelta(0),
        clock_start,
        planned,
    )


def test_next_action_from_the_host_field():
    lead = lead_at(ny(3, 9, 9))
    Lead.objects.filter(pk=lead.pk).update(next_step_at=ny(3, 11, 14))
    crm.sync_objects([Lead.objects.get(pk=lead.pk)], ny(3, 10, 10))
    assert due(lead)[S.NEXT_ACTION_OVERDUE] == ny(3, 11, 14, 45)
    assert S.NO_NEXT_ACTION not in due(lead)


def test_no_next_action_from_the_completed_next_action():
    opp = opportunity(lead_at(ny(3, 9, 9)))
    call(opp, ny(3, 10, 10))
    schedule_next_action(opp, ny(3, 11, 14), now=ny(3, 10, 11))
    complete_next_action(opp, now=ny(3, 11, 15))
    rows = deadlines_of(opp)
    assert S.NEXT_ACTION_OVERDUE not in rows
    missing = rows[S.NO_NEXT_ACTION]
    # Done Wednesday 15:00, later than the last touch: 2h on Wednesday + 3h on Thursday.
    assert (missing.event_at, missing.due_at) == (ny(3, 11, 15), ny(3, 12, 12))
    assert missing.computed_at == ny(3, 11, 15)


def test_no_next_action_and_stale_from_last_touch_and_last_meaningful_touch():
    lead = lead_at(ny(3, 9, 9))
    call(lead, ny(3, 10, 10))
    rows = deadlines_of(lead)
    assert (rows[S.NO_NEXT_ACTION].event_at, rows[S.NO_NEXT_ACTION].due_at) == (
        ny(3, 10, 10),
        ny(3, 10, 15),
    )
    # 16 business hours: the rest of Tuesday, Wednesday, and Thursday morning.
    assert (rows[S.STALE].event_at, rows[S.STALE].due_at) == (ny(3, 10, 10), ny(3, 12, 10))
    # An unanswered call is a touch but not a meaningful one: only no-next-action moves.
    call(lead, ny(3, 10, 14), Outcome.NO_ANSWER)
    rows = deadlines_of(lead)
    assert rows[S.NO_NEXT_ACTION].due_at == ny(3, 11, 11)
    assert (rows[S.STALE].event_at, rows[S.STALE].due_at) == (ny(3, 10, 10), ny(3, 12, 10))


def test_owner_clocks_from_arrival_then_from_the_pending_handoff(make_user):
    rep, other = make_user(), make_user()
    lead = lead_at(ny(3, 9, 9))
    assert due(lead)[S.NO_OWNER] == ny(3, 9, 10, 30)
    lead = sync_owner(lead, rep, ny(3, 10, 10))
    rows = deadlines_of(lead)
    assert S.NO_OWNER not in rows
    pending = rows[S.OWNER_UNCONFIRMED]
    assert (pending.event_at, pending.due_at) == (ny(3, 10, 10), ny(3, 10, 14))
    assert pending.sla == DURATIONS["handoff_acceptance"]
    # Handed on before acceptance: the clock restarts at the new handoff.
    lead = sync_owner(lead, other, ny(3, 10, 16))
    assert deadlines_of(lead)[S.OWNER_UNCONFIRMED].due_at == ny(3, 11, 12)
    accept_handoff(opportunity(lead), other, ny(3, 10, 16, 30))
    assert S.OWNER_UNCONFIRMED not in due(lead)
    assert S.NO_OWNER not in due(lead)


def sync_owner(lead, owner, now):
    Lead.objects.filter(pk=lead.pk).update(owner=owner)
    fresh = Lead.objects.get(pk=lead.pk)
    crm.sync_objects([fresh], now)
    return fresh


def test_stage_stalled_from_stage_entry_with_a_limit_per_stage():
    install_defaults(stage_limits={"working": 8 * 3600})
    lead = lead_at(ny(3, 9, 9), now=ny(3, 9, 9, 15))
    assert S.STAGE_STALLED not in due(lead)  # "new" has no limit
    Lead.objects.filter(pk=lead.pk).update(status=Lead.Status.WORKING)
    crm.sync_objects([Lead.objects.get(pk=lead.pk)], ny(3, 10, 13))
    stalled = deadlines_of(lead)[S.STAGE_STALLED]
    assert (stalled.event_at, stalled.sla, stalled.due_at) == (
        ny(3, 10, 13),
        timedelta(hours=8),
        ny(3, 11, 13),
    )
    Lead.objects.filter(pk=lead.pk).update(status=Lead.Status.NEW)
    crm.sync_objects([Lead.objects.get(pk=lead.pk)], ny(3, 11, 10))
    assert S.STAGE_STALLED not in due(lead)


def test_deadline_records_the_policy_version_and_calendar_it_used(defaults):
    lead = lead_at(ny(3, 9, 9))
    assert {d.policy_version_id for d in deadlines_of(lead).values()} == {defaults.version.pk}
    assert {d.calendar_id for d in deadlines_of(lead).values()} == {defaults.calendar.pk}


# 3. After hours and team calendars


@pytest.mark.parametrize(
    ("arrived", "opens"),
    [
        (ny(3, 10, 20), ny(3, 11, 9)),  # Tuesday evening
        (ny(3, 14, 11), ny(3, 16, 9)),  # Saturday
        (ny(3, 10, 7, 30), ny(3, 10, 9)),  # before opening
        (ny(3, 10, 17), ny(3, 11, 9)),  # at closing: closed
    ],
    ids=["evening", "weekend", "early", "closing-time"],
)
def test_after_hours_event_starts_the_clock_at_the_next_opening(arrived, opens):
    lead = lead_at(arrived)
    first = deadlines_of(lead)[S.NO_FIRST_RESPONSE]
    assert (first.event_at, first.clock_start, first.due_at) == (
        arrived,
        opens,
        opens + timedelta(hours=1),
    )


def test_after_hours_inbound_starts_the_reply_clock_at_the_next_opening():
    lead = lead_at(ny(3, 9, 9))
    inbound(lead, ny(3, 10, 20))
    waiting = deadlines_of(lead)[S.CUSTOMER_WAITING]
    assert (waiting.event_at, waiting.clock_start, waiting.due_at) == (
        ny(3, 10, 20),
        ny(3, 11, 9),
        ny(3, 11, 12),
    )


@pytest.fixture
def berlin():
    calendar = make_calendar("Berlin office", "Europe/Berlin")
    team = make_team("berlin", calendar=calendar)
    make_team("berlin-inside-north", parent=make_team("berlin-inside", parent=team))
    make_team("remote")
    return calendar


@pytest.mark.parametrize(
    ("team_key", "calendar", "first_response_due"),
    [
        # 07:00 UTC on Tuesday is 08:00 in Berlin (opens at 09:00) and 03:00 in New York.
        ("berlin", "berlin", "2026-03-10 09:00+00:00"),
        ("berlin-inside", "berlin", "2026-03-10 09:00+00:00"),
        ("berlin-inside-north", "berlin", "2026-03-10 09:00+00:00"),
        ("remote", "default", "2026-03-10 14:00+00:00"),
        ("", "default", "2026-03-10 14:00+00:00"),
    ],
)
def test_team_calendars_by_zone_and_inheritance(
    berlin, defaults, team_key, calendar, first_response_due
):
    lead = lead_at(datetime.fromisoformat("2026-03-10 07:00+00:00"), team=team_key)
    first = deadlines_of(lead)[S.NO_FIRST_RESPONSE]
    expected_calendar = berlin if calendar == "berlin" else defaults.calendar
    assert first.calendar_id == expected_calendar.pk
    assert first.due_at == datetime.fromisoformat(first_response_due)


# 4. Recompute with every change, in the same transaction


def test_touches_move_the_clocks(make_user):
    rep = make_user()
    lead = lead_at(ny(3, 9, 9), owner=rep)
    assert set(due(lead)) == {
        S.NO_FIRST_RESPONSE,
        S.NEVER_CONTACTED,
        S.OWNER_UNCONFIRMED,
        S.NO_NEXT_ACTION,
    }
    inbound(lead, ny(3, 9, 10))
    assert set(due(lead)) == {
        S.NO_FIRST_RESPONSE,
        S.NEVER_CONTACTED,
        S.OWNER_UNCONFIRMED,
        S.NO_NEXT_ACTION,
        S.CUSTOMER_WAITING,
        S.STALE,
    }
    # The owner's meaningful reply: first response, contact, no longer waiting, and (by deed)
    # the handoff accepted.
    touch(lead, ny(3, 9, 11), direction=Direction.OUTBOUND, outcome=Outcome.SENT, actor=rep)
    rows = deadlines_of(lead)
    assert set(rows) == {S.NO_NEXT_ACTION, S.STALE}
    assert rows[S.STALE].event_at == rows[S.NO_NEXT_ACTION].event_at == ny(3, 9, 11)


def test_deadlines_change_in_the_writers_transaction():
    lead = lead_at(ny(3, 9, 9))
    with pytest.raises(RuntimeError), transaction.atomic():
        inbound(lead, ny(3, 9, 10))
        assert S.CUSTOMER_WAITING in due(lead)  # before any commit
        raise RuntimeError
    assert S.CUSTOMER_WAITING not in due(lead)


def test_merge_recomputes_both(make_user):
    survivor = lead_at(ny(3, 9, 9), name="Ann (form)")
    duplicate = lead_at(ny(3, 9, 9, 30), name="Ann (call)")
    inbound(survivor, ny(3, 9, 10))
    call(duplicate, ny(3, 9, 11))
    assert S.CUSTOMER_WAITING in due(survivor)
    merge_opportunities(opportunity(duplicate), opportunity(survivor), now=ny(3, 9, 12))
    assert due(duplicate) == {}
    rows = deadlines_of(survivor)
    # The duplicate's call answered the survivor's customer.
    assert S.CUSTOMER_WAITING not in rows
    assert S.NO_FIRST_RESPONSE not in rows
    assert rows[S.STALE].event_at == ny(3, 9, 11)


@pytest.mark.parametrize("how", ["lost", "disqualified", "deleted", "mark_deleted"])
def test_closing_clears_every_deadline(how):
    lead = lead_at(ny(3, 9, 9))
    inbound(lead, ny(3, 9, 10))
    opp = opportunity(lead)
    assert Deadline.objects.filter(opportunity=opp).count() == 6
    if how == "deleted":
        lead.delete()
    elif how == "mark_deleted":
        crm.mark_deleted(Lead, [lead.pk], ny(3, 9, 12))
    else:
        lead.status = how
        lead.save()
    assert not Deadline.objects.filter(opportunity=opp).exists()


def test_reopening_restores_the_clocks():
    lead = lead_at(ny(3, 9, 9))
    before = due(lead)
    lead = change_status(lead, Lead.Status.LOST, ny(3, 9, 12))
    assert due(lead) == {}
    change_status(lead, Lead.Status.NEW, ny(3, 9, 13))
    assert due(lead) == before


def change_status(lead, status, now):
    Lead.objects.filter(pk=lead.pk).update(status=status)
    fresh = Lead.objects.get(pk=lead.pk)
    crm.sync_objects([fresh], now)
    return fresh


def test_deal_closed_won_through_the_host(make_deal):
    deal = make_deal()
    assert due(deal)
    deal.status = "won"
    deal.save()
    assert due(deal) == {}


def test_only_changed_rows_are_rewritten():
    lead = lead_at(ny(3, 9, 9))
    first = deadlines_of(lead)
    inbound(lead, ny(3, 9, 10), now=ny(3, 9, 10, 5))
    after = deadlines_of(lead)
    untouched = {S.NO_FIRST_RESPONSE, S.NEVER_CONTACTED, S.NO_OWNER}
    for signal in untouched:
        assert after[signal].computed_at == ny(3, 9, 9)
        assert after[signal].pk == first[signal].pk
    # The last touch moved no-next-action; waiting and stale are new.
    for signal in {S.NO_NEXT_ACTION, S.CUSTOMER_WAITING, S.STALE}:
        assert after[signal].computed_at == ny(3, 9, 10, 5)
    result = refresh.refresh([opportunity(lead).pk], now=ny(3, 9, 11), cause=refresh.Cause("x"))
    assert (result.written, result.deleted, result.unchanged) == (0, 0, 6)
    assert {d.computed_at for d in deadlines_of(lead).values()} == {ny(3, 9, 9), ny(3, 9, 10, 5)}


def test_no_default_calendar_means_no_deadlines_rather_than_a_crash():
    Calendar.objects.update(is_default=False)
    lead = lead_at(ny(3, 9, 9))
    assert due(lead) == {}


def test_special_hours_and_closed_dates_count(defaults):
    ClosedDate.objects.create(calendar=defaults.calendar, date=ny(3, 10, 0).date())
    SpecialHours.objects.create(
        calendar=defaults.calendar, date=ny(3, 11, 0).date(), start=time(9), end=time(9, 30)
    )
    lead = lead_at(ny(3, 9, 16, 30))
    # 30 min Monday, Tuesday closed, Wednesday open only 09:00-09:30, Thursday from 09:00.
    assert due(lead)[S.NEVER_CONTACTED] == ny(3, 12, 10)
