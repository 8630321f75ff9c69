"""``inhibition-rules/``: "while *source* is due on an opportunity, do not raise *target*"."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import django_filters
from django.db.models import QuerySet
from django.utils.translation import gettext_lazy as _
from rest_framework import serializers, status
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response

from followup_visibility.api import base
from followup_visibility.api.configuration.permissions import CompanyWide, may_view
from followup_visibility.api.fields import KEY, JsonBoolean, JsonString, StrictBooleanFilter
from followup_visibility.choices import AlertSignal
from followup_visibility.config import inhibition
from followup_visibility.models import InhibitionRule


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
