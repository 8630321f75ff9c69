"""``alerts/``: the queue, the actions on one alert, and the same actions in bulk."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import PolymorphicProxySerializer
from rest_framework import exceptions
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from followup_visibility.api import base
from followup_visibility.api.alerts.actions import ACTIONS, refusal
from followup_visibility.api.alerts.bulk import (
    BULK_REQUESTS,
    BulkAction,
    BulkResponse,
    matching_ids,
    perform_in_groups,
)
from followup_visibility.api.alerts.filters import AlertFilter
from followup_visibility.api.alerts.pages import BySeverity
from followup_visibility.api.alerts.parameters import Dismiss, Reassign, Resolve, Snooze, Suppress
from followup_visibility.api.alerts.serializers import AlertSerializer
from followup_visibility.api.errors import responses
from followup_visibility.api.fields import KEY
from followup_visibility.conf import app_settings
from followup_visibility.engine import access, severity
from followup_visibility.models import Alert

#: The related rows one alert is shown with (one query per page).
RELATED = ("opportunity__owner", "opportunity__team", "opportunity__segment", "acknowledged_by")

#: The columns a listed alert shows, with its opportunity's, team's and segment's (the
#: list's ``only``: a tracked opportunity has some fifty columns). The owner and whoever
#: acknowledged are the host's user model, loaded whole: its name methods may read any field.
LISTED = (
    "signal",
    "status",
    "due_at",
    "raised_at",
    "episode_at",
    "sla",
    "escalation_level",
    "acknowledged_at",
    "acknowledged_by",
    "snoozed_at",
    "snoozed_until",
    "snooze_condition",
    "snooze_reason",
    "dismissed_at",
    "dismissed_reason",
    "resolved_at",
    "resolution",
    "resolution_note",
    "opportunity__title",
    "opportunity__content_type_id",
    "opportunity__object_pk",
    "opportunity__owner",
    "opportunity__team__name",
    "opportunity__segment__code",
    "opportunity__segment__name",
)

_CHANGE = [base.requires(*ACTIONS["acknowledge"].permissions)]


class AlertViewSet(base.ApiViewSet):
    """The alerts the caller may see, most severe first, and what they may do with them."""

    filterset_class = AlertFilter
    pagination_class = BySeverity
    serializer_class = AlertSerializer
    # Keys beyond a bigint would reach the database as an error, not a 404.
    lookup_value_regex = KEY

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        if self.action == "list":
            # A cursor's pages rank at its first page's moment: severity grows with time, and
            # alerts would otherwise move between pages. Actions always act at the request's.
            pages = self.paginator
            assert isinstance(pages, BySeverity)
            request.fv_now = pages.moment(request, request.fv_now)  # type: ignore[attr-defined]

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
        queryset = self.filter_queryset(self.get_queryset()).only(*LISTED)
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
            raise base.Conflict(refusal(exc)) from exc
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
            raise base.PayloadTooLarge(
                _("%(n)d ids: at most %(max)d in one request.") % {"n": len(ids), "max": limit}
            )
        serializer = BULK_REQUESTS[name](data=request.data, context=self._context())
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        scoped = self.get_queryset()
        if "ids" in data:
            wanted_ids = list(dict.fromkeys(data["ids"]))
        else:
            wanted_ids = matching_ids(scoped, request, limit)
        found = {alert.pk: alert for alert in scoped.filter(pk__in=wanted_ids)}
        alerts = [found[pk] for pk in wanted_ids if pk in found]
        outcomes = perform_in_groups(spec, alerts, data, request.user, self.now)
        not_found = (str(_("Not found.")),)
        results = [
            {"id": pk, "result": result, "detail": detail}
            for pk in wanted_ids
            for result, detail in [outcomes.get(pk, ("not_found", *not_found))]
        ]
        counts = {key: sum(r["result"] == key for r in results) for key in ("done", "refused")}
        counts["not_found"] = len(results) - counts["done"] - counts["refused"]
        return Response({"action": name, **counts, "results": results})
