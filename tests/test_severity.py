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
from followup_visibility.conf import app_settings
from followup_visibility.engine import severity
from followup_visibility.models import Alert, Segment, TrackedOpportunity

HOUR, MINUTE = timedelta(hours=1), timedelta(minutes=1)
DUE = datetime(2026, 3, 9, 15, 0, tzinfo=UTC)  # a Monday
MICRO = timedelta(microseconds=1)

LOW, MEDIUM, HIGH, CRITICAL = Severity.LOW, Severity.MEDIUM, Severity.HIGH, Severity.CRITICAL


@pytest.mark.parametrize(
    ("late", "clock_start", "sla", "weight", "expected"),
    [
        # The default scale on a 4-hour span: medium from 4h late (one SLA), high from 96h
        # (24 SLAs), critical from 2,304h (576 SLAs).
        (-MICRO, DUE - 4 * HOUR, 4 * HOUR, 1, None),
        (timedelta(0), DUE - 4 * HOUR, 4 * HOUR, 1, LOW),
        (4 * HOUR - MICRO, DUE - 4 * HOUR, 4 * HOUR, 1, LOW),
        (4 * HOUR, DUE - 4 * HOUR, 4 * HOUR, 1, MEDIUM),
        (96 * HOUR - MICRO, DUE - 4 * HOUR, 4 * HOUR, 1, MEDIUM),
        (96 * HOUR, DUE - 4 * HOUR, 4 * HOUR, 1, HIGH),
        (2304 * HOUR - MICRO, DUE - 4 * HOUR, 4 * HOUR, 1, HIGH),
        (2304 * HOUR, DUE - 4 * HOUR, 4 * HOUR, 1, CRITICAL),
        (timedelta(days=4000), DUE - 4 * HOUR, 4 * HOUR, 1, CRITICAL),
        # A business day's SLA over a weekend spans 72 wall hours: 48h late is still low.
        (48 * HOUR, DUE - 72 * HOUR, 8 * HOUR, 1, LOW),
        (72 * HOUR, DUE - 72 * HOUR, 8 * HOUR, 1, MEDIUM),
        # Intent scales lateness: twice the intent, half the time to each level.
        (2 * HOUR, DUE - 4 * HOUR, 4 * HOUR, Decimal("2.00"), MEDIUM),
        (48 * HOUR, DUE - 4 * HOUR, 4 * HOUR, Decimal("2.00"), HIGH),
        (1152 * HOUR, DUE - 4 * HOUR, 4 * HOUR, Decimal("2.00"), CRITICAL),
        (4 * HOUR, DUE - 4 * HOUR, 4 * HOUR, Decimal("0.50"), LOW),
        # No clock start: the SLA is the span.
        (2 * HOUR, None, 2 * HOUR, 1, MEDIUM),
        # Zero grace (a detection signal): the SLA if any, else one hour.
        (HOUR, DUE, 2 * HOUR, 1, LOW),
        (HOUR, DUE, timedelta(0), 1, MEDIUM),
        (24 * HOUR, None, timedelta(0), 1, HIGH),
        (576 * HOUR, DUE, timedelta(0), 1, CRITICAL),
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
    points = [-HOUR, -MICRO, timedelta(0), MICRO, timedelta(days=30), timedelta(days=3000)]
    for t in app_settings.SEVERITY_THRESHOLDS:
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
    assert severity.of_alert(alert, DUE + span * 0.4) == MEDIUM  # 0.4 x 2.5 = 1.0
    assert severity.of_alert(alert, DUE + span * 9.6) == HIGH  # 9.6 x 2.5 = 24
    plain = next(a for a, w in grid if w is None and a.clock_start == alert.clock_start)
    assert severity.of_alert(plain, DUE + span * 0.4) == LOW
    assert severity.of_alert(plain, DUE + span * 9.6) == MEDIUM


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


# The calibration ------------------------------------------------------------------------------

#: A hand-built week like the demo's: (span's clock start before due or None, SLA, late, intent
#: weight, r = late / span x weight, severity now, severity on the earlier (0.25, 1, 3) scale).
#: Most alerts of a queue nobody works are many SLA lengths late; the earlier scale called 13 of
#: these 20 critical, the default calls 2.
NO_START = None
CALIBRATION: list[tuple[Any, ...]] = [
    # r < 1: low (late by less than the SLA).
    (HOUR, HOUR, 30 * MINUTE, "1", LOW, MEDIUM),  # r = 0.5
    (HOUR, HOUR, 45 * MINUTE, "0.5", LOW, MEDIUM),  # 0.375
    (72 * HOUR, 8 * HOUR, 36 * HOUR, "1", LOW, MEDIUM),  # 0.5: a weekend in the span
    (4 * HOUR, 4 * HOUR, 10 * MINUTE, "3", LOW, LOW),  # 10/240 x 3 = 0.125
    # 1 <= r < 24: medium.
    (HOUR, HOUR, 3 * HOUR, "0.5", MEDIUM, HIGH),  # 1.5
    (HOUR, HOUR, 3 * HOUR, "3", MEDIUM, CRITICAL),  # 9
    (4 * HOUR, 4 * HOUR, 6 * HOUR, "1", MEDIUM, HIGH),  # 1.5
    (48 * HOUR, 16 * HOUR, 240 * HOUR, "2", MEDIUM, CRITICAL),  # 10
    (timedelta(0), timedelta(0), 20 * HOUR, "1", MEDIUM, CRITICAL),  # 20: one-hour fallback
    (5 * HOUR, 5 * HOUR, 48 * HOUR, "0.5", MEDIUM, CRITICAL),  # 4.8
    (NO_START, 2 * HOUR, 5 * HOUR, "1", MEDIUM, HIGH),  # 2.5: the SLA is the span
    # 24 <= r < 576: high.
    (HOUR, HOUR, 48 * HOUR, "1", HIGH, CRITICAL),  # 48
    (HOUR, HOUR, 240 * HOUR, "2", HIGH, CRITICAL),  # 480
    (4 * HOUR, 4 * HOUR, 120 * HOUR, "1", HIGH, CRITICAL),  # 30
    (timedelta(0), timedelta(0), 20 * HOUR, "2", HIGH, CRITICAL),  # 40
    (90 * MINUTE, 90 * MINUTE, 144 * HOUR, "1", HIGH, CRITICAL),  # 96
    (24 * HOUR, 8 * HOUR, 720 * HOUR, "1", HIGH, CRITICAL),  # 30
    (HOUR, HOUR, 200 * HOUR, "2.5", HIGH, CRITICAL),  # 500
    # r >= 576: critical.
    (HOUR, HOUR, 240 * HOUR, "2.5", CRITICAL, CRITICAL),  # 600
    (timedelta(0), timedelta(0), 720 * HOUR, "1", CRITICAL, CRITICAL),  # 720
]
NOT_DUE: tuple[Any, ...] = (HOUR, HOUR, -HOUR, "1", None, None)


@pytest.fixture
def calibration(db: Any) -> tuple[datetime, list[Alert]]:
    """The set above, stored: every alert due at its own moment so that all are read at NOW,
    and one more alert that is not due yet."""
    now = DUE + timedelta(days=60)
    lead_type = ContentType.objects.get_for_model(Lead)
    segments: dict[str, Segment] = {}
    made = []
    for n, (before, sla, late, weight, _new, _old) in enumerate([*CALIBRATION, NOT_DUE]):
        if weight not in segments:
            segments[weight] = Segment.objects.create(
                code=f"i{len(segments)}", name=f"Intent {weight}", intent_weight=Decimal(weight)
            )
        due = now - late
        opp = TrackedOpportunity.objects.create(
            content_type=lead_type,
            object_pk=f"calibration-{n}",
            arrived_at=due - 100 * HOUR,
            segment=segments[weight],
        )
        made.append(
            Alert.objects.create(
                opportunity=opp,
                signal=AlertSignal.NO_FIRST_RESPONSE,
                episode_at=due - 100 * HOUR,
                due_at=due,
                clock_start=due - before if before is not None else None,
                sla=sla,
                raised_at=due,
            )
        )
    return now, made


def _distribution(levels: list[Any]) -> dict[Any, int]:
    return {level: levels.count(level) for level in (None, LOW, MEDIUM, HIGH, CRITICAL)}


def test_the_default_scale_leaves_critical_a_small_minority(
    calibration: tuple[datetime, list[Alert]],
) -> None:
    now, alerts = calibration
    by_hand = {None: 1, LOW: 4, MEDIUM: 7, HIGH: 7, CRITICAL: 2}
    in_sql = list(severity.annotate(Alert.objects.all(), now).values_list("severity", flat=True))
    in_python = [severity.of_alert(alert, now) for alert in alerts]
    assert _distribution(in_sql) == _distribution(in_python) == by_hand
    expected = [new for *_, new, _old in [*CALIBRATION, NOT_DUE]]
    assert in_python == expected


@override_settings(FOLLOWUP_VISIBILITY_SEVERITY_THRESHOLDS=(0.25, 1.0, 3.0))
def test_the_earlier_scale_called_most_of_the_same_set_critical(
    calibration: tuple[datetime, list[Alert]],
) -> None:
    now, alerts = calibration
    in_sql = list(severity.annotate(Alert.objects.all(), now).values_list("severity", flat=True))
    assert _distribution(in_sql) == {None: 1, LOW: 1, MEDIUM: 3, HIGH: 3, CRITICAL: 13}
    assert [severity.of_alert(alert, now) for alert in alerts] == [
        old for *_, old in [*CALIBRATION, NOT_DUE]
    ]


def test_owners_are_notified_from_one_sla_late_as_before(
    grid: list[tuple[Alert, Decimal | None]],
) -> None:
    """The default minimum (medium) notifies exactly the alerts the earlier default (high on
    the earlier scale) did: the first message comes at the same moment."""
    assert app_settings.NOTIFY_MIN_SEVERITY == "medium"

    def notifying(now: datetime) -> set[int]:
        minimum = severity.named(app_settings.NOTIFY_MIN_SEVERITY)
        found = severity.at_least(Alert.objects.all(), minimum, now)
        return set(found.values_list("pk", flat=True))

    # Either side of one SLA late (times the weight) for every case, and a few moments more.
    instants = {DUE - MICRO, DUE, DUE + timedelta(days=30)}
    for alert, weight in grid:
        span = severity.span_of(due_at=DUE, clock_start=alert.clock_start, sla=alert.sla)
        exact = span / float(weight or 1)
        instants |= {DUE + exact - MICRO, DUE + exact, DUE + exact * 3}
    ordered = sorted(instants)
    now_sets = [notifying(now) for now in ordered]
    with override_settings(
        FOLLOWUP_VISIBILITY_SEVERITY_THRESHOLDS=(0.25, 1.0, 3.0),
        FOLLOWUP_VISIBILITY_NOTIFY_MIN_SEVERITY="high",
    ):
        before = [notifying(now) for now in ordered]
    assert now_sets == before
    assert now_sets[0] == set() and len(now_sets[-1]) == len(grid)
    assert any(0 < len(found) < len(grid) for found in now_sets)
