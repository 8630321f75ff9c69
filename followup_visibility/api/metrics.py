"""``metrics/``: overdue now, first-response attainment and logging lag, in the caller's scope.

Three reads, each a call of :mod:`followup_visibility.register.metrics` (the dashboard calls
the same functions): ``metrics/overdue/``, ``metrics/first-response/`` and
``metrics/logging-lag/``. The definitions are in docs/api.md (Metrics).
"""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy as _
from rest_framework import serializers
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from followup_visibility.api import base
from followup_visibility.api.errors import responses
from followup_visibility.api.fields import SEVERITY_NAMES
from followup_visibility.choices import Channel, Reason
from followup_visibility.models import TrackedOpportunity
from followup_visibility.register import metrics

# Requests --------------------------------------------------------------------------------------


class MetricsQuery(base.Strict):
    team = serializers.IntegerField(
        required=False,
        help_text=_(
            "Only this team's id and the teams below it, within your scope: a team you do not "
            "see, or none, counts nothing."
        ),
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        since, until = attrs.get("since"), attrs.get("until")
        if since is not None and until is not None and until <= since:
            raise ValidationError({"until": [_("Must be after since.")]})
        return attrs


class OverdueQuery(MetricsQuery):
    since = base.Aware(
        required=False,
        help_text=_("Only the actions that fell due at or after this instant (no limit: all)."),
    )
    until = base.Aware(
        required=False, help_text=_("Only the actions that fell due before this instant.")
    )


class PeriodQuery(MetricsQuery):
    since = base.Aware(
        required=False,
        help_text=_("The period's start, inclusive (default: seven days before its end)."),
    )
    until = base.Aware(required=False, help_text=_("The period's end, exclusive (default: now)."))


# Responses -------------------------------------------------------------------------------------


class MetricsCountSerializer(serializers.Serializer[Any]):
    # The stubs see ``Field.label``; DRF takes declared fields off the class, so no clash.
    label = serializers.CharField()  # type: ignore[assignment]
    opportunities = serializers.IntegerField(
        help_text=_("Register rows: open opportunities with an overdue action.")
    )
    actions = serializers.IntegerField(
        help_text=_("Overdue actions: the alerts that list them (open or acknowledged).")
    )


class MetricsSeverityCountSerializer(MetricsCountSerializer):
    severity = serializers.ChoiceField(
        source="key",
        choices=list(SEVERITY_NAMES),
        allow_null=True,
        help_text=_("Null only for alerts not yet due at the time read."),
    )


class MetricsReasonCountSerializer(MetricsCountSerializer):
    reason = serializers.ChoiceField(source="key", choices=Reason.choices)


class MetricsSegmentCountSerializer(MetricsCountSerializer):
    segment = serializers.CharField(
        source="key", allow_null=True, help_text=_("The segment's code; null: none.")
    )


class MetricsTeamCountSerializer(MetricsCountSerializer):
    team = serializers.IntegerField(
        source="key", allow_null=True, help_text=_("The team's id; null: none.")
    )


class MetricsOwnerCountSerializer(MetricsCountSerializer):
    owner = serializers.IntegerField(
        source="key", allow_null=True, help_text=_("The owner's id; null: none.")
    )


class MetricsOverdueSerializer(serializers.Serializer[Any]):
    now = serializers.DateTimeField(help_text=_("The instant the counts are of."))
    since = serializers.DateTimeField(allow_null=True)
    until = serializers.DateTimeField(allow_null=True)
    opportunities = serializers.IntegerField()
    actions = serializers.IntegerField()
    by_severity = MetricsSeverityCountSerializer(many=True)
    by_reason = MetricsReasonCountSerializer(many=True)
    by_segment = MetricsSegmentCountSerializer(many=True)
    by_team = MetricsTeamCountSerializer(many=True)
    by_owner = MetricsOwnerCountSerializer(many=True)


class MetricsAttainmentSerializer(serializers.Serializer[Any]):
    segment = serializers.CharField(
        source="key",
        allow_null=True,
        help_text=_("The segment's code; null: no segment (and in ``total``)."),
    )
    label = serializers.CharField()  # type: ignore[assignment]
    met = serializers.IntegerField()
    missed = serializers.IntegerField()
    pending = serializers.IntegerField()
    rate = serializers.FloatField(
        allow_null=True, help_text=_("met / (met + missed), 0 to 1; null when both are 0.")
    )


class MetricsFirstResponseSerializer(serializers.Serializer[Any]):
    since = serializers.DateTimeField()
    until = serializers.DateTimeField()
    total = MetricsAttainmentSerializer()
    by_segment = MetricsAttainmentSerializer(many=True)


class MetricsLagSerializer(serializers.Serializer[Any]):
    label = serializers.CharField()  # type: ignore[assignment]
    count = serializers.IntegerField()
    p50_seconds = serializers.FloatField(source="p50")
    p90_seconds = serializers.FloatField(source="p90")
    p95_seconds = serializers.FloatField(source="p95")


class MetricsChannelLagSerializer(MetricsLagSerializer):
    channel = serializers.ChoiceField(source="key", choices=Channel.choices)


class MetricsActorLagSerializer(MetricsLagSerializer):
    actor = serializers.IntegerField(
        source="key",
        allow_null=True,
        help_text=_("The user who logged the touches; null: nobody (an integration)."),
    )


class MetricsLoggingLagSerializer(serializers.Serializer[Any]):
    since = serializers.DateTimeField()
    until = serializers.DateTimeField()
    overall = MetricsLagSerializer(allow_null=True)
    by_channel = MetricsChannelLagSerializer(many=True)
    by_actor = MetricsActorLagSerializer(many=True)


# Views -----------------------------------------------------------------------------------------


class MetricsViewSet(base.ApiViewSet):
    """Follow-up KPIs over the caller's scope: a rep's own, a manager's teams', everything for
    operations."""

    pagination_class = None
    filter_backends: list[Any] = []
    serializer_class = MetricsOverdueSerializer

    def get_queryset(self) -> Any:
        return TrackedOpportunity.objects.none()

    def _query(self, serializer_class: type[MetricsQuery]) -> dict[str, Any]:
        # ``format`` picks the renderer; every other unknown parameter is a mistake.
        data = {k: v for k, v in self.request.query_params.items() if k != "format"}
        query = serializer_class(data=data)
        query.is_valid(raise_exception=True)
        return dict(query.validated_data)

    def _scope(self, query: dict[str, Any]) -> Any:
        return metrics.scope(self.request.user, team=query.get("team"))

    def _period(self, query: dict[str, Any]) -> metrics.Period:
        within = metrics.period(self.now, query.get("since"), query.get("until"))
        if within.until <= within.since:
            raise ValidationError({"since": [_("Must be before until (now by default).")]})
        return within

    @base.document(
        parameters=[OverdueQuery],
        responses={200: MetricsOverdueSerializer, **responses(400, 401)},
    )
    @action(detail=False, methods=["get"])
    def overdue(self, request: Request) -> Response:
        """Overdue now, by severity, reason, segment, team and owner."""
        query = self._query(OverdueQuery)
        found = metrics.overdue(
            self.now, self._scope(query), since=query.get("since"), until=query.get("until")
        )
        return Response(MetricsOverdueSerializer(found).data)

    @base.document(
        parameters=[PeriodQuery],
        responses={200: MetricsFirstResponseSerializer, **responses(400, 401)},
    )
    @action(detail=False, methods=["get"], url_path="first-response")
    def first_response(self, request: Request) -> Response:
        """First-response attainment, per segment, of the demand that arrived in the period."""
        query = self._query(PeriodQuery)
        found = metrics.first_response(self.now, self._scope(query), self._period(query))
        return Response(MetricsFirstResponseSerializer(found).data)

    @base.document(
        parameters=[PeriodQuery],
        responses={200: MetricsLoggingLagSerializer, **responses(400, 401)},
    )
    @action(detail=False, methods=["get"], url_path="logging-lag")
    def logging_lag(self, request: Request) -> Response:
        """Logging-lag percentiles, overall, per channel and per actor, of the touches
        recorded in the period."""
        query = self._query(PeriodQuery)
        found = metrics.logging_lag(self._scope(query), self._period(query))
        return Response(MetricsLoggingLagSerializer(found).data)
