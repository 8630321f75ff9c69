"""Celery tasks: thin, idempotent callers of the domain functions, with stable names."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from celery import Celery, Task, current_app, shared_task
from django.apps import apps
from django.db import OperationalError
from django.utils import timezone

from followup_visibility.alerting import escalation, notifications, outbox, ranking, sweep
from followup_visibility.ingest import crm
from followup_visibility.registry import adapters, get_adapter

logger = logging.getLogger(__name__)

#: Far below Redis's visibility timeout (1 h), so that a running task is never delivered to a
#: second worker. A task killed by the hard limit is acknowledged (Celery's default), not
#: redelivered: beat runs each job again, and the sweep issues lost chunks again.
_LIMITS: dict[str, Any] = {"soft_time_limit": 240, "time_limit": 300}
#: Reconciling reads every tracked host row: minutes at a million. Still under the visibility
#: timeout, so that a running reconcile is never delivered to a second worker.
_LONG_LIMITS: dict[str, Any] = {"soft_time_limit": 3000, "time_limit": 3300}
#: Every task: a task whose worker dies is delivered again rather than lost (it is
#: idempotent); on Redis, after the visibility timeout.
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
        result = crm.sync_model(model, now)
        totals["created"] += len(result.created)
        totals["updated"] += len(result.updated)
        totals["deleted"] += crm.reconcile_deleted(model, now)
    return totals


#: How long one drain task works before it hands the rest to a fresh task (far below the
#: soft time limit, so that a long recompute is split rather than killed).
_DRAIN_BUDGET = timedelta(seconds=120)
#: How many drain tasks a burst of outbox work starts at most (more workers, faster).
PARALLEL_DRAINS = 8
#: Seconds a wake-up waits for the broker before leaving the work to beat or cron.
_CONNECT_TIMEOUT = 1.0


@shared_task(name="followup_visibility.drain_outbox", **_LATE, **_LIMITS)
def drain_outbox() -> dict[str, int]:
    """Do the outbox's pending work (recomputes, emails); started after a change commits
    and by beat as a safety net. Hands what is left after its budget to a new task."""
    result = outbox.drain(budget=_DRAIN_BUDGET)
    if result.more:
        wake(count=1)
    return {"done": result.done, "failed": result.failed, "given_up": result.given_up}


def wake(sender: Any = None, *, count: int = 1, **kwargs: Any) -> None:
    """Start drain tasks for new outbox work, if this host runs Celery (``outbox.ready``).

    Never raises: with no Celery app configured (the cron path) nothing is published, and a
    broker that cannot be reached only delays the work until beat or cron drains it.
    """
    app = _host_app()
    if app is None:
        return
    task = app.tasks[drain_outbox.name]
    tasks = min(count, PARALLEL_DRAINS)
    if app.conf.task_always_eager:
        for _ in range(tasks):
            task.apply_async()
        return
    try:
        # One attempt with a short timeout: a request must not wait for a broker that is
        # down (kombu's defaults retry the connection for seconds, even with retry=False).
        with app.connection_for_write(connect_timeout=_CONNECT_TIMEOUT) as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0)
            for _ in range(tasks):
                # (``connection`` is a documented option the type stubs lack.)
                task.apply_async(retry=False, connection=connection)  # type: ignore[call-arg]
    except Exception as exc:
        logger.warning("outbox work waits for beat or cron: no broker (%s)", exc)


def _host_app() -> Celery | None:
    """The host's Celery app; None when it has none (Celery's fallback app is current)."""
    app: Celery = current_app
    return None if app.main == "default" else app


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
def sweep_pass(self: Task[Any, Any], full: bool = False, now: str | None = None) -> dict[str, Any]:
    """Run a steady sweep pass whole, or start a full one and enqueue one ``sweep_chunk``
    task per key range; then enqueue again the chunks of a full pass lost with a worker.

    When another pass is starting (advisory lock held) a steady pass is skipped (the next
    beat tick catches up) and a full one waits for it; the database constraints would absorb
    a duplicate pass anyway. ``now``: the clock as an ISO 8601 time with an offset (default:
    the current time).
    """
    clock = _parse_clock(now)
    route = _same_queue(self)
    started = sweep.start(clock, full=full)
    result: dict[str, Any] = {"skipped": True}
    if started is not None:
        run, ranges = started
        for first, last in ranges:
            sweep_chunk.apply_async((run.pk, first, last, clock.isoformat()), **route)
        result = {"run": run.pk, "chunks": len(ranges)}
    # After the pass: a full pass just started makes an earlier one's lost chunks moot.
    lost = sweep.lost_chunks(clock, after=sweep.LOST_AFTER)
    for chunk in lost:
        args = (chunk.run_id, chunk.first, chunk.last, chunk.now.isoformat())
        sweep_chunk.apply_async(args, **route)
    return {**result, "reissued": len(lost)}


def _parse_clock(now: str | None) -> datetime:
    if now is None:
        return timezone.now()
    clock = datetime.fromisoformat(now)
    if timezone.is_naive(clock):
        raise ValueError(f"now {now!r} has no UTC offset")
    return clock


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
    """Notify owners of high-severity alerts, then deliver what quiet hours allow.

    ``digests``: composed; ``sent``: accepted by the mail backend in this task's drain;
    ``failed``: attempts that failed (tried again after their backoff unless given up).
    """
    now = timezone.now()
    created = notifications.notify_alerts(now)
    done = notifications.deliver(now)
    return {"created": created, "digests": done.composed, "sent": done.sent, "failed": done.failed}


@shared_task(
    name="followup_visibility.rescore_register",
    **_LATE,
    **_LIMITS,
    **_RETRY,
)
def rescore_register() -> dict[str, int]:
    """Score the register's rows again: lateness and age move with the clock."""
    return {"stored": ranking.rescore(timezone.now())}
