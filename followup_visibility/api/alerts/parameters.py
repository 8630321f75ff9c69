"""What each action on an alert takes: its request body."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions, serializers

from followup_visibility.api import base
from followup_visibility.api.alerts.serializers import SNOOZE_CONDITIONS
from followup_visibility.api.fields import MAX_KEY, JsonDuration, JsonInteger, JsonString
from followup_visibility.ingest import ownership

#: Suppress only the alert's signal on its opportunity, or every signal of the opportunity.
SUPPRESS_SIGNAL, SUPPRESS_ALL = "signal", "all"


class Acknowledge(base.Strict):
    """Nothing: acknowledging takes no parameters."""


class Snooze(base.Strict):
    """``until`` a time, ``for`` a duration, or until a ``condition`` (which ``until`` or
    ``for`` may limit; without either, ``FOLLOWUP_VISIBILITY_SNOOZE_MAX``); and why."""

    until = base.Aware(
        required=False, help_text=_("The end of the snooze (with a condition: its latest end).")
    )
    condition = serializers.ChoiceField(
        choices=SNOOZE_CONDITIONS,
        required=False,
        help_text=_("End the snooze early when this happens."),
    )
    reason = JsonString(max_length=255)

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        fields = super().get_fields()
        # ``for`` is a Python keyword: it cannot be declared as a class attribute.
        fields["for"] = JsonDuration(
            required=False,
            help_text=_(
                "How long, instead of until, as text: ISO 8601 (PT4H, P2D) or [DD] [HH:[MM:]]ss."
            ),
        )
        return fields

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        span: timedelta | None = attrs.pop("for", None)
        if span is not None and attrs.get("until") is not None:
            raise exceptions.ValidationError({"for": [_("Give until or for, not both.")]})
        if span is None and attrs.get("until") is None and not attrs.get("condition"):
            raise exceptions.ValidationError(
                {"until": [_("Say until when: give until, for, or a condition.")]}
            )
        if span is not None:
            if span <= timedelta(0):
                raise exceptions.ValidationError({"for": [_("Give a positive duration.")]})
            try:
                attrs["until"] = self.context["now"] + span
            except OverflowError as exc:
                raise exceptions.ValidationError({"for": [_("Give a shorter duration.")]}) from exc
            attrs["span"] = span
        return attrs


class Dismiss(base.Strict):
    """Why nothing needs to be done about this episode."""

    reason = JsonString(max_length=255)


class Resolve(base.Strict):
    """The evidence that the problem is solved."""

    evidence = JsonString(
        max_length=255, help_text=_("What was done (the CRM may not show it yet).")
    )


class Reassign(base.Strict):
    """The opportunity's new owner."""

    owner = JsonInteger(
        min_value=1,
        max_value=MAX_KEY,
        help_text=_("The new owner's user id: yourself or someone in a team you manage."),
    )

    def validate_owner(self, value: int) -> Any:
        try:
            return ownership.find_target(self.context["request"].user, value)
        except DjangoValidationError as exc:
            raise exceptions.ValidationError(exc.messages) from exc


class Suppress(base.Strict):
    """A suppression rule for the alert's opportunity: why, until when, and which signals."""

    comment = JsonString(
        max_length=255, help_text=_("Why nobody should be alerted; shown on the rule.")
    )
    ends_at = base.Aware(
        required=False, allow_null=True, help_text=_("Empty: until someone ends the rule.")
    )
    scope = serializers.ChoiceField(
        choices=[
            (SUPPRESS_SIGNAL, _("Only the alert's signal on its opportunity")),
            (SUPPRESS_ALL, _("Every signal on the opportunity")),
        ],
        default=SUPPRESS_SIGNAL,
    )
