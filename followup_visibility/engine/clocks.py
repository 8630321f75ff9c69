"""Clocks: which signals are running on an opportunity, and when each falls due.

Pure business-time computation over an opportunity's state (see
:mod:`followup_visibility.alerting.deadlines`, which loads the states and stores the rows).
Closed opportunities have no clocks. Two signals are detected rather than timed: a duplicate
and conflicting owners are due the moment they are found (zero grace).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from followup_visibility.choices import AlertSignal, Status
from followup_visibility.engine import calendars
from followup_visibility.engine.business_time import (
    BusinessCalendar,
    add_business_time,
    next_opening,
)
from followup_visibility.engine.sla import PolicyBook

#: Opportunity fields the computation reads. The loader adds ``handoff_at`` (the pending
#: handoff's time), ``duplicate_at`` and ``conflict_at`` (when each was detected, or None).
STATE_FIELDS = (
    "id",
    "status",
    "arrived_at",
    "owner_id",
    "owner_confirmed_at",
    "unowned_since",
    "stage",
    "stage_entered_at",
    "next_action_due_at",
    "next_action_done_at",
    "first_outbound_at",
    "first_response_at",
    "last_touch_at",
    "last_meaningful_touch_at",
    "awaiting_reply_since",
    "last_unanswered_call_at",
    "team_id",
    "segment_id",
    "stalled_until",
)
#: Signals a stall defers: they measure inactivity, which is what the stall explains. A waiting
#: customer, an overdue next action or an unanswered call still need their answer.
STALLABLE = frozenset({AlertSignal.STALE, AlertSignal.NO_NEXT_ACTION, AlertSignal.STAGE_STALLED})
#: Signals due the moment they are detected (no duration of their own in the policy).
DETECTED = frozenset({AlertSignal.DUPLICATE, AlertSignal.CONFLICTING_OWNERS})
#: The columns of a stored deadline that :func:`compute` decides.
COMPARED = ("event_at", "clock_start", "sla", "due_at", "policy_version_id", "calendar_id")


# Slots, not frozen: a recompute builds hundreds of thousands, and a frozen dataclass's
# constructor costs five times as much.
@dataclass(slots=True)
class DeadlineRow:
    opportunity_id: Any
    signal: str
    event_at: datetime
    clock_start: datetime
    sla: timedelta
    due_at: datetime
    policy_version_id: int
    calendar_id: int

    def key(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in COMPARED)

    def fields(self) -> dict[str, Any]:
        """The row as a ``Deadline``'s field values."""
        return {
            "opportunity_id": self.opportunity_id,
            "signal": self.signal,
            **{name: getattr(self, name) for name in COMPARED},
        }


@dataclass
class Context:
    """What the computation needs besides the opportunity: policies, team calendars, engines."""

    book: PolicyBook
    team_calendars: Mapping[int, int | None]
    default_calendar: int | None
    engines: Mapping[int, BusinessCalendar]

    @classmethod
    def load(cls, book: PolicyBook | None = None) -> Context:
        found = calendars.TeamCalendars.load()
        return cls(
            book=book or PolicyBook.load(),
            team_calendars=found.by_team,
            default_calendar=found.default,
            engines=found.engines,
        )

    def calendar_for(self, team_id: int | None) -> int | None:
        if team_id is not None:
            return self.team_calendars.get(team_id, self.default_calendar)
        return self.default_calendar


def armed(state: Mapping[str, Any]) -> dict[str, datetime]:
    """Signals whose clock is running for this open opportunity, with the event that started it."""
    arrived = state["arrived_at"]
    events: dict[str, datetime] = {}
    if state["first_response_at"] is None:
        events[AlertSignal.NO_FIRST_RESPONSE] = arrived
    if state["first_outbound_at"] is None:
        events[AlertSignal.NEVER_CONTACTED] = arrived
    if state["awaiting_reply_since"] is not None:
        events[AlertSignal.CUSTOMER_WAITING] = state["awaiting_reply_since"]
    if state["last_unanswered_call_at"] is not None:
        events[AlertSignal.CALL_RETRY_DUE] = state["last_unanswered_call_at"]
    if state["next_action_due_at"] is not None and state["next_action_done_at"] is None:
        events[AlertSignal.NEXT_ACTION_OVERDUE] = state["next_action_due_at"]
    else:
        # Nothing planned: the clock runs from the latest sign of work (a touch, the last
        # next action being done), or from arrival.
        latest = [t for t in (state["last_touch_at"], state["next_action_done_at"]) if t]
        events[AlertSignal.NO_NEXT_ACTION] = max(latest) if latest else arrived
    if state["last_meaningful_touch_at"] is not None:
        events[AlertSignal.STALE] = state["last_meaningful_touch_at"]
    if state["owner_id"] is None:
        # From when the CRM cleared the owner: each time is a new episode.
        events[AlertSignal.NO_OWNER] = state.get("unowned_since") or arrived
    elif state["owner_confirmed_at"] is None:
        events[AlertSignal.OWNER_UNCONFIRMED] = state.get("handoff_at") or arrived
    if state["stage"]:
        events[AlertSignal.STAGE_STALLED] = state["stage_entered_at"] or arrived
    if state.get("duplicate_at") is not None:
        events[AlertSignal.DUPLICATE] = state["duplicate_at"]
    if state.get("conflict_at") is not None:
        events[AlertSignal.CONFLICTING_OWNERS] = state["conflict_at"]
    return events


def compute(state: Mapping[str, Any], ctx: Context) -> list[DeadlineRow]:
    """The deadlines of one opportunity (its ``STATE_FIELDS`` and the loader's detections);
    none when it is closed."""
    if state["status"] != Status.OPEN:
        return []
    calendar_id = ctx.calendar_for(state["team_id"])
    if calendar_id is None or (engine := ctx.engines.get(calendar_id)) is None:
        return []
    policy = ctx.book.resolve(state["team_id"], state["segment_id"], state["arrived_at"])
    stalled_until = state.get("stalled_until")
    rows = []
    # Several clocks start at one event (arrival starts up to four): find its opening once.
    openings: dict[datetime, datetime] = {}
    for signal, event in armed(state).items():
        if signal in DETECTED:
            # Nothing to wait for: due when found. The row still names a policy version (the
            # column is required); the one supplying the first duration is as good as any.
            first = next(iter(policy.durations.values()), None)
            if first is None:
                continue
            rows.append(
                DeadlineRow(
                    state["id"], signal, event, event, timedelta(0), event, first[1], calendar_id
                )
            )
            continue
        if signal == AlertSignal.STAGE_STALLED:
            found = policy.stage_limits.get(state["stage"])
        else:
            found = policy.durations.get(signal)
        if found is None:
            continue
        sla, version_id = found
        # After hours the clock starts at the next opening; zero grace is due at the event.
        start = openings.get(event)
        if start is None:
            start = openings[event] = next_opening(engine, event)
        due = add_business_time(engine, start, sla) if sla else event
        if stalled_until is not None and signal in STALLABLE:
            # Stalled for a known reason: not due before work resumes (at the next opening).
            # The event stays, so an opportunity nobody touched is overdue the moment it does.
            due = max(due, next_opening(engine, stalled_until))
        rows.append(
            DeadlineRow(state["id"], signal, event, start, sla, due, version_id, calendar_id)
        )
    return rows
