"""The sweep: turn deadlines that fell due into alerts, in set-based statements.

A pass has two parts. ``start`` takes a lock, does the per-pass housekeeping (wake snoozed
alerts, release and apply suppressions, count what was resolved since the last pass), records
a ``SweepRun`` and splits the work into key ranges; ``run_chunk`` raises the alerts of one
range in one ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``. The database's unique
constraints (one active alert per opportunity and signal, one alert per episode) absorb
repeats, so overlapping passes, retried chunks and a beat firing twice are harmless.

A steady pass looks only at deadlines that fell due, or were rewritten, since the last pass
(and at those a suppression or an inhibition stopped holding back since); a full pass looks at
every due deadline and repairs whatever a steady one missed. Deadlines an active suppression
matches, or an active inhibition rule silences, are examined but raise nothing.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import (
    BooleanField,
    Case,
    Exists,
    F,
    Max,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Value,
    When,
)
from django.db.models.functions import Coalesce, Greatest

from followup_visibility.alerting import events, holds, lifecycle, sql
from followup_visibility.alerting.holds import Holds
from followup_visibility.choices import AlertStatus, AlertTransition, Resolution
from followup_visibility.conf import app_settings
from followup_visibility.models import Alert, Deadline, Suppression, SweepRun

logger = logging.getLogger(__name__)

#: How far a steady pass reaches back before the last pass's clock for writes (recomputed
#: deadlines, ended suppressions, resolved alerts): one made for a time before that clock
#: but committed after the pass is still seen.
OVERLAP = timedelta(minutes=5)
#: The PostgreSQL advisory lock that lets one ``start`` run at a time ("fv-sweep").
LOCK_KEY = int.from_bytes(b"fv-sweep", "big")

Range = tuple[Any, Any]


# The raise -------------------------------------------------------------------------------


def due(
    now: datetime,
    *,
    since: datetime | None = None,
    first: Any = None,
    last: Any = None,
    holds_: Holds | None = None,
) -> QuerySet[Deadline]:
    """The deadlines a pass examines: due by ``now``; with ``since`` (the last finished
    pass's clock), only what changed.

    "Changed" is a deadline that fell due after ``since``, or was rewritten, one a
    suppression held back until it ended, or a target an inhibition held back until its
    source's alert was resolved, each after ``since - OVERLAP``. Falling due depends on the
    clock alone, so that test needs no overlap; the others are writes, which may commit
    after a pass whose clock is later than theirs.
    """
    qs = Deadline.objects.filter(due_at__lte=now)
    if since is not None:
        # The range is spelled out in its arm: PostgreSQL estimates ``due_at > since`` alone
        # at half the table (every future deadline), and with that estimate it hashed the
        # whole opportunity table to join a suppression rule's team (0.5 s a pass at 1M).
        recent = Q(due_at__gt=since, due_at__lte=now) | Q(computed_at__gt=since - OVERLAP)
        ended = list(Suppression.objects.filter(ends_at__gt=since - OVERLAP, ends_at__lte=now))
        if ended:
            recent |= holds.matching_q(ended, now)
        rules = holds.inhibitions() if holds_ is None else holds_.inhibitions
        for target, sources in rules.items():
            # Fetched first: as a subquery PostgreSQL scans the whole deadline index for it.
            cleared = list(
                Alert.objects.filter(
                    signal__in=sources,
                    status=AlertStatus.RESOLVED,
                    resolved_at__gt=since - OVERLAP,
                ).values_list("opportunity_id", flat=True)
            )
            if cleared:
                recent |= Q(signal=target, opportunity_id__in=cleared)
        qs = qs.filter(recent)
    if first is not None:
        qs = qs.filter(opportunity_id__gte=first, opportunity_id__lte=last)
    return qs


def raise_due(
    deadlines: QuerySet[Deadline],
    now: datetime,
    holds_: Holds | None = None,
    *,
    per_row: bool = False,
) -> tuple[int, int, datetime | None]:
    """Insert an open alert for every deadline in ``deadlines`` that nothing holds back.

    Returns (examined, raised, the oldest raised alert's ``due_at``); reopened episodes count
    as raised. History rows are written set-based too (raw SQL bypasses simple-history), and
    the raise and the reopening are announced as events. ``per_row``: see
    :func:`~followup_visibility.alerting.holds.held_q`; chunks of a full pass set it.
    """
    held = holds.held_q(now, holds_, per_row=per_row)
    flag: Any = (
        Value(False, output_field=BooleanField())
        if held is None
        else Case(When(held, then=Value(True)), default=Value(False), output_field=BooleanField())
    )
    rows = deadlines.annotate(fv_held=flag).values(
        "opportunity_id", "signal", "event_at", "due_at", "clock_start", "sla", "fv_held"
    )
    wanted = events.wanted() or events.wanted(AlertTransition.REOPENED)
    done = sql.raise_alerts(rows, now, ids=wanted)
    if wanted:
        events.raised(done.raised_ids or [], now)
        events.changed(
            AlertTransition.REOPENED, done.reopened_ids or [], now, reason=sql.REOPENED_REASON
        )
    return done.examined, done.raised + done.reopened, done.oldest_due


# Passes ----------------------------------------------------------------------------------


def _lock(wait: bool) -> bool:
    """Take the sweep's advisory lock for this transaction (PostgreSQL only)."""
    sql.no_jit()
    return sql.advisory_lock(LOCK_KEY, wait=wait)


def ranges(now: datetime, size: int | None = None) -> list[Range]:
    """Inclusive ``(first, last)`` opportunity keys covering the deadlines due by ``now``, in
    ranges of ``size`` (``SWEEP_CHUNK_SIZE``) consecutive keys, so none holds more than
    ``size`` opportunities.

    Equal widths cost two index probes (the lowest and highest key with a due deadline);
    numbering the distinct keys instead took a second at a million. Where keys are sparse
    (many closed opportunities between the open ones) some ranges hold fewer opportunities,
    or none: such a chunk finds nothing in one index probe.
    """
    size = size or app_settings.SWEEP_CHUNK_SIZE
    bounds = Deadline.objects.filter(due_at__lte=now).aggregate(
        first=Min("opportunity_id"), last=Max("opportunity_id")
    )
    first, last = bounds["first"], bounds["last"]
    if first is None:
        return []
    return [(key, min(key + size - 1, last)) for key in range(first, last + 1, size)]


def _last_finished(now: datetime) -> datetime | None:
    runs = SweepRun.objects.filter(finished_at__isnull=False, swept_until__lte=now)
    return runs.order_by("-swept_until").values_list("swept_until", flat=True).first()


def _start(now: datetime, *, full: bool, wait: bool) -> tuple[SweepRun, list[Range]] | None:
    with transaction.atomic():
        if not _lock(wait):
            return None
        last = _last_finished(now)
        full = full or last is None
        previous = (
            SweepRun.objects.filter(swept_until__lt=now)
            .order_by("-swept_until")
            .values_list("swept_until", flat=True)
            .first()
        )
        # Conditions ("until the customer replies") are checked when the touch or change
        # arrives; a steady pass wakes only the snoozes whose time came.
        woken = lifecycle.wake_snoozed(now, conditions=full)
        rules = holds.active_rules(now)
        # A steady pass looks at the rules that started or ended on their own clock since the
        # last pass (``create`` and ``end`` apply their own effects); a full one at every
        # alert, which also repairs a rule whose start or end was edited into the past.
        changed = None if full else last
        released = holds.release(now, rules=rules, since=changed)
        suppressed = holds.apply(now, rules=rules, since=changed)
        resolved = Alert.objects.filter(status=AlertStatus.RESOLVED, resolved_at__lte=now)
        if previous is not None:
            resolved = resolved.filter(resolved_at__gt=previous)
        run = SweepRun(
            started_at=now,
            swept_until=now,
            full=full,
            woken=woken,
            suppressed=suppressed,
            resolved=resolved.count(),
        )
        work: list[Range] = []
        if full:
            work = ranges(now)
            run.chunks = len(work)
            if not work:  # nothing due: done already
                run.finished_at, run.lag = now, timedelta(0)
        else:
            # A steady pass is small: it raises here, under the lock and in this transaction,
            # rather than in a chunk task of its own (one commit, no task round trip).
            assert last is not None
            holds_ = Holds(rules, holds.inhibitions())
            deadlines = due(now, since=last, holds_=holds_)
            run.examined, run.raised, oldest = raise_due(deadlines, now, holds_)
            run.chunks = run.chunks_done = 1
            run.finished_at, run.lag = now, now - oldest if oldest else timedelta(0)
        run.save()
    logger.info(
        "sweep %s started: %d chunks, %d woken, %d released, %d suppressed, %d resolved, "
        "%d examined, %d raised",
        run.pk,
        run.chunks,
        woken,
        released,
        suppressed,
        run.resolved,
        run.examined,
        run.raised,
    )
    return run, work


def start(now: datetime, *, full: bool = False) -> tuple[SweepRun, list[Range]] | None:
    """Begin a pass at ``now``: housekeeping, a ``SweepRun`` and the key ranges to raise.

    A steady pass returns ``None`` when another ``start`` holds the lock (PostgreSQL): the
    caller skips it, and the next one, a minute later, catches up. A full pass waits for the
    lock instead: beat sends it on the same tick as a steady pass once an hour, and skipping
    it would put the repair off by a whole hour, again and again.

    A steady pass raises its alerts here and returns no ranges: it is finished. A full pass
    (also the first one ever) returns one range per ``SWEEP_CHUNK_SIZE`` opportunity keys,
    or none when nothing is due (the run is then finished already). Run each range with
    ``run_chunk``.
    """
    return _start(now, full=full, wait=full)


def run_chunk(run_id: int, first: Any, last: Any, now: datetime) -> tuple[int, int]:
    """Raise the alerts of one key range of a pass, in one transaction; (examined, raised).

    Adds to the run's counters; the chunk that completes the run sets ``finished_at``. A
    chunk retried after it committed (a worker lost before acknowledging it) finds its range
    done, rolls its work back and counts nothing: ``(0, 0)``.
    """
    with transaction.atomic():
        sql.no_jit()
        # Only a full pass has chunks (a steady one raises in ``start``): every due deadline
        # of the range is examined.
        holds_ = Holds.at(now)
        deadlines = due(now, first=first, last=last, holds_=holds_)
        examined, raised, oldest = raise_due(deadlines, now, holds_, per_row=True)
        # Locked last, so the chunks of a pass run side by side and queue only here; under
        # the lock the counters add up exactly and only the chunk that completes the run
        # finishes it.
        done = SweepRun.objects.select_for_update().values_list("done_ranges", flat=True)
        done_ranges = list(done.get(pk=run_id))
        if first in done_ranges:
            # A retry of a chunk that committed: its alerts are there; count nothing twice.
            transaction.set_rollback(True)
            logger.info("sweep %s chunk %s-%s: done already", run_id, first, last)
            return 0, 0
        lag = now - oldest if oldest else timedelta(0)
        SweepRun.objects.filter(pk=run_id).update(
            done_ranges=[*done_ranges, first],
            examined=F("examined") + examined,
            raised=F("raised") + raised,
            chunks_done=F("chunks_done") + 1,
            lag=Greatest(Coalesce("lag", Value(timedelta(0))), Value(lag)),
            finished_at=Case(
                When(
                    Q(finished_at__isnull=True, chunks__lte=F("chunks_done") + 1),
                    then=Value(now),
                ),
                default=F("finished_at"),
            ),
        )
    logger.info(
        "sweep %s chunk %s-%s: %d examined, %d raised", run_id, first, last, examined, raised
    )
    return examined, raised


def sweep(now: datetime, *, full: bool = False) -> SweepRun:
    """One whole pass up to ``now``, in this process; steady unless ``full`` or the first.

    Waits for the lock instead of skipping, so a command always runs its pass.
    """
    started = _start(now, full=full, wait=True)
    if started is None:  # pragma: no cover - waiting for the lock always gets it
        raise RuntimeError("the sweep lock was not taken")
    run, work = started
    for first, last in work:
        run_chunk(run.pk, first, last, now)
    run.refresh_from_db()
    return run


def consistency(now: datetime) -> dict[str, int]:
    """Stored against expected state: both mismatch counts are 0 right after a pass.

    ``due_without_alert``: deadlines due by ``now`` with no active alert for their signal and
    no alert for their episode (dismissed or resolved by hand) that nothing holds back.
    ``alerts_without_deadline``: active alerts whose deadline is gone, started a new episode or
    moved past ``now``. Reads every due deadline and active alert: a monitor, not a pass.
    """
    due_now = Deadline.objects.filter(due_at__lte=now)
    alerts_of = Alert.objects.filter(
        opportunity_id=OuterRef("opportunity_id"), signal=OuterRef("signal")
    )
    # An episode closed by a person (dismissed, resolved by hand) stays closed; one resolved
    # automatically whose deadline is due again should have been reopened.
    decided = alerts_of.filter(episode_at=OuterRef("event_at")).exclude(
        status=AlertStatus.RESOLVED, resolution=Resolution.AUTO
    )
    unalerted = due_now.exclude(Exists(decided)).exclude(Exists(alerts_of.active()))
    if (held := holds.held_q(now)) is not None:
        unalerted = unalerted.exclude(held)
    current = Deadline.objects.filter(
        opportunity_id=OuterRef("opportunity_id"),
        signal=OuterRef("signal"),
        event_at=OuterRef("episode_at"),
        due_at__lte=now,
    )
    active = Alert.objects.active()
    return {
        "due_deadlines": due_now.count(),
        "active_alerts": active.count(),
        "due_without_alert": unalerted.count(),
        "alerts_without_deadline": active.exclude(Exists(current)).count(),
    }
