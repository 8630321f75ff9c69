"""The queue's pages: keyset cursors in severity order, one index scan at any depth."""

from __future__ import annotations

from typing import Any

from django.db.models import F, QuerySet, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from followup_visibility.alerting import ranking, sql
from followup_visibility.api.pagination import Keyset
from followup_visibility.choices import ACTIVE_ALERT_STATUSES
from followup_visibility.engine import severity
from followup_visibility.models import Alert

ORDERING = ("-fv_rank", "due_at", "pk")
#: Up to this many alerts whose stored level ended are looked up by key; more (the first
#: pass after an upgrade has not run yet), and the list derives them as a set.
ENDED_BY_KEY = 5000


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
        derived = Coalesce(F("severity"), Value(0))  # the view's annotation; 0: not yet due
        statuses = set(self.request.query_params.getlist("status"))
        if statuses - set(ACTIVE_ALERT_STATUSES):
            # Closed episodes keep no level: derived, as the history is read (rarely).
            return [queryset.annotate(fv_rank=derived)]
        # The alerts whose level ended (a few since the last pass) or began after the
        # moment (a cursor's), each found by its index among all active alerts, then looked
        # up by key: as filters joined to the scope, PostgreSQL guessed thousands (closed
        # alerts' levels ended too) and hashed a whole team.
        keys = ranking.ended(now, ENDED_BY_KEY + 1)
        keys += (
            Alert.objects.filter(severity.began_after_q(now), status__in=ACTIVE_ALERT_STATUSES)
            .order_by("-severity_since")
            .values_list("pk", flat=True)[: ENDED_BY_KEY + 1]
        )
        stale = (
            queryset.filter(sql.among(Alert, "id", keys))
            if len(keys) <= ENDED_BY_KEY
            else queryset.filter(severity.unfresh_q(now))  # after an upgrade, before a pass
        )
        return [
            queryset.filter(severity.fresh_q(now)).annotate(fv_rank=F("severity_level")),
            stale.annotate(fv_rank=derived),
        ]
