"""Celery tasks: thin, idempotent callers of the domain functions, with stable names."""

from __future__ import annotations

from celery import shared_task
from django.apps import apps
from django.utils import timezone

from followup_visibility import sync
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
