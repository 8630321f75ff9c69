"""Deadlines: when each signal fires on an opportunity if nothing happens first.

Computed in Python, in business time, whenever something that moves a clock is written (a
touch, an owner, a stage, a next action, a merge, a close) and in the same transaction, so that
the sweep only compares stored ``due_at`` values with the clock. Closed opportunities have none.

Two signals are detected rather than timed: a duplicate and conflicting owners are due the moment
they are found (zero grace), from facts loaded for the whole batch in :func:`states`.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

from django.db.models import Exists, OuterRef, Q, Subquery

from followup_visibility import alerts, calendars
from followup_visibility.business_time import BusinessCalendar, add_business_time, next_opening
from followup_visibility.choices import Direction, Signal, Status
from followup_visibility.models import Deadline, DuplicateMatch, Handoff, Touch, TrackedOpportunity
from followup_visibility.policies import PolicyBook
from followup_visibility.timeline import NOT_ATTEMPT_REASONS

logger = logging.getLogger(__name__)

#: Opportunity fields the computation reads. :func:`states` adds ``handoff_at`` (the pending
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
STALLABLE = frozenset({Signal.STALE, Signal.NO_NEXT_ACTION, Signal.STAGE_STALLED})
#: Signals due the moment they are detected (no duration of their own in the policy).
DETECTED = frozenset({Signal.DUPLICATE, Signal.CONFLICTING_OWNERS})
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
        # From when the CRM cleared the owner: each time is a new episode.
        events[Signal.NO_OWNER] = state.get("unowned_since") or arrived
    elif state["owner_confirmed_at"] is None:
        events[Signal.OWNER_UNCONFIRMED] = state.get("handoff_at") or arrived
    if state["stage"]:
        events[Signal.STAGE_STALLED] = state["stage_entered_at"] or arrived
    if state.get("duplicate_at") is not None:
        events[Signal.DUPLICATE] = state["duplicate_at"]
    if state.get("conflict_at") is not None:
        events[Signal.CONFLICTING_OWNERS] = state["conflict_at"]
    return events


def compute(state: Mapping[str, Any], ctx: Context) -> list[DeadlineRow]:
    """The deadlines of one opportunity (as :func:`states` gives it); none when it is closed."""
    if state["status"] != Status.OPEN:
        return []
    calendar_id = ctx.calendar_for(state["team_id"])
    if calendar_id is None or (engine := ctx.engines.get(calendar_id)) is None:
        return []
    policy = ctx.book.resolve(state["team_id"], state["segment_id"], state["arrived_at"])
    stalled_until = state.get("stalled_until")
    rows = []
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
        if stalled_until is not None and signal in STALLABLE:
            # Stalled for a known reason: not due before work resumes (at the next opening).
            # The event stays, so an opportunity nobody touched is overdue the moment it does.
            due = max(due, next_opening(engine, stalled_until))
        rows.append(
            DeadlineRow(state["id"], signal, event, start, sla, due, version_id, calendar_id)
        )
    return rows


def states(opportunity_ids: Iterable[Any]) -> list[dict[str, Any]]:
    """``STATE_FIELDS`` of these opportunities, with their pending handoff's time and detections.

    One query, plus two only when some of them have a pending handoff (see :func:`_conflicts`).
    """
    return _load(list(opportunity_ids), None)[0]


def _load(ids: list[Any], now: datetime | None) -> tuple[list[dict[str, Any]], set[Any]]:
    """:func:`states`, and with ``now`` the other sides of duplicate matches found or cleared then.

    Those others' duplicate deadlines move with this change although nothing else of theirs
    did: detection and clearing happen at ``now`` in the caller's transaction, just before it
    recomputes. Matches are stored in both directions, so each side reads its own rows.
    """
    pending = Handoff.objects.filter(
        opportunity=OuterRef("pk"), accepted_at__isnull=True, superseded_at__isnull=True
    ).values("handed_at")[:1]
    matches = DuplicateMatch.objects.filter(opportunity=OuterRef("pk"))
    duplicate = matches.filter(cleared_at__isnull=True, duplicate__status=Status.OPEN)
    annotations: dict[str, Any] = {
        "handoff_at": Subquery(pending),
        "duplicate_at": Subquery(duplicate.order_by("detected_at").values("detected_at")[:1]),
    }
    moved = Q(detected_at=now) | Q(cleared_at=now)
    if now is not None:
        annotations["matches_moved"] = Exists(matches.filter(moved))
    rows = list(
        TrackedOpportunity.objects.filter(pk__in=ids)
        .annotate(**annotations)
        .values(*STATE_FIELDS, *annotations)
    )
    conflicts = _conflicts([row["id"] for row in rows if row["handoff_at"] is not None])
    for row in rows:
        row["conflict_at"] = conflicts.get(row["id"])
    others: set[Any] = set()
    if now is not None:
        changed = [row["id"] for row in rows if row.pop("matches_moved")]
        if changed:
            others.update(
                DuplicateMatch.objects.filter(moved, opportunity_id__in=changed).values_list(
                    "duplicate_id", flat=True
                )
            )
    return rows, others - set(ids)


def _conflicts(ids: list[Any]) -> dict[Any, datetime]:
    """When the previous owner was first seen working an opportunity handed to someone else.

    Applies to opportunities with a pending handoff (``ids``) whose previous owner had accepted
    ownership: the handoff before the pending one went to them and was accepted. The earliest
    outbound attempt by that owner at or after the pending handoff is the detection; two people
    now believe they own the opportunity. Accepting or superseding the handoff clears it.
    """
    if not ids:
        return {}
    handoffs = (
        Handoff.objects.filter(opportunity_id__in=ids)
        .order_by("opportunity", "handed_at", "id")
        .values_list(
            "opportunity_id",
            "from_owner_id",
            "to_owner_id",
            "handed_at",
            "accepted_at",
            "superseded_at",
        )
    )
    # (opportunity, previous owner) -> when the pending handoff took it from them
    contested: dict[tuple[Any, Any], datetime] = {}
    for before, handoff in pairwise(handoffs):
        opportunity_id, from_owner, _to, handed_at, accepted_at, superseded_at = handoff
        if (
            accepted_at is None
            and superseded_at is None
            and from_owner is not None
            and before[0] == opportunity_id
            and before[2] == from_owner
            and before[4] is not None
        ):
            contested[(opportunity_id, from_owner)] = handed_at
    if not contested:
        return {}
    touches = (
        Touch.objects.filter(
            opportunity_id__in={opp for opp, _owner in contested},
            actor_id__in={owner for _opp, owner in contested},
            direction=Direction.OUTBOUND,
            occurred_at__gte=min(contested.values()),
        )
        # An auto-reply or an untargeted template sent in their name is nobody working it.
        .exclude(meaningful_reason__in=NOT_ATTEMPT_REASONS)
        .values_list("opportunity_id", "actor_id", "occurred_at")
    )
    found: dict[Any, datetime] = {}
    for opportunity_id, actor_id, occurred_at in touches:
        since = contested.get((opportunity_id, actor_id))
        if since is not None and occurred_at >= since:
            _keep_earliest(found, opportunity_id, occurred_at)
    return found


def _keep_earliest(found: dict[Any, datetime], key: Any, at: datetime) -> None:
    if key not in found or at < found[key]:
        found[key] = at


@dataclass
class RecomputeResult:
    written: int = 0
    deleted: int = 0
    unchanged: int = 0
    resolved: int = 0
    woken: int = 0


def recompute(
    opportunity_ids: Iterable[Any],
    now: datetime,
    *,
    ctx: Context | None = None,
    cause: alerts.Cause | None = None,
) -> RecomputeResult:
    """Bring the stored deadlines of these opportunities in line with their current state.

    Runs in the caller's transaction and writes only rows that changed. ``now`` is recorded as
    ``computed_at``; the deadlines themselves depend only on stored state. Opportunities on the
    other side of a duplicate match detected or cleared at ``now`` get their duplicate deadline
    recomputed too (and only that one: the rest of their state did not change).
    """
    ids = list(opportunity_ids)
    result = RecomputeResult()
    if not ids:
        return result
    ctx = ctx or Context.load()
    if not ctx.book.has_default:
        logger.warning("no company default SLA policy: deadlines are incomplete (see checks)")
    rows, others = _load(ids, now)
    _apply(result, ids, rows, now, ctx, cause)
    if others:
        _apply(result, list(others), states(others), now, ctx, cause, only={Signal.DUPLICATE})
    return result


def _apply(
    result: RecomputeResult,
    ids: list[Any],
    rows: Iterable[Mapping[str, Any]],
    now: datetime,
    ctx: Context,
    cause: alerts.Cause | None,
    only: Collection[str] | None = None,
) -> None:
    """Write the deadlines computed from ``rows`` (of ``only`` these signals) and resolve alerts."""
    desired: dict[tuple[Any, str], DeadlineRow] = {}
    for state in rows:
        for row in compute(state, ctx):
            if only is None or row.signal in only:
                desired[(row.opportunity_id, row.signal)] = row
    existing: dict[tuple[Any, str], tuple[int, tuple[Any, ...]]] = {}
    for values in Deadline.objects.filter(opportunity_id__in=ids).values(
        "pk", "opportunity_id", "signal", *_COMPARED
    ):
        key = (values["opportunity_id"], values["signal"])
        existing[key] = (values["pk"], tuple(values[name] for name in _COMPARED))
    kept = {key for key in existing if only is not None and key[1] not in only}
    gone = [pk for key, (pk, _row) in existing.items() if key not in desired and key not in kept]
    if gone:
        result.deleted += Deadline.objects.filter(pk__in=gone).delete()[0]
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
    result.written += len(write)
    result.unchanged += len(desired) - len(write)
    current = {key: (row.event_at, row.due_at) for key, row in desired.items()}
    # Signals left alone keep their stored deadline, so their alerts are judged against it.
    event_at, due_at = _COMPARED.index("event_at"), _COMPARED.index("due_at")
    for key in kept:
        stored = existing[key][1]
        current[key] = (stored[event_at], stored[due_at])
    # Alerts whose condition this change cleared resolve now, naming what cleared them.
    result.resolved += alerts.resolve_cleared(ids, current, now, cause)
    # A snooze until the customer replies or the stage changes ends with the news, not at
    # the next full sweep (a steady sweep wakes only snoozes whose time came).
    result.woken += alerts.wake_snoozed(now, opportunity_ids=ids)
