"""``touches/``: record touches, one or a batch, and read an opportunity's merged timeline."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from django.utils.translation import gettext as _
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from followup_visibility.api import base
from followup_visibility.api.errors import responses
from followup_visibility.api.touches.scope import ScopeErrors, api_field, keyed, to_new_touches
from followup_visibility.api.touches.serializers import (
    STATUSES,
    TOUCH_POST,
    TOUCH_POSTED,
    TouchBatchResultSerializer,
    TouchInputSerializer,
)
from followup_visibility.api.touches.timeline import (
    Oldest,
    TimelineQuerySerializer,
    TimelineTouchSerializer,
    timeline_response,
)
from followup_visibility.conf import app_settings
from followup_visibility.engine import access
from followup_visibility.ingest.touches import RecordedTouch, record_touches
from followup_visibility.models import Touch


class TouchViewSet(base.ApiViewSet):
    """Touches: ``POST`` one or a batch; ``GET ?opportunity=<id>`` its merged timeline."""

    serializer_class = TimelineTouchSerializer
    pagination_class = Oldest
    filter_backends: Any = []

    def get_queryset(self) -> QuerySet[Touch]:
        return Touch.objects.none()  # read through an opportunity's timeline only

    def get_permissions(self) -> Any:
        if self.action == "create":
            return [base.requires("add_touch")()]
        return super().get_permissions()

    def get_throttles(self) -> list[Any]:
        return [base.IngestThrottle()] if self.action == "create" else []

    @base.document(
        parameters=[TimelineQuerySerializer],
        responses={200: TimelineTouchSerializer(many=True), **responses(400, 404)},
    )
    def list(self, request: Request) -> Response:
        """An opportunity's merged timeline, oldest first."""
        query = TimelineQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        opportunity = get_object_or_404(
            access.opportunities_for(request.user), pk=query.validated_data["opportunity"]
        )
        return timeline_response(self, opportunity)

    @base.document(
        request=TOUCH_POST,
        responses={201: TOUCH_POSTED, 200: TOUCH_POSTED, **responses(400, 409, 413, 429)},
    )
    def create(self, request: Request) -> Response:
        """Record one touch (an object) or a batch (``{"touches": [...]}``)."""
        data = request.data
        if not isinstance(data, Mapping):
            raise ValidationError(
                {"non_field_errors": [_('Send one touch as an object, or {"touches": [...]}.')]}
            )
        batch = "touches" in data
        raw = data["touches"] if batch else [data]
        if batch:
            extra = sorted(set(data) - {"touches"})
            if extra:
                raise ValidationError({name: [_("Unknown field.")] for name in extra})
            if not isinstance(raw, list) or not raw:
                raise ValidationError({"touches": [_("Give a list of at least one touch.")]})
            if len(raw) > app_settings.API_MAX_BATCH:
                raise base.PayloadTooLarge(
                    _("%(n)d touches: at most %(max)d in one request.")
                    % {"n": len(raw), "max": app_settings.API_MAX_BATCH}
                )
        parser = TouchInputSerializer(data=raw, many=True)
        if not parser.is_valid():
            errors: Any = parser.errors
            raise ValidationError({"touches": errors} if batch else errors[0])
        items: list[dict[str, Any]] = list(parser.validated_data)
        try:
            news = to_new_touches(items, request.user, self.now)
            results = record_touches(news, now=self.now)
        except ScopeErrors as exc:
            raise ValidationError(keyed(exc.errors, batch)) from None
        except DjangoValidationError as exc:
            found: dict[tuple[int, str], list[str]] = {}
            for key, messages in exc.message_dict.items():
                index, _dot, name = key.partition(".")
                if index.isdigit():
                    found[(int(index), api_field(items[int(index)], name))] = messages
                else:
                    found[(0, key)] = messages
            raise ValidationError(keyed(found, batch)) from None
        hidden = _stored_out_of_scope(results, request.user)
        if batch:
            return self._batch_response(results, hidden)
        return self._single_response(results[0], hidden)

    def _single_response(self, result: RecordedTouch, hidden: set[int]) -> Response:
        touch = result.touch
        if hidden:
            raise base.Conflict(
                _(
                    "A touch with source %(source)r and external id %(external_id)r is stored "
                    "on an opportunity outside your scope: it is not recorded again."
                )
                % {"source": touch.source, "external_id": touch.external_id}
            )
        if result.status == "conflict":
            raise base.Conflict(
                _(
                    "Touch %(id)s was stored with source %(source)r and external id "
                    "%(external_id)r, and other values of: %(fields)s. A repeat never changes "
                    "a stored touch."
                )
                % {
                    "id": touch.pk,
                    "source": touch.source,
                    "external_id": touch.external_id,
                    "fields": ", ".join(result.differs),
                }
            )
        code = status.HTTP_201_CREATED if result.created else status.HTTP_200_OK
        return Response(TimelineTouchSerializer(touch).data, status=code)

    def _batch_response(self, results: Sequence[RecordedTouch], hidden: set[int]) -> Response:
        items = [
            {
                "index": index,
                "status": result.status,
                "id": result.touch.pk,
                "opportunity": result.touch.opportunity_id,
                "differs": list(result.differs),
            }
            if index not in hidden
            else {
                "index": index,
                "status": "conflict",
                "id": None,
                "opportunity": None,
                "differs": ["opportunity"],
            }
            for index, result in enumerate(results)
        ]
        counts = {name: sum(i["status"] == name for i in items) for name in STATUSES}
        body = {
            "created": counts["created"],
            "repeats": counts["repeat"],
            "conflicts": counts["conflict"],
            "results": items,
        }
        code = status.HTTP_201_CREATED if counts["created"] else status.HTTP_200_OK
        return Response(TouchBatchResultSerializer(body).data, status=code)


def _stored_out_of_scope(results: Sequence[RecordedTouch], user: Any) -> set[int]:
    """The indexes of repeats whose stored touch is on an opportunity the caller does not see:
    ``(source, external_id)`` is one namespace, and a repeat must not show another scope's
    touch."""
    stored = {index: r.touch.opportunity_id for index, r in enumerate(results) if not r.created}
    if not stored or (access.sees_everything(user) and access.user_tenants(user) is None):
        return set()
    visible = set(
        access.opportunities_for(user)
        .filter(pk__in=set(stored.values()))
        .values_list("pk", flat=True)
    )
    return {index for index, pk in stored.items() if pk not in visible}
