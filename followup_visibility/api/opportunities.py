"""``opportunities/``: tracked state, deadlines, open alerts, standing and history; merges.

Every write goes through its domain function: ``ingest.merge.merge_opportunities`` and
``ingest.next_actions.schedule_next_action``. Both need ``change_trackedopportunity``, the
permission the admin asks for a merge (and for any change of an opportunity).
"""

from __future__ import annotations

from typing import Any

import django_filters
from django.db.models import F, Q, QuerySet
from django.utils.translation import gettext_lazy as _
from rest_framework import serializers
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from followup_visibility.api import base
from followup_visibility.api.errors import responses
from followup_visibility.api.fields import MAX_KEY, JsonInteger, JsonString, severity_name
from followup_visibility.api.register import Named, OwnerSerializer, SegmentSerializer
from followup_visibility.api.touches.timeline import (
    Oldest,
    TimelineTouchSerializer,
    timeline_response,
)
from followup_visibility.choices import (
    ACTIVE_ALERT_STATUSES,
    AlertSignal,
    AlertStatus,
    Channel,
    SegmentSource,
    Status,
)
from followup_visibility.engine import access, severity, teams
from followup_visibility.ingest.merge import merge_opportunities
from followup_visibility.ingest.next_actions import schedule_next_action
from followup_visibility.models import Alert, Segment, Team, TrackedOpportunity
from followup_visibility.register import rows as register

#: What a merge or a next action needs: the admin's permission to change an opportunity.
CHANGE = "change_trackedopportunity"
STANDINGS = ("listed", "closed", "stalled", "suppressed", "snoozed", "followed")


class OpportunityFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(choices=Status.choices)
    team = django_filters.ModelChoiceFilter(
        queryset=Team.objects.all(), method="in_team", help_text=_("A team and the teams below it.")
    )
    owner = django_filters.NumberFilter(field_name="owner_id")
    segment = django_filters.ModelChoiceFilter(
        queryset=Segment.objects.all(), to_field_name="code", field_name="segment"
    )
    stage = django_filters.CharFilter(field_name="stage")

    class Meta:
        model = TrackedOpportunity
        fields: list[str] = []

    def in_team(self, queryset: QuerySet[Any], name: str, value: Team) -> QuerySet[Any]:
        return queryset.filter(team__in=teams.with_subteams([value.pk]))


# Serializers --------------------------------------------------------------------------------


class HostObjectSerializer(serializers.Serializer[TrackedOpportunity]):
    """The host object it tracks (what ``object`` takes when posting a touch)."""

    model = serializers.SerializerMethodField(help_text=_("`app_label.model`, e.g. `crm.lead`."))
    pk = serializers.CharField(source="object_pk")

    def get_model(self, opportunity: TrackedOpportunity) -> str:
        content_type = opportunity.content_type
        return f"{content_type.app_label}.{content_type.model}"


class OpportunitySummarySerializer(serializers.Serializer[TrackedOpportunity]):
    """An opportunity as the list shows it."""

    id = serializers.IntegerField()
    title = serializers.CharField(source="__str__")
    host = HostObjectSerializer(source="*")
    owner = OwnerSerializer(allow_null=True)
    owner_confirmed = serializers.BooleanField()
    stage = serializers.CharField()
    status = serializers.ChoiceField(choices=Status.choices)
    team = Named(allow_null=True)
    segment = SegmentSerializer(allow_null=True)
    value = serializers.DecimalField(max_digits=14, decimal_places=2, allow_null=True)
    arrival_channel = serializers.ChoiceField(choices=[("", ""), *Channel.choices])
    arrived_at = serializers.DateTimeField()
    next_action_due_at = serializers.DateTimeField(allow_null=True)
    last_meaningful_touch_at = serializers.DateTimeField(allow_null=True)
    awaiting_reply_since = serializers.DateTimeField(allow_null=True)
    stalled_until = serializers.DateTimeField(allow_null=True)


class DeadlineSerializer(serializers.Serializer[Any]):
    signal = serializers.ChoiceField(choices=AlertSignal.choices)
    due_at = serializers.DateTimeField()
    event_at = serializers.DateTimeField(help_text=_("What started the clock."))
    clock_start = serializers.DateTimeField()
    sla_seconds = serializers.SerializerMethodField(help_text=_("The SLA in business time."))

    def get_sla_seconds(self, deadline: Any) -> float:
        return float(deadline.sla.total_seconds())


class OpportunityAlertSerializer(serializers.Serializer[Alert]):
    id = serializers.IntegerField()
    signal = serializers.ChoiceField(choices=AlertSignal.choices)
    status = serializers.ChoiceField(choices=AlertStatus.choices)
    severity = serializers.SerializerMethodField()
    due_at = serializers.DateTimeField()
    raised_at = serializers.DateTimeField()
    acknowledged_at = serializers.DateTimeField(allow_null=True)
    snoozed_until = serializers.DateTimeField(allow_null=True)
    escalation_level = serializers.IntegerField()

    def get_severity(self, alert: Any) -> str | None:
        return severity_name(alert.severity)


class StandingSerializer(serializers.Serializer[Any]):
    """Whether it is in the unfollowed register, and if not, why."""

    listed = serializers.BooleanField(help_text=_("Whether it is in the unfollowed register."))
    state = serializers.ChoiceField(choices=[(s, s) for s in STANDINGS])
    detail = serializers.CharField()
    until = serializers.DateTimeField(allow_null=True)


class OpportunityDetailSerializer(OpportunitySummarySerializer):
    """An opportunity with its whole tracked state, deadlines, alerts and standing."""

    owner_confirmed_at = serializers.DateTimeField(allow_null=True)
    stage_entered_at = serializers.DateTimeField(allow_null=True)
    close_reason = serializers.CharField()
    closed_at = serializers.DateTimeField(allow_null=True)
    segment_source = serializers.ChoiceField(choices=SegmentSource.choices)
    next_action_note = serializers.CharField()
    next_action_set_at = serializers.DateTimeField(allow_null=True)
    next_action_done_at = serializers.DateTimeField(allow_null=True)
    stalled_reason = serializers.CharField()
    stalled_at = serializers.DateTimeField(allow_null=True)
    first_outbound_at = serializers.DateTimeField(allow_null=True)
    first_response_at = serializers.DateTimeField(allow_null=True)
    last_touch_at = serializers.DateTimeField(allow_null=True)
    last_unanswered_call_at = serializers.DateTimeField(allow_null=True)
    predecessor = serializers.SerializerMethodField(
        help_text=_("The lead a deal continues (null when none, or outside your scope).")
    )
    chain_root = serializers.SerializerMethodField()
    merged_into = serializers.SerializerMethodField()
    merged_at = serializers.DateTimeField(allow_null=True)
    deadlines = DeadlineSerializer(many=True, source="fv_deadlines")
    alerts = OpportunityAlertSerializer(
        many=True, source="fv_alerts", help_text=_("Its active alerts, most severe first.")
    )
    standing = StandingSerializer(source="fv_standing")

    def _linked(self, pk: Any) -> int | None:
        return pk if pk is not None and pk in self.context["visible"] else None

    def get_predecessor(self, opportunity: TrackedOpportunity) -> int | None:
        return self._linked(opportunity.predecessor_id)

    def get_chain_root(self, opportunity: TrackedOpportunity) -> int | None:
        return self._linked(opportunity.chain_root_id)

    def get_merged_into(self, opportunity: TrackedOpportunity) -> int | None:
        return self._linked(opportunity.merged_into_id)


class ChangeSerializer(serializers.Serializer[Any]):
    field = serializers.CharField()
    old = serializers.JSONField(allow_null=True)
    new = serializers.JSONField(allow_null=True)


class HistoryRecordSerializer(serializers.Serializer[Any]):
    """One recorded version: when, who, why, and what changed since the one before."""

    id = serializers.IntegerField(source="history_id")
    at = serializers.DateTimeField(source="history_date")
    type = serializers.SerializerMethodField()
    by = OwnerSerializer(source="history_user", allow_null=True)
    reason = serializers.CharField(source="history_change_reason", allow_null=True)
    changes = ChangeSerializer(many=True, source="fv_changes")

    def get_type(self, record: Any) -> str:
        return {"+": "created", "-": "deleted"}.get(record.history_type, "changed")


class MergeInputSerializer(base.Strict):
    """Which opportunity to fold into this one, and why."""

    duplicate = JsonInteger(
        min_value=1, max_value=MAX_KEY, help_text=_("The opportunity folded into this one.")
    )
    reason = JsonString(required=False, allow_blank=True, max_length=100)


class NextActionInputSerializer(base.Strict):
    """The next step: when, and what."""

    due_at = base.Aware(help_text=_("In the future, with its offset."))
    note = JsonString(required=False, allow_blank=True, max_length=255, default="")


class Newest(base.Page):
    """History, newest first."""

    ordering = ("-history_date", "-history_id")  # type: ignore[assignment]


# The view -------------------------------------------------------------------------------------


class OpportunityViewSet(base.ApiViewSet):
    """Tracked opportunities in the caller's scope."""

    filterset_class = OpportunityFilter
    serializer_class = OpportunitySummarySerializer

    def get_queryset(self) -> QuerySet[TrackedOpportunity]:
        if self.schema_only:
            return TrackedOpportunity.objects.none()
        return access.opportunities_for(self.request.user).select_related(
            "owner", "team", "segment", "content_type"
        )

    @base.document(responses={200: OpportunitySummarySerializer(many=True), **responses(400)})
    def list(self, request: Request) -> Response:
        """The opportunities you see, newest first."""
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        assert page is not None
        data = OpportunitySummarySerializer(page, many=True).data  # type: ignore[arg-type]
        return self.get_paginated_response(data)

    @base.document(responses={200: OpportunityDetailSerializer, **responses(404)})
    def retrieve(self, request: Request, pk: str) -> Response:
        """One opportunity: its state, deadlines, active alerts and register standing."""
        return self._detail(self.get_object())

    @base.document(responses={200: TimelineTouchSerializer(many=True), **responses(404)})
    @action(detail=True, filter_backends=[], pagination_class=Oldest)
    def timeline(self, request: Request, pk: str) -> Response:
        """Its merged timeline (lead and deal, and merged duplicates), oldest first."""
        return timeline_response(self, self.get_object())

    @base.document(responses={200: HistoryRecordSerializer(many=True), **responses(404)})
    @action(detail=True, filter_backends=[], pagination_class=Newest)
    def history(self, request: Request, pk: str) -> Response:
        """Its recorded versions, newest first: when, who, why and what changed."""
        opportunity = self.get_object()
        records = opportunity.history.select_related("history_user")
        page = self.paginate_queryset(records)
        assert page is not None
        if page:
            last = page[-1]
            before = (
                records.filter(
                    Q(history_date__lt=last.history_date)
                    | Q(history_date=last.history_date, history_id__lt=last.history_id)
                )
                .order_by("-history_date", "-history_id")
                .first()
            )
            for record, previous in zip(page, [*page[1:], before], strict=True):
                changes = record.diff_against(previous).changes if previous is not None else []
                record.fv_changes = [
                    {"field": c.field, "old": c.old, "new": c.new} for c in changes
                ]
        return self.get_paginated_response(HistoryRecordSerializer(page, many=True).data)

    @base.document(
        request=MergeInputSerializer,
        responses={200: OpportunityDetailSerializer, **responses(400, 404)},
    )
    @action(
        detail=True,
        methods=["post"],
        filter_backends=[],
        permission_classes=[base.requires(CHANGE)],
    )
    def merge(self, request: Request, pk: str) -> Response:
        """Fold the ``duplicate``'s timeline into this one; both must be in your scope."""
        survivor = self.get_object()
        body = MergeInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        duplicate = self.get_queryset().filter(pk=body.validated_data["duplicate"]).first()
        if duplicate is None:
            raise NotFound()
        merged = merge_opportunities(
            duplicate,
            survivor,
            now=self.now,
            by=request.user,
            reason=body.validated_data.get("reason", ""),
        )
        return self._detail(self.get_queryset().filter(pk=merged.pk).first() or merged)

    @base.document(
        request=NextActionInputSerializer,
        responses={200: OpportunityDetailSerializer, **responses(400, 404)},
    )
    @action(
        detail=True,
        methods=["post"],
        url_path="next-action",
        filter_backends=[],
        permission_classes=[base.requires(CHANGE)],
    )
    def next_action(self, request: Request, pk: str) -> Response:
        """Date its next step (in the future)."""
        opportunity = self.get_object()
        body = NextActionInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        # Who made the change, for its history record: the history middleware sees only the
        # session's user, not one signed in with a token.
        opportunity._history_user = request.user
        schedule_next_action(
            opportunity,
            body.validated_data["due_at"],
            now=self.now,
            note=body.validated_data["note"],
        )
        return self._detail(self.get_queryset().filter(pk=opportunity.pk).first() or opportunity)

    def _detail(self, opportunity: TrackedOpportunity) -> Response:
        opportunity.fv_deadlines = list(  # type: ignore[attr-defined]
            opportunity.deadlines.order_by("due_at", "signal")
        )
        opportunity.fv_alerts = list(  # type: ignore[attr-defined]
            severity.annotate(
                Alert.objects.filter(opportunity=opportunity, status__in=ACTIVE_ALERT_STATUSES),
                self.now,
            ).order_by(F("severity").desc(nulls_last=True), "due_at", "pk")
        )
        opportunity.fv_standing = register.standing(opportunity, self.now)  # type: ignore[attr-defined]
        linked = {opportunity.predecessor_id, opportunity.chain_root_id, opportunity.merged_into_id}
        linked.discard(None)
        visible = (
            set(
                access.opportunities_for(self.request.user)
                .filter(pk__in=linked)
                .values_list("pk", flat=True)
            )
            if linked
            else set()
        )
        data = OpportunityDetailSerializer(opportunity, context={"visible": visible}).data
        return Response(data)
