"""``inhibition-rules/`` and ``sla-policies/``: company configuration, read by whoever may view
it in the admin and changed by whoever may change it there (``engine.administration``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import django_filters
from django import forms
from django.core.exceptions import ValidationError
from django.db.models import Max, OuterRef, QuerySet, Subquery
from django.utils.translation import gettext_lazy as _
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response

from followup_visibility.api import base
from followup_visibility.api.register import Named, OwnerSerializer, SegmentSerializer
from followup_visibility.choices import AlertSignal
from followup_visibility.config import inhibition, policies, preview
from followup_visibility.engine import administration
from followup_visibility.models import InhibitionRule, SlaPolicy, SlaPolicyVersion
from followup_visibility.models.policy import DURATION_FIELDS

#: A key in a path: anything else (or beyond a bigint) is the API's 404, not a database error.
KEY = r"[0-9]{1,18}"
DURATION_HELP = _(
    "Business time: seconds, [DD] HH:MM:SS or ISO 8601 (PT4H); 1 00:00:00 is 24 working hours. "
    "Null: inherit from the broader policy."
)


def may_view(model_name: str) -> type[BasePermission]:
    """Active, with the view or the change permission (the admin shows the page read-only to
    either)."""
    wanted = [f"followup_visibility.{action}_{model_name}" for action in ("view", "change")]

    class MayView(base.ActiveUser):
        def has_permission(self, request: Request, view: Any) -> bool:
            user = request.user
            return super().has_permission(request, view) and any(user.has_perm(p) for p in wanted)

    MayView.__name__ = f"MayView({model_name})"
    return MayView


class CompanyWide(base.ActiveUser):
    """Company-wide configuration changes only for users who see everything."""

    message = _("Only users with the see-all permission change company-wide configuration.")

    def has_permission(self, request: Request, view: Any) -> bool:
        return super().has_permission(request, view) and administration.administers_company(
            request.user
        )


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


# Inhibition rules -------------------------------------------------------------------------


class InhibitionRuleFilter(django_filters.FilterSet):
    source = django_filters.ChoiceFilter(choices=AlertSignal.choices)
    target = django_filters.ChoiceFilter(choices=AlertSignal.choices)
    is_active = StrictBooleanFilter()

    class Meta:
        model = InhibitionRule
        fields: list[str] = []


class InhibitionRuleSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField(source="pk")
    # "source" shadows Field.source for the type checker only: a declared field wins at runtime.
    source = serializers.ChoiceField(  # type: ignore[assignment]
        choices=AlertSignal.choices, help_text=_("When this is due")
    )
    target = serializers.ChoiceField(choices=AlertSignal.choices, help_text=_("do not raise this."))
    is_active = serializers.BooleanField()
    comment = serializers.CharField()


class InhibitionRuleWrite(base.Strict):
    source = serializers.ChoiceField(choices=AlertSignal.choices)  # type: ignore[assignment]
    target = serializers.ChoiceField(choices=AlertSignal.choices)
    is_active = JsonBoolean(required=False, default=True)
    comment = JsonString(required=False, allow_blank=True, max_length=255, default="")


class InhibitionRuleChange(base.Strict):
    source = serializers.ChoiceField(  # type: ignore[assignment]
        choices=AlertSignal.choices, required=False
    )
    target = serializers.ChoiceField(choices=AlertSignal.choices, required=False)
    is_active = JsonBoolean(required=False)
    comment = JsonString(required=False, allow_blank=True, max_length=255)


class InhibitionRuleViewSet(base.ApiViewSet):
    """Rules "while *source* is due on an opportunity, do not raise *target* on it".

    Company-wide: read with ``view_inhibitionrule``, changed with the add, change or delete
    permission and the see-all permission.
    """

    lookup_value_regex = KEY
    filterset_class = InhibitionRuleFilter
    serializer_class = InhibitionRuleSerializer
    permissions: dict[str, list[type[BasePermission]]] = {
        "create": [base.requires("add_inhibitionrule"), CompanyWide],
        "partial_update": [base.requires("change_inhibitionrule"), CompanyWide],
        "destroy": [base.requires("delete_inhibitionrule"), CompanyWide],
    }

    def get_queryset(self) -> QuerySet[InhibitionRule]:
        return InhibitionRule.objects.all()

    def get_permissions(self) -> Sequence[Any]:
        chosen = self.permissions.get(self.action or "", [may_view("inhibitionrule")])
        return [permission() for permission in chosen]

    @base.document(responses={200: InhibitionRuleSerializer(many=True)})
    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        assert page is not None
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @base.document(responses={200: InhibitionRuleSerializer})
    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(self.get_serializer(self.get_object()).data)

    @base.document(request=InhibitionRuleWrite, responses={201: InhibitionRuleSerializer})
    def create(self, request: Request) -> Response:
        form = InhibitionRuleWrite(data=request.data)
        form.is_valid(raise_exception=True)
        rule = inhibition.create(**form.validated_data, by=request.user, now=self.now)
        return Response(self.get_serializer(rule).data, status=status.HTTP_201_CREATED)

    @base.document(request=InhibitionRuleChange, responses={200: InhibitionRuleSerializer})
    def partial_update(self, request: Request, pk: str) -> Response:
        rule = self.get_object()
        form = InhibitionRuleChange(data=request.data)
        form.is_valid(raise_exception=True)
        rule = inhibition.change(rule, by=request.user, now=self.now, **form.validated_data)
        return Response(self.get_serializer(rule).data)

    @base.document(responses={204: None})
    def destroy(self, request: Request, pk: str) -> Response:
        inhibition.delete(self.get_object(), by=request.user, now=self.now)
        return Response(status=status.HTTP_204_NO_CONTENT)


# SLA policies -----------------------------------------------------------------------------


def _durations(**options: Any) -> dict[str, serializers.DurationField]:
    """One field per duration of a version, in ``DURATION_FIELDS``' order."""
    return {
        name: JsonDuration(allow_null=True, help_text=DURATION_HELP, **options)
        for name in DURATION_FIELDS.values()
    }


class Durations(serializers.Serializer[Any]):
    """A version's durations by field (null: inherited from the broader policy)."""

    def get_fields(self) -> dict[str, Any]:
        return {**_durations(), **super().get_fields()}


class SlaPolicyFilter(django_filters.FilterSet):
    # An unknown team or segment selects nothing, as an unknown owner does elsewhere.
    team = django_filters.NumberFilter(field_name="team_id", help_text=_("A team's id."))
    segment = django_filters.CharFilter(
        field_name="segment__code", help_text=_("A segment's code.")
    )
    is_default = StrictBooleanFilter()

    class Meta:
        model = SlaPolicy
        fields: list[str] = []


class SlaPolicySerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField(source="pk")
    name = serializers.CharField()
    scope = serializers.CharField(source="scope_label")
    is_default = serializers.BooleanField()
    team = Named(allow_null=True)
    segment = SegmentSerializer(allow_null=True)
    latest_version = serializers.IntegerField(source="fv_latest", allow_null=True)
    retired = serializers.BooleanField(
        source="fv_retired", help_text=_("The newest version retires this scope.")
    )
    created_at = serializers.DateTimeField()


class VersionSerializer(serializers.Serializer[Any]):
    number = serializers.IntegerField()
    effective_from = serializers.DateTimeField()
    applies_to_open = serializers.BooleanField()
    retired = serializers.BooleanField()
    created_by = OwnerSerializer(allow_null=True)
    comment = serializers.CharField()
    durations = Durations(source="*")
    stage_limits = serializers.DictField(
        child=serializers.FloatField(), help_text=_("Business seconds allowed in each stage.")
    )


class WhatIfRequest(base.Strict):
    """Proposed values; those left out keep the newest version's."""

    stage_limits = serializers.DictField(
        child=JsonNumber(),
        required=False,
        allow_null=True,
        help_text=_("Business seconds allowed in each stage, replacing the current limits."),
    )
    retired = JsonBoolean(
        required=False, help_text=_("Preview retiring this scope (not the company default).")
    )

    def get_fields(self) -> dict[str, Any]:
        return {**_durations(required=False), **super().get_fields()}


class WhatIfRow(serializers.Serializer[Any]):
    signal = serializers.ChoiceField(choices=AlertSignal.choices)
    segment = Named(allow_null=True)
    current = serializers.IntegerField(help_text=_("Overdue deadlines now, as things are."))
    proposed = serializers.IntegerField(help_text=_("Overdue now under the proposed values."))
    change = serializers.IntegerField()


class WhatIfDraft(Durations):
    stage_limits = serializers.DictField(child=serializers.FloatField())
    retired = serializers.BooleanField()


class WhatIfResult(serializers.Serializer[Any]):
    now = serializers.DateTimeField()
    examined = serializers.IntegerField(help_text=_("Open opportunities in the policy's scope."))
    current = serializers.IntegerField(help_text=_("Opportunities overdue now, as things are."))
    proposed = serializers.IntegerField(
        help_text=_("Opportunities overdue now under the proposed values.")
    )
    change = serializers.IntegerField(help_text=_("proposed - current"))
    draft = WhatIfDraft(help_text=_("The values compared: the newest version's, as proposed."))
    rows = WhatIfRow(many=True, help_text=_("By signal and segment, largest change first."))


class SlaPolicyViewSet(base.ApiViewSet):
    """SLA policies and their versions, read-only, and the what-if preview of a change."""

    lookup_value_regex = KEY
    filterset_class = SlaPolicyFilter
    serializer_class = SlaPolicySerializer

    def get_queryset(self) -> QuerySet[SlaPolicy]:
        newest = SlaPolicyVersion.objects.filter(policy=OuterRef("pk")).order_by("-number")
        return SlaPolicy.objects.select_related("team", "segment").annotate(
            fv_latest=Max("versions__number"),
            fv_retired=Subquery(newest.values("retired")[:1]),
        )

    def get_permissions(self) -> Sequence[Any]:
        if self.action == "what_if":
            return [base.requires("change_slapolicy")()]
        return [may_view("slapolicy")()]

    @base.document(responses={200: SlaPolicySerializer(many=True)})
    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        assert page is not None
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @base.document(responses={200: SlaPolicySerializer})
    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(self.get_serializer(self.get_object()).data)

    @base.document(responses={200: VersionSerializer(many=True)})
    @action(detail=True, methods=["get"], filter_backends=[])
    def versions(self, request: Request, pk: str) -> Response:
        policy = self.get_object()
        queryset = SlaPolicyVersion.objects.filter(policy=policy).select_related("created_by")
        page = self.paginate_queryset(queryset)
        assert page is not None
        return self.get_paginated_response(VersionSerializer(page, many=True).data)

    @base.document(
        request=WhatIfRequest,
        responses={200: WhatIfResult},
        description=(
            "How many open opportunities in the policy's scope would be overdue now if the "
            "proposed values were in force (for open ones too). Saves nothing. Needs "
            "`change_slapolicy` and the right to change this policy: the teams one manages, "
            "company-wide policies with the see-all permission."
        ),
    )
    @action(detail=True, methods=["post"], url_path="what-if", filter_backends=[])
    def what_if(self, request: Request, pk: str) -> Response:
        policy = self.get_object()
        if not administration.administers_team(request.user, policy.team_id):
            raise PermissionDenied(_("You may not change this policy, so not preview it either."))
        form = WhatIfRequest(data=request.data)
        form.is_valid(raise_exception=True)
        proposed = dict(form.validated_data)
        values = policies.current_values(policy)
        retired = proposed.pop("retired", None)
        if retired is None:
            latest = policy.versions.order_by("-number").first()
            retired = bool(latest and latest.retired)
        if "stage_limits" in proposed:
            proposed["stage_limits"] = proposed["stage_limits"] or {}
        values.update(proposed)
        result = preview.what_if(values, now=self.now, policy=policy, retired=retired)
        rows = [
            {
                **row,
                "segment": (
                    {"id": row["segment_id"], "name": row["segment"]}
                    if row["segment_id"] is not None
                    else None
                ),
            }
            for row in result.rows()
        ]
        body = {
            "now": result.now,
            "examined": result.examined,
            "current": result.current_opportunities,
            "proposed": result.proposed_opportunities,
            "change": result.proposed_opportunities - result.current_opportunities,
            "draft": {
                **values,
                "stage_limits": values.get("stage_limits") or {},
                "retired": retired,
            },
            "rows": rows,
        }
        return Response(WhatIfResult(body).data)
