"""The outbox: work that must follow a committed change, written in the change's transaction.

A change that must be followed by work (a recompute after a new policy version or a calendar
edit, an email digest) writes an :class:`~followup_visibility.models.OutboxMessage` in its own
transaction: the work is on record exactly when the change is. :func:`drain` does it later,
in the worker (woken after commit through :data:`ready`, and by beat as a safety net) or in
the ``followup_outbox`` cron command. A broker outage delays the work; it never loses it, and
no request waits for a broker.

Handlers are registered by kind (:func:`register`) when the app starts. An
*atomic* handler runs inside the transaction that claims its message, so its writes and the
message's completion commit together: a crash rolls both back and the message is claimed
again. A side effect outside the database (an email) cannot roll back: its message is claimed
with a lease that commits first, the effect runs outside any transaction, and the message is
marked done after it; only a crash between the effect and that mark repeats it (a handler
that records its effect, as the email one does, can narrow that). Work that did not happen
raises, whether it failed loudly or not (an email the backend accepted none of): the message
keeps the error and is tried again after :data:`BACKOFF`, for every kind alike.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.dispatch import Signal
from django.utils import timezone

from followup_visibility.alerting import sql
from followup_visibility.models import OutboxMessage

logger = logging.getLogger(__name__)

#: Sent after a transaction that wrote messages commits; ``kinds``, ``count``. The surfaces
#: wake a worker with it; nothing is lost when nobody listens.
ready = Signal()

#: How long a retry waits after each failed attempt (the last is repeated).
BACKOFF = (
    timedelta(seconds=5),
    timedelta(seconds=30),
    timedelta(minutes=2),
    timedelta(minutes=10),
    timedelta(minutes=30),
    timedelta(hours=1),
    timedelta(hours=2),
)
#: How long a claimed side effect is left to finish before it may be claimed again: longer
#: than the drain task's hard time limit (5 minutes), so a running send is never taken twice.
LEASE = timedelta(minutes=10)
#: Finished messages are deleted after this long (failed ones are kept).
KEEP_DONE = timedelta(days=7)

Run = Callable[[Mapping[str, Any], datetime], None]


@dataclass(frozen=True)
class Handler:
    kind: str
    run: Run
    #: True: runs in the claiming transaction; False: a side effect, run after a lease.
    atomic: bool = True
    max_attempts: int = 8


_handlers: dict[str, Handler] = {}


def register(kind: str, run: Run, *, atomic: bool = True, max_attempts: int = 8) -> None:
    """Name the function that does the work of messages of ``kind`` (at app start-up)."""
    _handlers[kind] = Handler(kind, run, atomic, max_attempts)


def enqueue(
    kind: str,
    payloads: Sequence[Mapping[str, Any]],
    *,
    now: datetime,
    key: str = "",
    keys: Sequence[str] = (),
) -> None:
    """Record work of ``kind`` in the current transaction, one message per payload.

    A ``key`` (one payload only) merges this message with a pending one of the same key.
    ``keys`` (one per payload) name the messages without merging: a key is held by one
    pending message at a time (a unique index), so the caller makes sure, under its own
    lock, that none of them is pending; otherwise the insert raises ``IntegrityError``.
    """
    if not payloads:
        return
    if keys and len(keys) != len(payloads):
        raise ValueError("keys name one message each")
    if key:
        if len(payloads) != 1:
            raise ValueError("a merge key names one message")
        # A pending message with the same key already carries this work.
        sql.merge_message(kind, payloads[0], key, now)
    else:
        named = keys or [""] * len(payloads)
        OutboxMessage.objects.bulk_create(
            OutboxMessage(kind=kind, payload=dict(p), key=k, created_at=now, available_at=now)
            for p, k in zip(payloads, named, strict=True)
        )
    count = len(payloads)
    transaction.on_commit(
        lambda: ready.send_robust(sender=OutboxMessage, kinds=[kind], count=count), robust=True
    )


def pending(kinds: Collection[str] | None = None) -> Any:
    """Messages not done and not given up (of these ``kinds``)."""
    messages = OutboxMessage.objects.filter(done_at__isnull=True, failed_at__isnull=True)
    return messages.filter(kind__in=list(kinds)) if kinds is not None else messages


@dataclass
class DrainResult:
    done: int = 0
    #: Attempts that raised (to be retried after their backoff, or given up).
    failed: int = 0
    given_up: int = 0
    #: Stopped by ``limit`` or ``budget`` with messages still available.
    more: bool = False


def drain(
    *,
    clock: Callable[[], datetime] = timezone.now,
    kinds: Collection[str] | None = None,
    limit: int | None = None,
    budget: timedelta | None = None,
) -> DrainResult:
    """Do the available messages (of these ``kinds``), oldest first, one transaction each.

    ``clock`` gives the time each message is done at (a drain may run for minutes). Stops
    when nothing is available, after ``limit`` messages or once ``budget`` has passed.
    Concurrent drains share the work: each claims with ``FOR UPDATE SKIP LOCKED``.
    """
    result = DrainResult()
    started = clock()
    count = 0
    while True:
        if (limit is not None and count >= limit) or (
            budget is not None and clock() - started >= budget
        ):
            result.more = pending(kinds).filter(available_at__lte=clock()).exists()
            break
        if not _drain_one(clock, kinds, result):
            break
        count += 1
    OutboxMessage.objects.filter(done_at__lt=started - KEEP_DONE).delete()
    return result


def _drain_one(
    clock: Callable[[], datetime], kinds: Collection[str] | None, result: DrainResult
) -> bool:
    """Claim and do one message; whether there was one."""
    with transaction.atomic():
        at = clock()
        message = (
            pending(kinds)
            .filter(available_at__lte=at)
            .select_for_update(skip_locked=True)
            .order_by("available_at", "pk")
            .first()
        )
        if message is None:
            return False
        found = _handlers.get(message.kind)
        message.attempts += 1
        if found is None:
            _failed(message, at, f"no handler is registered for {message.kind!r}", 8, result)
            return True
        if found.atomic:
            try:
                with transaction.atomic():
                    found.run(message.payload, at)
            except Exception as exc:
                logger.exception("outbox %s failed", message)
                _failed(message, at, repr(exc), found.max_attempts, result)
            else:
                message.done_at = at
                message.save(update_fields=["attempts", "done_at"])
                result.done += 1
            return True
        # A side effect: take a lease and commit it before the effect runs. The lease runs on
        # the wall clock, whatever clock the caller gives: it guards against other processes.
        message.available_at = max(at, timezone.now()) + LEASE
        message.save(update_fields=["attempts", "available_at"])
    # Ours while the attempt is: a drain that took it over after the lease ran out has
    # counted another attempt, and only the holder of the last attempt marks it.
    ours = OutboxMessage.objects.filter(pk=message.pk, attempts=message.attempts)
    try:
        found.run(message.payload, at)
    except Exception as exc:
        logger.exception("outbox %s failed", message)
        with transaction.atomic():
            if ours.select_for_update().exists():
                _failed(message, clock(), repr(exc), found.max_attempts, result)
    else:
        if ours.update(done_at=clock()):
            result.done += 1
    return True


def _failed(
    message: OutboxMessage, at: datetime, error: str, max_attempts: int, result: DrainResult
) -> None:
    result.failed += 1
    message.last_error = error[:2000]
    message.available_at = at + BACKOFF[min(message.attempts, len(BACKOFF)) - 1]
    if message.attempts >= max_attempts:
        message.failed_at = at
        result.given_up += 1
        logger.error("outbox %s given up after %d attempts", message, message.attempts)
    message.save(update_fields=["attempts", "available_at", "last_error", "failed_at"])
