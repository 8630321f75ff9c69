"""Deadlines: when each signal fires on an opportunity if nothing happens first.

Computed in Python, in business time, whenever something that moves a clock is written (a
touch, an owner, a stage, a next action, a merge, a close) and in the same transaction, so that
the sweep only compares stored ``due_at`` values with the clock. Closed opportunities have none.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import OuterRef, Subquery

from followup_visibility import alerts, calendars
from followup_visibility.business_time import BusinessCalendar, add_business_time, next_opening
from followup_visibility.choices import Signal, Status
from followup_visibility.models import Deadline, Handoff, TrackedOpportunity
from followup_visibility.policies import PolicyBook

logger = logging.getLogger(__name__)

#: Opportunity fields the computation reads (plus ``handoff_at``, annotated).
STATE_FIELDS = (
    "id",
    "status",
    "arrived_at",
    "owner_id",
    "owner_confirmed_at",
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
)
_COMPARED = ("event_at", "clock_start", "sla", "due_at", "policy_version_id", "calendar_id")


@dataclass(frozen=True)
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
        return tuple(getattr(self, name) for name in _COMPARED)


@dataclass
class Context:
    """What the computation needs besides the opportunity: policies, team calendars, engines."""

    book: PolicyBook
    team_calendars: Mapping[int, int | None]
    default_calendar: int | None
    engines: Mapping[int, BusinessCalendar]

    @classmethod
    def load(cls, book: PolicyBook | None = None) -> Context:
        default = calendars.default_calendar_id()
        team_calendars = calendars.team_calendar_ids(default)
        ids = {c for c in team_calendars.values() if c is not None}
        if default is not None:
            ids.add(default)
        return cls(
            book=book or PolicyBook.load(),
            team_calendars=team_calendars,
            default_calendar=default,
            engines=calendars.load(ids),
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
        events[Signal.NO_FIRST_RESPONSE] = arrived
    if state["first_outbound_at"] is None:
        events[Signal.NEVER_CONTACTED] = arrived
    if state["awaiting_reply_since"] is not None:
        events[Signal.CUSTOMER_WAITING] = state["awaiting_reply_since"]
    if state["last_unanswered_call_at"] is not None:
        events[Signal.CALL_RETRY_DUE] = state["last_unanswered_call_at"]
    if state["next_action_due_at"] is not None and state["next_action_done_at"] is None:
        events[Signal.NEXT_ACTION_OVERDUE] = state["next_action_due_at"]
    else:
        # Nothing planned: the clock runs from the latest sign of work (a touch, the last
        # next action being done), or from arrival.
        latest = [t for t in (state["last_touch_at"], state["next_action_done_at"]) if t]
        events[Signal.NO_NEXT_ACTION] = max(latest) if latest else arrived
    if state["last_meaningful_touch_at"] is not None:
        events[Signal.STALE] = state["last_meaningful_touch_at"]
    if state["owner_id"] is None:
        events[Signal.NO_OWNER] = arrived
    elif state["owner_confirmed_at"] is None:
        events[Signal.OWNER_UNCONFIRMED] = state.get("handoff_at") or arrived
    if state["stage"]:
        events[Signal.STAGE_STALLED] = state["stage_entered_at"] or arrived
    return events


def compute(state: Mapping[str, Any], ctx: Context) -> list[DeadlineRow]:
    """The deadlines of one opportunity (as ``STATE_FIELDS`` values); none when it is closed."""
    if state["status"] != Status.OPEN:
        return []
    calendar_id = ctx.calendar_for(state["team_id"])
    if calendar_id is None or (engine := ctx.engines.get(calendar_id)) is None:
        return []
    policy = ctx.book.resolve(state["team_id"], state["segment_id"], state["arrived_at"])
    rows = []
    for signal, event in armed(state).items():
        if signal == Signal.STAGE_STALLED:
            found = policy.stage_limits.get(state["stage"])
        else:
            found = policy.durations.get(signal)
        if found is None:
            continue
        sla, version_id = found
        # After hours the clock starts at the next opening; zero grace is due at the event.
        start = next_opening(engine, event)
        due = add_business_time(engine, start, sla) if sla else event
        rows.append(
            DeadlineRow(state["id"], signal, event, start, sla, due, version_id, calendar_id)
        )
    return rows


def states(opportunity_ids: Iterable[Any]) -> Any:
    """``STATE_FIELDS`` of these opportunities, with their pending handoff's time."""
    pending = Handoff.objects.filter(
        opportunity=OuterRef("pk"), accepted_at__isnull=True, superseded_at__isnull=True
    ).values("handed_at")[:1]
    return (
        TrackedOpportunity.objects.filter(pk__in=list(opportunity_ids))
        .annotate(handoff_at=Subquery(pending))
        .values(*STATE_FIELDS, "handoff_at")
    )


@dataclass
class RecomputeResult:
    written: int = 0
    deleted: int = 0
    unchanged: int = 0
    resolved: int = 0


def recompute(
    opportunity_ids: Iterable[Any],
    now: datetime,
    *,
    ctx: Context | None = None,
    cause: alerts.Cause | None = None,
) -> RecomputeResult:
    """Bring the stored deadlines of these opportunities in line with their current state.

    Runs in the caller's transaction and writes only rows that changed. ``now`` is recorded as
    ``computed_at``; the deadlines themselves depend only on stored state.
    """
    ids = list(opportunity_ids)
    result = RecomputeResult()
    if not ids:
        return result
    ctx = ctx or Context.load()
    if not ctx.book.has_default:
        logger.warning("no company default SLA policy: deadlines are incomplete (see checks)")
    desired: dict[tuple[Any, str], DeadlineRow] = {}
    for state in states(ids):
        for row in compute(state, ctx):
            desired[(row.opportunity_id, row.signal)] = row
    existing: dict[tuple[Any, str], tuple[int, tuple[Any, ...]]] = {}
    for values in Deadline.objects.filter(opportunity_id__in=ids).values(
        "pk", "opportunity_id", "signal", *_COMPARED
    ):
        key = (values["opportunity_id"], values["signal"])
        existing[key] = (values["pk"], tuple(values[name] for name in _COMPARED))
    gone = [pk for key, (pk, _row) in existing.items() if key not in desired]
    if gone:
        result.deleted = Deadline.objects.filter(pk__in=gone).delete()[0]
    write = [
        Deadline(computed_at=now, **row.__dict__)
        for key, row in desired.items()
        if key not in existing or existing[key][1] != row.key()
    ]
    if write:
        Deadline.objects.bulk_create(
            write,
            update_conflicts=True,
            unique_fields=["opportunity", "signal"],
            update_fields=[*_COMPARED, "computed_at"],
            batch_size=2000,
        )
    result.written = len(write)
    result.unchanged = len(desired) - len(write)
    # Alerts whose condition this change cleared resolve now, naming what cleared them.
    result.resolved = alerts.resolve_cleared(
        ids, {key: (row.event_at, row.due_at) for key, row in desired.items()}, now, cause
    )
    return result
