"""Ownership: handoffs, when the CRM moves an owner, and their acceptance."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.db.models import F
from django.utils.translation import gettext as _
from simple_history.utils import bulk_create_with_history, bulk_update_with_history

from followup_visibility.alerting import refresh
from followup_visibility.choices import AcceptedVia, Direction
from followup_visibility.conf import app_settings
from followup_visibility.ingest import arguments
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
    arguments.require_aware(now=now)
    with transaction.atomic():
        arguments.lock_stored({"opportunity": opportunity})
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
        _accept([handoff], now, via=via, touches={handoff.pk: touch}, by=user)
        opportunity.owner_confirmed_at = now
        refresh.refresh(
            [opportunity.pk],
            now=now,
            cause=refresh.Cause(_("handoff accepted"), touches=[touch] if touch else ()),
        )
    return handoff


def accept_by_touches(touches: Sequence[Touch], now: datetime) -> list[Handoff]:
    """The new owners' first meaningful outbound touches accept their pending handoffs.

    For :func:`~followup_visibility.ingest.touches.record_touches`, under the chains' locks and
    before its refresh: a touch by the owner of an opportunity whose ownership is unconfirmed
    accepts the pending handoff to them. One query finds the handoffs, two write them with
    their history and one confirms the owners.
    """
    if not app_settings.ACCEPT_HANDOFF_ON_TOUCH:
        return []
    first: dict[Any, Touch] = {}
    for touch in sorted(touches, key=lambda t: (t.occurred_at, t.pk)):
        if (
            touch.is_meaningful
            and touch.direction == Direction.OUTBOUND
            and touch.actor_id is not None
        ):
            first.setdefault((touch.opportunity_id, touch.actor_id), touch)
    if not first:
        return []
    pending = list(
        Handoff.objects.select_for_update()
        .filter(
            opportunity_id__in={opp for opp, _actor in first},
            accepted_at__isnull=True,
            superseded_at__isnull=True,
            opportunity__owner_confirmed_at__isnull=True,
        )
        .filter(to_owner_id=F("opportunity__owner_id"))
    )
    accepted = [h for h in pending if (h.opportunity_id, h.to_owner_id) in first]
    if accepted:
        _accept(
            accepted,
            now,
            via=AcceptedVia.TOUCH,
            touches={h.pk: first[(h.opportunity_id, h.to_owner_id)] for h in accepted},
        )
    return accepted


def _accept(
    handoffs: Sequence[Handoff],
    now: datetime,
    *,
    via: str,
    touches: Mapping[Any, Touch | None],
    by: Any = None,
) -> None:
    """Mark handoffs accepted (with history), confirm their owners, announce them."""
    for handoff in handoffs:
        handoff.accepted_at = now
        handoff.accepted_via = via
        handoff.accepted_touch = touches.get(handoff.pk)
    user = by if isinstance(by, models.Model) else None
    bulk_update_with_history(
        handoffs,
        Handoff,
        ["accepted_at", "accepted_via", "accepted_touch"],
        default_user=user,
        default_date=now,
    )
    TrackedOpportunity.objects.filter(pk__in=[h.opportunity_id for h in handoffs]).update(
        owner_confirmed_at=now
    )
    for handoff in handoffs:
        send_on_commit(handoff_accepted, Handoff, handoff=handoff)


def pending_handoff(opportunity: TrackedOpportunity) -> Handoff | None:
    return Handoff.objects.filter(
        opportunity=opportunity, accepted_at__isnull=True, superseded_at__isnull=True
    ).first()
