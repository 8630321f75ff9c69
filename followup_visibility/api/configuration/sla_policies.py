"""``sla-policies/``: SLA policies and their versions, read-only, and the what-if preview."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import django_filters
from django.db.models import Max, OuterRef, QuerySet, Subquery
from django.utils.translation import gettext_lazy as _
from rest_framework import serializers
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response

from followup_visibility.api import base
from followup_visibility.api.configuration.durations import Durations
from followup_visibility.api.configuration.permissions import may_view
from followup_visibility.api.configuration.what_if import WhatIfRequest, WhatIfResult, compare
from followup_visibility.api.fields import KEY, StrictBooleanFilter
from followup_visibility.api.register import Named, OwnerSerializer, SegmentSerializer
from followup_visibility.engine import administration
from followup_visibility.models import SlaPolicy, SlaPolicyVersion


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
        return Response(WhatIfResult(compare(policy, form.validated_data, self.now)).data)
