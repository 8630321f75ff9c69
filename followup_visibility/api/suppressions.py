"""``suppressions/``: the suppression rules of the caller's scope; create one, end one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import django_filters
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from followup_visibility.api import base
from followup_visibility.api.fields import KEY, JsonDuration, JsonInteger, JsonString
from followup_visibility.api.register import Named, OwnerSerializer, SegmentSerializer
from followup_visibility.choices import AlertSignal, AlertStatus, IdentityKind
from followup_visibility.config import suppressions
from followup_visibility.engine import access, administration
from followup_visibility.models import Alert, Segment, Suppression, Team, TrackedOpportunity
from followup_visibility.querysets import SuppressionQuerySet

STATES = {"active": _("Active"), "scheduled": _("Not started"), "ended": _("Ended")}


def state_at(rule: Suppression, now: Any) -> str:
    """``active``, ``scheduled`` (not started) or ``ended`` at ``now``, as the admin shows it."""
    if rule.ends_at is not None and rule.ends_at <= now:
        return "ended"
    return "scheduled" if rule.starts_at > now else "active"


class SuppressionFilter(django_filters.FilterSet):
    state = django_filters.ChoiceFilter(
        choices=list(STATES.items()),
        method="in_state",
        help_text=_("Active now, not started yet, or ended."),
    )
    signal = django_filters.ChoiceFilter(choices=AlertSignal.choices)
    opportunity = django_filters.NumberFilter(field_name="opportunity_id")
    team = django_filters.NumberFilter(field_name="team_id")
    owner = django_filters.NumberFilter(field_name="owner_id")

    class Meta:
        model = Suppression
        fields: list[str] = []

    def in_state(self, queryset: QuerySet[Any], name: str, value: str) -> QuerySet[Any]:
        now = self.request.fv_now
        if value == "active":
            return cast(SuppressionQuerySet, queryset).active_at(now)
        if value == "scheduled":
            return queryset.filter(starts_at__gt=now)
        return queryset.filter(ends_at__lte=now)


class SuppressionSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField(source="pk")
    opportunity = serializers.IntegerField(source="opportunity_id", allow_null=True)
    identity_kind = serializers.ChoiceField(
        choices=[("", ""), *IdentityKind.choices], help_text=_("Empty: no contact matcher.")
    )
    identity = serializers.CharField(
        source="identity_key", help_text=_("The normalized phone number or email address.")
    )
    segment = SegmentSerializer(allow_null=True)
    owner = OwnerSerializer(allow_null=True)
    team = Named(allow_null=True)
    signal = serializers.ChoiceField(choices=[("", ""), *AlertSignal.choices])
    older_than = serializers.DurationField(allow_null=True)
    starts_at = serializers.DateTimeField()
    ends_at = serializers.DateTimeField(allow_null=True)
    state = serializers.SerializerMethodField()
    comment = serializers.CharField()
    created_by = OwnerSerializer(allow_null=True)
    created_at = serializers.DateTimeField()
    held_alerts = serializers.IntegerField(
        source="fv_held", help_text=_("Alerts this rule holds as suppressed now.")
    )

    @extend_schema_field(serializers.ChoiceField(choices=list(STATES)))
    def get_state(self, rule: Suppression) -> str:
        return state_at(rule, self.context["now"])


class SuppressionCreate(base.Strict):
    """A new rule: every matcher given must match; at least one is needed."""

    opportunity = serializers.PrimaryKeyRelatedField(
        queryset=TrackedOpportunity.objects.none(),
        required=False,
        allow_null=True,
        pk_field=JsonInteger(),
        error_messages={"does_not_exist": _("No such opportunity.")},
    )
    identity = JsonString(
        required=False,
        allow_blank=True,
        max_length=255,
        help_text=_("A phone number or email address, in any format: it is normalized."),
    )
    segment = serializers.SlugRelatedField(
        slug_field="code",
        queryset=Segment.objects.all(),
        required=False,
        allow_null=True,
        error_messages={"does_not_exist": _("No such segment.")},
    )
    owner = serializers.PrimaryKeyRelatedField(
        queryset=get_user_model().objects.none(),
        required=False,
        allow_null=True,
        pk_field=JsonInteger(),
        error_messages={"does_not_exist": _("No such user.")},
    )
    team = serializers.PrimaryKeyRelatedField(
        queryset=Team.objects.none(),
        required=False,
        allow_null=True,
        pk_field=JsonInteger(),
        error_messages={"does_not_exist": _("No such team.")},
    )
    signal = serializers.ChoiceField(choices=AlertSignal.choices, required=False)
    older_than = JsonDuration(
        required=False,
        allow_null=True,
        help_text=_(
            "Opportunities that arrived longer ago than this (wall-clock time): seconds, "
            "[DD] HH:MM:SS or ISO 8601 (P90D)."
        ),
    )
    starts_at = base.Aware(required=False, allow_null=True, help_text=_("Empty: now."))
    ends_at = base.Aware(required=False, allow_null=True, help_text=_("Empty: until ended."))
    comment = JsonString(allow_blank=True, help_text=_("Why; required."))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        user = self.context.get("user")
        if user is None:
            return  # the schema generator
        # As the admin's form: an id outside the caller's reach is "no such", exactly as a
        # missing one; check_scope then confines what is left.
        fields: Any = self.fields
        fields["opportunity"].queryset = access.opportunities_for(user)
        if access.sees_everything(user):
            fields["owner"].queryset = get_user_model().objects.all()
            fields["team"].queryset = Team.objects.all()
        else:
            managed = access.managed_team_ids(user)
            people = administration.people(managed) | get_user_model().objects.filter(pk=user.pk)
            fields["owner"].queryset = people.distinct()
            fields["team"].queryset = Team.objects.filter(pk__in=managed)


class End(base.Strict):
    """Nothing: ending a rule takes no parameters (a field is refused, not ignored)."""


def with_held_count(queryset: QuerySet[Suppression]) -> QuerySet[Suppression]:
    """The rules with what a page shows of them, in one query: their related rows and how
    many alerts each holds now."""
    held = (
        Alert.objects.filter(suppression=OuterRef("pk"), status=AlertStatus.SUPPRESSED)
        .order_by()
        .values("suppression")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return queryset.select_related("segment", "owner", "team", "created_by").annotate(
        fv_held=Coalesce(Subquery(held, output_field=IntegerField()), Value(0))
    )


class SuppressionViewSet(base.ApiViewSet):
    """Suppression rules: those the caller made, and those confined to their scope."""

    lookup_value_regex = KEY
    filterset_class = SuppressionFilter
    serializer_class = SuppressionSerializer

    def get_queryset(self) -> QuerySet[Suppression]:
        if self.schema_only:
            return Suppression.objects.none()
        return with_held_count(access.suppressions_for(self.request.user))

    def get_serializer_context(self) -> dict[str, Any]:
        return {**super().get_serializer_context(), "now": self.now, "user": self.request.user}

    @base.document(responses={200: SuppressionSerializer(many=True)})
    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        assert page is not None
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @base.document(responses={200: SuppressionSerializer})
    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(self.get_serializer(self.get_object()).data)

    @base.document(
        request=SuppressionCreate,
        responses={201: SuppressionSerializer},
        description=(
            "Create a rule and hold the active alerts it matches at once. A user without the "
            "see-all permission must confine it to their scope (one of their opportunities, "
            "themselves or someone in their teams as the owner, or one of their teams)."
        ),
    )
    def create(self, request: Request) -> Response:
        user = request.user
        form = SuppressionCreate(data=request.data, context=self.get_serializer_context())
        form.is_valid(raise_exception=True)
        data = form.validated_data
        try:
            suppressions.check_scope(
                user,
                opportunity=data.get("opportunity"),
                owner=data.get("owner"),
                team=data.get("team"),
            )
            rule = suppressions.create(
                comment=data["comment"],
                by=user,
                now=self.now,
                **suppressions.rule_fields(data),
            )
        except DjangoValidationError as exc:
            raise base.as_drf(exc) from None
        created = with_held_count(Suppression.objects.filter(pk=rule.pk)).get()
        return Response(self.get_serializer(created).data, status=status.HTTP_201_CREATED)

    @base.document(
        request=None,
        responses={200: SuppressionSerializer},
        description=(
            "End a rule now; the alerts it held return to open unless another rule holds them. "
            "A rule that has ended, or has not started, is refused (400 on `ends_at`)."
        ),
    )
    @action(
        detail=True,
        methods=["post"],
        permission_classes=[base.requires("change_suppression")],
        filter_backends=[],
    )
    def end(self, request: Request, pk: str) -> Response:
        rule = self.get_object()
        End(data=request.data).is_valid(raise_exception=True)
        suppressions.end(rule, by=request.user, now=self.now)
        return Response(self.get_serializer(self.get_queryset().get(pk=rule.pk)).data)

    def get_permissions(self) -> Sequence[Any]:
        if self.action == "create":
            return [base.requires("add_suppression")()]
        return super().get_permissions()
