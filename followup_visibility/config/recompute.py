"""Recompute deadlines after a policy, calendar or organisation change, in chunks.

A change records a plan in the outbox, in its own transaction: nothing is lost if the broker
is down when it commits. Draining the plan splits the affected open opportunities into key
ranges, one outbox message each, which workers drain side by side; each range is one
refresh. Every step is idempotent, so a repeated message only rewrites what is still out of
date.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils.translation import gettext as _

from followup_visibility.alerting import escalation, outbox, refresh
from followup_visibility.conf import app_settings
from followup_visibility.engine import calendars
from followup_visibility.engine.clocks import Context
from followup_visibility.models import Calendar, SlaPolicy, TrackedOpportunity

logger = logging.getLogger(__name__)

#: Outbox kinds: a plan splits a scope into ranges; a range is recomputed.
PLAN = "followup_visibility.recompute.plan"
RANGE = "followup_visibility.recompute.range"


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


def schedule(scope: Scope, *, now: datetime) -> None:
    """Plan a recompute of ``scope`` in the outbox, in the current transaction.

    A plan of the same scope still pending absorbs this one (an admin saving five calendar
    rows, or a seed creating teams and rules, plans each distinct scope once).
    """
    kwargs = scope.as_kwargs()
    key = json.dumps({k: v for k, v in kwargs.items() if k != "reason"}, sort_keys=True)
    outbox.enqueue(PLAN, [kwargs], now=now, key=f"recompute:{key}")


def schedule_for_policy(policy: SlaPolicy, *, now: datetime, reason: str = "") -> None:
    # A team or segment policy can only change opportunities of that team or segment; the
    # default can change any of them.
    schedule(
        Scope(
            team_ids=[policy.team_id] if policy.team_id else None,
            segment_ids=[policy.segment_id] if policy.segment_id else None,
            reason=reason or f"policy {policy.pk}",
        ),
        now=now,
    )


def schedule_for_calendar(
    calendar_id: int, version: int, *, now: datetime, everything: bool = False
) -> None:
    calendar = Calendar.objects.filter(pk=calendar_id).first()
    if calendar is None:
        return
    teams = None if everything else calendars.teams_using(calendar)
    if teams == []:
        return  # nobody uses it
    schedule(
        Scope(team_ids=teams, calendar=(calendar_id, version), reason=f"calendar {calendar_id}"),
        now=now,
    )


def plan(scope: Scope, *, chunk_size: int | None = None) -> list[tuple[Any, Any]]:
    """Split the affected open opportunities into inclusive ``(first, last)`` key ranges."""
    size = chunk_size or app_settings.RECOMPUTE_CHUNK_SIZE
    ids = list(scope.queryset().order_by("pk").values_list("pk", flat=True))
    return [(ids[i], ids[min(i + size, len(ids)) - 1]) for i in range(0, len(ids), size)]


@dataclass
class ChunkResult:
    opportunities: int = 0
    totals: refresh.RefreshResult = field(default_factory=refresh.RefreshResult)
    skipped: bool = False

    def __iadd__(self, other: ChunkResult) -> ChunkResult:
        self.opportunities += other.opportunities
        self.totals += other.totals
        self.skipped = self.skipped or other.skipped
        return self


def recompute_range(
    first: Any, last: Any, scope: Scope, now: datetime, *, ctx: Context | None = None
) -> ChunkResult:
    """Recompute one key range in one transaction (a failure leaves the range as it was)."""
    result = ChunkResult()
    if scope.is_outdated():
        result.skipped = True
        return result
    with transaction.atomic():
        ids = list(
            scope.queryset().filter(pk__gte=first, pk__lte=last).values_list("pk", flat=True)
        )
        result.opportunities = len(ids)
        result.totals = refresh.refresh(
            ids,
            now=now,
            cause=refresh.Cause(scope.reason or _("recomputed"), routing=scope.reassign),
            ctx=ctx,
        )
        if scope.calendar is not None:
            # Escalation levels are counted in the same calendar: re-plan them as well.
            escalation.replan_opportunities(ids)
    return result


def recompute_all(scope: Scope, now: datetime, *, chunk_size: int | None = None) -> ChunkResult:
    """Plan and run every chunk here and now (commands, benchmarks, tests)."""
    ctx = Context.load()
    total = ChunkResult()
    for first, last in plan(scope, chunk_size=chunk_size):
        total += recompute_range(first, last, scope, now, ctx=ctx)
    return total


def drain_plan(payload: Mapping[str, Any], now: datetime) -> None:
    """The outbox work of a plan: one range message per chunk of the scope."""
    scope = scope_from_kwargs(**payload)
    if scope.is_outdated():
        return
    ranges = plan(scope)
    outbox.enqueue(
        RANGE, [{**payload, "first": first, "last": last} for first, last in ranges], now=now
    )
    logger.info("recompute of %s planned in %d ranges", scope.reason or "a scope", len(ranges))


def drain_range(payload: Mapping[str, Any], now: datetime) -> None:
    """The outbox work of a range: recompute it."""
    kwargs = dict(payload)
    first, last = kwargs.pop("first"), kwargs.pop("last")
    recompute_range(first, last, scope_from_kwargs(**kwargs), now)
