"""``alerts/``: the alert queue, the triage actions on one alert, and the same actions in bulk.

Every write goes through the domain function that owns it: the lifecycle for acknowledge,
snooze, dismiss and resolve, ``ingest.ownership`` for reassign, ``config.suppressions`` for
suppress. A refusal about the input is a 400 naming the field; a refusal because of the
alert's (or its opportunity's) state, such as acknowledging a resolved alert, is a 409. In
bulk each alert (each opportunity, for reassign and suppress) is its own transaction: one
refused item never undoes the others, and the response reports each item (docs/api.md).
"""

from __future__ import annotations

import binascii
from base64 import b64decode, b64encode
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib import parse

import django_filters
from django import forms
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import F, Q, QuerySet, Value
from django.db.models.functions import Coalesce
from django.http import QueryDict
from django.shortcuts import get_object_or_404
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext_lazy as _
from django_filters.fields import IsoDateTimeField
from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema_field
from rest_framework import exceptions, serializers
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param

from followup_visibility.alerting import lifecycle
from followup_visibility.api import base
from followup_visibility.api.errors import responses
from followup_visibility.choices import (
    ACTIVE_ALERT_STATUSES,
    REASON_OF_SIGNAL,
    AlertSignal,
    AlertStatus,
    Reason,
    Resolution,
    Severity,
    SnoozeCondition,
)
from followup_visibility.conf import app_settings
from followup_visibility.config import suppressions
from followup_visibility.engine import access, severity, teams
from followup_visibility.ingest import ownership
from followup_visibility.models import Alert

SEVERITY_NAMES = {s.name.lower(): s for s in Severity}
SNOOZE_CONDITIONS = [
    (SnoozeCondition.CUSTOMER_REPLIES.value, SnoozeCondition.CUSTOMER_REPLIES.label),
    (SnoozeCondition.STAGE_CHANGES.value, SnoozeCondition.STAGE_CHANGES.label),
]
#: Suppress only the alert's signal on its opportunity, or every signal of the opportunity.
SUPPRESS_SIGNAL, SUPPRESS_ALL = "signal", "all"
#: The related rows one alert is shown with (one query per page).
RELATED = ("opportunity__owner", "opportunity__team", "opportunity__segment", "acknowledged_by")

# Filters -------------------------------------------------------------------------------------


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
        super().__init__(min_value=1, max_value=2**63 - 1, **kwargs)


@extend_schema_field({"type": "integer", "minimum": 1, "maximum": 2**63 - 1})
class KeyFilter(django_filters.NumberFilter):
    """A row's key; one that names no row matches nothing (it is not an error)."""

    field_class = KeyField


@extend_schema_field({"type": "string", "minLength": 1})
class CodeFilter(django_filters.CharFilter):
    """A code; one that names no row matches nothing."""


class AlertFilter(django_filters.FilterSet):
    """The list's filters; ``bulk/`` takes the same names as its ``filter`` object."""

    # ``distinct=False``: no join repeats an alert, and DISTINCT would sort the whole queue.
    signal = django_filters.MultipleChoiceFilter(choices=AlertSignal.choices, distinct=False)
    severity = django_filters.MultipleChoiceFilter(
        choices=[(name, name) for name in SEVERITY_NAMES], method="with_severity", distinct=False
    )
    status = django_filters.MultipleChoiceFilter(
        choices=AlertStatus.choices,
        distinct=False,
        help_text=_("Default: the active statuses (open, acknowledged, snoozed, suppressed)."),
    )
    team = KeyFilter(method="in_team", help_text=_("A team's id: it and the teams below it."))
    owner = KeyFilter(field_name="opportunity__owner_id", help_text=_("A user's id."))
    segment = CodeFilter(field_name="opportunity__segment__code", help_text=_("A segment's code."))
    raised_after = AwareDateTimeFilter(field_name="raised_at", lookup_expr="gte")
    raised_before = AwareDateTimeFilter(field_name="raised_at", lookup_expr="lt")
    due_after = AwareDateTimeFilter(field_name="due_at", lookup_expr="gte")
    due_before = AwareDateTimeFilter(field_name="due_at", lookup_expr="lt")

    class Meta:
        model = Alert
        fields: list[str] = []

    def is_valid(self) -> bool:
        valid: bool = super().is_valid()
        # A parameter given empty (``?due_before=``) is a mistake, not "no filter".
        for name in self.filters:
            values = self.data.getlist(name) if hasattr(self.data, "getlist") else []
            if "" in values:
                self.form.add_error(name, _("Give a value, or leave the parameter out."))
                valid = False
        return valid

    def filter_queryset(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        queryset = super().filter_queryset(queryset)
        if not self.form.cleaned_data.get("status"):
            # Closed episodes are the history, not the queue.
            queryset = queryset.filter(status__in=ACTIVE_ALERT_STATUSES)
        return queryset

    def in_team(self, queryset: QuerySet[Any], name: str, value: int) -> QuerySet[Any]:
        return queryset.filter(opportunity__team__in=teams.with_subteams([value]))

    def with_severity(self, queryset: QuerySet[Any], name: str, value: list[str]) -> QuerySet[Any]:
        if not value:
            return queryset
        # On the annotation ``get_queryset`` adds: severity is derived, never stored.
        return queryset.filter(Q(severity__in=[int(SEVERITY_NAMES[v]) for v in value]))


# Pages ---------------------------------------------------------------------------------------

#: (rank, due_at, pk): the rank is the severity, 0 for an alert not yet due.
Position = tuple[int, datetime, int]
FORWARD = ("-fv_rank", "due_at", "pk")
BACKWARD = ("fv_rank", "-due_at", "-pk")


class BySeverity(base.Page):
    """Keyset pages: most severe first (not yet due last), then the earliest due, then the key.

    DRF's cursor keeps the first ordering field and an offset among equal values; severity
    has five values, so the offset would grow with the queue. The cursor here carries the
    whole key instead, and each page is one query whatever its depth.
    """

    def paginate_queryset(
        self, queryset: QuerySet[Any], request: Request, view: Any = None
    ) -> list[Any]:
        self.request = request
        self.page_size = size = self.get_page_size(request) or self.page_size
        self.base_url = url = request.build_absolute_uri()
        self.url = url
        reverse, position = self._decode(request)
        queryset = queryset.annotate(fv_rank=Coalesce(F("severity"), Value(0)))
        if position is not None:
            queryset = queryset.filter(_before(position) if reverse else _after(position))
        rows = list(queryset.order_by(*(BACKWARD if reverse else FORWARD))[: size + 1])
        more = len(rows) > size
        page = rows[:size]
        if reverse:
            page.reverse()
            self.has_next, self.has_previous = position is not None, more
        else:
            self.has_next, self.has_previous = more, position is not None
        self.page = page
        self.display_page_controls = self.has_next or self.has_previous
        return page

    def get_next_link(self) -> str | None:
        if not self.has_next:
            return None
        if not self.page:
            # Nothing before the cursor's row: the first page starts with it.
            return remove_query_param(self.url, self.cursor_query_param)
        return self._link(False, _key(self.page[-1]))

    def get_previous_link(self) -> str | None:
        if not self.has_previous:
            return None
        if not self.page:
            # Nothing after the cursor's row: the last page ends with it.
            return self._link(True, None)
        return self._link(True, _key(self.page[0]))

    def _link(self, reverse: bool, position: Position | None) -> str:
        tokens = {"r": "1"} if reverse else {}
        if position is not None:
            rank, due_at, pk = position
            tokens["p"] = f"{rank}|{due_at.isoformat()}|{pk}"
        encoded = b64encode(parse.urlencode(tokens).encode("ascii")).decode("ascii")
        return replace_query_param(self.url, self.cursor_query_param, encoded)

    def _decode(self, request: Request) -> tuple[bool, Position | None]:
        encoded = request.query_params.get(self.cursor_query_param)
        if encoded is None:
            return False, None
        try:
            tokens = parse.parse_qs(b64decode(encoded.encode("ascii"), validate=True).decode())
            reverse = tokens.get("r", ["0"])[0] == "1"
            raw = tokens.get("p", [None])[0]
            if raw is None:
                return reverse, None
            raw_rank, raw_due, raw_pk = raw.split("|")
            rank, due, pk = (int(raw_rank), datetime.fromisoformat(raw_due), int(raw_pk))
            if timezone.is_naive(due) or rank not in range(5) or not 0 < pk < 2**63:
                raise ValueError(raw)
            return reverse, (rank, due, pk)
        except (ValueError, UnicodeError, binascii.Error, OverflowError) as exc:
            raise base.invalid_cursor() from exc


def _key(alert: Any) -> Position:
    return (alert.fv_rank, alert.due_at, alert.pk)


def _after(position: Position) -> Q:
    rank, due_at, pk = position
    return (
        Q(fv_rank__lt=rank)
        | Q(fv_rank=rank, due_at__gt=due_at)
        | Q(fv_rank=rank, due_at=due_at, pk__gt=pk)
    )


def _before(position: Position) -> Q:
    rank, due_at, pk = position
    return (
        Q(fv_rank__gt=rank)
        | Q(fv_rank=rank, due_at__lt=due_at)
        | Q(fv_rank=rank, due_at=due_at, pk__lt=pk)
    )


# What an alert looks like ---------------------------------------------------------------------


class UserRef(serializers.Serializer[Any]):
    id = serializers.IntegerField(source="pk")
    username = serializers.CharField(source="get_username")
    name = serializers.CharField(source="get_full_name")


class OpportunityRef(serializers.Serializer[Any]):
    id = serializers.IntegerField(source="pk")
    title = serializers.CharField(source="__str__")


class TeamRef(serializers.Serializer[Any]):
    id = serializers.IntegerField(source="pk")
    name = serializers.CharField()


class SegmentRef(serializers.Serializer[Any]):
    code = serializers.CharField()
    name = serializers.CharField()


def _blank_as_null(value: str) -> str | None:
    return value or None


class AlertSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField(source="pk")
    opportunity = OpportunityRef()
    signal = serializers.ChoiceField(choices=AlertSignal.choices)
    reason = serializers.SerializerMethodField(help_text=_("The signal's reason code."))
    status = serializers.ChoiceField(choices=AlertStatus.choices)
    severity = serializers.SerializerMethodField(
        help_text=_("Derived now from the lateness; null while the alert is not yet due.")
    )
    due_at = serializers.DateTimeField()
    raised_at = serializers.DateTimeField()
    episode_at = serializers.DateTimeField(help_text=_("When the episode's clock started."))
    sla_seconds = serializers.SerializerMethodField(help_text=_("The SLA, in business seconds."))
    escalation_level = serializers.IntegerField()
    acknowledged_at = serializers.DateTimeField(allow_null=True)
    acknowledged_by = UserRef(allow_null=True)
    snoozed_at = serializers.DateTimeField(allow_null=True)
    snoozed_until = serializers.DateTimeField(allow_null=True)
    snooze_condition = serializers.SerializerMethodField(
        help_text=_("What ends the snooze early; null: only the time.")
    )
    snooze_reason = serializers.CharField()
    dismissed_at = serializers.DateTimeField(allow_null=True)
    dismissed_reason = serializers.CharField()
    resolved_at = serializers.DateTimeField(allow_null=True)
    resolution = serializers.SerializerMethodField()
    resolution_note = serializers.CharField()
    owner = UserRef(source="opportunity.owner", allow_null=True)
    team = TeamRef(source="opportunity.team", allow_null=True)
    segment = SegmentRef(source="opportunity.segment", allow_null=True)

    @extend_schema_field(serializers.ChoiceField(choices=Reason.choices))
    def get_reason(self, alert: Alert) -> str:
        return REASON_OF_SIGNAL[alert.signal]

    @extend_schema_field(serializers.ChoiceField(choices=list(SEVERITY_NAMES), allow_null=True))
    def get_severity(self, alert: Any) -> str | None:
        value = getattr(alert, "severity", None)
        return Severity(value).name.lower() if value is not None else None

    def get_sla_seconds(self, alert: Alert) -> int:
        return int(alert.sla.total_seconds())

    @extend_schema_field(serializers.ChoiceField(choices=SNOOZE_CONDITIONS, allow_null=True))
    def get_snooze_condition(self, alert: Alert) -> str | None:
        return _blank_as_null(alert.snooze_condition)

    @extend_schema_field(
        serializers.ChoiceField(
            choices=[(Resolution.AUTO.value, Resolution.AUTO.label)]
            + [(Resolution.MANUAL.value, Resolution.MANUAL.label)],
            allow_null=True,
        )
    )
    def get_resolution(self, alert: Alert) -> str | None:
        return _blank_as_null(alert.resolution)


# What each action takes ------------------------------------------------------------------------


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
    reason = serializers.CharField(max_length=255)

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        fields = super().get_fields()
        # ``for`` is a Python keyword: it cannot be declared as a class attribute.
        fields["for"] = serializers.DurationField(
            required=False,
            help_text=_(
                "How long, instead of until: ISO 8601 (PT4H, P2D) or [DD] [HH:[MM:]]ss[.uuuuuu]."
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

    reason = serializers.CharField(max_length=255)


class Resolve(base.Strict):
    """The evidence that the problem is solved."""

    evidence = serializers.CharField(
        max_length=255, help_text=_("What was done (the CRM may not show it yet).")
    )


class Reassign(base.Strict):
    """The opportunity's new owner."""

    owner = serializers.IntegerField(
        min_value=1,
        max_value=2**63 - 1,
        help_text=_("The new owner's user id: yourself or someone in a team you manage."),
    )

    def validate_owner(self, value: int) -> Any:
        try:
            return ownership.find_target(self.context["request"].user, value)
        except DjangoValidationError as exc:
            raise exceptions.ValidationError(exc.messages) from exc


class Suppress(base.Strict):
    """A suppression rule for the alert's opportunity: why, until when, and which signals."""

    comment = serializers.CharField(
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


# The actions -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    """One triage action: its parameters, the permissions it needs, what it acts on together
    (an alert, or an opportunity for reassign and suppress) and the domain call."""

    request: type[base.Strict]
    permissions: tuple[str, ...]
    perform: Callable[[Alert, Mapping[str, Any], Any, datetime], object]
    group: Callable[[Alert, Mapping[str, Any]], Hashable] = lambda alert, data: alert.pk


def _snooze(alert: Alert, data: Mapping[str, Any], by: Any, now: datetime) -> object:
    try:
        return lifecycle.snooze(
            alert,
            reason=data["reason"],
            by=by,
            now=now,
            until=data.get("until"),
            condition=data.get("condition", SnoozeCondition.TIME),
        )
    except DjangoValidationError as exc:
        if "span" in data and hasattr(exc, "error_dict") and "until" in exc.error_dict:
            # The caller gave a duration: name it, not the time computed from it.
            exc.error_dict["for"] = exc.error_dict.pop("until")
        raise


def _suppress(alert: Alert, data: Mapping[str, Any], by: Any, now: datetime) -> object:
    suppressions.check_scope(by, opportunity=alert.opportunity)
    return suppressions.suppress_opportunities(
        [alert.opportunity_id],
        comment=data["comment"],
        by=by,
        now=now,
        ends_at=data.get("ends_at"),
        signal="" if data["scope"] == SUPPRESS_ALL else alert.signal,
    )


ACTIONS: dict[str, Action] = {
    "acknowledge": Action(
        Acknowledge,
        ("change_alert",),
        lambda alert, data, by, now: lifecycle.acknowledge(alert, by=by, now=now),
    ),
    "snooze": Action(Snooze, ("change_alert",), _snooze),
    "dismiss": Action(
        Dismiss,
        ("change_alert",),
        lambda alert, data, by, now: lifecycle.dismiss(
            alert, reason=data["reason"], by=by, now=now
        ),
    ),
    "resolve": Action(
        Resolve,
        ("change_alert",),
        lambda alert, data, by, now: lifecycle.resolve(
            alert, evidence=data["evidence"], by=by, now=now
        ),
    ),
    # Reassigning changes the opportunity, in the CRM: the permission the admin asks for the
    # other changes of an opportunity (merge, stall, segment) as well as the triage one.
    "reassign": Action(
        Reassign,
        ("change_alert", "change_trackedopportunity"),
        lambda alert, data, by, now: ownership.reassign(
            alert.opportunity, to=data["owner"], by=by, now=now
        ),
        group=lambda alert, data: alert.opportunity_id,
    ),
    "suppress": Action(
        Suppress,
        ("change_alert", "add_suppression"),
        _suppress,
        group=lambda alert, data: (
            alert.opportunity_id,
            "" if data["scope"] == SUPPRESS_ALL else alert.signal,
        ),
    ),
}


def _message(exc: DjangoValidationError) -> str:
    return " ".join(str(m) for m in exc.messages)


def _about_input(exc: DjangoValidationError, spec: Action) -> bool:
    """Whether the domain refused the request's parameters rather than the item's state."""
    fields = set(spec.request().fields)
    return hasattr(exc, "error_dict") and bool(set(exc.error_dict) & fields)


# Bulk ------------------------------------------------------------------------------------------


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
    team = serializers.IntegerField(min_value=1, max_value=2**63 - 1, required=False)
    owner = serializers.IntegerField(min_value=1, max_value=2**63 - 1, required=False)
    segment = serializers.CharField(required=False)
    raised_after = base.Aware(required=False)
    raised_before = base.Aware(required=False)
    due_after = base.Aware(required=False)
    due_before = base.Aware(required=False)


class Targets(base.Strict):
    """Which alerts a bulk action is for: ``ids``, or a ``filter``."""

    ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=2**63 - 1),
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


# The view --------------------------------------------------------------------------------------

_CHANGE = [base.requires(*ACTIONS["acknowledge"].permissions)]


class AlertViewSet(base.ApiViewSet):
    """The alerts the caller may see, most severe first, and what they may do with them."""

    filterset_class = AlertFilter
    pagination_class = BySeverity
    serializer_class = AlertSerializer
    # Keys beyond a bigint would reach the database as an error, not a 404.
    lookup_value_regex = r"[0-9]{1,18}"

    def get_queryset(self) -> QuerySet[Alert]:
        if self.schema_only:
            return Alert.objects.none()
        scoped = access.alerts_for(self.request.user).select_related(*RELATED)
        return severity.annotate(scoped, self.now)

    def get_object(self) -> Alert:
        # Scoped, not filtered: the list's default status filter must not hide a closed
        # alert's page, nor turn acknowledging it into a 404.
        alert: Alert = get_object_or_404(self.get_queryset(), pk=self.kwargs["pk"])
        return alert

    def _shown(self, pk: Any) -> Any:
        """The alert as it is after an action (it may have left the caller's filters)."""
        alert = severity.annotate(Alert.objects.filter(pk=pk), self.now).select_related(*RELATED)
        return AlertSerializer(alert.get()).data

    @base.document(responses={200: AlertSerializer(many=True), **responses(400, 401)})
    def list(self, request: Request) -> Response:
        queryset = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(queryset)
        assert page is not None
        return self.get_paginated_response(AlertSerializer(page, many=True).data)

    @base.document(responses={200: AlertSerializer, **responses(401, 404)})
    def retrieve(self, request: Request, pk: Any = None) -> Response:
        return Response(AlertSerializer(self.get_object()).data)

    def _act(self, name: str, request: Request) -> Response:
        spec = ACTIONS[name]
        alert = self.get_object()
        serializer = spec.request(data=request.data, context=self._context())
        serializer.is_valid(raise_exception=True)
        try:
            spec.perform(alert, serializer.validated_data, request.user, self.now)
        except DjangoValidationError as exc:
            if hasattr(exc, "error_dict"):
                raise
            raise base.Conflict(_message(exc)) from exc
        return Response(self._shown(alert.pk))

    def _context(self) -> dict[str, Any]:
        return {"request": self.request, "now": self.now, "view": self}

    @base.document(
        request=None, responses={200: AlertSerializer, **responses(400, 401, 403, 404, 409)}
    )
    @action(detail=True, methods=["post"], permission_classes=_CHANGE)
    def acknowledge(self, request: Request, pk: Any = None) -> Response:
        """Someone is on it: stops escalation (an open or snoozed alert)."""
        return self._act("acknowledge", request)

    @base.document(
        request=Snooze,
        responses={200: AlertSerializer, **responses(400, 401, 403, 404, 409)},
    )
    @action(detail=True, methods=["post"], permission_classes=_CHANGE)
    def snooze(self, request: Request, pk: Any = None) -> Response:
        """Put an open or acknowledged alert aside until a time, for a duration, or until the
        customer replies or the stage changes (ended by ``until``/``for`` at the latest)."""
        return self._act("snooze", request)

    @base.document(
        request=Dismiss,
        responses={200: AlertSerializer, **responses(400, 401, 403, 404, 409)},
    )
    @action(detail=True, methods=["post"], permission_classes=_CHANGE)
    def dismiss(self, request: Request, pk: Any = None) -> Response:
        """Close this episode without action; the signal's next episode alerts again."""
        return self._act("dismiss", request)

    @base.document(
        request=Resolve,
        responses={200: AlertSerializer, **responses(400, 401, 403, 404, 409)},
    )
    @action(detail=True, methods=["post"], permission_classes=_CHANGE)
    def resolve(self, request: Request, pk: Any = None) -> Response:
        """Resolve by hand, with the evidence of what was done."""
        return self._act("resolve", request)

    @base.document(
        request=Reassign,
        responses={200: AlertSerializer, **responses(400, 401, 403, 404, 409)},
    )
    @action(
        detail=True,
        methods=["post"],
        permission_classes=[base.requires(*ACTIONS["reassign"].permissions)],
    )
    def reassign(self, request: Request, pk: Any = None) -> Response:
        """Give the alert's opportunity a new owner, in the CRM; the sync opens the handoff
        and moves the ownership alerts (this one may be resolved by it)."""
        return self._act("reassign", request)

    @base.document(
        request=Suppress,
        responses={200: AlertSerializer, **responses(400, 401, 403, 404, 409)},
    )
    @action(
        detail=True,
        methods=["post"],
        permission_classes=[base.requires(*ACTIONS["suppress"].permissions)],
    )
    def suppress(self, request: Request, pk: Any = None) -> Response:
        """A suppression rule for the alert's opportunity (its signal, or every signal),
        which holds this alert at once."""
        return self._act("suppress", request)

    @base.document(
        request=PolymorphicProxySerializer(
            component_name="Bulk",
            serializers=dict(BULK_REQUESTS),
            resource_type_field_name="action",
        ),
        responses={200: BulkResponse, **responses(400, 401, 403, 413)},
    )
    @action(detail=False, methods=["post"])
    def bulk(self, request: Request) -> Response:
        """One action on many alerts, each in its own transaction; a result per item."""
        picked = BulkAction(data=request.data)
        picked.is_valid(raise_exception=True)
        name = picked.validated_data["action"]
        spec = ACTIONS[name]
        wanted = [f"followup_visibility.{codename}" for codename in spec.permissions]
        if not request.user.has_perms(wanted):
            raise exceptions.PermissionDenied()
        limit = app_settings.API_MAX_BATCH
        ids = request.data.get("ids")
        if isinstance(ids, list) and len(ids) > limit:
            raise base.PayloadTooLarge()
        serializer = BULK_REQUESTS[name](data=request.data, context=self._context())
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        scoped = self.get_queryset()
        if "ids" in data:
            wanted_ids = list(dict.fromkeys(data["ids"]))
        else:
            wanted_ids = _matching(scoped, request, limit)
        found = {alert.pk: alert for alert in scoped.filter(pk__in=wanted_ids)}
        alerts = [found[pk] for pk in wanted_ids if pk in found]
        outcomes = _perform(spec, alerts, data, request.user, self.now)
        not_found = (str(_("Not found.")),)
        results = [
            {"id": pk, "result": result, "detail": detail}
            for pk in wanted_ids
            for result, detail in [outcomes.get(pk, ("not_found", *not_found))]
        ]
        counts = {key: sum(r["result"] == key for r in results) for key in ("done", "refused")}
        counts["not_found"] = len(results) - counts["done"] - counts["refused"]
        return Response({"action": name, **counts, "results": results})


def _matching(scoped: QuerySet[Alert], request: Request, limit: int) -> list[int]:
    """The ids of the alerts a bulk ``filter`` matches (as the list filters); 413 past
    ``limit``."""
    filterset = AlertFilter(_as_query(request.data["filter"]), queryset=scoped, request=request)
    if not filterset.is_valid():
        raise exceptions.ValidationError({"filter": filterset.errors})
    ids: list[int] = list(filterset.qs.order_by("pk").values_list("pk", flat=True)[: limit + 1])
    if len(ids) > limit:
        raise base.PayloadTooLarge()
    return ids


def _perform(
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
            if not done and _about_input(exc, spec):
                raise
            outcome = ("refused", _message(exc))
        else:
            done, outcome = True, ("done", "")
        for alert in members:
            outcomes[alert.pk] = outcome
    return outcomes
