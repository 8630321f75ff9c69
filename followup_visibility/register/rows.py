"""The unfollowed register: one ranked row per open opportunity that is not being followed.

An opportunity is unfollowed while one of its signals holds an alert that is open or
acknowledged: no confirmed owner, no meaningful touch within the segment's SLA, no dated
future next action (and the other signals, each with its reason code). Snoozed and
suppressed alerts are set aside on purpose and do not list it; a stalled opportunity
(waiting for a known reason until a date) leaves the register until then; :func:`standing`
says which of these keeps an opportunity out.

:func:`unfollowed` is a queryset (filter, order and paginate it in SQL: ranking covers every
row); :func:`rows` completes one page with its alerts, reasons, business-time age and the
shares of its score, in a bounded number of queries whatever the page size.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import DateTimeField, Exists, F, Q, QuerySet, Value
from django.utils.translation import gettext as _

from followup_visibility.alerting import ranking
from followup_visibility.choices import (
    REASON_OF_SIGNAL,
    AlertStatus,
    Reason,
    Severity,
    Status,
    signals_of_reason,
)
from followup_visibility.engine import access, priority, severity
from followup_visibility.engine.business_time import business_time_between
from followup_visibility.engine.calendars import TeamCalendars
from followup_visibility.models import Alert, Segment, Suppression, TrackedOpportunity

LISTING = ranking.LISTING

#: Orderings the register offers: name -> SQL ordering (the key last, for a stable order).
ORDERINGS: dict[str, tuple[str, ...]] = {
    "priority": ("-fv_score", "-pk"),
    "value": ("-fv_value", "-fv_score", "-pk"),
    "intent": ("-fv_intent", "-fv_score", "-pk"),
    "lateness": ("-fv_lateness", "-fv_score", "-pk"),
    "age": ("arrived_at", "pk"),
    "unfollowed_since": ("fv_since", "pk"),
}


def _opportunities(
    user: Any, base: QuerySet[TrackedOpportunity] | None
) -> QuerySet[TrackedOpportunity]:
    opportunities = base if base is not None else TrackedOpportunity.objects.all()
    return access.restrict(opportunities, user) if user is not None else opportunities


def unfollowed(
    now: datetime, *, user: Any = None, base: QuerySet[TrackedOpportunity] | None = None
) -> QuerySet[TrackedOpportunity]:
    """The register at ``now``: open, unstalled opportunities with a listing alert, ranked by
    their stored score (:mod:`followup_visibility.alerting.ranking`).

    Annotated with the stored ranking, as of ``fv_scored_at``: ``fv_score`` (0-100), the
    factors' raw values (``fv_intent``, ``fv_value``, ``fv_lateness`` in SLA lengths,
    ``fv_age`` in microseconds), ``fv_severity`` (the highest of its alerts) and ``fv_since``
    (when its oldest listing alert fell due). Whether a row is listed is checked at ``now``.

    ``user`` limits it to their scope (``None``: no limit, for jobs); ``base`` starts from a
    queryset of opportunities instead of all of them.
    """
    return (
        _opportunities(user, base)
        .filter(register_row__isnull=False, status=Status.OPEN)
        .exclude(stalled_until__gt=now)
        .filter(Exists(ranking.listing()))
        .annotate(
            fv_score=F("register_row__score"),
            fv_intent=F("register_row__intent"),
            fv_value=F("register_row__value"),
            fv_lateness=F("register_row__lateness"),
            fv_age=F("register_row__age"),
            fv_severity=F("register_row__severity"),
            fv_since=F("register_row__since"),
            fv_scored_at=F("register_row__scored_at"),
        )
        .order_by(*ORDERINGS["priority"])
    )


def live(
    now: datetime, *, user: Any = None, base: QuerySet[TrackedOpportunity] | None = None
) -> QuerySet[TrackedOpportunity]:
    """The register scored at ``now`` rather than read from the stored ranking: what the
    next rescore stores (with ``fv_scored_at`` = ``now``). Costs a ranking of every row."""
    scored: QuerySet[TrackedOpportunity] = ranking.scored(now, _opportunities(user, base))
    return (
        scored.exclude(stalled_until__gt=now)
        .annotate(fv_scored_at=Value(now, output_field=DateTimeField()))
        .order_by(*ORDERINGS["priority"])
    )


def with_reason(
    queryset: QuerySet[TrackedOpportunity], reasons: Iterable[str]
) -> QuerySet[TrackedOpportunity]:
    """Rows with a listing alert of a signal whose reason code is one of ``reasons``."""
    signals = [s for reason in reasons for s in signals_of_reason(reason)]
    return queryset.filter(Exists(ranking.listing().filter(signal__in=signals)))


def with_severity(
    queryset: QuerySet[TrackedOpportunity], levels: Iterable[int]
) -> QuerySet[TrackedOpportunity]:
    # A Q object: the type checker cannot see the annotation through the queryset's type.
    return queryset.filter(Q(fv_severity__in=[int(level) for level in levels]))


@dataclass(frozen=True)
class Row:
    """One row of the register, as :func:`rows` completes it."""

    opportunity: TrackedOpportunity
    score: float
    factors: dict[str, priority.Factor]
    severity: Severity | None
    reasons: list[str]
    #: The listing alerts, most severe first, each with ``severity`` set.
    alerts: list[Alert]
    #: Business time since the opportunity arrived, in its team's calendar.
    age: timedelta
    unfollowed_since: datetime | None
    lateness: float
    #: When the score (and lateness, severity) were computed: the ranking's moment.
    scored_at: datetime

    @property
    def age_hours(self) -> float:
        return self.age / timedelta(hours=1)

    @property
    def reason_labels(self) -> list[str]:
        return [str(Reason(code).label) for code in self.reasons]

    @property
    def factor_list(self) -> list[priority.Factor]:
        return [self.factors[name] for name in priority.FACTORS]


def rows(page: Sequence[TrackedOpportunity], now: datetime) -> list[Row]:
    """Complete a page of :func:`unfollowed`: alerts, reasons, age in business time and the
    factor shares. Two queries (the alerts, the configuration's generation), and a third for
    the segments' weights unless the page selected its segments, whatever its length."""
    if not page:
        return []
    alerts: dict[Any, list[Alert]] = defaultdict(list)
    listed = (
        Alert.objects.filter(opportunity_id__in=[o.pk for o in page], status__in=LISTING)
        # What a row shows of its alerts: an alert has some thirty columns.
        .only(
            "opportunity_id",
            "signal",
            "status",
            "due_at",
            "raised_at",
            "escalation_level",
            "clock_start",
            "sla",
        )
        .order_by()
    )
    # Severity in Python, as ``severity.severity_of`` derives it (to the last bit, like the
    # SQL): the page's few alerts need no SQL expression. The segments' weights come with
    # the page when it selected its segments, else in one small query.
    loaded = all(TrackedOpportunity.segment.is_cached(o) for o in page)
    segments = {o.segment_id for o in page if o.segment_id is not None}
    weights: dict[Any, Any] = (
        {o.segment_id: o.segment.intent_weight for o in page if o.segment is not None}
        if loaded
        else dict(Segment.objects.filter(pk__in=segments).values_list("pk", "intent_weight"))
    )
    weight_of = {o.pk: weights.get(o.segment_id, 1) if o.segment_id else 1 for o in page}
    for alert in listed:
        alert.severity = severity.severity_of(
            due_at=alert.due_at,
            clock_start=alert.clock_start,
            sla=alert.sla,
            now=now,
            intent_weight=weight_of[alert.opportunity_id],
        )
        alerts[alert.opportunity_id].append(alert)
    for mine in alerts.values():
        mine.sort(key=lambda a: (-(a.severity or 0), a.due_at, a.pk))  # type: ignore[attr-defined]
    calendars = TeamCalendars.current()
    settings = (priority.weights(), priority.half_points())
    result = []
    for opportunity in page:
        raw = {
            "intent": float(opportunity.fv_intent),  # type: ignore[attr-defined]
            "value": float(opportunity.fv_value),  # type: ignore[attr-defined]
            "lateness": float(opportunity.fv_lateness or 0),  # type: ignore[attr-defined]
            "age": float(opportunity.fv_age),  # type: ignore[attr-defined]
        }
        score, factors = priority.explain(raw, settings)
        mine = alerts.get(opportunity.pk, [])
        level = opportunity.fv_severity  # type: ignore[attr-defined]
        result.append(
            Row(
                opportunity=opportunity,
                score=score,
                factors=factors,
                severity=Severity(level) if level else None,
                reasons=sorted({REASON_OF_SIGNAL[a.signal] for a in mine}),
                alerts=mine,
                age=business_age(opportunity, now, calendars),
                unfollowed_since=opportunity.fv_since,  # type: ignore[attr-defined]
                lateness=raw["lateness"],
                scored_at=opportunity.fv_scored_at,  # type: ignore[attr-defined]
            )
        )
    return result


def business_age(
    opportunity: TrackedOpportunity, now: datetime, calendars: TeamCalendars
) -> timedelta:
    """Business time from arrival to ``now`` in the opportunity's calendar (wall time when
    the company keeps no calendar at all)."""
    calendar_id = (
        calendars.by_team.get(opportunity.team_id, calendars.default)
        if opportunity.team_id is not None
        else calendars.default
    )
    engine = calendars.engines.get(calendar_id) if calendar_id is not None else None
    if now <= opportunity.arrived_at:
        return timedelta(0)
    if engine is None:
        return now - opportunity.arrived_at
    return business_time_between(engine, opportunity.arrived_at, now)


# Why an opportunity is not listed --------------------------------------------------------


@dataclass(frozen=True)
class Standing:
    """Whether an opportunity is in the register at a moment, and if not, why."""

    listed: bool
    #: ``listed``, ``closed``, ``stalled``, ``suppressed``, ``snoozed`` or ``followed``.
    state: str
    detail: str
    until: datetime | None = None


def standing(opportunity: TrackedOpportunity, now: datetime) -> Standing:
    """Why ``opportunity`` is or is not in the register at ``now`` (a few queries)."""
    if opportunity.status != Status.OPEN:
        return Standing(
            False, "closed", _("Closed: %(s)s.") % {"s": opportunity.get_status_display()}
        )
    if opportunity.stalled_until is not None and opportunity.stalled_until > now:
        return Standing(
            False,
            "stalled",
            _("Stalled: %(r)s.") % {"r": opportunity.stalled_reason},
            opportunity.stalled_until,
        )
    active = Alert.objects.filter(opportunity=opportunity)
    if active.filter(status__in=LISTING).exists():
        return Standing(True, "listed", _("Unfollowed: a signal holds an open alert."))
    held = active.filter(status=AlertStatus.SUPPRESSED).select_related("suppression").first()
    if held is not None:
        rule: Suppression | None = held.suppression
        return Standing(
            False,
            "suppressed",
            _("Suppressed: %(c)s.") % {"c": rule.comment if rule else ""},
            rule.ends_at if rule else None,
        )
    snoozed = active.filter(status=AlertStatus.SNOOZED).order_by("-snoozed_until").first()
    if snoozed is not None:
        return Standing(
            False,
            "snoozed",
            _("Snoozed: %(r)s.") % {"r": snoozed.snooze_reason},
            snoozed.snoozed_until,
        )
    return Standing(False, "followed", _("Followed: no signal holds an open alert."))
