"""The queue's pages: keyset cursors in severity order, one query at any depth."""

from __future__ import annotations

from typing import Any

from django.db.models import F, QuerySet, Value
from django.db.models.functions import Coalesce
from rest_framework.request import Request

from followup_visibility.api.pagination import Keyset

ORDERING = ("-fv_rank", "due_at", "pk")


def ranked(queryset: QuerySet[Any]) -> QuerySet[Any]:
    """The alerts with ``fv_rank``: their severity, 0 for one not yet due (it sorts last)."""
    ranked: QuerySet[Any] = queryset.annotate(fv_rank=Coalesce(F("severity"), Value(0)))
    return ranked


class BySeverity(Keyset):
    """Keyset pages: most severe first (not yet due last), then the earliest due, then the key.

    DRF's cursor keeps the first ordering field and an offset among equal values; severity
    has five values, so the offset would grow with the queue. The cursor carries the whole
    key instead (``api/pagination.py``), and each page is one query whatever its depth.
    """

    pin_moment = True

    def get_ordering(self, request: Request, queryset: Any, view: Any) -> tuple[str, ...]:
        return ORDERING
