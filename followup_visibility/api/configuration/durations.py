"""The durations of an SLA policy version, one field each, as read and as proposed."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

from followup_visibility.api.fields import JsonDuration
from followup_visibility.models.policy import DURATION_FIELDS

DURATION_HELP = _(
    "Business time: seconds, [DD] HH:MM:SS or ISO 8601 (PT4H); 1 00:00:00 is 24 working hours. "
    "Null: inherit from the broader policy."
)


def duration_fields(**options: Any) -> dict[str, serializers.DurationField]:
    """One field per duration of a version, in ``DURATION_FIELDS``' order."""
    return {
        name: JsonDuration(allow_null=True, help_text=DURATION_HELP, **options)
        for name in DURATION_FIELDS.values()
    }


class Durations(serializers.Serializer[Any]):
    """A version's durations by field (null: inherited from the broader policy)."""

    def get_fields(self) -> dict[str, Any]:
        return {**duration_fields(), **super().get_fields()}
