"""An opportunity's merged timeline as ``touches/`` and ``opportunities/{id}/timeline/`` read it."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers
from rest_framework.response import Response

from followup_visibility.api import base
from followup_visibility.api.fields import MAX_KEY
from followup_visibility.api.register import OwnerSerializer
from followup_visibility.choices import Channel, Direction, Outcome
from followup_visibility.engine.timeline import timeline
from followup_visibility.models import Touch, TrackedOpportunity


class TimelineTouchSerializer(serializers.Serializer[Touch]):
    """A touch as the timeline shows it."""

    id = serializers.IntegerField()
    opportunity = serializers.IntegerField(
        source="opportunity_id", help_text="The record it is on (the lead or the deal)."
    )
    channel = serializers.ChoiceField(choices=Channel.choices)
    direction = serializers.ChoiceField(choices=Direction.choices)
    outcome = serializers.ChoiceField(choices=Outcome.choices)
    occurred_at = serializers.DateTimeField()
    recorded_at = serializers.DateTimeField()
    logging_lag_seconds = serializers.SerializerMethodField(
        help_text="recorded_at - occurred_at, in seconds."
    )
    is_meaningful = serializers.BooleanField()
    meaningful_reason = serializers.CharField(help_text="Why it counted, or did not.")
    source = serializers.CharField()  # type: ignore[assignment]
    external_id = serializers.CharField()
    contact = serializers.CharField(help_text="The phone or email it was posted with.")
    actor = OwnerSerializer(allow_null=True)
    summary = serializers.CharField()
    metadata = serializers.DictField()

    def get_logging_lag_seconds(self, touch: Touch) -> float:
        return touch.logging_lag.total_seconds()


class Oldest(base.Page):
    """A timeline in the customer's order, oldest first."""

    ordering = ("occurred_at", "id")  # type: ignore[assignment]


class TimelineQuerySerializer(serializers.Serializer[Any]):
    """The query of ``GET touches/``."""

    opportunity = serializers.IntegerField(
        min_value=1, max_value=MAX_KEY, help_text="The opportunity whose timeline to read."
    )


def timeline_response(view: base.ApiViewSet, opportunity: TrackedOpportunity) -> Response:
    """A page of ``opportunity``'s merged timeline (its lead and deal, and the touches of
    duplicates merged into them), oldest first."""
    page = view.paginate_queryset(timeline(opportunity).select_related("actor"))
    assert page is not None
    data = TimelineTouchSerializer(page, many=True).data  # type: ignore[arg-type]
    return view.get_paginated_response(data)
