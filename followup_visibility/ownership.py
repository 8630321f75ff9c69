"""Ownership: handoffs and their acceptance."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.utils.translation import gettext as _
from simple_history.utils import bulk_create_with_history, bulk_update_with_history

from followup_visibility import alerts, deadlines
from followup_visibility.choices import AcceptedVia
from followup_visibility.models import Handoff, Touch, TrackedOpportunity
from followup_visibility.signals import handoff_accepted, send_on_commit


def record_owner_changes(
    changes: Iterable[tuple[TrackedOpportunity, Any, Any]],
    now: datetime,
    *,
    confirmed: bool = False,
    by: Any = None,
) -> list[Handoff]:
    """Supersede pending handoffs and open one per ``(opportunity, old owner, new owner)``.

    With ``confirmed`` (backfill of owners that predate the app) the handoff is stored as
    accepted. Moving to no owner opens no handoff: "no owner" is its own signal.
    """
    changes = list(changes)
    if not changes:
        return []
    superseded = list(
        Handoff.objects.filter(
            opportunity__in=[opp for opp, _old, _new in changes],
            accepted_at__isnull=True,
            superseded_at__isnull=True,
        )
    )
    for handoff in superseded:
        handoff.superseded_at = now
    if superseded:
        bulk_update_with_history(
            superseded, Handoff, ["superseded_at"], default_user=by, default_date=now
        )
    handoffs = [
        Handoff(
            opportunity=opp,
            from_owner_id=old,
            to_owner_id=new,
            handed_at=now,
            accepted_at=now if confirmed else None,
            accepted_via=AcceptedVia.BACKFILL if confirmed else "",
            created_by=by,
        )
        for opp, old, new in changes
        if new is not None
    ]
    created: list[Handoff] = bulk_create_with_history(
        handoffs, Handoff, default_user=by, default_date=now
    )
    return created


def accept_handoff(
    opportunity: TrackedOpportunity,
    user: Any,
    now: datetime,
    *,
    via: str = AcceptedVia.EXPLICIT,
    touch: Touch | None = None,
) -> Handoff:
    """The owner confirms they own the opportunity. Only the handoff's recipient may accept."""
    with transaction.atomic():
        handoff = (
            Handoff.objects.select_for_update()
            .filter(opportunity=opportunity, accepted_at__isnull=True, superseded_at__isnull=True)
            .first()
        )
        if handoff is None:
            raise ValidationError(_("There is no pending handoff to accept."), code="no_handoff")
        if handoff.to_owner_id != getattr(user, "pk", user):
            raise ValidationError(
                _("Only the new owner can accept this handoff."), code="not_recipient"
            )
        handoff.accepted_at = now
        handoff.accepted_via = via
        handoff.accepted_touch = touch
        handoff._history_date = now  # type: ignore[attr-defined]
        if isinstance(user, models.Model):
            handoff._history_user = user  # type: ignore[attr-defined]
        handoff.save(update_fields=["accepted_at", "accepted_via", "accepted_touch"])
        TrackedOpportunity.objects.filter(pk=opportunity.pk).update(owner_confirmed_at=now)
        opportunity.owner_confirmed_at = now
        deadlines.recompute(
            [opportunity.pk],
            now,
            cause=alerts.Cause(_("handoff accepted"), touch),
        )
        send_on_commit(handoff_accepted, Handoff, handoff=handoff)
    return handoff


def pending_handoff(opportunity: TrackedOpportunity) -> Handoff | None:
    return Handoff.objects.filter(
        opportunity=opportunity, accepted_at__isnull=True, superseded_at__isnull=True
    ).first()
