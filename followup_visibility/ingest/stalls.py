"""Stalled for a known reason: silence inactivity signals until a resumption date.

The customer asked to be called after their budget round: nobody is neglecting the
opportunity, so going stale, having no next action and sitting in a stage are not due before
``stalled_until``. Nothing pretends activity happened: the clocks keep their events, so an
opportunity nobody touched is overdue the moment the stall ends. A customer waiting for a
reply, an overdue next action or an unanswered call are never silenced by a stall.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.translation import gettext as _

from followup_visibility.alerting import refresh
from followup_visibility.choices import Status
from followup_visibility.ingest import arguments
from followup_visibility.models import TrackedOpportunity

#: The furthest a stall may reach: a longer pause is a lost or postponed opportunity.
MAX_STALL = timedelta(days=366)
_FIELDS = ["stalled_until", "stalled_reason", "stalled_at", "stalled_by", "updated_at"]


def set_stalled(
    opportunity: TrackedOpportunity, *, until: datetime, reason: str, by: Any, now: datetime
) -> TrackedOpportunity:
    """Mark the opportunity stalled until ``until`` because of ``reason``; recompute its clocks.

    Raises ``ValidationError`` with field messages (``reason``, ``until``, ``opportunity``) and
    writes nothing when the reason is empty, ``until`` is not after ``now`` or lies more than
    :data:`MAX_STALL` ahead, or the opportunity is closed or not stored (``now`` must be
    aware). Setting a new stall replaces the old.
    """
    arguments.require_aware(now=now)
    reason = (reason or "").strip()
    errors: dict[str, str] = {}
    if not reason:
        errors["reason"] = _("Say why the opportunity is stalled.")
    elif len(reason) > 255:
        errors["reason"] = _("At most 255 characters.")
    if not arguments.is_aware(until):
        errors["until"] = _("A timezone-aware datetime is required.")
    elif until <= now:
        errors["until"] = _("The stall must end in the future.")
    elif until > now + MAX_STALL:
        errors["until"] = _("A stall may last at most %(days)d days.") % {"days": MAX_STALL.days}
    with transaction.atomic():
        arguments.lock_stored({"opportunity": opportunity})
        locked = TrackedOpportunity.objects.get(pk=opportunity.pk)
        if locked.status != Status.OPEN:
            message = _("Only an open opportunity can be stalled; this one is %(s)s.")
            errors["opportunity"] = message % {"s": locked.get_status_display().lower()}
        if errors:
            raise ValidationError(errors)
        locked.stalled_until = until
        locked.stalled_reason = reason
        locked.stalled_at = now
        locked.stalled_by = by
        note = _("stalled: %(reason)s") % {"reason": reason}
        _save(locked, by, now, note)
        refresh.refresh([locked.pk], now=now, cause=refresh.Cause(note))
    _copy(locked, opportunity)
    return opportunity


def clear_stalled(opportunity: TrackedOpportunity, *, by: Any, now: datetime) -> TrackedOpportunity:
    """End the stall now: the silenced clocks count again from their own events.

    Raises ``ValidationError`` when the opportunity is not marked stalled (a stall whose date
    passed is still marked, and clearing it tidies the record).
    """
    arguments.require_aware(now=now)
    with transaction.atomic():
        arguments.lock_stored({"opportunity": opportunity})
        locked = TrackedOpportunity.objects.get(pk=opportunity.pk)
        if locked.stalled_until is None:
            raise ValidationError(_("This opportunity is not stalled."), code="not_stalled")
        locked.stalled_until = None
        locked.stalled_reason = ""
        locked.stalled_at = None
        locked.stalled_by = None
        note = _("stall cleared")
        _save(locked, by, now, note)
        refresh.refresh([locked.pk], now=now, cause=refresh.Cause(note))
    _copy(locked, opportunity)
    return opportunity


def _save(opportunity: TrackedOpportunity, by: Any, now: datetime, reason: str) -> None:
    opportunity._history_user = by  # type: ignore[attr-defined]
    opportunity._history_date = now  # type: ignore[attr-defined]
    # A history change reason holds 100 characters; the full reason stays on the record.
    opportunity._change_reason = reason[:100]  # type: ignore[attr-defined]
    opportunity.save(update_fields=_FIELDS)


def _copy(source: TrackedOpportunity, target: TrackedOpportunity) -> None:
    """Keep the caller's instance in step with what was written."""
    for name in ("stalled_until", "stalled_reason", "stalled_at", "stalled_by_id", "updated_at"):
        setattr(target, name, getattr(source, name))
