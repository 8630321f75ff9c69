"""The dated next action of an opportunity: set through the API, or read from the host."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any, TypeGuard

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from followup_visibility.adapters import Snapshot
from followup_visibility.alerting import refresh
from followup_visibility.engine import generation
from followup_visibility.engine.business_time import BusinessCalendar, end_of_business_day
from followup_visibility.engine.clocks import Context
from followup_visibility.ingest import arguments
from followup_visibility.models import TrackedOpportunity

_FIELDS = ["next_action_due_at", "next_action_note", "next_action_set_at", "next_action_done_at"]
_MICROSECOND = timedelta(microseconds=1)


def schedule_next_action(
    opportunity: TrackedOpportunity, due_at: datetime, *, now: datetime, note: str = ""
) -> TrackedOpportunity:
    """Set the dated next step; it must lie in the future (a past date is not a plan)."""
    arguments.require_aware(now=now)
    if not arguments.is_aware(due_at):
        raise ValidationError({"due_at": _("A timezone-aware datetime is required.")})
    if due_at <= now:
        raise ValidationError({"due_at": _("The next action must be dated in the future.")})
    with transaction.atomic():
        # Under the chain's lock: a concurrent touch's refresh cannot write deadlines from a
        # state that misses this plan, nor this one from a state that misses the touch.
        arguments.lock_stored({"opportunity": opportunity})
        opportunity.next_action_due_at = due_at
        opportunity.next_action_note = note[:255]
        opportunity.next_action_set_at = now
        opportunity.next_action_done_at = None
        opportunity.save(update_fields=[*_FIELDS, "updated_at"])
        refresh.refresh([opportunity.pk], now=now, cause=refresh.Cause(_("next action scheduled")))
    return opportunity


def complete_next_action(opportunity: TrackedOpportunity, *, now: datetime) -> TrackedOpportunity:
    arguments.require_aware(now=now)
    with transaction.atomic():
        arguments.lock_stored({"opportunity": opportunity})
        stored = (
            TrackedOpportunity.objects.filter(pk=opportunity.pk)
            .values_list("next_action_due_at", "next_action_done_at")
            .get()
        )
        if stored[0] is None or stored[1] is not None:
            raise ValidationError(_("There is no open next action to complete."), code="none")
        opportunity.next_action_done_at = now
        opportunity.save(update_fields=["next_action_done_at", "updated_at"])
        refresh.refresh([opportunity.pk], now=now, cause=refresh.Cause(_("next action done")))
    return opportunity


def is_date(value: object) -> TypeGuard[date]:
    """A calendar date (a ``DateField``'s value), not a datetime (which is a date too)."""
    return isinstance(value, date) and not isinstance(value, datetime)


def apply_host_dates(
    synced: Iterable[tuple[TrackedOpportunity, Snapshot, Any]], now: datetime
) -> None:
    """Date the host's next steps kept as dates: due at the end of that business day.

    For a sync, after routing (the team decides the calendar) and before the write. ``synced``
    holds each record with its snapshot and its team before the sync. The end of the business
    day is the close of the day's last working window in the opportunity's calendar, or of the
    next day that has one when that day is closed; without any calendar, the end of the date in
    the site's time zone. A date stays the same plan while it is the same date: a due time
    moved only by another calendar keeps the next action's set and done times.

    Set-based: the calendars are the refresh's, read once per process (one query here).
    """
    dated = [
        (opp, day, team_before)
        for opp, snap, team_before in synced
        if is_date(day := snap.next_action_due_at)
    ]
    if not dated:
        return
    ctx = generation.cached("context", generation.token(), Context.load)
    for opp, day, team_before in dated:
        due = _end_of_day(ctx, opp.team_id, day)
        stored = opp.next_action_due_at
        if stored == due:
            continue
        opp.next_action_due_at = due
        if stored is None or not any(
            _business_date(ctx, team, stored)
            == _business_date(ctx, team, _end_of_day(ctx, team, day))
            for team in {opp.team_id, team_before}
        ):
            opp.next_action_set_at = now
            opp.next_action_done_at = None


def _end_of_day(ctx: Context, team_id: int | None, day: date) -> datetime:
    engine = _engine(ctx, team_id)
    if engine is None:
        # No calendar (no deadline is computed either): the end of the date on the site's clock.
        midnight = datetime.combine(day + timedelta(days=1), time(0))
        return midnight.replace(tzinfo=timezone.get_default_timezone()).astimezone(UTC)
    return end_of_business_day(engine, day)


def _business_date(ctx: Context, team_id: int | None, end: datetime) -> date:
    """The local date a business day's end belongs to (a close at 24:00 is that day's)."""
    engine = _engine(ctx, team_id)
    zone: tzinfo = engine.tz if engine is not None else timezone.get_default_timezone()
    return (end - _MICROSECOND).astimezone(zone).date()


def _engine(ctx: Context, team_id: int | None) -> BusinessCalendar | None:
    calendar_id = ctx.calendar_for(team_id)
    return None if calendar_id is None else ctx.engines.get(calendar_id)
