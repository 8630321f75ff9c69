"""What every endpoint of the API shares: authentication, permission, errors, pagination.

Views state all of it here instead of reading the host's ``REST_FRAMEWORK`` defaults, so that
a host's settings for its own API change nothing in ours (docs/api.md).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

from django.apps import apps
from django.core.exceptions import NON_FIELD_ERRORS
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.http import Http404
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django_filters.rest_framework import DjangoFilterBackend
from django_filters.utils import translate_validation
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, serializers, status, viewsets
from rest_framework.authentication import (
    BaseAuthentication,
    SessionAuthentication,
    TokenAuthentication,
)
from rest_framework.pagination import CursorPagination
from rest_framework.parsers import JSONParser
from rest_framework.permissions import BasePermission
from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.throttling import UserRateThrottle
from rest_framework.views import APIView, exception_handler

from followup_visibility.alerting import sql
from followup_visibility.conf import app_settings

F = TypeVar("F", bound=Callable[..., Any])


class Session(SessionAuthentication):
    """Django's session, answering 401 (not 403) to a request that brings no credentials."""

    def authenticate_header(self, request: Request) -> str:
        return 'Session realm="followup_visibility"'


def authentication_classes() -> list[type[BaseAuthentication]]:
    """Token authentication when the host installs ``rest_framework.authtoken``, and the
    session (the browsable pages and the admin's users) in any case."""
    classes: list[type[BaseAuthentication]] = []
    if apps.is_installed("rest_framework.authtoken"):
        classes.append(TokenAuthentication)
    classes.append(Session)
    return classes


class ActiveUser(BasePermission):
    """Signed in and active; what each user may see is the scope rule's business."""

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.is_active)


def requires(*codenames: str) -> type[BasePermission]:
    """A permission: active, and holding these model permissions of the app (the ones the
    admin asks for the same write), e.g. ``requires("change_alert")``; 403 without them."""
    wanted = [f"followup_visibility.{codename}" for codename in codenames]

    class Requires(ActiveUser):
        def has_permission(self, request: Request, view: Any) -> bool:
            return super().has_permission(request, view) and request.user.has_perms(wanted)

    Requires.__name__ = f"Requires({', '.join(codenames)})"
    return Requires


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = _("The request carries more items than this API accepts at once.")
    default_code = "too_large"


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = _("This conflicts with what is stored.")
    default_code = "conflict"


def _fields(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    """DRF's nested error detail flattened to ``{"items.3.occurred_at": ["..."]}``."""
    found: dict[str, list[str]] = {}
    if isinstance(detail, Mapping):
        for key, value in detail.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            found.update(_fields(value, name))
    elif isinstance(detail, list) and detail and not all(isinstance(item, str) for item in detail):
        for index, value in enumerate(detail):
            if value:
                found.update(_fields(value, f"{prefix}.{index}" if prefix else str(index)))
    elif isinstance(detail, list):
        found[prefix or "non_field_errors"] = [str(item) for item in detail]
    else:
        found[prefix or "non_field_errors"] = [str(detail)]
    return found


def as_drf(exc: DjangoValidationError) -> exceptions.ValidationError:
    """A domain function's ``ValidationError`` as the API's 400 (field messages kept)."""
    if hasattr(exc, "error_dict"):
        return exceptions.ValidationError(
            {
                # Django's key for errors of no one field is "__all__"; DRF's, and ours, not.
                ("non_field_errors" if field == NON_FIELD_ERRORS else field): [
                    str(m) for m in messages
                ]
                for field, messages in exc.message_dict.items()
            }
        )
    return exceptions.ValidationError({"non_field_errors": [str(m) for m in exc.messages]})


def handle_exception(exc: Exception, context: Mapping[str, Any]) -> Response | None:
    """Every error in one shape: ``{"status", "code", "detail", "fields"}`` (docs/api.md).

    ``fields`` maps each field (``items.3.occurred_at`` inside a batch) to its messages; it
    is present on 400 only.
    """
    if isinstance(exc, DjangoValidationError):
        exc = as_drf(exc)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    response = exception_handler(exc, dict(context))
    if response is None:
        return None
    assert isinstance(exc, exceptions.APIException)
    body: dict[str, Any] = {"status": response.status_code}
    if isinstance(exc, exceptions.ValidationError):
        body["code"] = "invalid"
        body["detail"] = str(_("The request is invalid: see the messages of each field."))
        body["fields"] = _fields(exc.detail)
    else:
        codes = exc.get_codes()
        body["code"] = codes if isinstance(codes, str) else "error"
        detail = exc.detail
        body["detail"] = str(detail) if not isinstance(detail, dict | list) else str(exc)
    response.data = body
    return response


#: The years an API time may fall in. Outside them, the host's zone may give a local offset
#: in seconds (before standard time), which no RFC 3339 time can show.
YEARS = (1900, 9998)


class Aware(serializers.DateTimeField):
    """A datetime that must carry its offset: a naive time is refused, never guessed.

    It is read as UTC: PostgreSQL refuses offsets past 15:59 that ISO 8601 allows.
    """

    default_error_messages = {
        "naive": _("Give the time with its time zone (an offset such as +02:00, or Z)."),
        # DRF's ``fail()`` fills ``{name}`` placeholders (str.format), not ``%(name)d``.
        "range": _("Give a time between the years {first} and {last}."),
    }

    def enforce_timezone(self, value: Any) -> Any:
        if timezone.is_naive(value):
            self.fail("naive")
        first, last = YEARS
        if not first <= value.year <= last:
            self.fail("range", first=first, last=last)
        return super().enforce_timezone(value.astimezone(UTC))


class Filters(DjangoFilterBackend):
    """django-filter, its times read as UTC and within ``YEARS`` as ``Aware`` reads them (an
    offset past 15:59 would reach PostgreSQL, which refuses it with a server error)."""

    def filter_queryset(self, request: Request, queryset: Any, view: Any) -> Any:
        filterset = self.get_filterset(request, queryset, view)
        if filterset is None:
            return queryset
        if not filterset.is_valid():
            raise translate_validation(filterset.errors)
        cleaned = filterset.form.cleaned_data
        first, last = YEARS
        message = Aware.default_error_messages["range"].format(first=first, last=last)
        for name, value in cleaned.items():
            if isinstance(value, datetime) and timezone.is_aware(value):
                if not first <= value.year <= last:
                    raise exceptions.ValidationError({name: [message]})
                cleaned[name] = value.astimezone(UTC)
        return filterset.qs


class Strict(serializers.Serializer[Any]):
    """A serializer that refuses fields it does not know, instead of ignoring them."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            known = {name for name, field in self.fields.items() if not field.read_only}
            unknown = sorted(set(data) - known)
            if unknown:
                raise exceptions.ValidationError({name: [_("Unknown field.")] for name in unknown})
        return super().to_internal_value(data)


PAGE_SIZE = re.compile(r"0*[1-9][0-9]*")


def invalid_cursor() -> exceptions.ValidationError:
    return exceptions.ValidationError({"cursor": [_("Invalid cursor.")]})


class Page(CursorPagination):
    """Cursor pagination: stable under inserts and cheap at any depth.

    A malformed ``cursor`` or ``page_size`` is a 400 naming it, as the schema documents: not
    DRF's 404, a silently ignored value, or (a forged cursor's position) a server error.
    """

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200
    ordering = "-pk"

    def get_page_size(self, request: Request) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return int(self.page_size)
        if not PAGE_SIZE.fullmatch(raw):
            raise exceptions.ValidationError(
                {self.page_size_query_param: [_("Give a whole number, 1 or more.")]}
            )
        # More than the most gives the most (docs/api.md); a long number is not parsed.
        digits = raw.lstrip("0")
        return self.max_page_size if len(digits) > 9 else min(int(digits), self.max_page_size)

    def decode_cursor(self, request: Request) -> Any:
        try:
            return super().decode_cursor(request)
        except exceptions.NotFound as exc:
            raise invalid_cursor() from exc

    def paginate_queryset(self, queryset: Any, request: Request, view: Any = None) -> Any:
        try:
            return super().paginate_queryset(queryset, request, view)
        except (ValueError, TypeError, DjangoValidationError) as exc:
            # The cursor's position is compared with the ordering field: a forged one of
            # another type fails there. Without a cursor it is a bug, not bad input.
            if request.query_params.get(self.cursor_query_param) is None:
                raise
            raise invalid_cursor() from exc

    @property
    def query_parameters(self) -> frozenset[str]:
        """The query parameters a page reads."""
        names = (self.cursor_query_param, self.page_size_query_param)
        return frozenset(name for name in names if name)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters: list[dict[str, Any]] = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"]["minimum"] = 1
                parameter["description"] = f"Rows per page, at most {self.max_page_size}."
        return parameters


class IngestThrottle(UserRateThrottle):
    """Touch ingestion per user, at ``FOLLOWUP_VISIBILITY_API_INGEST_RATE``."""

    scope = "followup_ingest"

    def get_rate(self) -> str | None:
        return app_settings.API_INGEST_RATE

    def allow_request(self, request: Request, view: Any) -> bool:
        self.rate = self.get_rate()
        if self.rate is None:
            return True
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)


def document(**kwargs: Any) -> Callable[[F], F]:
    """``extend_schema`` on a view method, with drf-spectacular's schema class whatever the
    host's ``DEFAULT_SCHEMA_CLASS`` is (the decorator reads that setting otherwise)."""

    def decorator(function: F) -> F:
        if not hasattr(function, "schema"):
            function.schema = AutoSchema  # type: ignore[attr-defined]
        parameters = kwargs.get("parameters") or []
        function.fv_parameters = [  # type: ignore[attr-defined]
            *getattr(function, "fv_parameters", []),
            *parameters,
        ]
        return extend_schema(**kwargs)(function)

    return decorator


def documented_query(method: Any) -> set[str]:
    """The query parameters a view method declares with ``document(parameters=...)``: each
    ``OpenApiParameter`` in the query, and each field of a serializer given there."""
    names: set[str] = set()
    for parameter in getattr(method, "fv_parameters", ()):
        if isinstance(parameter, OpenApiParameter):
            if parameter.location == OpenApiParameter.QUERY and not parameter.exclude:
                names.add(parameter.name)
        else:
            serializer = parameter() if isinstance(parameter, type) else parameter
            names.update(serializer.fields)
    return names


class ApiMixin:
    """The API's own authentication, permission, parsers, renderers and errors."""

    # Typed Any: the stubs type each differently on APIView and GenericAPIView.
    permission_classes: Any = [ActiveUser]
    parser_classes: Any = [JSONParser]
    renderer_classes: Any = [JSONRenderer, BrowsableAPIRenderer]
    throttle_classes: Any = []
    filter_backends: Any = [Filters]
    pagination_class: Any = Page
    schema: Any = AutoSchema()

    def get_authenticators(self) -> list[BaseAuthentication]:
        return [auth() for auth in authentication_classes()]

    def get_exception_handler(self) -> Any:
        return handle_exception

    def dispatch(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        if request.method not in ("GET", "HEAD"):
            return super().dispatch(request, *args, **kwargs)  # type: ignore[misc]
        # A read in one transaction with PostgreSQL's JIT off: the register's and the alert
        # list's statements look expensive to the planner, which then spent seconds compiling
        # them (measured at 1M opportunities, docs/performance.md) for work it does in less.
        with transaction.atomic():
            sql.no_jit()
            return super().dispatch(request, *args, **kwargs)  # type: ignore[misc]


class ApiView(ApiMixin, APIView):
    """Base of the API's plain views."""


class ApiViewSet(ApiMixin, viewsets.GenericViewSet[Any]):
    """Base of the API's viewsets: ``get_queryset`` applies the scope rule, so an object out
    of the caller's scope answers 404 like a missing one. ``request.fv_now`` is the request's
    moment: every domain call of one request uses the same ``now``."""

    #: Query parameters the view reads besides those ``accepted_query`` finds on its own.
    query_parameters: ClassVar[frozenset[str]] = frozenset()

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        request.fv_now = timezone.now()  # type: ignore[attr-defined]
        super().initial(request, *args, **kwargs)
        # After authentication and permissions (401 and 403 first), before anything is read:
        # a mistyped filter ignored would widen a list, one a bulk action may then be aimed at.
        unknown = set(request.query_params) - self.accepted_query(request)
        if unknown:
            raise exceptions.ValidationError(
                {name: [_("Unknown parameter.")] for name in sorted(unknown)}
            )

    def accepted_query(self, request: Request) -> set[str]:
        """The query parameters this request may carry: ``format`` (the renderer), the view's
        ``query_parameters``, those its method documents (``document(parameters=...)``), and
        on a list (a read other than ``retrieve``) its filterset's filters and its pages'."""
        names = set(self.query_parameters)
        if api_settings.URL_FORMAT_OVERRIDE:
            names.add(api_settings.URL_FORMAT_OVERRIDE)
        names |= documented_query(getattr(self, (request.method or "").lower(), None))
        if request.method in ("GET", "HEAD") and self.action != "retrieve":
            filterset = getattr(self, "filterset_class", None)
            backends = self.filter_backends
            if filterset is not None and any(issubclass(b, DjangoFilterBackend) for b in backends):
                names |= set(filterset.base_filters)
            names |= getattr(self.paginator, "query_parameters", frozenset())
        return names

    @property
    def now(self) -> Any:
        return getattr(self.request, "fv_now", None) or timezone.now()

    @property
    def schema_only(self) -> bool:
        """Whether the schema generator, not a client, is asking (no request, no user)."""
        return bool(getattr(self, "swagger_fake_view", False))


class Missing(ApiView):
    """Any other path under the API: the API's 404 in its error shape, not the host's page
    (a malformed id such as ``alerts/0.5/`` matches no route)."""

    pagination_class = None
    filter_backends: Any = []

    @document(exclude=True)
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        raise exceptions.NotFound()

    @document(exclude=True)
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        raise exceptions.NotFound()

    @document(exclude=True)
    def put(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        raise exceptions.NotFound()

    @document(exclude=True)
    def patch(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        raise exceptions.NotFound()

    @document(exclude=True)
    def delete(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        raise exceptions.NotFound()

    @document(exclude=True)
    def options(self, request: Any, *args: Any, **kwargs: Any) -> Response:
        raise exceptions.NotFound()  # not the metadata of a view that is not there

    def http_method_not_allowed(self, request: Any, *args: Any, **kwargs: Any) -> Response:
        raise exceptions.NotFound()  # any other method (TRACE): no such path either
