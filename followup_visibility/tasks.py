"""Celery tasks: thin, idempotent callers of the domain functions, with stable names."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from celery import Task, shared_task
from django.apps import apps
from django.db import OperationalError
from django.utils import timezone

from followup_visibility import escalation, notifications, recompute, sweep, sync
from followup_visibility.registry import adapters, get_adapter

#: Far below Redis's visibility timeout (1 h): a task killed by the hard limit is redelivered
#: (acks_late) rather than left half-done, and the work is idempotent.
_LIMITS: dict[str, Any] = {"soft_time_limit": 240, "time_limit": 300}
#: Reconciling reads every tracked host row: minutes at a million. Still under the visibility
#: timeout, so that a running reconcile is never delivered to a second worker.
_LONG_LIMITS: dict[str, Any] = {"soft_time_limit": 3000, "time_limit": 3300}
#: Every task: a task whose worker dies is redelivered rather than lost (it is idempotent).
_LATE: dict[str, Any] = {"acks_late": True, "reject_on_worker_lost": True, "ignore_result": True}
_RETRY: dict[str, Any] = {
    "autoretry_for": (OperationalError,),
    "retry_backoff": True,
    "max_retries": 3,
}


@shared_task(name="followup_visibility.reconcile", **_LATE, **_LONG_LIMITS)
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


@shared_task(name="followup_visibility.plan_recompute", **_LATE, **_LIMITS)
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
    **_LATE,
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


def _same_queue(task: Task[Any, Any]) -> dict[str, Any]:
    """Route follow-up chunks as the parent was routed (hosts route sweeps apart): the same
    exchange and routing key, which reach the parent's queue even when its routing key is
    not its name."""
    info = task.request.delivery_info or {}
    key = info.get("routing_key")
    if not key:
        return {}
    exchange = info.get("exchange")
    return {"exchange": exchange, "routing_key": key} if exchange else {"queue": key}


@shared_task(
    name="followup_visibility.sweep",
    bind=True,
    **_LATE,
    **_LIMITS,
)
def sweep_pass(self: Task[Any, Any], full: bool = False) -> dict[str, Any]:
    """Run a steady sweep pass whole, or start a full one and enqueue one ``sweep_chunk``
    task per key range.

    When another pass is starting (advisory lock held) a steady pass is skipped (the next
    beat tick catches up) and a full one waits for it; the database constraints would absorb
    a duplicate pass anyway.
    """
    now = timezone.now()
    started = sweep.start(now, full=full)
    if started is None:
        return {"skipped": True}
    run, ranges = started
    for first, last in ranges:
        sweep_chunk.apply_async((run.pk, first, last, now.isoformat()), **_same_queue(self))
    return {"run": run.pk, "chunks": len(ranges)}


@shared_task(
    name="followup_visibility.sweep_chunk",
    **_LATE,
    **_LIMITS,
    **_RETRY,
)
def sweep_chunk(run_id: int, first: Any, last: Any, now: str) -> dict[str, int]:
    """Raise the alerts of one key range, for the clock its pass started with."""
    examined, raised = sweep.run_chunk(run_id, first, last, datetime.fromisoformat(now))
    return {"examined": examined, "raised": raised}


@shared_task(
    name="followup_visibility.escalate",
    **_LATE,
    **_LIMITS,
    **_RETRY,
)
def escalate() -> dict[str, int]:
    """Plan new alerts' escalation and fire the levels that fell due (re-checked at fire time)."""
    return dict(escalation.escalate(timezone.now()))


@shared_task(
    name="followup_visibility.notify",
    **_LATE,
    **_LIMITS,
    **_RETRY,
)
def notify() -> dict[str, int]:
    """Notify owners of high-severity alerts, then deliver what quiet hours allow."""
    now = timezone.now()
    return {"created": notifications.notify_alerts(now), "delivered": notifications.deliver(now)}
