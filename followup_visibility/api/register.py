"""``register/``: the unfollowed register, ranked, filtered, explained."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import django_filters
from django.conf import settings
from django.db.models import QuerySet
from django.utils.translation import gettext_lazy as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework import ISO_8601, serializers
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings as drf_settings

from followup_visibility.api import base
from followup_visibility.api.errors import responses
from followup_visibility.api.fields import SEVERITY_NAMES, severity_name
from followup_visibility.api.filters import AtLeastZero, AwareDateTimeFilter, CodeFilter, KeyFilter
from followup_visibility.api.pagination import Keyset
from followup_visibility.choices import Channel, Reason
from followup_visibility.engine import priority, teams
from followup_visibility.models import TrackedOpportunity
from followup_visibility.register import rows as register


class RegisterFilter(django_filters.FilterSet):
    team = KeyFilter(method="in_team", help_text=_("A team's id: it and the teams below it."))
    # Team and owner as stored with the ranking: a team's or an owner's first page is then
    # the first entries of its own index (the scope still checks the opportunity's own).
    owner = KeyFilter(field_name="register_row__owner", help_text=_("A user's id."))
    unowned = django_filters.BooleanFilter(field_name="owner", lookup_expr="isnull")
    segment = CodeFilter(field_name="segment__code", help_text=_("A segment's code."))
    reason = django_filters.MultipleChoiceFilter(choices=Reason.choices, method="with_reason")
    severity = django_filters.MultipleChoiceFilter(
        choices=[(name, name) for name in SEVERITY_NAMES], method="with_severity"
    )
    channel = django_filters.MultipleChoiceFilter(
        choices=Channel.choices, field_name="arrival_channel"
    )
    value_min = django_filters.NumberFilter(field_name="value", lookup_expr="gte")
    value_max = django_filters.NumberFilter(field_name="value", lookup_expr="lte")
    arrived_after = AwareDateTimeFilter(field_name="arrived_at", lookup_expr="gte")
    arrived_before = AwareDateTimeFilter(field_name="arrived_at", lookup_expr="lt")
    age_min_days = AtLeastZero(
        method="older_than", help_text=_("Arrived at least this many days ago.")
    )
    age_max_days = AtLeastZero(
        method="younger_than", help_text=_("Arrived at most this many days ago.")
    )
    lateness_min = AtLeastZero(
        field_name="fv_lateness",
        lookup_expr="gte",
        help_text=_("Late by at least this many lengths of the SLA."),
    )

    class Meta:
        model = TrackedOpportunity
        fields: list[str] = []

    def in_team(self, queryset: QuerySet[Any], name: str, value: int) -> QuerySet[Any]:
        # An unknown team lists nothing, as a team out of scope does: ids are not revealed.
        return queryset.filter(register_row__team__in=teams.with_subteams([value]))

    def with_reason(self, queryset: QuerySet[Any], name: str, value: list[str]) -> QuerySet[Any]:
        return register.with_reason(queryset, value) if value else queryset

    def with_severity(self, queryset: QuerySet[Any], name: str, value: list[str]) -> QuerySet[Any]:
        return (
            register.with_severity(queryset, [SEVERITY_NAMES[v] for v in value])
            if value
            else queryset
        )

    def older_than(self, queryset: QuerySet[Any], name: str, value: Any) -> QuerySet[Any]:
        cutoff = self._days_ago(value)
        return queryset.none() if cutoff is None else queryset.filter(arrived_at__lte=cutoff)

    def younger_than(self, queryset: QuerySet[Any], name: str, value: Any) -> QuerySet[Any]:
        cutoff = self._days_ago(value)
        return queryset if cutoff is None else queryset.filter(arrived_at__gte=cutoff)

    def _days_ago(self, days: Any) -> datetime | None:
        """``days`` before the request's moment (a cursor's, so that later pages filter as
        the first did); ``None`` before the calendar's first day."""
        now: datetime = self.request.fv_now
        try:
            return now - timedelta(days=float(days))
        except OverflowError:
            return None


class Ranked(Keyset):
    """Keyset pages in the order the caller picks (``?ordering=``), by priority by default,
    ranked at the first page's moment: the score, lateness and age move with the clock."""

    pin_moment = True

    def get_ordering(self, request: Request, queryset: Any, view: Any) -> tuple[str, ...]:
        name = request.query_params.get("ordering", "priority")
        if name not in register.ORDERINGS:
            raise ValidationError(
                {"ordering": [_("Order by one of: %s.") % ", ".join(register.ORDERINGS)]}
            )
        return register.ORDERINGS[name]

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.cursor_query_param:
                parameter["description"] = (
                    "From a `next` or `previous` link: a position in the order and the moment "
                    "the first page ranked at. Refused (400) once a day old."
                )
        return parameters


def stamper(field: Any) -> Any:
    """A function writing a datetime as ``field`` does (ISO 8601 in the current zone, ``Z``
    for UTC), with the zone looked up once for a page rather than per value; DRF's own
    method for another format the host configured."""
    output = getattr(field, "format", drf_settings.DATETIME_FORMAT)
    if output is None or output.lower() != ISO_8601:
        return field.to_representation
    zone = field.default_timezone() if settings.USE_TZ else None

    def stamp(value: datetime) -> str:
        if zone is not None:
            value = value.astimezone(zone)
        text = value.isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text

    return stamp


def user_ref(user: Any) -> dict[str, Any] | None:
    """A user as :class:`OwnerSerializer` writes one."""
    if user is None:
        return None
    return {"id": user.pk, "username": user.get_username(), "name": user.get_full_name()}


class Named(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    name = serializers.CharField()


class OwnerSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField(source="pk")
    username = serializers.CharField(source="get_username")
    name = serializers.CharField(source="get_full_name")


class SegmentSerializer(serializers.Serializer[Any]):
    code = serializers.CharField()
    name = serializers.CharField()


class Rounded(serializers.FloatField):
    """A float written with at most ``digits`` decimals."""

    def __init__(self, *, digits: int, **kwargs: Any) -> None:
        self.digits = digits
        super().__init__(**kwargs)

    def to_representation(self, value: Any) -> Any:
        return round(float(value), self.digits)


class RawField(serializers.FloatField):
    """A factor's raw value; the age's in seconds (the SQL counts microseconds)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(source="*", **kwargs)

    def to_representation(self, value: Any) -> Any:
        factor: priority.Factor = value
        return factor.raw / 1_000_000 if factor.name == "age" else factor.raw


class FactorSerializer(serializers.Serializer[Any]):
    raw = RawField(
        help_text=_(
            "The factor's input: intent weight, value, lateness in SLA lengths, age in seconds."
        )
    )
    level = Rounded(digits=4, help_text=_("0 to 1: raw / (raw + half-point)."))
    weight = Rounded(digits=4, help_text=_("The factor's weight, the four summing to 1."))
    share = Rounded(digits=4, help_text=_("The factor's part of the score, 0 to 1."))


class RowAlertSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField(source="pk")
    signal = serializers.CharField()
    status = serializers.CharField()
    severity = serializers.SerializerMethodField()
    due_at = serializers.DateTimeField()
    raised_at = serializers.DateTimeField()
    escalation_level = serializers.IntegerField()

    def get_severity(self, alert: Any) -> str | None:
        return severity_name(alert.severity)


class RowSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField(source="opportunity.pk")
    title = serializers.CharField(source="opportunity.__str__")
    stage = serializers.CharField(source="opportunity.stage")
    owner = OwnerSerializer(source="opportunity.owner", allow_null=True)
    owner_confirmed = serializers.BooleanField(source="opportunity.owner_confirmed")
    team = Named(source="opportunity.team", allow_null=True)
    segment = SegmentSerializer(source="opportunity.segment", allow_null=True)
    channel = serializers.CharField(source="opportunity.arrival_channel")
    value = serializers.DecimalField(
        source="opportunity.value", max_digits=14, decimal_places=2, allow_null=True
    )
    intent = serializers.FloatField(source="factors.intent.raw")
    arrived_at = serializers.DateTimeField(source="opportunity.arrived_at")
    age_business_hours = serializers.SerializerMethodField()
    unfollowed_since = serializers.DateTimeField(allow_null=True)
    lateness = Rounded(digits=3, help_text=_("Late by this many lengths of the SLA."))
    severity = serializers.SerializerMethodField()
    reasons = serializers.ListField(child=serializers.ChoiceField(choices=Reason.choices))
    score = Rounded(digits=2, help_text=_("Priority, 0 to 100, as of `scored_at`."))
    scored_at = serializers.DateTimeField(
        help_text=_(
            "When the score, its shares, the lateness and the severity were computed: the "
            "register is ranked by stored scores, renewed on every change and every ten "
            "minutes."
        )
    )
    shares = serializers.SerializerMethodField()
    alerts = RowAlertSerializer(many=True)
    factors = serializers.DictField(
        child=FactorSerializer(),
        required=False,
        help_text=_("With ?explain: each factor's raw value, level, weight and share."),
    )

    def to_representation(self, instance: Any) -> Any:
        # Written out rather than walked field by field: DRF's generic walk over fifty rows
        # and their nested owner, team, segment and alerts cost most of a request's CPU. The
        # declared fields above stay the schema; tests hold the two to the same output.
        row: register.Row = instance
        opportunity = row.opportunity
        owner, team, segment = opportunity.owner, opportunity.team, opportunity.segment
        fields = self.fields
        stamp = self._stamp()
        data = {
            "id": opportunity.pk,
            "title": str(opportunity),
            "stage": opportunity.stage,
            "owner": user_ref(owner),
            "owner_confirmed": opportunity.owner_confirmed,
            "team": None if team is None else {"id": team.pk, "name": team.name},
            "segment": None if segment is None else {"code": segment.code, "name": segment.name},
            "channel": opportunity.arrival_channel,
            "value": None
            if opportunity.value is None
            else fields["value"].to_representation(opportunity.value),
            "intent": row.factors["intent"].raw,
            "arrived_at": stamp(opportunity.arrived_at),
            "age_business_hours": self.get_age_business_hours(row),
            "unfollowed_since": None
            if row.unfollowed_since is None
            else stamp(row.unfollowed_since),
            "lateness": round(float(row.lateness), 3),
            "severity": severity_name(row.severity),
            "reasons": list(row.reasons),
            "score": round(float(row.score), 2),
            "scored_at": stamp(row.scored_at),
            "shares": self.get_shares(row),
            "alerts": [
                {
                    "id": alert.pk,
                    "signal": alert.signal,
                    "status": alert.status,
                    "severity": severity_name(alert.severity),  # type: ignore[attr-defined]
                    "due_at": stamp(alert.due_at),
                    "raised_at": stamp(alert.raised_at),
                    "escalation_level": alert.escalation_level,
                }
                for alert in row.alerts
            ],
        }
        if self.context.get("explain"):
            data["factors"] = {
                name: {
                    "raw": factor.raw / 1_000_000 if name == "age" else factor.raw,
                    "level": round(factor.level, 4),
                    "weight": round(factor.weight, 4),
                    "share": round(factor.share, 4),
                }
                for name, factor in row.factors.items()
            }
        return data

    def _stamp(self) -> Any:
        found = getattr(self, "_stamp_of", None)
        if found is None:
            found = self._stamp_of = stamper(self.fields["arrived_at"])
        return found

    def get_age_business_hours(self, row: register.Row) -> float:
        return round(row.age / timedelta(hours=1), 2)

    def get_severity(self, row: register.Row) -> str | None:
        return severity_name(row.severity)

    def get_shares(self, row: register.Row) -> dict[str, float]:
        return {name: round(f.share, 4) for name, f in row.factors.items()}


#: The columns of a row's opportunity, team and segment (``only``).
ROW_FIELDS = (
    "title",
    "content_type_id",
    "object_pk",
    "stage",
    "owner",
    "owner_confirmed_at",
    "team__name",
    "segment__code",
    "segment__name",
    "segment__intent_weight",
    "arrival_channel",
    "value",
    "arrived_at",
)


class RegisterViewSet(base.ApiViewSet):
    """The unfollowed register: one row per open opportunity that is not being followed."""

    filterset_class = RegisterFilter
    pagination_class = Ranked
    serializer_class = RowSerializer

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        # Before the queryset: a cursor's pages rank (and filter by age) at its first page's
        # moment, not at each request's, or rows would move between pages.
        pages = self.paginator
        assert isinstance(pages, Keyset)
        request.fv_now = pages.moment(request, request.fv_now)  # type: ignore[attr-defined]

    def get_queryset(self) -> QuerySet[TrackedOpportunity]:
        if self.schema_only:
            return TrackedOpportunity.objects.none()
        # Only what a row shows: a tracked opportunity has some fifty columns, and loading
        # them was a third of a page's time. The owner is the host's user model, loaded
        # whole: its name methods may read any of its fields.
        return (
            register.unfollowed(self.now, user=self.request.user)
            .select_related("owner", "team", "segment")
            .only(*ROW_FIELDS)
        )

    def _explain(self) -> bool:
        return self.request.query_params.get("explain", "").lower() in {"1", "true", "yes"}

    @base.document(
        parameters=[
            OpenApiParameter(
                "ordering",
                OpenApiTypes.STR,
                enum=list(register.ORDERINGS),
                description="Row order; by priority (intent and value before age) by default.",
            ),
            OpenApiParameter(
                "explain", OpenApiTypes.BOOL, description="Add each factor's raw value and level."
            ),
        ],
        responses={200: RowSerializer(many=True), **responses(400, 401)},
    )
    def list(self, request: Request) -> Response:
        queryset = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(queryset)
        assert page is not None
        rows = register.rows(page, self.now)
        data = RowSerializer(rows, many=True, context={"explain": self._explain()}).data
        return self.get_paginated_response(data)
