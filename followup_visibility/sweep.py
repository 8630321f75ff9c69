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
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction
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

from followup_visibility import alerts, suppression
from followup_visibility.choices import ACTIVE_ALERT_STATUSES, AlertStatus, Resolution
from followup_visibility.conf import app_settings
from followup_visibility.models import Alert, Deadline, InhibitionRule, Suppression, SweepRun

logger = logging.getLogger(__name__)

#: How far a steady pass reaches back before the last pass's clock for writes (recomputed
#: deadlines, ended suppressions, resolved alerts): one made for a time before that clock
#: but committed after the pass is still seen.
OVERLAP = timedelta(minutes=5)
#: The PostgreSQL advisory lock that lets one ``start`` run at a time ("fv-sweep").
LOCK_KEY = int.from_bytes(b"fv-sweep", "big")
_HISTORY_REASON = "raised by sweep"

Range = tuple[Any, Any]


def _db(value: datetime) -> Any:
    # Raw SQL gets no field conversion: SQLite stores naive UTC text, and an aware datetime
    # passed as is would be written and compared in another format.
    return connection.ops.adapt_datetimefield_value(value)


def _table(model: Any) -> str:
    return str(connection.ops.quote_name(model._meta.db_table))


# What a pass holds back ------------------------------------------------------------------


def inhibitions() -> dict[str, list[str]]:
    """Active inhibition rules as ``{target: [sources]}``."""
    found: dict[str, list[str]] = defaultdict(list)
    rules = InhibitionRule.objects.filter(is_active=True).order_by("target", "source")
    for source, target in rules.values_list("source", "target"):
        found[target].append(source)
    return dict(found)


@dataclass(frozen=True)
class Holds:
    """The rules that hold deadlines back at one clock: active suppressions and inhibitions.

    Read once per transaction and handed to every step that needs them: a steady pass is a
    handful of small statements, and reading the same rules again in each was a good part of
    its time.
    """

    suppressions: list[Suppression]
    inhibitions: dict[str, list[str]]

    @classmethod
    def at(cls, now: datetime) -> Holds:
        return cls(suppression.active_rules(now), inhibitions())


def inhibited_q(now: datetime, prefix: str = "", holds: Holds | None = None) -> Q | None:
    """Deadlines or alerts (at ``prefix``) whose signal a source due on the same opportunity
    by ``now`` silences; ``None`` when no rule is active."""
    q = Q()
    rules = inhibitions() if holds is None else holds.inhibitions
    for target, sources in rules.items():
        source_due = Deadline.objects.filter(
            opportunity_id=OuterRef(f"{prefix}opportunity_id"),
            signal__in=sources,
            due_at__lte=now,
        )
        q |= Q(**{f"{prefix}signal": target}) & Q(Exists(source_due))
    return q or None


def held_q(now: datetime, holds: Holds | None = None, *, per_row: bool = False) -> Q | None:
    """Deadlines the sweep does not raise at ``now``: suppressed or inhibited. ``per_row``
    probes the opportunity per deadline instead of joining it (for one key range)."""
    holds = holds or Holds.at(now)
    suppressed = suppression.held_q(now, rules=holds.suppressions, per_row=per_row)
    parts = [q for q in (suppressed, inhibited_q(now, holds=holds)) if q is not None]
    if not parts:
        return None
    q = parts[0]
    for part in parts[1:]:
        q |= part
    return q


# The raise -------------------------------------------------------------------------------


def due(
    now: datetime,
    *,
    since: datetime | None = None,
    first: Any = None,
    last: Any = None,
    holds: Holds | None = None,
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
            recent |= suppression.matching_q(ended, now)
        rules = inhibitions() if holds is None else holds.inhibitions
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


_INSERT = """
    INSERT INTO {alert} (
        opportunity_id, signal, episode_at, due_at, clock_start, sla, raised_at, status,
        dismissed_reason, resolution, resolution_note, snooze_condition, snooze_reason,
        snooze_stage, escalation_level, escalation_planned
    )
    SELECT due.opportunity_id, due.signal, due.event_at, due.due_at, due.clock_start, due.sla,
           %s, %s, '', '', '', '', '', '', 0, %s
    FROM {source} WHERE NOT due.fv_held
    ON CONFLICT DO NOTHING
"""

# An episode resolved automatically (its deadline moved past the clock or went away) whose
# deadline is due again: a stall that ended, an owner removed again. The per-episode
# constraint forbids a second row, so the resolved alert reopens, raised anew. Dismissed and
# hand-resolved episodes stay closed: a person decided about them.
_REOPEN_SET = """
    status = %s, resolved_at = NULL, resolution = '', resolution_note = '',
    resolved_touch_id = NULL, due_at = due.due_at, clock_start = due.clock_start,
    sla = due.sla, raised_at = %s, escalation_level = 0, escalate_at = NULL,
    escalation_planned = %s, escalation_from = NULL,
    acknowledged_at = NULL, acknowledged_by_id = NULL
"""
_REOPEN_WHERE = """
    NOT due.fv_held
    AND {a}.opportunity_id = due.opportunity_id AND {a}.signal = due.signal
    AND {a}.episode_at = due.event_at
    AND {a}.status = %s AND {a}.resolution = %s
    AND NOT EXISTS (
        SELECT 1 FROM {alert} other
        WHERE other.opportunity_id = {a}.opportunity_id AND other.signal = {a}.signal
          AND other.status IN ({active})
    )
"""
_REOPEN_REASON = "reopened by sweep: due again"


def _reopen_params(now: datetime) -> tuple[list[Any], list[Any]]:
    set_params = [AlertStatus.OPEN, _db(now), False]
    where_params = [AlertStatus.RESOLVED, Resolution.AUTO, *ACTIVE_ALERT_STATUSES]
    return set_params, where_params


def raise_due(
    deadlines: QuerySet[Deadline],
    now: datetime,
    holds: Holds | None = None,
    *,
    per_row: bool = False,
) -> tuple[int, int, datetime | None]:
    """Insert an open alert for every deadline in ``deadlines`` that nothing holds back.

    Returns (examined, raised, the oldest raised alert's ``due_at``); reopened episodes count
    as raised. History rows are written set-based too (raw SQL bypasses simple-history).
    ``per_row``: see :func:`held_q`; chunks of a full pass set it.
    """
    held = held_q(now, holds, per_row=per_row)
    flag: Any = (
        Value(False, output_field=BooleanField())
        if held is None
        else Case(When(held, then=Value(True)), default=Value(False), output_field=BooleanField())
    )
    rows = deadlines.annotate(fv_held=flag).values(
        "opportunity_id", "signal", "event_at", "due_at", "clock_start", "sla", "fv_held"
    )
    sql, params = rows.query.sql_with_params()
    insert_params = [_db(now), AlertStatus.OPEN, False]
    set_params, where_params = _reopen_params(now)
    alert = _table(Alert)
    active = ", ".join(["%s"] * len(ACTIVE_ALERT_STATUSES))
    history = _table(Alert.history.model)
    columns = alerts.history_columns()
    quoted = ", ".join(connection.ops.quote_name(c) for c in columns)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # One statement counts, reopens, raises and writes history: data-modifying CTEs
            # over one materialized ``due``.
            def from_(name: str) -> str:
                return ", ".join(f"{name}.{connection.ops.quote_name(c)}" for c in columns)

            insert = _INSERT.format(alert=alert, source="due")
            reopen_where = _REOPEN_WHERE.format(a="a", alert=alert, active=active)
            cursor.execute(
                f"""
                WITH due AS MATERIALIZED ({sql}),
                reopened AS (
                    UPDATE {alert} a SET {_REOPEN_SET}
                    FROM due WHERE {reopen_where}
                    RETURNING a.*
                ),
                ins AS ({insert} RETURNING *),
                hist AS (
                    INSERT INTO {history} (
                        {quoted}, history_date, history_change_reason, history_type
                    )
                    SELECT {from_("ins")}, %s, %s, '+' FROM ins
                    UNION ALL
                    SELECT {from_("reopened")}, %s, %s, '~' FROM reopened
                )
                SELECT (SELECT count(*) FROM due),
                       (SELECT count(*) FROM ins) + (SELECT count(*) FROM reopened),
                       LEAST((SELECT min(due_at) FROM ins), (SELECT min(due_at) FROM reopened))
                """,
                [
                    *params,
                    *set_params,
                    *where_params,
                    *insert_params,
                    _db(now),
                    _HISTORY_REASON,
                    _db(now),
                    _REOPEN_REASON,
                ],
            )
            examined, raised, oldest = cursor.fetchone()
            return int(examined), int(raised), oldest
        # SQLite: a count, the reopen and the insert as separate statements (an INSERT ...
        # SELECT cannot return its rows on every SQLite Django supports).
        cursor.execute(f"SELECT COUNT(*) FROM ({sql}) due", params)
        examined = int(cursor.fetchone()[0])
        if not examined:
            return 0, 0, None
        cursor.execute(
            f"SELECT {alert}.id FROM {alert}, ({sql}) due WHERE "
            + _REOPEN_WHERE.format(a=alert, alert=alert, active=active),
            [*params, *where_params],
        )
        reopen_ids = [row[0] for row in cursor.fetchall()]
        if reopen_ids:
            marks = ", ".join(["%s"] * len(reopen_ids))
            cursor.execute(
                f"UPDATE {alert} SET {_REOPEN_SET} FROM ({sql}) due "
                f"WHERE {alert}.id IN ({marks}) AND {alert}.opportunity_id = due.opportunity_id "
                f"AND {alert}.signal = due.signal",
                [*set_params, *params, *reopen_ids],
            )
            cursor.execute(
                f"""
                INSERT INTO {history} ({quoted}, history_date, history_change_reason, history_type)
                SELECT {", ".join(f"a.{connection.ops.quote_name(c)}" for c in columns)},
                       %s, %s, '~'
                FROM {alert} a WHERE a.id IN ({marks})
                """,
                [_db(now), _REOPEN_REASON, *reopen_ids],
            )
        cursor.execute(
            _INSERT.format(alert=alert, source=f"({sql}) due"), [*insert_params, *params]
        )
        raised = max(cursor.rowcount, 0)
        if raised:
            _record_history(cursor, now)
        raised += len(reopen_ids)
        if not raised:
            return examined, 0, None
    oldest = Alert.objects.filter(raised_at=now).aggregate(oldest=Min("due_at"))["oldest"]
    return examined, raised, oldest


def _record_history(cursor: Any, now: datetime) -> None:
    """History rows for the alerts raised at ``now`` that have none yet (SQLite)."""
    history = Alert.history.model
    columns = alerts.history_columns()
    quoted = ", ".join(connection.ops.quote_name(c) for c in columns)
    source = ", ".join(f"a.{connection.ops.quote_name(c)}" for c in columns)
    cursor.execute(
        f"""
        INSERT INTO {_table(history)} (
            {quoted}, history_date, history_change_reason, history_type
        )
        SELECT {source}, %s, %s, '+'
        FROM {_table(Alert)} a
        WHERE a.raised_at = %s
          AND NOT EXISTS (SELECT 1 FROM {_table(history)} h WHERE h.id = a.id)
        """,
        [_db(now), _HISTORY_REASON, _db(now)],
    )


# Passes ----------------------------------------------------------------------------------


def _no_jit() -> None:
    """PostgreSQL would JIT-compile the sweep's statements every pass (their estimated cost is
    high, their real work small when steady): measured at 0.8 s of a 1 s steady pass at 1M."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL jit = off")


def _lock(wait: bool) -> bool:
    """Take the sweep's advisory lock for this transaction (PostgreSQL only)."""
    if connection.vendor != "postgresql":
        return True
    _no_jit()
    with connection.cursor() as cursor:
        if wait:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [LOCK_KEY])
            return True
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [LOCK_KEY])
        return bool(cursor.fetchone()[0])


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


def _last_finished(now: datetime, exclude: Any = None) -> datetime | None:
    runs = SweepRun.objects.filter(finished_at__isnull=False, swept_until__lte=now)
    if exclude is not None:
        runs = runs.exclude(pk=exclude)
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
        woken = alerts.wake_snoozed(now, conditions=full)
        rules = suppression.active_rules(now)
        # A steady pass looks at the rules that started or ended on their own clock since the
        # last pass (``create`` and ``end`` apply their own effects); a full one at every
        # alert, which also repairs a rule whose start or end was edited into the past.
        changed = None if full else last
        released = suppression.release(now, rules=rules, since=changed)
        suppressed = suppression.apply(now, rules=rules, since=changed)
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
            holds = Holds(rules, inhibitions())
            deadlines = due(now, since=last, holds=holds)
            run.examined, run.raised, oldest = raise_due(deadlines, now, holds)
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
        _no_jit()
        run = SweepRun.objects.get(pk=run_id)
        since = None
        if not run.full and (last_until := _last_finished(run.swept_until, run.pk)) is not None:
            since = last_until
        holds = Holds.at(now)
        deadlines = due(now, since=since, first=first, last=last, holds=holds)
        examined, raised, oldest = raise_due(deadlines, now, holds, per_row=True)
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
    if (held := held_q(now)) is not None:
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
