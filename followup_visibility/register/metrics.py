"""Follow-up KPIs: what is overdue now, first-response attainment, logging lag.

Plain functions over a scoped queryset of opportunities (:func:`scope`), so the API's
``metrics/`` endpoints and the dashboard read the same numbers. Each costs a fixed handful of
grouped queries whatever the data's size; the definitions are in docs/api.md (Metrics).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.db import NotSupportedError, connections
from django.db.models import (
    Aggregate,
    Case,
    CharField,
    Count,
    Exists,
    F,
    FloatField,
    Max,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
    Window,
)
from django.db.models.functions import Abs, RowNumber
from django.utils.translation import gettext as _

from followup_visibility.choices import (
    AlertSignal,
    Channel,
    Reason,
    Severity,
    Status,
    signals_of_reason,
)
from followup_visibility.engine import access, severity, teams
from followup_visibility.engine.business_time import add_business_time, next_opening
from followup_visibility.engine.clocks import Context
from followup_visibility.models import Alert, Touch, TrackedOpportunity
from followup_visibility.register.rows import LISTING, live

#: The default period of the period metrics: the last seven days up to ``now``.
DEFAULT_PERIOD = timedelta(days=7)
#: The logging-lag percentiles, as fractions.
PERCENTILES = (0.5, 0.9, 0.95)
#: Closed for good: an unanswered one closed before its deadline owed no first response. A
#: converted lead continues as its deal (the chain shares one timeline), so it is not here.
_ENDED = (Status.WON, Status.LOST, Status.DISQUALIFIED, Status.DELETED)


@dataclass(frozen=True)
class Period:
    """``since <= t < until``."""

    since: datetime
    until: datetime


def period(now: datetime, since: datetime | None = None, until: datetime | None = None) -> Period:
    """The period asked for, completed: ``until`` defaults to ``now``, ``since`` to seven
    days before ``until``."""
    end = until if until is not None else now
    return Period(since if since is not None else end - DEFAULT_PERIOD, end)


def scope(user: Any, *, team: int | None = None) -> QuerySet[TrackedOpportunity]:
    """The opportunities ``user`` may see, limited to ``team`` and the teams below it."""
    opportunities = access.opportunities_for(user)
    if team is not None:
        opportunities = opportunities.filter(team__in=teams.with_subteams([team]))
    return opportunities


def _user_labels(ids: Iterable[Any]) -> dict[Any, str]:
    """Each user's full name, else their username (one query)."""
    wanted = {pk for pk in ids if pk is not None}
    if not wanted:
        return {}
    labels = {}
    for pk, user in get_user_model()._default_manager.in_bulk(wanted).items():
        full = getattr(user, "get_full_name", None)
        labels[pk] = (full() if full else "") or user.get_username()
    return labels


# Overdue now ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class OverdueGroup:
    """One group of the overdue counts: register rows and listing alerts."""

    key: Any
    label: str
    opportunities: int
    actions: int


@dataclass(frozen=True)
class Overdue:
    now: datetime
    since: datetime | None
    until: datetime | None
    opportunities: int
    actions: int
    by_severity: list[OverdueGroup]
    by_reason: list[OverdueGroup]
    by_segment: list[OverdueGroup]
    by_team: list[OverdueGroup]
    by_owner: list[OverdueGroup]


def _reason_expression() -> Case:
    return Case(
        *(
            When(signal__in=signals_of_reason(reason), then=Value(reason.value))
            for reason in Reason
        ),
        output_field=CharField(),
    )


def _ranked(groups: Iterable[OverdueGroup]) -> list[OverdueGroup]:
    # Largest first; the "none" group (no segment, no team, no owner) after the named ones.
    return sorted(groups, key=lambda g: (g.key is None, -g.opportunities, -g.actions, g.label))


def overdue(
    now: datetime,
    opportunities: QuerySet[TrackedOpportunity],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Overdue:
    """The register at ``now`` counted by severity, reason, segment, team and owner.

    ``opportunities`` counts the register's rows (its opportunities), ``actions`` their
    listing alerts (open or acknowledged). With ``since``/``until``, only the alerts that fell
    due in that period count, and the rows holding one. An opportunity's severity is that of
    its most severe counted alert; an alert's, its own. Seven queries.
    """
    register = live(now, base=opportunities).order_by()
    alerts = Alert.objects.filter(status__in=LISTING, opportunity__in=register.values("pk"))
    if since is not None:
        alerts = alerts.filter(due_at__gte=since)
    if until is not None:
        alerts = alerts.filter(due_at__lt=until)
    if since is None and until is None:
        level = "fv_severity"
    else:
        counted = alerts.filter(opportunity_id=OuterRef("pk"))
        register = register.filter(Exists(counted)).annotate(
            fv_counted_severity=Subquery(
                counted.order_by()
                .values("opportunity_id")
                .annotate(fv_max=Max(severity.expression(now)))
                .values("fv_max")[:1]
            )
        )
        level = "fv_counted_severity"

    rows_by_level = dict(
        register.values_list(level).annotate(n=Count("pk")).values_list(level, "n")
    )
    actions_by_level = dict(
        alerts.order_by()
        .annotate(fv_level=severity.expression(now))
        .values_list("fv_level")
        .annotate(n=Count("pk"))
        .values_list("fv_level", "n")
    )
    by_severity = [
        OverdueGroup(
            level.name.lower(),
            str(level.label),
            rows_by_level.get(level.value, 0),
            actions_by_level.get(level.value, 0),
        )
        for level in sorted(Severity, reverse=True)
    ]
    if rows_by_level.get(None) or actions_by_level.get(None):
        # Only an alert whose due time is after ``now`` has none (a ``now`` in the past).
        by_severity.append(
            OverdueGroup(
                None, _("Not due yet"), rows_by_level.get(None, 0), actions_by_level.get(None, 0)
            )
        )

    counts = {"opportunities": Count("opportunity_id", distinct=True), "actions": Count("pk")}
    reasons = {
        row["fv_reason"]: row
        for row in alerts.order_by()
        .annotate(fv_reason=_reason_expression())
        .values("fv_reason")
        .annotate(**counts)
    }
    by_reason = [
        OverdueGroup(
            reason.value,
            str(reason.label),
            reasons.get(reason.value, {}).get("opportunities", 0),
            reasons.get(reason.value, {}).get("actions", 0),
        )
        for reason in Reason
    ]
    by_segment = _ranked(
        OverdueGroup(
            row["opportunity__segment__code"],
            row["opportunity__segment__name"] or _("No segment"),
            row["opportunities"],
            row["actions"],
        )
        for row in alerts.order_by()
        .values("opportunity__segment__code", "opportunity__segment__name")
        .annotate(**counts)
    )
    by_team = _ranked(
        OverdueGroup(
            row["opportunity__team_id"],
            row["opportunity__team__name"] or _("No team"),
            row["opportunities"],
            row["actions"],
        )
        for row in alerts.order_by()
        .values("opportunity__team_id", "opportunity__team__name")
        .annotate(**counts)
    )
    owners = list(alerts.order_by().values("opportunity__owner_id").annotate(**counts))
    labels = _user_labels(row["opportunity__owner_id"] for row in owners)
    by_owner = _ranked(
        OverdueGroup(
            row["opportunity__owner_id"],
            labels.get(row["opportunity__owner_id"], _("No owner")),
            row["opportunities"],
            row["actions"],
        )
        for row in owners
    )
    return Overdue(
        now=now,
        since=since,
        until=until,
        opportunities=sum(g.opportunities for g in by_severity),
        actions=sum(g.actions for g in by_severity),
        by_severity=by_severity,
        by_reason=by_reason,
        by_segment=by_segment,
        by_team=by_team,
        by_owner=by_owner,
    )


# First-response attainment -------------------------------------------------------------------


@dataclass(frozen=True)
class Attainment:
    """Met, missed and pending first responses of one segment (or of all of them)."""

    key: str | None
    label: str
    met: int
    missed: int
    pending: int

    @property
    def rate(self) -> float | None:
        """The share met of those decided (met or missed); ``None`` when none is."""
        decided = self.met + self.missed
        return self.met / decided if decided else None


@dataclass(frozen=True)
class FirstResponse:
    since: datetime
    until: datetime
    total: Attainment
    by_segment: list[Attainment]


def first_response_due(
    ctx: Context, *, arrived_at: datetime, team_id: int | None, segment_id: int | None
) -> datetime | None:
    """When the first response to an opportunity arriving at ``arrived_at`` is due, in
    business time, as the deadline machinery (:func:`engine.clocks.compute`) computes the
    ``no_first_response`` deadline; ``None`` without an SLA or a calendar for it.

    Computed again rather than read: the stored deadline goes away once the opportunity is
    answered or closed, and an alert exists only when it was missed.
    """
    calendar_id = ctx.calendar_for(team_id)
    engine = ctx.engines.get(calendar_id) if calendar_id is not None else None
    found = ctx.book.resolve(team_id, segment_id, arrived_at).durations.get(
        AlertSignal.NO_FIRST_RESPONSE
    )
    if engine is None or found is None:
        return None
    sla = found[0]
    return add_business_time(engine, next_opening(engine, arrived_at), sla) if sla else arrived_at


def first_response(
    now: datetime, opportunities: QuerySet[TrackedOpportunity], within: Period
) -> FirstResponse:
    """First-response attainment of the demand that arrived in ``within``, per segment.

    Counted once per chain (on its first opportunity, the lead; merged duplicates are left
    out), with each opportunity's first-response deadline in business time
    (:func:`first_response_due`): **met** when answered by the deadline, **missed** when
    answered after it or still unanswered once it passed, **pending** when unanswered and
    not yet due. An unanswered opportunity closed (won, lost, disqualified, deleted) before
    its deadline owed nothing and is left out, as is one without an SLA. One query, and the
    policies' and calendars' (read once per configuration change).
    """
    rows = (
        opportunities.filter(
            arrived_at__gte=within.since, arrived_at__lt=within.until, chain_root__isnull=True
        )
        .exclude(status=Status.MERGED)
        .order_by()
        .values_list(
            "arrived_at",
            "team_id",
            "segment_id",
            "segment__code",
            "segment__name",
            "first_response_at",
            "status",
            "closed_at",
        )
    )
    ctx: Context | None = None
    tallies: dict[tuple[str | None, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    # Streamed: a long period reads many rows, each needing its deadline in business time
    # (about 20 microseconds apiece).
    for arrived, team_id, segment_id, code, name, answered, status, closed in rows.iterator(
        chunk_size=5000
    ):
        ctx = ctx or Context.load()
        due = first_response_due(ctx, arrived_at=arrived, team_id=team_id, segment_id=segment_id)
        if due is None:
            continue
        if answered is not None and answered > now:
            answered = None  # logged ahead of the clock the metric is read at
        if answered is None and status in _ENDED and (closed is None or closed < due):
            continue
        tally = tallies[(code, name or "")]
        if answered is not None:
            tally[0 if answered <= due else 1] += 1
        elif due <= now:
            tally[1] += 1
        else:
            tally[2] += 1
    by_segment = sorted(
        (
            Attainment(code, label or _("No segment"), *tally)
            for (code, label), tally in tallies.items()
        ),
        key=lambda a: (a.key is None, a.label),
    )
    total = Attainment(
        None,
        _("All segments"),
        sum(a.met for a in by_segment),
        sum(a.missed for a in by_segment),
        sum(a.pending for a in by_segment),
    )
    return FirstResponse(within.since, within.until, total, by_segment)


# Logging lag ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lag:
    """Logging-lag percentiles of one group of touches, in seconds."""

    key: Any
    label: str
    count: int
    p50: float
    p90: float
    p95: float


@dataclass(frozen=True)
class LoggingLag:
    since: datetime
    until: datetime
    overall: Lag | None
    by_channel: list[Lag]
    by_actor: list[Lag]


class PercentileCont(Aggregate):
    """PostgreSQL's ``percentile_cont(fraction) WITHIN GROUP (ORDER BY expression)``."""

    function = "percentile_cont"
    output_field = FloatField()

    def __init__(self, expression: Any, fraction: float, **extra: Any) -> None:
        if not 0 <= fraction <= 1:
            raise ValueError("a percentile is a fraction from 0 to 1")
        self.fraction = float(fraction)
        super().__init__(expression, **extra)

    def as_sql(self, compiler: Any, connection: Any, *args: Any, **extra: Any) -> Any:
        raise NotSupportedError("percentile_cont needs PostgreSQL")

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        sql, params = compiler.compile(self.get_source_expressions()[0])
        return f"percentile_cont(%s) WITHIN GROUP (ORDER BY {sql})", (self.fraction, *params)


def interpolate(values: Mapping[int, float], count: int, fraction: float) -> float:
    """The ``fraction`` percentile of ``count`` ordered values, of which ``values`` holds
    those at the positions needed (0-based), interpolated exactly as ``percentile_cont``
    does, operation for operation, so that both databases give the same float."""
    position = fraction * (count - 1)
    low, high = math.floor(position), math.ceil(position)
    if low == high:
        return values[low]
    return values[low] + (position - low) * (values[high] - values[low])


def _needed(fraction: float, count: int) -> set[int]:
    position = fraction * (count - 1)
    return {math.floor(position), math.ceil(position)}


def _by_percentile_cont(touches: QuerySet[Touch], dimension: str | None) -> dict[Any, list[Any]]:
    """PostgreSQL: the percentiles in SQL, one grouped query."""
    lag = severity.Micros(F("logging_lag"))
    aggregates = {
        "fv_count": Count("pk"),
        **{f"fv_p{i}": PercentileCont(lag, f) for i, f in enumerate(PERCENTILES)},
    }
    names = ["fv_count", *(f"fv_p{i}" for i in range(len(PERCENTILES)))]
    if dimension is None:
        found = touches.order_by().aggregate(**aggregates)
        return {None: [found[n] for n in names]} if found["fv_count"] else {}
    grouped = touches.order_by().values(dimension).annotate(**aggregates)
    return {row[dimension]: [row[n] for n in names] for row in grouped}


def _by_ranked_fetch(touches: QuerySet[Touch], dimension: str | None) -> dict[Any, list[Any]]:
    """Other databases (SQLite, the demo's): each touch ranked by lag within its group by a
    window function, and only the rows ``percentile_cont`` would read fetched (at most two
    per percentile and group); the interpolation is done here with its formula.
    """
    partition = [F(dimension)] if dimension else None
    ranked = touches.order_by().annotate(
        fv_rank=Window(RowNumber(), partition_by=partition, order_by=[F("logging_lag").asc()]),
        fv_count=Window(Count("pk"), partition_by=partition),
    )
    # The rows within one position of a percentile's: the floor and ceiling it lies between.
    distance = {
        f"fv_d{i}": Abs(
            F("fv_rank") - 1 - Value(fraction) * (F("fv_count") - 1), output_field=FloatField()
        )
        for i, fraction in enumerate(PERCENTILES)
    }
    near = Q()
    for name in distance:
        near |= Q(**{f"{name}__lt": 1})
    rows = ranked.annotate(**distance).filter(near)
    positions: dict[Any, dict[int, float]] = defaultdict(dict)
    counts: dict[Any, int] = {}
    fields = [dimension] if dimension else []
    for *group, rank, count, lag in rows.values_list(*fields, "fv_rank", "fv_count", "logging_lag"):
        key = group[0] if group else None
        positions[key][rank - 1] = float(severity.micros(lag))
        counts[key] = count
    return {
        key: [count, *(interpolate(positions[key], count, f) for f in PERCENTILES)]
        for key, count in counts.items()
    }


def _lags(touches: QuerySet[Touch], dimension: str | None) -> dict[Any, list[Any]]:
    if connections[touches.db].vendor == "postgresql":
        return _by_percentile_cont(touches, dimension)
    return _by_ranked_fetch(touches, dimension)


def _lag(key: Any, label: str, found: Sequence[Any]) -> Lag:
    count, *micros = found
    return Lag(key, label, count, *(m / 1_000_000 for m in micros))


def logging_lag(opportunities: QuerySet[TrackedOpportunity], within: Period) -> LoggingLag:
    """Percentiles (p50, p90, p95, ``percentile_cont``'s linear interpolation) of the
    logging lag (``recorded_at - occurred_at``) of the touches recorded in ``within``, on
    ``opportunities``: overall, per channel and per actor (the person who logged it; system
    and integration touches have none). Three grouped queries and one for the names.
    """
    touches = Touch.objects.filter(
        opportunity__in=opportunities.values("pk"),
        recorded_at__gte=within.since,
        recorded_at__lt=within.until,
    )
    overall = _lags(touches, None).get(None)
    channels = _lags(touches, "channel")
    actors = _lags(touches, "actor_id")
    labels = _user_labels(actors)
    by_channel = [
        _lag(key, str(Channel(key).label) if key in Channel.values else key, found)
        for key, found in channels.items()
    ]
    by_actor = [_lag(key, labels.get(key, _("No actor")), found) for key, found in actors.items()]
    order = lambda lag: (lag.key is None, -lag.count, lag.label)  # noqa: E731
    return LoggingLag(
        since=within.since,
        until=within.until,
        overall=_lag(None, _("All touches"), overall) if overall else None,
        by_channel=sorted(by_channel, key=order),
        by_actor=sorted(by_actor, key=order),
    )
