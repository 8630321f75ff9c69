"""Merging duplicate opportunities into one timeline."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.translation import gettext as _
from simple_history.utils import update_change_reason

from followup_visibility.alerting import refresh
from followup_visibility.choices import Status
from followup_visibility.ingest import arguments, identities
from followup_visibility.models import Touch, TrackedOpportunity
from followup_visibility.signals import opportunities_merged, send_on_commit


def merge_opportunities(
    duplicate: TrackedOpportunity,
    survivor: TrackedOpportunity,
    *,
    now: datetime,
    by: Any = None,
    reason: str = "",
) -> TrackedOpportunity:
    """Fold ``duplicate``'s timeline into ``survivor``; the duplicate stays, marked merged.

    The host rows are left alone (the CRM stays the system of record). The duplicate's contact
    identities stay on it, and touches matched through them are redirected to the survivor.
    """
    arguments.require_aware(now=now)
    if duplicate.pk is not None and duplicate.pk == survivor.pk:
        raise ValidationError(_("An opportunity cannot be merged into itself."), code="self")
    with transaction.atomic():
        # Lock both chains in key order, as every writer does: two opposite merges wait.
        arguments.lock_stored({"duplicate": duplicate, "survivor": survivor})
        locked = TrackedOpportunity.objects.in_bulk([duplicate.pk, survivor.pk])
        duplicate, survivor = locked[duplicate.pk], locked[survivor.pk]
        if survivor.status != Status.OPEN:
            raise ValidationError(
                _("Cannot merge into %(survivor)s: it is %(status)s, not open.")
                % {"survivor": survivor, "status": survivor.get_status_display().lower()},
                code="survivor_closed",
            )
        if duplicate.status == Status.MERGED:
            raise ValidationError(
                _("%(duplicate)s was already merged.") % {"duplicate": duplicate},
                code="already_merged",
            )
        if duplicate.tenant != survivor.tenant:
            # Two companies' records (tenants): one's touches must not move to the other's.
            raise ValidationError(
                _("%(duplicate)s and %(survivor)s belong to different companies.")
                % {"duplicate": duplicate, "survivor": survivor},
                code="other_tenant",
            )
        if TrackedOpportunity.objects.filter(chain_root=duplicate).exists():
            # Its touches are part of its deals' timelines; moving them would blank those.
            raise ValidationError(
                _("%(duplicate)s continues as a deal: merge the deal instead.")
                % {"duplicate": duplicate},
                code="has_successors",
            )
        Touch.objects.filter(opportunity=duplicate).update(opportunity=survivor)
        TrackedOpportunity.objects.filter(merged_into=duplicate).update(merged_into=survivor)
        duplicate.status = Status.MERGED
        duplicate.merged_into = survivor
        duplicate.merged_at = now
        duplicate.closed_at = duplicate.closed_at or now
        duplicate._history_user = by  # type: ignore[attr-defined]
        duplicate._history_date = now  # type: ignore[attr-defined]
        duplicate.save()
        update_change_reason(duplicate, reason or _("merged into %s") % survivor.pk)
        identities.clear_duplicates([duplicate.pk], now)
        refresh.refresh(
            [duplicate.pk, survivor.pk],
            now=now,
            # The duplicate's touches are the survivor's now: fold its timeline again.
            cause=refresh.Cause(_("merged duplicates"), timeline=True, identities=True),
        )
        survivor.refresh_from_db()
        send_on_commit(
            opportunities_merged, TrackedOpportunity, survivor=survivor, merged=duplicate
        )
    return survivor
