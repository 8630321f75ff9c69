"""Celery tasks: thin, idempotent callers of the domain functions, with stable names."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.apps import apps
from django.utils import timezone

from followup_visibility import recompute, sync
from followup_visibility.registry import adapters, get_adapter


@shared_task(name="followup_visibility.reconcile", acks_late=True, ignore_result=True)
def reconcile(model_label: str | None = None) -> dict[str, int]:
    """Catch host changes made without signals (``queryset.update``, raw SQL, deletes)."""
    now = timezone.now()
    models = [get_adapter(apps.get_model(model_label)).model] if model_label else list(adapters())
    totals = {"created": 0, "updated": 0, "deleted": 0}
    for model in models:
        result = sync.sync_model(model, now)
        totals["created"] += len(result.created)
        totals["updated"] += len(result.updated)
        totals["deleted"] += sync.reconcile_deleted(model, now)
    return totals


@shared_task(name="followup_visibility.plan_recompute", acks_late=True, ignore_result=True)
def plan_recompute(**scope_kwargs: Any) -> int:
    """Split a recompute into key ranges and enqueue one ``recompute_deadlines`` task each."""
    scope = recompute.scope_from_kwargs(**scope_kwargs)
    if scope.is_outdated():
        return 0
    chunks = recompute.plan(scope)
    for first, last in chunks:
        recompute_deadlines.delay(first, last, **scope_kwargs)
    return len(chunks)


@shared_task(
    name="followup_visibility.recompute_deadlines",
    acks_late=True,
    ignore_result=True,
    soft_time_limit=300,
    time_limit=330,
)
def recompute_deadlines(first: Any, last: Any, **scope_kwargs: Any) -> dict[str, int]:
    """Recompute the deadlines of the open opportunities in one key range."""
    scope = recompute.scope_from_kwargs(**scope_kwargs)
    result = recompute.recompute_range(first, last, scope, timezone.now())
    return {
        "opportunities": result.opportunities,
        "written": result.totals.written,
        "deleted": result.totals.deleted,
        "skipped": int(result.skipped),
    }
