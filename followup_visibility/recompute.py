"""Recompute deadlines after a policy, calendar or organisation change, in chunked tasks.

A change schedules one planning task after commit; it splits the affected open opportunities
into key ranges and enqueues one independent task per range. Every step is idempotent, so a
retried or duplicated task only rewrites what is still out of date.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import transaction

from followup_visibility import assignment, deadlines, escalation
from followup_visibility.conf import app_settings
from followup_visibility.models import Calendar, SlaPolicy, TrackedOpportunity

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scope:
    """Which open opportunities a change can affect (empty lists: no restriction)."""

    team_ids: Sequence[int] | None = None
    segment_ids: Sequence[int] | None = None
    #: Also re-run team and segment assignment (rules, keys or memberships changed).
    reassign: bool = False
    #: Skip the work if this calendar has moved past this version: a newer task follows.
    calendar: tuple[int, int] | None = None
    reason: str = ""

    def as_kwargs(self) -> dict[str, Any]:
        return {
            "team_ids": list(self.team_ids) if self.team_ids is not None else None,
            "segment_ids": list(self.segment_ids) if self.segment_ids is not None else None,
            "reassign": self.reassign,
            "calendar": list(self.calendar) if self.calendar else None,
            "reason": self.reason,
        }

    def queryset(self) -> Any:
        qs = TrackedOpportunity.objects.open()
        if self.team_ids is not None:
            qs = qs.filter(team_id__in=self.team_ids)
        if self.segment_ids is not None:
            qs = qs.filter(segment_id__in=self.segment_ids)
        return qs

    def is_outdated(self) -> bool:
        if self.calendar is None:
            return False
        pk, version = self.calendar
        current = Calendar.objects.filter(pk=pk).values_list("version", flat=True).first()
        return current is not None and current != version


def scope_from_kwargs(
    team_ids: Sequence[int] | None = None,
    segment_ids: Sequence[int] | None = None,
    reassign: bool = False,
    calendar: Sequence[int] | None = None,
    reason: str = "",
) -> Scope:
    cal = (int(calendar[0]), int(calendar[1])) if calendar else None
    return Scope(team_ids, segment_ids, reassign, cal, reason)


def schedule(scope: Scope) -> None:
    """Plan a recompute of ``scope`` once the current transaction commits.

    Repeats within one transaction collapse into one task: an admin saving five calendar
    rows, or a seed creating teams and rules, plans each distinct scope once.
    """
    from followup_visibility.tasks import plan_recompute

    kwargs = scope.as_kwargs()
    key = repr(sorted((k, v) for k, v in kwargs.items() if k != "reason"))
    connection = transaction.get_connection()
    pending: dict[str, Any] = connection.__dict__.setdefault("_followup_pending_plans", {})
    queued = {id(entry[1]) for entry in connection.run_on_commit}
    if key in pending and id(pending[key]) in queued:
        return

    def enqueue() -> None:
        pending.pop(key, None)
        plan_recompute.delay(**kwargs)

    pending[key] = enqueue
    transaction.on_commit(enqueue)


def schedule_for_policy(policy: SlaPolicy, *, reason: str = "") -> None:
    # A team or segment policy can only change opportunities of that team or segment; the
    # default can change any of them.
    schedule(
        Scope(
            team_ids=[policy.team_id] if policy.team_id else None,
            segment_ids=[policy.segment_id] if policy.segment_id else None,
            reason=reason or f"policy {policy.pk}",
        )
    )


def schedule_for_calendar(calendar_id: int, version: int, *, everything: bool = False) -> None:
    calendar = Calendar.objects.filter(pk=calendar_id).first()
    if calendar is None:
        return
    from followup_visibility.calendars import teams_using

    teams = None if everything else teams_using(calendar)
    if teams == []:
        return  # nobody uses it
    schedule(
        Scope(team_ids=teams, calendar=(calendar_id, version), reason=f"calendar {calendar_id}")
    )


def plan(scope: Scope, *, chunk_size: int | None = None) -> list[tuple[Any, Any]]:
    """Split the affected open opportunities into inclusive ``(first, last)`` key ranges."""
    size = chunk_size or app_settings.RECOMPUTE_CHUNK_SIZE
    ids = list(scope.queryset().order_by("pk").values_list("pk", flat=True))
    return [(ids[i], ids[min(i + size, len(ids)) - 1]) for i in range(0, len(ids), size)]


@dataclass
class ChunkResult:
    opportunities: int = 0
    reassigned: int = 0
    totals: deadlines.RecomputeResult = field(default_factory=deadlines.RecomputeResult)
    skipped: bool = False


def recompute_range(
    first: Any, last: Any, scope: Scope, now: datetime, *, ctx: deadlines.Context | None = None
) -> ChunkResult:
    """Recompute one key range in one transaction (a failure leaves the range as it was)."""
    result = ChunkResult()
    if scope.is_outdated():
        result.skipped = True
        return result
    with transaction.atomic():
        locked = (
            scope.queryset().filter(pk__gte=first, pk__lte=last).select_for_update().order_by("pk")
        )
        if scope.reassign:
            opps = list(locked)
            result.reassigned = assignment.assign_and_save(opps)
            ids = [o.pk for o in opps]
        else:
            # Only the keys are needed: building full instances just to lock rows was the
            # largest cost of a recompute (see docs/performance.md).
            ids = list(locked.values_list("pk", flat=True))
        result.opportunities = len(ids)
        result.totals = deadlines.recompute(ids, now, ctx=ctx)
        if scope.calendar is not None:
            # Escalation levels are counted in the same calendar: re-plan them as well.
            escalation.replan_opportunities(ids)
    return result


def recompute_all(scope: Scope, now: datetime, *, chunk_size: int | None = None) -> ChunkResult:
    """Plan and run every chunk here and now (commands, benchmarks, tests)."""
    ctx = deadlines.Context.load()
    total = ChunkResult()
    for first, last in plan(scope, chunk_size=chunk_size):
        part = recompute_range(first, last, scope, now, ctx=ctx)
        total.opportunities += part.opportunities
        total.reassigned += part.reassigned
        total.totals.written += part.totals.written
        total.totals.deleted += part.totals.deleted
        total.totals.unchanged += part.totals.unchanged
    return total
