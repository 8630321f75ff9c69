"""Every signal fires at its deadline and not a second before; the right change clears it.

The company calendar here is open around the clock in UTC, so business time is elapsed time,
and every duration differs, so that a mixed-up signal shows. Situations are built only through
the public functions: host saves, ``record_touch``, next actions, handoffs, merges.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest

from example_project.crm.models import Lead
from followup_visibility.alerting import lifecycle, sweep
from followup_visibility.choices import (
    AlertSignal,
    AlertStatus,
    Channel,
    Direction,
    Outcome,
    Resolution,
)
from followup_visibility.engine import calendars
from followup_visibility.ingest.crm import sync_objects
from followup_visibility.ingest.handoffs import accept_handoff
from followup_visibility.ingest.merge import merge_opportunities
from followup_visibility.ingest.next_actions import complete_next_action, schedule_next_action
from followup_visibility.ingest.touches import record_touch
from followup_visibility.models import Alert, Touch, WorkingWindow
from tests.factories_sla import Defaults, change_host, deadlines_of, install_defaults, opportunity

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday
SECOND, MINUTE, HOUR = timedelta(seconds=1), timedelta(minutes=1), timedelta(hours=1)
DURATIONS: dict[str, timedelta | None] = {
    "first_response": HOUR,
    "never_contacted": 2 * HOUR,
    "reply": 3 * HOUR,
    "call_retry": 30 * MINUTE,
    "next_action_grace": 45 * MINUTE,
    "no_next_action": 5 * HOUR,
    "stale": 16 * HOUR,
    "owner_assignment": 90 * MINUTE,
    "handoff_acceptance": 4 * HOUR,
}
#: Leads use their status as the stage: "new" and "working".
STAGE_LIMITS = {"new": 7 * 3600.0, "working": 9 * 3600.0}
EMAIL = "ann@example.com"


@pytest.fixture(autouse=True)
def company(db: Any) -> Any:
    """The company default policy on a calendar open 24/7 in UTC."""
    defaults = install_defaults(durations=DURATIONS, stage_limits=STAGE_LIMITS, time_zone="UTC")
    WorkingWindow.objects.filter(calendar=defaults.calendar).delete()
    WorkingWindow.objects.bulk_create(
        WorkingWindow(calendar=defaults.calendar, weekday=d, start=time(0), end=time(0))
        for d in range(7)
    )
    calendars._cache.clear()
    yield defaults
    calendars._cache.clear()


@dataclass
class Users:
    rep: Any
    other: Any


@pytest.fixture
def users(make_user: Callable[..., Any]) -> Users:
    return Users(make_user("rep"), make_user("other"))


def new_lead(
    owner: Any = None, *, confirmed: bool = True, at: datetime = T0, **fields: Any
) -> Lead:
    """A lead that arrived at ``at``; its owner, if any, accepted ownership unless told not to."""
    fields.setdefault("name", "Ann")
    (lead,) = Lead.objects.bulk_create([Lead(created_at=at, owner=owner, **fields)])
    sync_objects([lead], at, confirm_owners=confirmed)
    return lead


# Touches, each recorded when it happened.


def touch(
    lead: Lead,
    at: datetime,
    *,
    channel: str = Channel.EMAIL,
    direction: str = Direction.OUTBOUND,
    outcome: str = Outcome.SENT,
    **kwargs: Any,
) -> Touch:
    return record_touch(
        lead,
        channel=channel,
        direction=direction,
        outcome=outcome,
        occurred_at=at,
        now=at,
        **kwargs,
    ).touch


def call(lead: Lead, at: datetime, outcome: str = Outcome.CONNECTED, **kwargs: Any) -> Touch:
    return touch(lead, at, channel=Channel.PHONE, outcome=outcome, **kwargs)


def unanswered_call(lead: Lead, at: datetime, **kwargs: Any) -> Touch:
    return call(lead, at, Outcome.NO_ANSWER, **kwargs)


def email_out(lead: Lead, at: datetime, **kwargs: Any) -> Touch:
    return touch(lead, at, **kwargs)


def email_in(lead: Lead, at: datetime, **kwargs: Any) -> Touch:
    return touch(lead, at, direction=Direction.INBOUND, outcome=Outcome.RECEIVED, **kwargs)


def auto_reply_out(lead: Lead, at: datetime, **kwargs: Any) -> Touch:
    return touch(lead, at, metadata={"headers": {"Auto-Submitted": "auto-replied"}}, **kwargs)


def auto_reply_in(lead: Lead, at: datetime, **kwargs: Any) -> Touch:
    return email_in(lead, at, metadata={"headers": {"Auto-Submitted": "auto-replied"}}, **kwargs)


def bounced(lead: Lead, at: datetime, **kwargs: Any) -> Touch:
    return touch(lead, at, outcome=Outcome.BOUNCED, **kwargs)


def template(lead: Lead, at: datetime, **kwargs: Any) -> Touch:
    return touch(lead, at, metadata={"template": "brochure"}, **kwargs)


def note(lead: Lead, at: datetime, **kwargs: Any) -> Touch:
    return touch(lead, at, channel=Channel.NOTE, direction=Direction.INTERNAL, outcome="", **kwargs)


# One situation per signal: the lead, the episode (what started the clock) and when it is due.


@dataclass
class Situation:
    lead: Lead
    episode: datetime
    due: datetime


def no_first_response(users: Users) -> Situation:
    return Situation(new_lead(users.rep), T0, T0 + HOUR)


def never_contacted(users: Users) -> Situation:
    return Situation(new_lead(users.rep), T0, T0 + 2 * HOUR)


def customer_waiting(users: Users) -> Situation:
    lead = new_lead(users.rep)
    email_in(lead, T0 + HOUR)
    return Situation(lead, T0 + HOUR, T0 + 4 * HOUR)


def call_retry_due(users: Users) -> Situation:
    lead = new_lead(users.rep)
    unanswered_call(lead, T0 + HOUR, actor=users.rep)
    return Situation(lead, T0 + HOUR, T0 + 90 * MINUTE)


def next_action_overdue(users: Users) -> Situation:
    lead = new_lead(users.rep)
    schedule_next_action(opportunity(lead), T0 + 2 * HOUR, now=T0 + HOUR)
    return Situation(lead, T0 + 2 * HOUR, T0 + 2 * HOUR + 45 * MINUTE)


def no_next_action(users: Users) -> Situation:
    return Situation(new_lead(users.rep), T0, T0 + 5 * HOUR)


def stale(users: Users) -> Situation:
    lead = new_lead(users.rep)
    call(lead, T0 + HOUR, actor=users.rep)
    return Situation(lead, T0 + HOUR, T0 + 17 * HOUR)


def no_owner(users: Users) -> Situation:
    return Situation(new_lead(), T0, T0 + 90 * MINUTE)


def owner_unconfirmed(users: Users) -> Situation:
    return Situation(new_lead(users.rep, confirmed=False), T0, T0 + 4 * HOUR)


def conflicting_owners(users: Users) -> Situation:
    """The rep owned and accepted it; the CRM hands it to another; the rep calls anyway."""
    lead = new_lead(users.rep)
    change_host(lead, T0 + HOUR, owner=users.other)
    call(lead, T0 + 2 * HOUR, actor=users.rep)
    return Situation(lead, T0 + 2 * HOUR, T0 + 2 * HOUR)


def duplicate(users: Users) -> Situation:
    """Ann wrote in again an hour later: the first lead, untouched itself, is a duplicate too."""
    lead = new_lead(users.rep, email=EMAIL)
    new_lead(users.rep, at=T0 + HOUR, email=EMAIL.upper())
    return Situation(lead, T0 + HOUR, T0 + HOUR)


def stage_stalled(users: Users) -> Situation:
    return Situation(new_lead(users.rep), T0, T0 + 7 * HOUR)


SITUATIONS: dict[str, Callable[[Users], Situation]] = {
    AlertSignal.NO_FIRST_RESPONSE: no_first_response,
    AlertSignal.NEVER_CONTACTED: never_contacted,
    AlertSignal.CUSTOMER_WAITING: customer_waiting,
    AlertSignal.CALL_RETRY_DUE: call_retry_due,
    AlertSignal.NEXT_ACTION_OVERDUE: next_action_overdue,
    AlertSignal.NO_NEXT_ACTION: no_next_action,
    AlertSignal.STALE: stale,
    AlertSignal.NO_OWNER: no_owner,
    AlertSignal.OWNER_UNCONFIRMED: owner_unconfirmed,
    AlertSignal.CONFLICTING_OWNERS: conflicting_owners,
    AlertSignal.DUPLICATE: duplicate,
    AlertSignal.STAGE_STALLED: stage_stalled,
}


def alerts_of(lead: Lead, signal: str) -> list[Alert]:
    return list(Alert.objects.filter(opportunity=opportunity(lead), signal=signal).order_by("pk"))


def raised(situation: Situation, signal: str) -> Alert:
    """Sweep at the deadline; the one alert raised for ``signal``."""
    sweep.sweep(situation.due)
    (alert,) = alerts_of(situation.lead, signal)
    return alert


def test_every_signal_has_a_situation() -> None:
    assert set(SITUATIONS) == set(AlertSignal.values)


@pytest.mark.parametrize("signal", list(SITUATIONS))
def test_each_signal_fires_at_its_deadline_and_not_a_second_before(
    signal: str, users: Users
) -> None:
    situation = SITUATIONS[signal](users)
    sweep.sweep(situation.due - SECOND)
    assert alerts_of(situation.lead, signal) == []

    sweep.sweep(situation.due)
    (alert,) = alerts_of(situation.lead, signal)
    assert alert.status == AlertStatus.OPEN
    assert (alert.episode_at, alert.due_at) == (situation.episode, situation.due)
    # A later pass raises nothing more for the same episode.
    sweep.sweep(situation.due + HOUR, full=True)
    assert alerts_of(situation.lead, signal) == [alert]


# Touches: the right one resolves the alert and is named; a touch that does not count leaves it.

Record = Callable[..., Touch]
TOUCH_RESETS: list[tuple[str, Record, list[Record]]] = [
    (AlertSignal.NO_FIRST_RESPONSE, call, [auto_reply_out, note, bounced, unanswered_call]),
    # Any attempt counts as contact, answered or not: only automated sends do not.
    (AlertSignal.NEVER_CONTACTED, unanswered_call, [auto_reply_out, template, note]),
    (AlertSignal.CUSTOMER_WAITING, email_out, [auto_reply_out, note, bounced, unanswered_call]),
    (AlertSignal.CALL_RETRY_DUE, call, [note, auto_reply_out, bounced]),
    # The clock measures time since the last sign of work: any touch that is not internal.
    (AlertSignal.NO_NEXT_ACTION, unanswered_call, [note]),
    # Meaningful in either direction: the customer writing back is contact too.
    (AlertSignal.STALE, email_in, [auto_reply_in, note, bounced, unanswered_call]),
]


@pytest.mark.parametrize(
    ("signal", "resets", "ignored"),
    TOUCH_RESETS,
    ids=[signal for signal, _resets, _ignored in TOUCH_RESETS],
)
def test_the_right_touch_resolves_the_alert_and_others_do_not(
    signal: str, resets: Record, ignored: list[Record], users: Users
) -> None:
    situation = SITUATIONS[signal](users)
    alert = raised(situation, signal)
    at = situation.due
    for record in ignored:
        at += MINUTE
        record(situation.lead, at, actor=users.rep)
        alert.refresh_from_db()
        assert alert.status == AlertStatus.OPEN, record.__name__

    at += MINUTE
    cleared_by = resets(situation.lead, at, actor=users.rep)
    alert.refresh_from_db()
    assert (alert.status, alert.resolution) == (AlertStatus.RESOLVED, Resolution.AUTO)
    assert (alert.resolved_touch, alert.resolved_at) == (cleared_by, at)
    assert str(cleared_by.get_channel_display()) in alert.resolution_note


def test_the_new_owner_accepts_by_touch_and_nobody_else_does(users: Users) -> None:
    situation = owner_unconfirmed(users)
    alert = raised(situation, AlertSignal.OWNER_UNCONFIRMED)
    lead, at = situation.lead, situation.due
    auto_reply_out(lead, at + MINUTE, actor=users.rep)
    note(lead, at + 2 * MINUTE, actor=users.rep)
    call(lead, at + 3 * MINUTE, actor=users.other)  # a colleague's call is no acceptance
    alert.refresh_from_db()
    assert alert.status == AlertStatus.OPEN

    accepted_by = call(lead, at + 4 * MINUTE, actor=users.rep)
    alert.refresh_from_db()
    assert (alert.status, alert.resolved_touch) == (AlertStatus.RESOLVED, accepted_by)
    assert alert.resolution_note == "handoff accepted"


# Changes that are not touches.


def test_completing_the_next_action_resolves_it_and_a_touch_does_not(users: Users) -> None:
    situation = next_action_overdue(users)
    alert = raised(situation, AlertSignal.NEXT_ACTION_OVERDUE)
    call(situation.lead, situation.due + MINUTE, actor=users.rep)
    alert.refresh_from_db()
    assert alert.status == AlertStatus.OPEN

    complete_next_action(opportunity(situation.lead), now=situation.due + 2 * MINUTE)
    alert.refresh_from_db()
    assert (alert.status, alert.resolution_note) == (AlertStatus.RESOLVED, "next action done")
    assert alert.resolved_touch is None


def test_scheduling_a_next_action_resolves_no_next_action(users: Users) -> None:
    situation = no_next_action(users)
    alert = raised(situation, AlertSignal.NO_NEXT_ACTION)
    now = situation.due + MINUTE
    schedule_next_action(opportunity(situation.lead), now + HOUR, now=now)
    alert.refresh_from_db()
    assert (alert.status, alert.resolution_note) == (AlertStatus.RESOLVED, "next action scheduled")
    assert AlertSignal.NO_NEXT_ACTION not in deadlines_of(situation.lead)


def test_an_owner_set_in_the_crm_resolves_no_owner_and_a_touch_does_not(users: Users) -> None:
    situation = no_owner(users)
    alert = raised(situation, AlertSignal.NO_OWNER)
    call(situation.lead, situation.due + MINUTE, actor=users.rep)
    alert.refresh_from_db()
    assert alert.status == AlertStatus.OPEN

    change_host(situation.lead, situation.due + 2 * MINUTE, owner=users.rep)
    alert.refresh_from_db()
    assert (alert.status, alert.resolution_note) == (AlertStatus.RESOLVED, "changed in the CRM")


def test_an_owner_cleared_again_is_a_new_no_owner_episode(users: Users) -> None:
    situation = no_owner(users)
    first = raised(situation, AlertSignal.NO_OWNER)
    lifecycle.dismiss(first, reason="Assigning it tomorrow", by=users.rep, now=situation.due)
    change_host(situation.lead, situation.due + HOUR, owner=users.rep)
    # A month later the CRM clears the owner again: a new episode, which the dismissal of
    # the first does not cover.
    removed = situation.due + 30 * 24 * HOUR
    change_host(situation.lead, removed, owner=None)
    following = deadlines_of(situation.lead)[AlertSignal.NO_OWNER]
    assert following.event_at == removed and following.due_at > removed
    sweep.sweep(following.due_at - timedelta(seconds=1), full=True)
    assert alerts_of(situation.lead, AlertSignal.NO_OWNER) == [first]
    sweep.sweep(following.due_at, full=True)
    first.refresh_from_db()
    again = Alert.objects.get(
        opportunity=opportunity(situation.lead),
        signal=AlertSignal.NO_OWNER,
        status=AlertStatus.OPEN,
    )
    assert (first.status, again.episode_at) == (AlertStatus.DISMISSED, removed)


def test_a_stage_change_ends_the_stage_episode_and_starts_the_next(users: Users) -> None:
    situation = stage_stalled(users)
    alert = raised(situation, AlertSignal.STAGE_STALLED)
    call(situation.lead, situation.due + MINUTE, actor=users.rep)
    alert.refresh_from_db()
    assert alert.status == AlertStatus.OPEN

    moved = situation.due + 2 * MINUTE
    change_host(situation.lead, moved, status=Lead.Status.WORKING)
    alert.refresh_from_db()
    assert (alert.status, alert.resolution_note) == (AlertStatus.RESOLVED, "changed in the CRM")
    following = deadlines_of(situation.lead)[AlertSignal.STAGE_STALLED]
    assert (following.event_at, following.due_at) == (moved, moved + 9 * HOUR)


# Detection signals: duplicate and conflicting owners.


def test_detection_deadlines_are_due_when_found(users: Users, company: Defaults) -> None:
    for build, signal in (
        (duplicate, AlertSignal.DUPLICATE),
        (conflicting_owners, AlertSignal.CONFLICTING_OWNERS),
    ):
        situation = build(users)
        row = deadlines_of(situation.lead)[signal]
        assert (row.event_at, row.clock_start, row.due_at) == (situation.episode,) * 3
        assert row.sla == timedelta(0)
        assert row.policy_version_id == company.version.pk


def test_both_sides_of_a_duplicate_alert_and_a_third_keeps_the_episode(users: Users) -> None:
    situation = duplicate(users)
    second = Lead.objects.get(email=EMAIL.upper())
    new_lead(users.rep, at=T0 + 2 * HOUR, email=EMAIL)
    sweep.sweep(T0 + 3 * HOUR)
    for lead, episode in ((situation.lead, T0 + HOUR), (second, T0 + HOUR)):
        (alert,) = alerts_of(lead, AlertSignal.DUPLICATE)
        assert alert.episode_at == episode


def _merge(first: Lead, second: Lead, now: datetime) -> None:
    merge_opportunities(opportunity(second), opportunity(first), now=now)


def _close(first: Lead, second: Lead, now: datetime) -> None:
    change_host(second, now, status=Lead.Status.DISQUALIFIED)


def _reidentify(first: Lead, second: Lead, now: datetime) -> None:
    change_host(second, now, email="someone.else@example.com")


@pytest.mark.parametrize(
    ("change", "note"),
    [
        (_merge, "merged duplicates"),
        (_close, "changed in the CRM"),
        (_reidentify, "changed in the CRM"),
    ],
    ids=["merge", "close", "clear"],
)
def test_a_duplicate_alert_resolves_on_merge_close_or_clear(
    change: Callable[[Lead, Lead, datetime], None], note: str, users: Users
) -> None:
    situation = duplicate(users)
    second = Lead.objects.get(email=EMAIL.upper())
    alert = raised(situation, AlertSignal.DUPLICATE)
    change(situation.lead, second, situation.due + HOUR)
    alert.refresh_from_db()
    assert (alert.status, alert.resolution) == (AlertStatus.RESOLVED, Resolution.AUTO)
    assert alert.resolution_note == note
    assert AlertSignal.DUPLICATE not in deadlines_of(situation.lead)


def test_conflicting_owners_clears_when_the_new_owner_accepts(users: Users) -> None:
    situation = conflicting_owners(users)
    alert = raised(situation, AlertSignal.CONFLICTING_OWNERS)
    # The previous owner keeps working it: the episode stays the first sighting.
    call(situation.lead, situation.due + MINUTE, actor=users.rep)
    assert (
        deadlines_of(situation.lead)[AlertSignal.CONFLICTING_OWNERS].event_at == situation.episode
    )

    accept_handoff(opportunity(situation.lead), users.other, situation.due + 2 * MINUTE)
    alert.refresh_from_db()
    assert (alert.status, alert.resolution_note) == (AlertStatus.RESOLVED, "handoff accepted")
    assert AlertSignal.CONFLICTING_OWNERS not in deadlines_of(situation.lead)


def test_conflicting_owners_clears_when_the_handoff_is_superseded(
    users: Users, make_user: Callable[..., Any]
) -> None:
    situation = conflicting_owners(users)
    alert = raised(situation, AlertSignal.CONFLICTING_OWNERS)
    change_host(situation.lead, situation.due + MINUTE, owner=make_user("third"))
    alert.refresh_from_db()
    assert (alert.status, alert.resolution_note) == (AlertStatus.RESOLVED, "changed in the CRM")
    assert AlertSignal.CONFLICTING_OWNERS not in deadlines_of(situation.lead)


def _never_accepted(users: Users) -> Lead:
    lead = new_lead(users.rep, confirmed=False)
    change_host(lead, T0 + HOUR, owner=users.other)
    call(lead, T0 + 2 * HOUR, actor=users.rep)
    return lead


def _worked_before_the_handoff(users: Users) -> Lead:
    lead = new_lead(users.rep)
    call(lead, T0 + HOUR, actor=users.rep)
    change_host(lead, T0 + 2 * HOUR, owner=users.other)
    return lead


def _automated_send_in_their_name(users: Users) -> Lead:
    lead = new_lead(users.rep)
    change_host(lead, T0 + HOUR, owner=users.other)
    auto_reply_out(lead, T0 + 2 * HOUR, actor=users.rep)
    template(lead, T0 + 3 * HOUR, actor=users.rep)
    note(lead, T0 + 4 * HOUR, actor=users.rep)
    return lead


def _someone_else_works_it(users: Users) -> Lead:
    lead = new_lead(users.rep)
    change_host(lead, T0 + HOUR, owner=users.other)
    inbound = email_in(lead, T0 + 2 * HOUR)
    assert inbound.actor is None
    return lead


@pytest.mark.parametrize(
    "build",
    [
        _never_accepted,
        _worked_before_the_handoff,
        _automated_send_in_their_name,
        _someone_else_works_it,
    ],
)
def test_no_conflict_without_an_accepted_owner_still_working_it(
    build: Callable[[Users], Lead], users: Users
) -> None:
    lead = build(users)
    assert AlertSignal.CONFLICTING_OWNERS not in deadlines_of(lead)
    sweep.sweep(T0 + 10 * HOUR)
    assert alerts_of(lead, AlertSignal.CONFLICTING_OWNERS) == []
