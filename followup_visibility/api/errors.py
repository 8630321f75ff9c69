"""The API's one error shape, as the OpenAPI schema documents it."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers

DESCRIPTIONS = {
    400: "Invalid input: `fields` names each field (`touches.3.occurred_at` in a batch).",
    401: "No credentials, or invalid ones.",
    403: "Signed in, but not allowed to do this.",
    404: "Not found, or not in your scope (the two look the same).",
    409: "Conflicts with what is stored (a repeated touch whose payload differs).",
    413: "More items than the API accepts in one request.",
    429: "Too many requests: wait the seconds `Retry-After` gives.",
}


class ErrorSerializer(serializers.Serializer[Any]):
    """``{"status": 400, "code": "invalid", "detail": "...", "fields": {"name": ["..."]}}``"""

    status = serializers.IntegerField()
    code = serializers.CharField()
    detail = serializers.CharField()
    fields = serializers.DictField(  # type: ignore[assignment]
        child=serializers.ListField(child=serializers.CharField()), required=False
    )


def responses(*codes: int) -> dict[int, OpenApiResponse]:
    """The error responses an operation may give, for ``extend_schema(responses=...)``."""
    return {
        code: OpenApiResponse(response=ErrorSerializer, description=DESCRIPTIONS[code])
        for code in codes
    }
