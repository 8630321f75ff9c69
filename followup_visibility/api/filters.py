"""Query-parameter filters the API's lists share: times that must carry their offset, keys a
bigint can hold, codes, and numbers of 0 or more, each typed exactly in the schema."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import django_filters
from django import forms
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext_lazy as _
from django_filters.fields import IsoDateTimeField
from drf_spectacular.utils import extend_schema_field

from followup_visibility.api.fields import MAX_KEY


class AwareDateTimeField(IsoDateTimeField):
    """An ISO 8601 time in a query string that must carry its offset (``Z`` or ``%2B02:00``)."""

    default_error_messages = {
        "naive": _("Give the time with its time zone (an offset such as +02:00, or Z)."),
    }

    def to_python(self, value: Any) -> Any:
        if isinstance(value, str):
            try:
                parsed = parse_datetime(value.strip())
            except ValueError:
                parsed = None
            if parsed is not None and timezone.is_naive(parsed):
                raise forms.ValidationError(self.error_messages["naive"], code="naive")
        value = super().to_python(value)
        if value is None:
            return None
        # In UTC: PostgreSQL refuses offsets past 16 hours, which ISO 8601 allows. A time
        # beyond Python's range in UTC compares as that range's end.
        try:
            return value.astimezone(UTC)
        except OverflowError:
            if value.year == 1:
                return datetime.min.replace(tzinfo=UTC)
            return datetime.max.replace(tzinfo=UTC)


class AwareDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = AwareDateTimeField


class KeyField(forms.IntegerField):
    """A row's key: an integer a database key can hold (larger ones are refused, not sent)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(min_value=1, max_value=MAX_KEY, **kwargs)


def typed(filter_: django_filters.Filter, schema: dict[str, Any]) -> None:
    """Give ``filter_`` this exact schema, its ``help_text`` as the description
    (drf-spectacular reads no help text on a filter whose schema is given)."""
    help_text = filter_.extra.get("help_text")
    extend_schema_field({**schema, "description": help_text} if help_text else schema)(filter_)


class KeyFilter(django_filters.NumberFilter):
    """A row's key; one that names no row matches nothing (it is not an error)."""

    field_class = KeyField

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        typed(self, {"type": "integer", "minimum": 1, "maximum": MAX_KEY})


class CodeFilter(django_filters.CharFilter):
    """A code; one that names no row matches nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        typed(self, {"type": "string", "minLength": 1})


class AtLeastZero(django_filters.NumberFilter):
    """A number of 0 or more (days, lengths of an SLA); a negative one is a 400."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, min_value=0, **kwargs)
        typed(self, {"type": "number", "minimum": 0})
