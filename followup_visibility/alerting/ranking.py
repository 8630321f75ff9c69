"""The register's stored ranking: a row per listed opportunity, scored as of a moment.

Ranking the register at each read means scoring every listed opportunity of a team before
the first page can be cut (0.8 s per request at 1M opportunities, docs/performance.md). So
the score is stored instead, in :class:`~followup_visibility.models.RegisterRow`, and a page
is an index scan of its first rows:

- :func:`mark` stores the rows of the opportunities whose alerts or mirrored fields changed,
  in the transaction that changed them: the refresh, every alert transition and the sweep's
  raise call it. Inside :func:`batched` (a refresh, a chunk of a pass) the marks are stored
  once, at the end, whatever their number.
- :func:`rescore` stores every row again, chunk by chunk: lateness and age grow with the
  clock, so a row's score is as old as the last rescore at most (every ten minutes in the
  beat schedule; the ``followup_rescore`` command on the cron path). It also repairs
  whatever a path that did not mark left behind.

A stored row says how an opportunity ranks, never whether it is listed: the register checks
that again when it is read (:func:`followup_visibility.register.rows.unfollowed`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import Exists, F, FloatField, Max, Min, OuterRef, QuerySet, Subquery
from django.db.models.functions import Greatest

from followup_visibility.alerting import outbox, sql
from followup_visibility.choices import ACTIVE_ALERT_STATUSES, AlertStatus, Status
from followup_visibility.engine import priority, severity
from followup_visibility.models import Alert, RegisterRow, TrackedOpportunity

#: Alert statuses that list an opportunity: someone still owes the customer something.
LISTING = (AlertStatus.OPEN, AlertStatus.ACKNOWLEDGED)

#: Opportunities stored per statement: the ``ANY`` array and the upsert stay small.
CHUNK = 5000
#: A change that marks more opportunities than this (a first or full pass over a backlog, a
#: recompute of a whole range) ranks them in the outbox instead, in ranges of
#: :data:`RANGE_KEYS` keys: its own transaction stays in proportion to what a person waits
#: for, and the register catches up as the outbox drains.
SYNC_LIMIT = 2000
RANGE_KEYS = 20_000
#: Beyond this many listed opportunities in a chunk, rows are scored in SQL (:func:`scored`)
#: rather than in Python: building that SQL costs more than it saves for a few rows.
SCORE_IN_SQL = 200
#: The outbox kind of a range to rank.
RANGE = "followup_visibility.ranking.range"

_STORED = ("team", "owner", "score", "intent", "value", "lateness", "age", "severity", "since")


def listing() -> QuerySet[Alert]:
    """The listing alerts of the opportunity of the outer query."""
    return Alert.objects.filter(opportunity_id=OuterRef("pk"), status__in=LISTING)


def _per_opportunity(alerts: QuerySet[Alert], **aggregate: Any) -> Subquery:
    (name,) = aggregate
    return Subquery(
        alerts.order_by().values("opportunity_id").annotate(**aggregate).values(name)[:1]
    )


def lateness_expression(now: datetime) -> Any:
    """An alert row's lateness at ``now`` in lengths of its SLA (see engine/severity.py)."""
    return severity.late_micros(now) / severity.span_micros()


def scored(now: datetime, base: QuerySet[TrackedOpportunity] | None = None) -> QuerySet[Any]:
    """The open opportunities of ``base`` with a listing alert, scored at ``now``.

    Annotated with ``fv_score`` (0-100), the factors' raw values (``fv_intent``,
    ``fv_value``, ``fv_lateness`` in SLA lengths, ``fv_age`` in microseconds),
    ``fv_severity`` (the highest of its listing alerts) and ``fv_since`` (when the oldest
    fell due). Stalls are not looked at: a stall ends with the clock, and the register
    checks it when read.
    """
    opportunities = base if base is not None else TrackedOpportunity.objects.all()
    alerts = listing()
    raw = priority.raw_expressions(now, F("fv_lateness"))
    return (
        opportunities.filter(status=Status.OPEN)
        .filter(Exists(alerts))
        .annotate(
            fv_lateness=Greatest(
                _per_opportunity(
                    alerts, fv_max=Max(lateness_expression(now), output_field=FloatField())
                ),
                0.0,
                output_field=FloatField(),
            ),
            fv_severity=_per_opportunity(alerts, fv_max=Max(severity.expression(now))),
            fv_since=_per_opportunity(alerts, fv_min=Min("due_at")),
            fv_intent=raw["intent"],
            fv_value=raw["value"],
            fv_age=raw["age"],
        )
        .annotate(fv_score=priority.score_expression(raw))
    )


# Storing ------------------------------------------------------------------------------------


def store(opportunity_ids: Iterable[Any], now: datetime) -> int:
    """Score these opportunities at ``now`` and store their rows; drop the rows of those no
    longer listed; store their active alerts' severity levels. One read and at most three
    writes per :data:`CHUNK`; how many rows were stored.

    The score is computed in Python from the opportunities and their alerts, operation for
    operation as :func:`scored` computes it in SQL (``engine/priority.py``, ``severity``),
    so the stored register is the live one to the last bit: building that SQL cost more
    than running it for the few rows a change marks.

    Runs in the caller's transaction. An upsert, not a delete and an insert: two writers of
    one opportunity (a raise and a snooze) queue on its row instead of failing on its key.
    """
    ids = sorted(set(opportunity_ids))
    settings = (priority.weights(), priority.half_points())
    stored = 0
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        # One read: the active alerts with their opportunity's columns (an opportunity with
        # none is not listed, and needs no read to drop its row).
        alerts = (
            Alert.objects.filter(
                sql.among(Alert, "opportunity", chunk), status__in=ACTIVE_ALERT_STATUSES
            )
            .order_by()
            .values_list(
                "pk",
                "opportunity_id",
                "status",
                "due_at",
                "clock_start",
                "sla",
                *_OPPORTUNITY_FIELDS,
            )
        )
        opportunities: dict[Any, tuple[Any, ...]] = {}
        listing: dict[Any, list[tuple[Any, ...]]] = defaultdict(list)
        levels: dict[Any, dict[str, Any]] = {}
        for pk, opportunity_id, status, due_at, clock_start, sla, *rest in alerts:
            opportunities[opportunity_id] = opportunity = tuple(rest)
            level = severity.level_span(
                due_at=due_at,
                clock_start=clock_start,
                sla=sla,
                now=now,
                intent_weight=_weight(opportunity[5]),
            )
            levels[pk] = dict(zip(_LEVEL_FIELDS, level, strict=True))
            if status in LISTING:
                listing[opportunity_id].append((due_at, clock_start, sla))
        sql.update_rows(Alert, levels, _LEVEL_FIELDS)
        if len(listing) > SCORE_IN_SQL:
            # Many rows (a rescore, a range from the outbox): scoring them in SQL costs less
            # than converting their values in Python.
            rows = _scored_rows(chunk, now)
        else:
            rows = [
                _row(pk, opportunities[pk], listing[pk], now, settings)
                for pk in chunk
                if listing.get(pk) and opportunities[pk][0] == Status.OPEN
            ]
        sql.upsert_rows(RegisterRow, rows)
        _drop_unlisted(chunk, rows)
        stored += len(rows)
    return stored


def _scored_rows(chunk: list[Any], now: datetime) -> list[RegisterRow]:
    """The rows of ``chunk`` as :func:`scored` computes them in SQL (the same numbers)."""
    base = TrackedOpportunity.objects.filter(sql.among(TrackedOpportunity, "id", chunk))
    return [
        RegisterRow(
            opportunity_id=row["pk"],
            team_id=row["team_id"],
            owner_id=row["owner_id"],
            score=row["fv_score"],
            intent=row["fv_intent"],
            value=row["fv_value"],
            lateness=row["fv_lateness"] or 0.0,
            age=row["fv_age"],
            severity=row["fv_severity"],
            since=row["fv_since"],
            scored_at=now,
        )
        for row in scored(now, base)
        .order_by()
        .values(
            "pk",
            "team_id",
            "owner_id",
            "fv_score",
            "fv_intent",
            "fv_value",
            "fv_lateness",
            "fv_age",
            "fv_severity",
            "fv_since",
        )
    ]


def _drop_unlisted(chunk: list[Any], rows: list[RegisterRow]) -> None:
    """Delete the rows of the opportunities of ``chunk`` that ``rows`` does not list."""
    gone = sorted(set(chunk) - {row.opportunity_id for row in rows})
    if gone:
        RegisterRow.objects.filter(sql.among(RegisterRow, "opportunity", gone)).delete()


def _weight(value: Any) -> float:
    """A segment's intent weight as the SQL casts it; 1 without a segment."""
    return float(value) if value is not None else 1.0


def _row(
    pk: Any,
    opportunity: tuple[Any, ...],
    alerts: list[tuple[Any, ...]],
    now: datetime,
    settings: tuple[dict[str, float], dict[str, float]],
) -> RegisterRow:
    _status, team_id, owner_id, value, arrived_at, weight = opportunity
    lateness = max(
        float(severity.micros(now - due_at))
        / float(severity.micros(severity.span_of(due_at=due_at, clock_start=start, sla=sla)))
        for due_at, start, sla in alerts
    )
    levels = [
        severity.severity_of(
            due_at=due_at, clock_start=start, sla=sla, now=now, intent_weight=_weight(weight)
        )
        for due_at, start, sla in alerts
    ]
    reached = [int(level) for level in levels if level is not None]
    raw = {
        "intent": _weight(weight),
        "value": float(value) if value is not None else 0.0,
        "lateness": max(lateness, 0.0),
        "age": float(severity.micros(now - arrived_at)),
    }
    score, _factors = priority.explain(raw, settings)
    return RegisterRow(
        opportunity_id=pk,
        team_id=team_id,
        owner_id=owner_id,
        score=score,
        intent=raw["intent"],
        value=raw["value"],
        lateness=raw["lateness"],
        age=raw["age"],
        severity=max(reached) if reached else None,
        since=min(due_at for due_at, _start, _sla in alerts),
        scored_at=now,
    )


@dataclass
class _Marks:
    opportunities: set[Any] = field(default_factory=set)
    alerts: set[int] = field(default_factory=set)


_pending: ContextVar[_Marks | None] = ContextVar("fv_ranking_pending", default=None)


@contextmanager
def batched(now: datetime) -> Iterator[None]:
    """Store what is marked inside once, at the end (still in the caller's transaction).

    Nested batches add to the outermost. Nothing is stored when the block raises: its
    transaction rolls back anyway.
    """
    if _pending.get() is not None:
        yield
        return
    marks = _Marks()
    token = _pending.set(marks)
    try:
        yield
    finally:
        _pending.reset(token)
    _store_marks(marks, now)


def mark(opportunity_ids: Iterable[Any], now: datetime) -> None:
    """What these opportunities owe changed: store their rows (at the end of a batch; in
    the outbox beyond :data:`SYNC_LIMIT`)."""
    marks = _pending.get()
    if marks is not None:
        marks.opportunities.update(opportunity_ids)
    else:
        _store_marks(_Marks(opportunities=set(opportunity_ids)), now)


def mark_alerts(alert_ids: Iterable[int], now: datetime) -> None:
    """These alerts changed: store their opportunities' rows (at the end of a batch)."""
    marks = _pending.get()
    if marks is not None:
        marks.alerts.update(alert_ids)
    else:
        _store_marks(_Marks(alerts=set(alert_ids)), now)


def _store_marks(marks: _Marks, now: datetime) -> None:
    ids = set(marks.opportunities)
    if marks.alerts:
        ids.update(
            Alert.objects.filter(sql.among(Alert, "id", sorted(marks.alerts)))
            .order_by()
            .values_list("opportunity_id", flat=True)
            .distinct()
        )
    if len(ids) > SYNC_LIMIT:
        defer(ids, now)
    elif ids:
        store(ids, now)


def defer(opportunity_ids: Iterable[Any], now: datetime) -> None:
    """Rank these opportunities in the outbox, a message per range of keys."""
    ids = sorted(set(opportunity_ids))
    ranges = [
        {"first": ids[start], "last": ids[min(start + RANGE_KEYS, len(ids)) - 1]}
        for start in range(0, len(ids), RANGE_KEYS)
    ]
    outbox.enqueue(RANGE, ranges, now=now)


def drain_range(payload: Mapping[str, Any], now: datetime) -> None:
    """The outbox work of a range: store its opportunities' rows and levels at ``now``."""
    sql.no_jit()
    ids = TrackedOpportunity.objects.filter(
        pk__gte=payload["first"], pk__lte=payload["last"]
    ).values_list("pk", flat=True)
    store(list(ids), now)


# Rescoring ----------------------------------------------------------------------------------


_LEVEL_FIELDS = ("severity_level", "severity_since", "severity_changes_at")
#: What a register row copies of its opportunity (read with its alerts).
_OPPORTUNITY_FIELDS = (
    "opportunity__status",
    "opportunity__team_id",
    "opportunity__owner_id",
    "opportunity__value",
    "opportunity__arrived_at",
    "opportunity__segment__intent_weight",
)


def store_levels(alerts: QuerySet[Alert], now: datetime, *, changed_only: bool = False) -> int:
    """Store these alerts' severity levels at ``now`` with the spans they hold for
    (``severity.level_span``, in Python: the same comparisons as the derived severity); one
    read and one write, whatever their number. How many were written."""
    rows = alerts.order_by().values_list(
        "pk",
        "due_at",
        "clock_start",
        "sla",
        "opportunity__segment__intent_weight",
        *_LEVEL_FIELDS,
    )
    changes: dict[Any, dict[str, Any]] = {}
    for pk, due_at, clock_start, sla, weight, *stored in rows:
        level, since, until = severity.level_span(
            due_at=due_at,
            clock_start=clock_start,
            sla=sla,
            now=now,
            intent_weight=weight if weight is not None else 1,
        )
        if not changed_only or (level, since, until) != tuple(stored):
            changes[pk] = dict(zip(_LEVEL_FIELDS, (level, since, until), strict=True))
    return sql.update_rows(Alert, changes, _LEVEL_FIELDS)


def ended(now: datetime, limit: int) -> list[int]:
    """Up to ``limit`` active alerts whose stored level ended by ``now``, in the order of its
    end: a range of the ``fv_alert_level_ends`` index. (As a filter, PostgreSQL judged it
    from the whole table, where closed alerts' levels all ended, and scanned the table.)"""
    return list(
        Alert.objects.filter(severity.stale_q(now), status__in=ACTIVE_ALERT_STATUSES)
        .order_by("severity_changes_at")
        .values_list("pk", flat=True)[:limit]
    )


def advance(now: datetime, *, batch: int = 5000, batches: int | None = 10) -> int:
    """Store the severity level of the active alerts whose stored level ended by ``now``
    (or was never stored): two statements per ``batch``, in proportion to the levels that
    ended, at most ``batches`` of them (``None``: all). The sweep runs it every pass; a
    backlog (the first pass after an upgrade, a large raise the outbox has not ranked yet)
    is moved over several passes, and the queue derives the rest meanwhile. How many."""
    moved, done = 0, 0
    while ids := ended(now, batch):
        moved += store_levels(Alert.objects.filter(sql.among(Alert, "id", ids)), now)
        done += 1
        if len(ids) < batch or (batches is not None and done >= batches):
            break
    return moved


def rescore(now: datetime, *, chunk: int = 20_000) -> int:
    """Score every listed opportunity again at ``now``, and drop the rows of the others;
    store the alerts' severity levels that ended.

    Walks the opportunities in key order, a transaction per ``chunk`` keys: a failed chunk
    leaves the others stored, and a rerun starts over. How many rows were stored.
    """
    stored, after = 0, None
    while True:
        keys = TrackedOpportunity.objects.order_by("pk")
        if after is not None:
            keys = keys.filter(pk__gt=after)
        ids = list(keys.values_list("pk", flat=True)[:chunk])
        if not ids:
            return stored
        with transaction.atomic():
            sql.no_jit()
            stored += _rescore_chunk(ids, now)
        after = ids[-1]


def _rescore_chunk(ids: list[Any], now: datetime) -> int:
    """:func:`store` for a rescore, all in SQL but the levels that ended: the scores of
    every listed opportunity of ``ids`` and the rows of the others dropped."""
    stored = 0
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        store_levels(
            Alert.objects.filter(
                sql.among(Alert, "opportunity", chunk),
                severity.stale_q(now),
                status__in=ACTIVE_ALERT_STATUSES,
            ),
            now,
        )
        rows = _scored_rows(chunk, now)
        sql.upsert_rows(RegisterRow, rows)
        _drop_unlisted(chunk, rows)
        stored += len(rows)
    return stored
