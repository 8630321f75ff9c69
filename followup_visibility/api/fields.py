"""Fields and values the API's modules share: JSON values held to their type, strict query
booleans, the keys a path or a body may name, and severities by name."""

from __future__ import annotations

from typing import Any

import django_filters
from django import forms
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

from followup_visibility.choices import Severity

#: A key in a path: anything else (or beyond a bigint) is the API's 404, not a database error.
KEY = r"[0-9]{1,18}"
#: The largest key a client may name (a bigint); larger ones are refused as input, not sent
#: to the database.
MAX_KEY = 2**63 - 1
#: Severity by name, as every response and filter names it (one enum in the schema).
SEVERITY_NAMES = {s.name.lower(): s for s in Severity}


def severity_name(value: int | None) -> str | None:
    """A severity as the API names it (``"high"``); ``None`` for an alert not yet due."""
    return Severity(value).name.lower() if value is not None else None


class JsonTyped:
    """A body field that refuses a JSON value of another type (``"5"`` for 5, ``0`` for
    false) instead of converting it, so that what it accepts is what the schema says."""

    json_types: tuple[type, ...] = ()

    def to_internal_value(self, data: Any) -> Any:
        if (isinstance(data, bool) and bool not in self.json_types) or not isinstance(
            data, self.json_types
        ):
            self.fail("invalid")  # type: ignore[attr-defined]
        return super().to_internal_value(data)  # type: ignore[misc]


class JsonBoolean(JsonTyped, serializers.BooleanField):
    json_types = (bool,)


class JsonInteger(JsonTyped, serializers.IntegerField):
    json_types = (int,)


class JsonNumber(JsonTyped, serializers.FloatField):
    json_types = (int, float)


class JsonString(JsonTyped, serializers.CharField):
    json_types = (str,)


class JsonDuration(JsonTyped, serializers.DurationField):
    json_types = (str,)
    default_error_messages = {
        "invalid": _("Give a duration as text: [DD] HH:MM:SS, or ISO 8601 such as PT4H.")
    }


class StrictBooleanField(forms.NullBooleanField):
    """``true``/``false`` (or ``1``/``0``); anything else is an error, not "no filter"."""

    widget = forms.TextInput
    default_error_messages = {"invalid": _("Give true or false.")}

    def to_python(self, value: Any) -> bool | None:  # type: ignore[override]
        if value in (None, ""):
            return None
        if str(value).lower() in ("true", "1"):
            return True
        if str(value).lower() in ("false", "0"):
            return False
        raise ValidationError(self.error_messages["invalid"], code="invalid")


class StrictBooleanFilter(django_filters.BooleanFilter):
    """A boolean query parameter that refuses a value it cannot read (400)."""

    field_class = StrictBooleanField
