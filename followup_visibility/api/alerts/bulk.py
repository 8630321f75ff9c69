"""``alerts/bulk/``: one action on many alerts, by ids or by the list's filters."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import QuerySet
from django.http import QueryDict
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions, serializers
from rest_framework.request import Request

from followup_visibility.api import base
from followup_visibility.api.alerts.actions import ACTIONS, Action, about_input, refusal
from followup_visibility.api.alerts.filters import AlertFilter
from followup_visibility.api.fields import MAX_KEY, SEVERITY_NAMES, JsonInteger, JsonString
from followup_visibility.choices import AlertSignal, AlertStatus
from followup_visibility.models import Alert


class BulkFilter(base.Strict):
    """The list's filters, as an object (a multiple filter takes a list)."""

    signal = serializers.ListField(
        child=serializers.ChoiceField(AlertSignal.choices), required=False
    )
    severity = serializers.ListField(
        child=serializers.ChoiceField(list(SEVERITY_NAMES)), required=False
    )
    status = serializers.ListField(
        child=serializers.ChoiceField(AlertStatus.choices), required=False
    )
    team = JsonInteger(min_value=1, max_value=MAX_KEY, required=False)
    owner = JsonInteger(min_value=1, max_value=MAX_KEY, required=False)
    segment = JsonString(required=False)
    raised_after = base.Aware(required=False)
    raised_before = base.Aware(required=False)
    due_after = base.Aware(required=False)
    due_before = base.Aware(required=False)


class Targets(base.Strict):
    """Which alerts a bulk action is for: ``ids``, or a ``filter``."""

    ids = serializers.ListField(
        child=JsonInteger(min_value=1, max_value=MAX_KEY),
        required=False,
        allow_empty=False,
        help_text=_("At most FOLLOWUP_VISIBILITY_API_MAX_BATCH (1000) ids."),
    )
    filter = BulkFilter(required=False, help_text=_("The list's filters, as an object."))

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("ids" in attrs) == ("filter" in attrs):
            raise exceptions.ValidationError(
                {"non_field_errors": [_("Give either ids or filter.")]}
            )
        result: dict[str, Any] = super().validate(attrs)
        return result


def _bulk_request(name: str, params: type[base.Strict]) -> type[base.Strict]:
    attrs = {
        "action": serializers.ChoiceField(choices=[name]),
        "__module__": __name__,
        "__doc__": f"``{name}`` on many alerts: the action's parameters, and ids or a filter.",
    }
    made: type[base.Strict] = type(f"Bulk{name.title()}", (Targets, params), attrs)
    return made


BULK_REQUESTS = {name: _bulk_request(name, spec.request) for name, spec in ACTIONS.items()}


class BulkAction(serializers.Serializer[Any]):
    action = serializers.ChoiceField(choices=list(ACTIONS))


class BulkResult(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    result = serializers.ChoiceField(choices=["done", "refused", "not_found"])
    detail = serializers.CharField(help_text=_("Why it was refused or not found; empty if done."))


class BulkResponse(serializers.Serializer[Any]):
    action = serializers.ChoiceField(choices=list(ACTIONS))
    done = serializers.IntegerField()
    refused = serializers.IntegerField()
    not_found = serializers.IntegerField()
    results = BulkResult(many=True)


def _as_query(data: Mapping[str, Any]) -> QueryDict:
    """A filter object as the query string the list endpoint reads."""
    query = QueryDict(mutable=True)
    for name, value in data.items():
        values = value if isinstance(value, list) else [value]
        query.setlist(name, [str(v) for v in values])
    return query


def matching_ids(scoped: QuerySet[Alert], request: Request, limit: int) -> list[int]:
    """The ids of the alerts a bulk ``filter`` matches (as the list filters); 413 past
    ``limit``."""
    filterset = AlertFilter(_as_query(request.data["filter"]), queryset=scoped, request=request)
    if not filterset.is_valid():
        raise exceptions.ValidationError({"filter": filterset.errors})
    ids: list[int] = list(filterset.qs.order_by("pk").values_list("pk", flat=True)[: limit + 1])
    if len(ids) > limit:
        raise base.PayloadTooLarge(
            _("The filter matches more than %(max)d alerts: at most %(max)d in one request.")
            % {"max": limit}
        )
    return ids


def perform_in_groups(
    spec: Action, alerts: list[Alert], data: Mapping[str, Any], by: Any, now: datetime
) -> dict[int, tuple[str, str]]:
    """Call the action once per group; each call commits or rolls back on its own."""
    groups: dict[Hashable, list[Alert]] = {}
    for alert in alerts:
        groups.setdefault(spec.group(alert, data), []).append(alert)
    outcomes: dict[int, tuple[str, str]] = {}
    done = False
    for members in groups.values():
        try:
            spec.perform(members[0], data, by, now)
        except DjangoValidationError as exc:
            # The domain's checks of the parameters are the same for every item: refused on
            # the first one tried, they are a 400 and nothing was done.
            if not done and about_input(exc, spec):
                raise
            outcome = ("refused", refusal(exc))
        else:
            done, outcome = True, ("done", "")
        for alert in members:
            outcomes[alert.pk] = outcome
    return outcomes
