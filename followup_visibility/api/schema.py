"""The OpenAPI 3 contract of the API (drf-spectacular), generated from its own URLs only."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.views import SpectacularAPIView
from rest_framework.request import Request
from rest_framework.response import Response

from followup_visibility.api import base
from followup_visibility.api.errors import DESCRIPTIONS

SETTINGS: dict[str, Any] = {
    "TITLE": "followup_visibility",
    "DESCRIPTION": "The unfollowed register, the alert queue, touch ingestion and follow-up "
    "metrics. Errors share one shape (see docs/api.md).",
    "VERSION": "1",
    "COMPONENT_SPLIT_REQUEST": True,
    # One name per choice set, whatever the field that carries it is called.
    "ENUM_NAME_OVERRIDES": {
        "AlertStatusEnum": "followup_visibility.choices.AlertStatus",
        "OpportunityStatusEnum": "followup_visibility.choices.Status",
        "AlertSignalEnum": "followup_visibility.choices.AlertSignal",
        "SnoozeConditionEnum": "followup_visibility.choices.SnoozeCondition",
        "ChannelEnum": "followup_visibility.choices.Channel",
        "ReasonEnum": "followup_visibility.choices.Reason",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "followup_visibility.api.schema.document_errors",
        "followup_visibility.api.schema.require_bodies",
    ],
}


def document_errors(result: dict[str, Any], generator: Any, request: Any, public: bool) -> Any:
    """Declare the errors every operation can give: 401 and 403 everywhere, 404 where a path
    names an object, 400 where a query or a body is read, 429 where a rate applies."""
    error = {"$ref": "#/components/schemas/Error"}
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = {
        "type": "object",
        "properties": {
            "status": {"type": "integer"},
            "code": {"type": "string"},
            "detail": {"type": "string"},
            "fields": {
                "type": "object",
                "additionalProperties": {"type": "array", "items": {"type": "string"}},
            },
        },
        "required": ["status", "code", "detail"],
    }
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            codes = {401, 403}
            if "{" in path:
                codes.add(404)
            if operation.get("parameters") or operation.get("requestBody"):
                codes.add(400)
            if method in {"post", "put", "patch"}:
                codes.add(400)
            for code in sorted(codes):
                operation.setdefault("responses", {}).setdefault(
                    str(code),
                    {
                        "description": DESCRIPTIONS[code],
                        "content": {"application/json": {"schema": error}},
                    },
                )
    return result


def require_bodies(result: dict[str, Any], generator: Any, request: Any, public: bool) -> Any:
    """Mark a request body required when it cannot be empty: its object has required fields,
    or each of its alternatives does (drf-spectacular leaves a ``oneOf`` body optional)."""
    components = result.get("components", {}).get("schemas", {})

    def resolve(schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            schema = components.get(str(schema["$ref"]).rsplit("/", 1)[-1], {})
        return schema

    def needs_fields(schema: dict[str, Any]) -> bool:
        schema = resolve(schema)
        alternatives = schema.get("oneOf") or schema.get("anyOf")
        if alternatives:
            return all(needs_fields(alternative) for alternative in alternatives)
        return bool(schema.get("required"))

    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            body = operation.get("requestBody") if isinstance(operation, dict) else None
            if body and not body.get("required"):
                media = body.get("content", {}).values()
                if media and all(needs_fields(m.get("schema", {})) for m in media):
                    body["required"] = True
    return result


class SessionScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    """The API's session authentication: Django's session cookie (and its CSRF token)."""

    target_class = "followup_visibility.api.base.Session"
    name = "session"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "apiKey", "in": "cookie", "name": settings.SESSION_COOKIE_NAME}


class SchemaView(base.ApiMixin, SpectacularAPIView):
    """``schema/``: the OpenAPI document, its paths relative to where the host mounts us."""

    custom_settings = SETTINGS
    urlconf = "followup_visibility.api.urls"
    pagination_class = None
    filter_backends: list[Any] = []

    @base.document(exclude=True)
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        prefix = request.path.rsplit("schema/", 1)[0].rstrip("/")
        self.custom_settings = {**SETTINGS, "SERVERS": [{"url": prefix or "/"}]}
        response: Response = super().get(request, *args, **kwargs)  # type: ignore[no-untyped-call]
        return response
