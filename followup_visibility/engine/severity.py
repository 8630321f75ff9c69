"""Severity: how far past due an alert is, relative to its SLA and the segment's intent.

Severity is derived when read: moving a label on hundreds of thousands of rows every pass
would cost more than the rest of the sweep. :func:`severity_of` computes it in Python,
:func:`annotate` in SQL (so lists can filter and order by it); both compare

    lateness x intent_weight  <  threshold x span

in floating point, operand for operand, so they agree to the last bit on PostgreSQL and
SQLite. That is the ratio ``lateness / span x intent_weight < threshold`` without a division.

The default thresholds (``SEVERITY_THRESHOLDS``, 1, 24 and 576 SLA lengths) make the scale
logarithmic, each level beginning 24 times later than the one before, without a logarithm in
either form: a queue nobody works holds alerts from minutes to weeks late, and evenly spaced
thresholds called nearly all of those on the demo critical (docs/escalation.md#severity).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import NotSupportedError
from django.db.models import (
    Case,
    DateTimeField,
    DurationField,
    ExpressionWrapper,
    F,
    FloatField,
    Func,
    IntegerField,
    Q,
    QuerySet,
    Value,
    When,
)
from django.db.models.functions import Cast, Coalesce
from django.db.models.lookups import LessThan

from followup_visibility.choices import Severity
from followup_visibility.conf import app_settings
from followup_visibility.models import Alert
from followup_visibility.models.alert import LEVEL_ENDED

#: The span used when the SLA has no length in wall time and no length at all (detection
#: signals with zero grace): lateness is then measured in hours.
FALLBACK_SPAN = timedelta(hours=1)
_ZERO = timedelta(0)
_LEVELS = (Severity.LOW, Severity.MEDIUM, Severity.HIGH)


def micros(value: timedelta) -> int:
    """A duration as an exact integer number of microseconds."""
    return (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds


def _thresholds() -> tuple[float, float, float]:
    t0, t1, t2 = app_settings.SEVERITY_THRESHOLDS
    return float(t0), float(t1), float(t2)


def span_of(*, due_at: datetime, clock_start: datetime | None, sla: timedelta) -> timedelta:
    """The SLA's length in wall time, which lateness is compared with.

    A 24 business-hour SLA over a weekend spans days, so lateness scales with it. With no
    wall-time length (no clock start, or zero grace) the SLA itself, else one hour.
    """
    if clock_start is not None and due_at > clock_start:
        return due_at - clock_start
    return sla if sla > _ZERO else FALLBACK_SPAN


def severity_of(
    *,
    due_at: datetime,
    clock_start: datetime | None,
    sla: timedelta,
    now: datetime,
    intent_weight: Decimal | float = 1,
) -> Severity | None:
    """How serious an alert due at ``due_at`` is at ``now``; ``None`` while not yet due."""
    if now < due_at:
        return None
    late = float(micros(now - due_at)) * float(intent_weight)
    span = float(micros(span_of(due_at=due_at, clock_start=clock_start, sla=sla)))
    for level, threshold in zip(_LEVELS, _thresholds(), strict=True):
        if late < threshold * span:
            return level
    return Severity.CRITICAL


def of_alert(alert: Alert, now: datetime) -> Severity | None:
    """:func:`severity_of` for a stored alert (its segment's intent weight; 1 without one)."""
    segment = alert.opportunity.segment
    return severity_of(
        due_at=alert.due_at,
        clock_start=alert.clock_start,
        sla=alert.sla,
        now=now,
        intent_weight=segment.intent_weight if segment is not None else 1,
    )


class Micros(Func):
    """A duration as a float number of microseconds (SQLite stores durations that way)."""

    output_field = FloatField()

    def as_sql(self, compiler: Any, connection: Any, *args: Any, **extra: Any) -> Any:
        raise NotSupportedError("severity in SQL needs PostgreSQL or SQLite")

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        return super().as_sql(compiler, connection, template="CAST(%(expressions)s AS REAL)")

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        # EXTRACT gives exact numeric seconds (PostgreSQL 14+); the cast comes last, so the
        # float is the exact integer number of microseconds, as in Python.
        return super().as_sql(
            compiler,
            connection,
            template="CAST(EXTRACT(EPOCH FROM %(expressions)s) * 1000000 AS double precision)",
        )


def duration(expression: Any) -> ExpressionWrapper[Any]:
    """``expression`` (a difference of datetimes) typed as a duration."""
    return ExpressionWrapper(expression, output_field=DurationField())


def late_micros(now: datetime, path: str = "") -> Micros:
    """How late an alert row is at ``now``, in microseconds (negative before it is due)."""
    return Micros(duration(Value(now, output_field=DateTimeField()) - F(f"{path}due_at")))


def span_micros(path: str = "") -> Case:
    """:func:`span_of` of an alert row, in microseconds, as an SQL expression."""
    return Case(
        When(
            Q(
                **{
                    f"{path}clock_start__isnull": False,
                    f"{path}due_at__gt": F(f"{path}clock_start"),
                }
            ),
            then=Micros(duration(F(f"{path}due_at") - F(f"{path}clock_start"))),
        ),
        When(**{f"{path}sla__gt": _ZERO}, then=Micros(F(f"{path}sla"))),
        default=Value(float(micros(FALLBACK_SPAN))),
        output_field=FloatField(),
    )


def expression(now: datetime) -> Case:
    """The severity of an alert row at ``now``, as an SQL expression (``NULL`` if not due)."""
    late = late_micros(now)
    span = span_micros()
    weight = Cast(
        Coalesce(F("opportunity__segment__intent_weight"), Value(Decimal(1))),
        FloatField(),
    )
    weighted = late * weight
    return Case(
        When(due_at__gt=now, then=Value(None)),
        *(
            When(LessThan(weighted, Value(threshold) * span), then=Value(int(level)))
            for level, threshold in zip(_LEVELS, _thresholds(), strict=True)
        ),
        default=Value(int(Severity.CRITICAL)),
        output_field=IntegerField(),
    )


# Stored levels -------------------------------------------------------------------------------
#
# The alert queue is ordered by severity. Ordering by the derived expression sorts every
# alert in scope at each request (1.4 s for a team of 50,000 active alerts at 1M), so each
# active alert also keeps its level with the span of time it holds for: ``severity_level``
# from ``severity_since`` until ``severity_changes_at``. Within that span the stored level
# *is* the derived one, so a list reads it from an index; outside it (the clock moved past,
# or nothing was stored yet) the list derives it. Only a level's ends move a row: the sweep
# advances those that passed (:func:`stale_q`), a few per pass, not every row every pass.

#: The end of the last level (critical), and the start of the first (not yet due).
NEVER = datetime(9999, 1, 1, tzinfo=UTC)
FAR_PAST = LEVEL_ENDED
#: Each stored span is shortened by this much at both ends, so that a rounding of the
#: crossing instant (float microseconds) never makes a stored level wrong: near an end the
#: level is derived instead.
MARGIN_MICROS = 1000.0
#: A crossing further than a century after its due time is never reached: capped, so that
#: the datetime arithmetic cannot overflow.
_MAX_SHIFT = float(100 * 365 * 86_400 * 1_000_000)


def level_span(
    *,
    due_at: datetime,
    clock_start: datetime | None,
    sla: timedelta,
    now: datetime,
    intent_weight: Decimal | float = 1,
) -> tuple[int, datetime, datetime]:
    """An alert's level at ``now`` (0 before it is due) and the span it holds for, each end
    moved inwards by :data:`MARGIN_MICROS`: ``(level, since, changes_at)``.

    The ends are where ``late x weight`` reaches each threshold x span; a weight of zero or
    less never makes an alert later, so it stays low for good.
    """
    found = severity_of(
        due_at=due_at, clock_start=clock_start, sla=sla, now=now, intent_weight=intent_weight
    )
    level = int(found) if found is not None else 0
    span = float(micros(span_of(due_at=due_at, clock_start=clock_start, sla=sla)))
    weight = float(intent_weight)
    margin = timedelta(microseconds=MARGIN_MICROS)

    def crossing(threshold: float, inwards: float) -> datetime:
        if weight <= 0:
            return NEVER
        shift = min(threshold * span / weight + inwards, _MAX_SHIFT)
        return due_at + timedelta(microseconds=round(shift))

    starts = [None, 0.0, *_thresholds()]  # where low, medium, high and critical begin
    if level == 0:
        return 0, FAR_PAST, due_at - margin
    begin = starts[level]
    assert begin is not None
    since = due_at + margin if begin == 0.0 else crossing(begin, MARGIN_MICROS)
    end = starts[level + 1] if level + 1 < len(starts) else None
    return level, since, NEVER if end is None else crossing(end, -MARGIN_MICROS)


def fresh_q(now: datetime) -> Q:
    """Alerts whose stored level is their severity at ``now``."""
    return Q(severity_since__lte=now, severity_changes_at__gt=now)


def stale_q(now: datetime) -> Q:
    """Alerts whose stored level has ended by ``now`` (or was never stored: it ended at
    ``LEVEL_ENDED``)."""
    return Q(severity_changes_at__lte=now)


def began_after_q(now: datetime) -> Q:
    """Alerts whose stored level began after ``now`` (an earlier moment a cursor keeps)."""
    return Q(severity_since__gt=now)


def unfresh_q(now: datetime) -> Q:
    """Alerts whose stored level is not their severity at ``now``: the complement of
    :func:`fresh_q`."""
    return stale_q(now) | began_after_q(now)


def annotate(queryset: QuerySet[Alert], now: datetime) -> QuerySet[Alert]:
    """``queryset`` with an integer ``severity`` (a :class:`Severity` value, or null) at ``now``."""
    return queryset.annotate(severity=expression(now))


def at_least(queryset: QuerySet[Alert], level: Severity | int, now: datetime) -> QuerySet[Alert]:
    """Alerts of ``queryset`` whose severity at ``now`` is ``level`` or more."""
    # A Q object: the type checker cannot see the annotation through the return type.
    return annotate(queryset, now).filter(Q(severity__gte=int(level)))


def named(name: str) -> Severity:
    """The severity called ``name`` (``"high"``, ``"critical"``, ...), for settings."""
    try:
        return Severity[name.strip().upper()]
    except KeyError:
        raise ValueError(
            f"unknown severity {name!r}; use one of {', '.join(s.name.lower() for s in Severity)}"
        ) from None
