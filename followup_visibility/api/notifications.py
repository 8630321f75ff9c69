"""``notifications/``: the caller's inbox (the in-app messages addressed to them); mark read."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import django_filters
from django.db.models import F, QuerySet
from django.utils.translation import gettext_lazy as _
from rest_framework import serializers
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from followup_visibility.alerting import notifications
from followup_visibility.api import base
from followup_visibility.api.errors import responses
from followup_visibility.api.fields import KEY, JsonBoolean, JsonInteger, StrictBooleanFilter
from followup_visibility.choices import NotificationKind
from followup_visibility.conf import app_settings
from followup_visibility.models import Notification


class InboxFilter(django_filters.FilterSet):
    unread = StrictBooleanFilter(
        field_name="read_at", lookup_expr="isnull", help_text=_("Only unread (or only read).")
    )
    kind = django_filters.ChoiceFilter(choices=NotificationKind.choices)

    class Meta:
        model = Notification
        fields: list[str] = []


class NotificationSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField(source="pk")
    kind = serializers.ChoiceField(choices=NotificationKind.choices)
    subject = serializers.CharField()
    body = serializers.CharField()
    alert = serializers.IntegerField(source="alert_id")
    opportunity = serializers.IntegerField(source="fv_opportunity")
    created_at = serializers.DateTimeField()
    read_at = serializers.DateTimeField(allow_null=True)


class MarkRead(base.Strict):
    ids = serializers.ListField(
        child=JsonInteger(), required=False, help_text=_("Messages of your inbox.")
    )
    all = JsonBoolean(required=False, help_text=_("Every unread message."))

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("ids" in attrs) == bool(attrs.get("all")):
            raise ValidationError(
                {"non_field_errors": [_('Give either "ids" or "all": true, not both.')]}
            )
        return attrs


class Marked(serializers.Serializer[Any]):
    marked = serializers.IntegerField(help_text=_("Messages marked read by this request."))
    already_read = serializers.ListField(child=serializers.IntegerField())
    not_found = serializers.ListField(
        child=serializers.IntegerField(),
        help_text=_("Ids that are not in your inbox (missing, or someone else's): left alone."),
    )


class NotificationViewSet(base.ApiViewSet):
    """The caller's inbox, newest first. Only their own messages, whatever their permissions
    (the whole notification log is the admin's)."""

    lookup_value_regex = KEY
    filterset_class = InboxFilter
    serializer_class = NotificationSerializer

    def get_queryset(self) -> QuerySet[Notification]:
        if self.schema_only:
            return Notification.objects.none()
        return notifications.inbox(self.request.user).annotate(
            fv_opportunity=F("alert__opportunity_id")
        )

    @base.document(responses={200: NotificationSerializer(many=True)})
    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        assert page is not None
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @base.document(responses={200: NotificationSerializer})
    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(self.get_serializer(self.get_object()).data)

    @base.document(
        request=MarkRead,
        responses={200: Marked, **responses(413)},
        description=(
            'Mark messages of your inbox read: `{"ids": [...]}` or `{"all": true}`. Ids not in '
            "your inbox are reported in `not_found` and left alone. Needs `view_notification`, "
            "as the admin's action does."
        ),
    )
    @action(
        detail=False,
        methods=["post"],
        url_path="mark-read",
        permission_classes=[base.requires("view_notification")],
        filter_backends=[],
        pagination_class=None,
    )
    def mark_read(self, request: Request) -> Response:
        data = request.data
        ids = data.get("ids") if isinstance(data, Mapping) else None
        limit = app_settings.API_MAX_BATCH
        if isinstance(ids, list) and len(ids) > limit:
            raise base.PayloadTooLarge(
                _("%(n)d ids: at most %(max)d in one request.") % {"n": len(ids), "max": limit}
            )
        form = MarkRead(data=data)
        form.is_valid(raise_exception=True)
        inbox = notifications.inbox(request.user)
        if form.validated_data.get("all"):
            unread = list(inbox.filter(read_at__isnull=True).values_list("pk", flat=True))
            count = notifications.mark_read(unread, request.user, self.now)
            return Response(Marked({"marked": count, "already_read": [], "not_found": []}).data)
        asked = list(dict.fromkeys(form.validated_data["ids"]))
        found = dict(inbox.filter(pk__in=asked).values_list("pk", "read_at"))
        unread = [pk for pk in asked if pk in found and found[pk] is None]
        count = notifications.mark_read(unread, request.user, self.now)
        body = {
            "marked": count,
            "already_read": [pk for pk in asked if found.get(pk) is not None],
            "not_found": [pk for pk in asked if pk not in found],
        }
        return Response(Marked(body).data)
