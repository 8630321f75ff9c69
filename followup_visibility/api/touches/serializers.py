"""What ``POST touches/`` takes (one touch, or a batch) and what it answers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.utils.translation import gettext as _
from drf_spectacular.utils import PolymorphicProxySerializer
from rest_framework import serializers
from rest_framework.exceptions import ValidationError

from followup_visibility.api import base
from followup_visibility.api.fields import MAX_KEY, JsonInteger, JsonString
from followup_visibility.api.touches.timeline import TimelineTouchSerializer
from followup_visibility.choices import Channel, Direction, Outcome

#: What became of each posted touch.
STATUSES = ("created", "repeat", "conflict")
#: ``source`` of a touch posted without one.
DEFAULT_SOURCE = "api"


class HostObjectInputSerializer(base.Strict):
    """A host object of a tracked model."""

    model = JsonString(
        max_length=200, help_text="A tracked host model as `app_label.model`, e.g. `crm.lead`."
    )
    pk = JsonString(max_length=64, help_text="The host object's primary key, as text.")


class TouchInputSerializer(base.Strict):
    """One touch. Its target is ``opportunity`` or ``object``; without either, ``phone`` or
    ``email`` finds the open opportunity with that contact (and is kept as the contact)."""

    channel = serializers.ChoiceField(choices=Channel.choices)
    direction = serializers.ChoiceField(choices=Direction.choices)
    outcome = serializers.ChoiceField(choices=Outcome.choices, required=False, default="")
    occurred_at = base.Aware(help_text="When it happened (the customer's clock), with offset.")
    recorded_at = base.Aware(
        required=False, help_text="When it was logged; the request's time by default."
    )
    source = JsonString(  # type: ignore[assignment]
        max_length=50,
        required=False,
        default=DEFAULT_SOURCE,
        help_text="The system it came from; with `external_id`, the key of idempotency.",
    )
    external_id = JsonString(max_length=255, required=False, allow_blank=True, default="")
    summary = JsonString(required=False, allow_blank=True, default="")
    metadata = serializers.DictField(required=False, default=dict)
    opportunity = JsonInteger(
        required=False, min_value=1, max_value=MAX_KEY, help_text="A tracked opportunity's id."
    )
    object = HostObjectInputSerializer(required=False, help_text="A host object instead.")
    phone = JsonString(required=False, allow_blank=True, max_length=64)
    email = JsonString(required=False, allow_blank=True, max_length=255)
    actor = JsonInteger(
        required=False,
        allow_null=True,
        min_value=1,
        max_value=MAX_KEY,
        help_text="Who made the touch: you by default; someone you manage (anyone, if you see "
        "every opportunity); null for nobody.",
    )

    def validate_metadata(self, value: dict[str, Any]) -> dict[str, Any]:
        if _holds_nul(value):
            # PostgreSQL's jsonb cannot store it; refused here rather than by the database.
            raise ValidationError(_("Null characters are not allowed."))
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "opportunity" in attrs and "object" in attrs:
            raise ValidationError({"object": [_("Give an opportunity or an object, not both.")]})
        if not any(attrs.get(name) for name in ("opportunity", "object", "phone", "email")):
            raise ValidationError(
                {"target": [_("Give an opportunity, an object, a phone or an email.")]}
            )
        return attrs


def _holds_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, Mapping):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    return False


class TouchBatchInputSerializer(base.Strict):
    """A batch of touches: validated whole, written whole or not at all."""

    touches = TouchInputSerializer(
        many=True, help_text="At most FOLLOWUP_VISIBILITY_API_MAX_BATCH touches."
    )


class BatchItemSerializer(serializers.Serializer[Any]):
    """What became of one touch of a batch."""

    index = serializers.IntegerField(help_text="The item's place in `touches`, from 0.")
    status = serializers.ChoiceField(choices=STATUSES)
    id = serializers.IntegerField(
        allow_null=True,
        help_text="The stored touch (the earlier one, for a repeat); null when that one is on "
        "an opportunity outside your scope.",
    )
    opportunity = serializers.IntegerField(allow_null=True)
    differs = serializers.ListField(
        child=serializers.CharField(),
        help_text="For a conflict: the fields in which it differs from the stored touch "
        "(`opportunity` when that one is outside your scope).",
    )


class TouchBatchResultSerializer(serializers.Serializer[Any]):
    """What became of each touch of a batch, in order, with the counts."""

    created = serializers.IntegerField()
    repeats = serializers.IntegerField()
    conflicts = serializers.IntegerField()
    results = BatchItemSerializer(many=True)


TOUCH_POST = PolymorphicProxySerializer(
    component_name="TouchPost",
    serializers=[TouchInputSerializer, TouchBatchInputSerializer],
    resource_type_field_name=None,
)
TOUCH_POSTED = PolymorphicProxySerializer(
    component_name="TouchPosted",
    serializers=[TimelineTouchSerializer, TouchBatchResultSerializer],
    resource_type_field_name=None,
)
