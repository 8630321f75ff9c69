"""Severity is derived when read: lateness against the SLA's span, times the segment's intent."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.contenttypes.models import ContentType
from django.test import override_settings

from example_project.crm.models import Lead
from followup_visibility.choices import AlertSignal, AlertStatus, Severity
from followup_visibility.engine import severity
from followup_visibility.models import Alert, Segment, TrackedOpportunity

HOUR = timedelta(hours=1)
DUE = datetime(2026, 3, 9, 15, 0, tzinfo=UTC)  # a Monday
MICRO = timedelta(microseconds=1)

LOW, MEDIUM, HIGH, CRITICAL = Severity.LOW, Severity.MEDIUM, Severity.HIGH, Severity.CRITICAL


@pytest.mark.parametrize(
    ("late", "clock_start", "sla", "weight", "expected"),
    [
        # A 4-hour span: medium from 1h late, high from 4h, critical from 12h.
        (-MICRO, DUE - 4 * HOUR, 4 * HOUR, 1, None),
        (timedelta(0), DUE - 4 * HOUR, 4 * HOUR, 1, LOW),
        (HOUR - MICRO, DUE - 4 * HOUR, 4 * HOUR, 1, LOW),
        (HOUR, DUE - 4 * HOUR, 4 * HOUR, 1, MEDIUM),
        (4 * HOUR - MICRO, DUE - 4 * HOUR, 4 * HOUR, 1, MEDIUM),
        (4 * HOUR, DUE - 4 * HOUR, 4 * HOUR, 1, HIGH),
        (12 * HOUR - MICRO, DUE - 4 * HOUR, 4 * HOUR, 1, HIGH),
        (12 * HOUR, DUE - 4 * HOUR, 4 * HOUR, 1, CRITICAL),
        (timedelta(days=400), DUE - 4 * HOUR, 4 * HOUR, 1, CRITICAL),
        # A business day's SLA over a weekend spans 72 wall hours: 4h late is still low.
        (4 * HOUR, DUE - 72 * HOUR, 8 * HOUR, 1, LOW),
        (72 * HOUR, DUE - 72 * HOUR, 8 * HOUR, 1, HIGH),
        # Intent scales lateness: twice the intent, half the time to each level.
        (2 * HOUR, DUE - 4 * HOUR, 4 * HOUR, Decimal("2.00"), HIGH),
        (6 * HOUR, DUE - 4 * HOUR, 4 * HOUR, Decimal("2.00"), CRITICAL),
        (4 * HOUR, DUE - 4 * HOUR, 4 * HOUR, Decimal("0.50"), MEDIUM),
        # No clock start: the SLA is the span.
        (2 * HOUR, None, 2 * HOUR, 1, HIGH),
        # Zero grace (a detection signal): the SLA if any, else one hour.
        (HOUR, DUE, 2 * HOUR, 1, MEDIUM),
        (HOUR, DUE, timedelta(0), 1, HIGH),
        (3 * HOUR, None, timedelta(0), 1, CRITICAL),
    ],
)
def test_severity_grows_with_lateness_relative_to_the_span(
    late: timedelta,
    clock_start: datetime | None,
    sla: timedelta,
    weight: Any,
    expected: Severity | None,
) -> None:
    got = severity.severity_of(
        due_at=DUE, clock_start=clock_start, sla=sla, now=DUE + late, intent_weight=weight
    )
    assert got == expected


@override_settings(FOLLOWUP_VISIBILITY_SEVERITY_THRESHOLDS=(1, 2, 4))
def test_thresholds_come_from_settings() -> None:
    def at(late: timedelta) -> Severity | None:
        return severity.severity_of(due_at=DUE, clock_start=DUE - HOUR, sla=HOUR, now=DUE + late)

    assert [at(h * HOUR) for h in (0, 1, 2, 4)] == [LOW, MEDIUM, HIGH, CRITICAL]
    assert at(HOUR - MICRO) == LOW


def test_a_severity_is_named_in_settings() -> None:
    assert severity.named("high") == HIGH
    assert severity.named(" Critical ") == CRITICAL
    with pytest.raises(ValueError, match="unknown severity"):
        severity.named("urgent")


# The SQL grid: every case on a stored alert, compared with Python at many instants.
SPANS: list[tuple[datetime | None, timedelta]] = [
    (DUE - 4 * HOUR, 4 * HOUR),  # an ordinary SLA
    (DUE - 72 * HOUR, 8 * HOUR),  # a business day over a weekend
    (DUE - timedelta(minutes=7, microseconds=3), timedelta(minutes=7)),  # odd lengths
    (None, 2 * HOUR),  # no clock start recorded
    (DUE, 2 * HOUR),  # zero grace, with an SLA
    (DUE, timedelta(0)),  # zero grace, no SLA: one hour
    (DUE + HOUR, 3 * HOUR),  # a clock start after due (inconsistent data): the SLA
]
WEIGHTS: list[Decimal | None] = [None, Decimal("1.00"), Decimal("2.50"), Decimal("0.33")]


def _lateness(clock_start: datetime | None, sla: timedelta) -> list[timedelta]:
    span = severity.span_of(due_at=DUE, clock_start=clock_start, sla=sla)
    points = [-HOUR, -MICRO, timedelta(0), MICRO, timedelta(days=30)]
    for t in (0.25, 1.0, 3.0):
        for w in (Decimal("1.00"), Decimal("2.50"), Decimal("0.33")):
            exact = span * t / float(w)  # where a threshold lies for this weight
            points += [exact - MICRO, exact, exact + MICRO]
    return points


@pytest.fixture
def grid(db: Any) -> list[tuple[Alert, Decimal | None]]:
    """One alert per (span, weight) case, on an opportunity of its own."""
    lead_type = ContentType.objects.get_for_model(Lead)
    segments = {
        w: Segment.objects.create(code=f"w{i}", name=f"Weight {w}", intent_weight=w)
        for i, w in enumerate(WEIGHTS)
        if w is not None
    }
    made = []
    for n, ((clock_start, sla), weight) in enumerate(itertools.product(SPANS, WEIGHTS)):
        opp = TrackedOpportunity.objects.create(
            content_type=lead_type,
            object_pk=f"grid-{n}",
            arrived_at=DUE - 100 * HOUR,
            segment=segments.get(weight) if weight is not None else None,
        )
        alert = Alert.objects.create(
            opportunity=opp,
            signal=AlertSignal.NO_FIRST_RESPONSE,
            episode_at=DUE - 100 * HOUR,
            due_at=DUE,
            clock_start=clock_start,
            sla=sla,
            raised_at=DUE,
        )
        made.append((alert, weight))
    return made


def test_sql_agrees_with_python_on_every_case(grid: list[tuple[Alert, Decimal | None]]) -> None:
    instants = sorted(
        {DUE + late for alert, _w in grid for late in _lateness(alert.clock_start, alert.sla)}
    )
    checked = 0
    seen = set()
    for now in instants:
        in_sql = dict(severity.annotate(Alert.objects.all(), now).values_list("pk", "severity"))
        for alert, weight in grid:
            expected = severity.severity_of(
                due_at=alert.due_at,
                clock_start=alert.clock_start,
                sla=alert.sla,
                now=now,
                intent_weight=weight if weight is not None else 1,
            )
            assert in_sql[alert.pk] == expected, (now, alert.clock_start, alert.sla, weight)
            seen.add(expected)
            checked += 1
    assert seen == {None, LOW, MEDIUM, HIGH, CRITICAL}
    assert checked > 1000


def test_of_alert_uses_the_segment_intent(grid: list[tuple[Alert, Decimal | None]]) -> None:
    alert, weight = next((a, w) for a, w in grid if w == Decimal("2.50") and a.clock_start)
    span = alert.due_at - alert.clock_start
    assert severity.of_alert(alert, DUE + span * 0.4) == HIGH  # 0.4 x 2.5 = 1.0
    plain = next(a for a, w in grid if w is None and a.clock_start == alert.clock_start)
    assert severity.of_alert(plain, DUE + span * 0.4) == MEDIUM


def test_lists_filter_and_order_by_severity(grid: list[tuple[Alert, Decimal | None]]) -> None:
    now = DUE + 4 * HOUR
    Alert.objects.filter(pk=grid[0][0].pk).update(status=AlertStatus.ACKNOWLEDGED)
    ordered = list(
        severity.annotate(Alert.objects.all(), now)
        .order_by("-severity", "pk")
        .values_list("severity", flat=True)
    )
    assert ordered == sorted(ordered, reverse=True)
    high = severity.at_least(Alert.objects.all(), HIGH, now)
    expected = {a.pk for a, _w in grid if (severity.of_alert(a, now) or 0) >= HIGH}
    assert set(high.values_list("pk", flat=True)) == expected
    assert 0 < len(expected) < len(grid)
    # Not yet due: no severity, never matched.
    assert not severity.at_least(Alert.objects.all(), LOW, DUE - MICRO).exists()
