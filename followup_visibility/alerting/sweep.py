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

An alert is raised from a snapshot of the deadlines, and a refresh committing meanwhile may
clear its deadline without seeing the uncommitted alert: after each raise commits,
:func:`recheck` resolves what that left behind; after a chunk of a full pass, every active
alert of its range that no due deadline stands behind, whatever left it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

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

from followup_visibility.alerting import events, holds, lifecycle, ranking, sql
from followup_visibility.alerting.holds import Holds
from followup_visibility.choices import AlertStatus, AlertTransition, Resolution
from followup_visibility.conf import app_settings
from followup_visibility.models import Alert, Deadline, Suppression, SweepRun, TrackedOpportunity

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
    keys: Range | None = None,
) -> tuple[int, int, datetime | None]:
    """Insert an open alert for every deadline in ``deadlines`` that nothing holds back.

    Returns (examined, raised, the oldest raised alert's ``due_at``); reopened episodes count
    as raised. History rows are written set-based too (raw SQL bypasses simple-history), and
    the raise and the reopening are announced as events, and checked again after the commit
    (:func:`recheck`). ``per_row``: see :func:`~followup_visibility.alerting.holds.held_q`;
    chunks of a full pass set it, and ``keys``, their range, which the check covers whole.
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
    if done.raised or done.reopened:
        # SQLite's raise names no opportunities: read them from what was due (a small set
        # there, one query).
        ranking.mark(
            done.opportunity_ids or {row["opportunity_id"] for row in rows.filter(fv_held=False)},
            now,
        )
    if done.opportunity_ids or keys is not None:
        ids = done.opportunity_ids

        def check() -> None:
            recheck(now, ids, keys)

        # Robust: the raise has committed; should the check fail, the next full pass repairs.
        # (A function, not a partial: Django names it by ``__qualname__`` when it logs that.)
        transaction.on_commit(check, robust=True)
    return done.examined, done.raised + done.reopened, done.oldest_due


def recheck(now: datetime, opportunity_ids: Sequence[int], keys: Range | None = None) -> int:
    """After a raise committed: resolve the alerts of these opportunities (those it raised or
    reopened on) that a concurrent refresh cleared while they were being raised, or with
    ``keys`` (a chunk of a full pass) every alert of that range that no due deadline stands
    behind (:func:`~followup_visibility.alerting.sql.unbacked_alerts`); how many.

    The race: the raise reads the deadlines in its statement's snapshot; a refresh commits new
    deadlines after that snapshot, and its own automatic resolution cannot see the alert until
    the raise commits. Every such refresh holds its opportunities ``FOR NO KEY UPDATE`` from
    before it writes their deadlines until it commits. This transaction starts after the raise
    committed and locks the opportunities ``FOR SHARE``, which waits for such a lock. Then:

    - a refresh whose resolution statement began after the raise committed saw the alert and
      resolved it itself (each statement reads afresh at READ COMMITTED);
    - one whose resolution began before that still holds its lock or has committed when
      this transaction starts: the lock waits for that commit (or finds it done), and the
      next statement, reading afresh, sees both its deadlines and the alert, and resolves it;
    - a refresh that takes its lock after this one waits for this commit, then sees the
      alert and judges it itself.

    So once the raise, the refreshes and this have committed, no alert it raised stands
    without a due deadline. Three statements, and a fourth when something is resolved, with
    the register's stored ranking of what it resolved (:mod:`ranking`, three more) (on
    SQLite only the look and the resolution: it has a single writer, so no refresh commits
    while the raise runs, and ``raise_alerts`` names no opportunities there). A chunk's range
    costs one more (``no_jit``) and, with nothing raised, no lock: this is how a full pass
    repairs what anything else left, a worker lost before its check, an older version, a
    deadline written without a refresh.
    """
    # A transaction of its own: it runs after the raise's commit (``on_commit``). Should a
    # crash of the database lose its commit, the next full pass does its work again.
    with transaction.atomic(savepoint=False):
        sql.unflushed_commit()
        sql.lock_for_share(TrackedOpportunity, opportunity_ids)
        if keys is not None:
            sql.no_jit()
        # Under the lock no refresh changes the deadlines of what was raised until this
        # commits, so the resolution goes by the keys found. Elsewhere in a chunk's range one
        # may in between: an alert it made due again is resolved, and reopened by the next
        # steady pass, which looks at deadlines rewritten since the last.
        stale = sql.unbacked_alerts(now, opportunity_ids=opportunity_ids, keys=keys)
        resolved = []
        if stale:
            matched = Alert.objects.filter(sql.among(Alert, "id", stale))
            resolved = lifecycle.resolve_unbacked(matched, now)
    if resolved:
        logger.info(
            "sweep at %s: resolved %d alerts no due deadline stood behind (%s)",
            now.isoformat(),
            len(resolved),
            "raised" if keys is None else f"keys {keys[0]}-{keys[1]}",
        )
    return len(resolved)


# Passes ----------------------------------------------------------------------------------


def _lock(wait: bool) -> bool:
    """Take the sweep's advisory lock for this transaction (PostgreSQL only)."""
    sql.no_jit()
    return sql.advisory_lock(LOCK_KEY, wait=wait)


def ranges(now: datetime, size: int | None = None) -> list[Range]:
    """Inclusive ``(first, last)`` opportunity keys covering the deadlines due by ``now`` and
    the active alerts (a full pass checks that a due deadline stands behind each), in ranges
    of ``size`` (``SWEEP_CHUNK_SIZE``) consecutive keys, so none holds more than ``size``
    opportunities.

    Equal widths cost four index probes (the lowest and highest key with a due deadline, and
    with an active alert); numbering the distinct keys instead took a second at a million.
    Where keys are sparse (many closed opportunities between the open ones) some ranges hold
    fewer opportunities, or none: such a chunk finds nothing in two index probes.
    """
    size = size or app_settings.SWEEP_CHUNK_SIZE
    keys = [
        key
        for found in (Deadline.objects.filter(due_at__lte=now), Alert.objects.active())
        for key in found.aggregate(Min("opportunity_id"), Max("opportunity_id")).values()
        if key is not None
    ]
    if not keys:
        return []
    first, last = min(keys), max(keys)
    return [(key, min(key + size - 1, last)) for key in range(first, last + 1, size)]


def _last_finished(now: datetime) -> datetime | None:
    runs = SweepRun.objects.filter(finished_at__isnull=False, swept_until__lte=now)
    return runs.order_by("-swept_until").values_list("swept_until", flat=True).first()


def _start(now: datetime, *, full: bool, wait: bool) -> tuple[SweepRun, list[Range]] | None:
    with transaction.atomic(), ranking.batched(now):
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
        # The queue reads severity from stored levels while they hold: move those that ended.
        ranking.advance(now)
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
            # Kept so that chunks lost with a worker can be issued again (``lost_chunks``).
            run.ranges = [[first, last] for first, last in work]
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
    with transaction.atomic(), ranking.batched(now):
        sql.no_jit()
        # Only a full pass has chunks (a steady one raises in ``start``): every due deadline
        # of the range is examined.
        holds_ = Holds.at(now)
        deadlines = due(now, first=first, last=last, holds_=holds_)
        examined, raised, oldest = raise_due(
            deadlines, now, holds_, per_row=True, keys=(first, last)
        )
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


# Lost chunks -----------------------------------------------------------------------------

#: How long a chunk of a full pass may stay undone after it was issued before it counts as
#: lost with its worker: the chunk task's hard time limit (300 s), and as long again for
#: waiting in the queue behind the other chunks of its pass.
LOST_AFTER = timedelta(minutes=10)


class Chunk(NamedTuple):
    """One key range of a full pass, to run for the clock its pass started with."""

    run_id: int
    first: Any
    last: Any
    now: datetime


def lost_chunks(now: datetime, *, after: timedelta) -> list[Chunk]:
    """The chunks of the latest full pass not done ``after`` since they were last issued,
    recorded as issued again at ``now``: the caller runs or enqueues them.

    A worker killed before it acknowledged its chunks leaves them with the broker, which
    (Redis) delivers them again only after its visibility timeout, an hour by default; a chunk
    killed by its time limit is acknowledged and gone. Only the latest full pass counts: once
    it finishes it has covered every due deadline an earlier one would have. A chunk that was
    slow rather than lost is harmless to run twice (``run_chunk`` counts it once), and the
    record keeps a chunk from being issued more than once per ``after``.
    """
    cutoff = now - after
    latest = (
        SweepRun.objects.filter(full=True, started_at__lte=now)
        .order_by("-started_at", "-pk")
        .values("pk", "started_at", "finished_at")
        .first()
    )
    if latest is None or latest["finished_at"] is not None or latest["started_at"] > cutoff:
        return []
    with transaction.atomic():
        # Two passes on one tick issue a chunk once: the second reads the first's record.
        # (Chunks lock this row too, at their very end, so the wait is short.)
        run = SweepRun.objects.select_for_update().get(pk=latest["pk"])
        lost, run.ranges = _reissue(run, cutoff, now)
        if lost:
            SweepRun.objects.filter(pk=run.pk).update(ranges=run.ranges)
    if lost:
        logger.warning(
            "sweep %s: %d of %d chunks not done %s after they were issued, issued again",
            run.pk,
            len(lost),
            run.chunks,
            after,
        )
    return lost


def _reissue(run: SweepRun, cutoff: datetime, now: datetime) -> tuple[list[Chunk], list[Any]]:
    """The run's chunks not done and last issued by ``cutoff``, and its ``ranges`` with
    ``now`` recorded as their issue time (a third item, ``[first, last, issued]``)."""
    done, lost, ranges = set(run.done_ranges), [], []
    for item in run.ranges:
        first, last = item[0], item[1]
        issued = datetime.fromisoformat(item[2]) if len(item) > 2 else run.started_at
        if first not in done and issued <= cutoff:
            lost.append(Chunk(run.pk, first, last, run.swept_until))
            item = [first, last, now.isoformat()]
        ranges.append(item)
    return lost, ranges


def finish_lost(now: datetime, *, after: timedelta = LOST_AFTER) -> list[Chunk]:
    """Run the ``lost_chunks`` in this process (the cron path); returns them."""
    lost = lost_chunks(now, after=after)
    for chunk in lost:
        run_chunk(chunk.run_id, chunk.first, chunk.last, chunk.now)
    return lost


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
