"""The dated next action of an opportunity."""

from __future__ import annotations

from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.translation import gettext as _

from followup_visibility.alerting import refresh
from followup_visibility.models import TrackedOpportunity

_FIELDS = ["next_action_due_at", "next_action_note", "next_action_set_at", "next_action_done_at"]


def schedule_next_action(
    opportunity: TrackedOpportunity, due_at: datetime, *, now: datetime, note: str = ""
) -> TrackedOpportunity:
    """Set the dated next step; it must lie in the future (a past date is not a plan)."""
    if due_at.tzinfo is None or due_at.utcoffset() is None:
        raise ValidationError({"due_at": _("A timezone-aware datetime is required.")})
    if due_at <= now:
        raise ValidationError({"due_at": _("The next action must be dated in the future.")})
    with transaction.atomic():
        # Under the chain's lock: a concurrent touch's refresh cannot write deadlines from a
        # state that misses this plan, nor this one from a state that misses the touch.
        refresh.lock([opportunity.pk])
        opportunity.next_action_due_at = due_at
        opportunity.next_action_note = note[:255]
        opportunity.next_action_set_at = now
        opportunity.next_action_done_at = None
        opportunity.save(update_fields=[*_FIELDS, "updated_at"])
        refresh.refresh([opportunity.pk], now=now, cause=refresh.Cause(_("next action scheduled")))
    return opportunity


def complete_next_action(opportunity: TrackedOpportunity, *, now: datetime) -> TrackedOpportunity:
    with transaction.atomic():
        refresh.lock([opportunity.pk])
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
