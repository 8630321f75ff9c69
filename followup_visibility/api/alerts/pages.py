"""The queue's pages: keyset cursors in severity order, one index scan at any depth."""

from __future__ import annotations

from typing import Any

from django.db.models import F, QuerySet, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from followup_visibility.api.pagination import Keyset
from followup_visibility.engine import severity

ORDERING = ("-fv_rank", "due_at", "pk")


class BySeverity(Keyset):
    """Keyset pages: most severe first (not yet due last), then the earliest due, then the key.

    DRF's cursor keeps the first ordering field and an offset among equal values; severity
    has five values, so the offset would grow with the queue. The cursor carries the whole
    key instead (``api/pagination.py``), and each page is one query whatever its depth.

    The rank is the severity at the page's moment, read in two parts: the alerts whose stored
    level holds at that moment, in the order of the ``fv_alert_queue`` index, and the few
    whose level ended (or was never stored), derived; the two are cut and merged. Both give
    the derived severity exactly (engine/severity.py, "Stored levels").
    """

    pin_moment = True

    def get_ordering(self, request: Any, queryset: Any, view: Any) -> tuple[str, ...]:
        return ORDERING

    def parts(self, queryset: QuerySet[Any]) -> list[QuerySet[Any]]:
        now = self._moment or timezone.now()
        fresh = severity.fresh_q(now)
        return [
            queryset.filter(fresh).annotate(fv_rank=F("severity_level")),
            # ``severity``: the derived annotation the view adds; 0 for one not yet due.
            queryset.filter(severity.unfresh_q(now)).annotate(
                fv_rank=Coalesce(F("severity"), Value(0))
            ),
        ]
