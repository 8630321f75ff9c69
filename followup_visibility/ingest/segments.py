"""Segments set by hand: a person decides which segment an opportunity belongs to."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.utils.translation import gettext as _

from followup_visibility.alerting import refresh
from followup_visibility.choices import SegmentSource
from followup_visibility.ingest import arguments
from followup_visibility.models import Segment, TrackedOpportunity


def set_segment(
    opportunity: TrackedOpportunity, segment: Segment | None, now: datetime
) -> TrackedOpportunity:
    """Pin a segment by hand (rules and the host no longer decide); ``None`` unpins it, and
    the rules, the host's code or the lead decide again."""
    arguments.require_aware(now=now)
    with transaction.atomic():
        arguments.lock_stored({"opportunity": opportunity})
        source = SegmentSource.MANUAL if segment else SegmentSource.NONE
        TrackedOpportunity.objects.filter(pk=opportunity.pk).update(
            segment=segment, segment_source=source
        )
        refresh.refresh(
            [opportunity.pk],
            now=now,
            cause=refresh.Cause(
                _("segment set by hand") if segment else _("segment unpinned"),
                # Unpinned: route it again so that the usual sources decide.
                routing=segment is None,
            ),
        )
    stored = TrackedOpportunity.objects.filter(pk=opportunity.pk).values_list(
        "segment_id", "segment_source", "team_id"
    )
    opportunity.segment_id, opportunity.segment_source, opportunity.team_id = stored.get()
    return opportunity
