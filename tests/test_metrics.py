"""The follow-up KPIs (register/metrics.py) on a hand-built world, counted by hand.

The company keeps New York hours, Monday to Friday 09:00-17:00 (EDT from 8 March 2026); every
expected number below is derived in that business time in the comments next to it. The world
is built once per module (in a transaction rolled back at the end) in three parts kept apart in
time: the register of Wednesday 11 March, the logging of 12-13 March, the demand of the week of
23 March.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection, transaction
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from example_project.crm.models import Deal, Lead
from followup_visibility.alerting import lifecycle, sweep
from followup_visibility.choices import AlertSignal, Channel, Direction, Outcome
from followup_visibility.engine.clocks import Context
from followup_visibility.ingest.crm import sync_objects
from followup_visibility.ingest.touches import NewTouch, record_touches
from followup_visibility.models import (
    Alert,
    Deadline,
    Segment,
    SegmentRule,
    Team,
    Touch,
    TrackedOpportunity,
)
from followup_visibility.register import metrics
from tests.conftest import is_postgres, tracked
from tests.factories_sla import DURATIONS, NEW_YORK, install_defaults

HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)
#: Severity thresholds pinned here (lateness x intent / SLA span), whatever the defaults.
THRESHOLDS = (0.25, 1.0, 3.0)


def ny(day: int, hour: int, minute: int = 0) -> datetime:
    """An instant of March 2026 on New York's wall clock."""
    return datetime(2026, 3, day, hour, minute, tzinfo=NEW_YORK)


#: Wednesday 11 March, 16:00: the register is read then.
NOW = ny(11, 16)
#: The logging read: touches recorded on 12 and 13 March.
DAYS = metrics.Period(ny(12, 0), ny(14, 0))
#: The demand read: the week of Monday 23 March, at Monday 30 March 09:50.
WEEK = metrics.Period(ny(23, 0), ny(30, 0))
LATER = ny(30, 9, 50)


@dataclass
class World:
    """East (maria; alex and bea) and West (nina; chen); ops sees everything. Pricing demand
    weighs twice as much as brochure requests in severity."""

    users: dict[str, Any] = field(default_factory=dict)
    teams: dict[str, Team] = field(default_factory=dict)
    opportunities: dict[str, TrackedOpportunity] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        users = self.__dict__.get("users", {})
        if name in users:
            return users[name]
        raise AttributeError(name)


def leads(now: datetime, *specs: tuple[Any, ...]) -> dict[str, TrackedOpportunity]:
    """Leads ``(name, arrived, owner, team key, source[, status])`` synced together at
    ``now``, their owners confirmed; a ``pricing`` or ``brochure`` source routes them to that
    segment."""
    objs = Lead.objects.bulk_create(
        Lead(name=name, created_at=arrived, owner=owner, team=team, source=source, status=status)
        for name, arrived, owner, team, source, *rest in specs
        for status in [rest[0] if rest else "new"]
    )
    sync_objects(objs, now, confirm_owners=True)
    return {obj.name: tracked(obj) for obj in objs}


def touch(
    opportunity: TrackedOpportunity,
    occurred_at: datetime,
    channel: str = Channel.PHONE,
    direction: str = Direction.OUTBOUND,
    **fields: Any,
) -> NewTouch:
    """A connected call by default: a meaningful response."""
    outcome = {Channel.PHONE: Outcome.CONNECTED, Channel.EMAIL: Outcome.SENT}[channel]
    if direction == Direction.INBOUND:
        outcome = Outcome.RECEIVED
    return NewTouch(
        target=opportunity,
        channel=channel,
        direction=direction,
        outcome=outcome,
        occurred_at=occurred_at,
        **fields,
    )


def build() -> World:
    world = World()
    install_defaults(
        durations={
            **dict.fromkeys(DURATIONS, 100 * HOUR),
            "first_response": HOUR,
            "reply": 2 * HOUR,
            "owner_assignment": HOUR,
        }
    )
    make = get_user_model().objects.create_user
    world.users = {
        "alex": make("alex", first_name="Alex", last_name="Adams"),
        **{name: make(name) for name in ("bea", "chen", "maria", "nina", "ops")},
    }
    world.ops.user_permissions.add(Permission.objects.get(codename="view_all_opportunities"))
    world.teams["east"] = Team.objects.create(key="east", name="East", manager=world.maria)
    world.teams["east"].members.add(world.alex, world.bea)
    world.teams["west"] = Team.objects.create(key="west", name="West", manager=world.nina)
    world.teams["west"].members.add(world.chen)
    pricing = Segment.objects.create(code="pricing", name="Pricing", intent_weight=Decimal(2))
    brochure = Segment.objects.create(code="brochure", name="Brochure")
    for segment in (pricing, brochure):
        SegmentRule.objects.create(segment=segment, hint_field="source", hint_value=segment.code)
    build_register(world)
    build_logging(world)
    build_demand(world)
    return world


def build_register(w: World) -> None:
    """Six register rows, seven listing alerts at ``NOW``:

    - A alex, East, pricing: arrived Wed 14:00; first response due 15:00, 1 h late x 2 over a
      1 h span = 2: **high**.
    - B alex, East, brochure: answered Tue; the customer wrote Wed 13:00, reply due 15:00, 1 h
      late over 2 h = 0.5: **medium** (awaiting reply).
    - C bea, East, no segment: arrived Mon 10:00, first response due Mon 11:00, 53 h late:
      **critical**.
    - D nobody, East, pricing: arrived Wed 15:00; owner assignment and first response both due
      16:00, 0 late: two **low** alerts.
    - E chen, West, brochure: arrived Wed 10:00, first response due 11:00, 5 h late: **critical**.
    - G bea, East, brochure: arrived Wed 09:00, due 10:00, 6 h late: **critical**, acknowledged.

    Not in it: F (chen, West) not due before 16:45; H (alex) due 12:00 but snoozed.
    """
    found = leads(
        ny(11, 15, 45),
        ("A", ny(11, 14), w.alex, "east", "pricing"),
        ("B", ny(10, 10), w.alex, "east", "brochure"),
        ("C", ny(9, 10), w.bea, "east", "web_form"),
        ("D", ny(11, 15), None, "east", "pricing"),
        ("E", ny(11, 10), w.chen, "west", "brochure"),
        ("F", ny(11, 15, 45), w.chen, "west", "pricing"),
        ("G", ny(11, 9), w.bea, "east", "brochure"),
        ("H", ny(11, 11), w.alex, "east", "brochure"),
    )
    b = found["B"]
    record_touches(
        [
            touch(b, ny(10, 10, 30)),
            touch(b, ny(11, 13), Channel.EMAIL, Direction.INBOUND),
        ],
        now=ny(11, 15, 45),
    )
    sweep.sweep(NOW)
    first = AlertSignal.NO_FIRST_RESPONSE
    lifecycle.acknowledge(
        Alert.objects.get(opportunity=found["G"], signal=first), by=w.bea, now=NOW
    )
    lifecycle.snooze(
        Alert.objects.get(opportunity=found["H"], signal=first),
        reason="Calling back tomorrow",
        by=w.alex,
        now=NOW,
        until=NOW + 20 * HOUR,
    )
    w.opportunities.update(found)


def build_logging(w: World) -> None:
    """Touches recorded on 12-13 March, lags in minutes. Phone, logged by alex on his lead: 0,
    10, 20, 30, 40. Email on bea's lead: by bea 5, 60, 120; by nobody (an integration) 1440.
    Outside the period (recorded before it, or at its end): 9999 minutes each."""
    found = leads(
        ny(9, 9),
        ("Alex's", ny(9, 9), w.alex, "east", "web_form"),
        ("Bea's", ny(9, 9), w.bea, "east", "web_form"),
    )
    mine, hers = found["Alex's"], found["Bea's"]
    logged = ny(13, 12)
    made = [(mine, Channel.PHONE, w.alex, m, logged) for m in (0, 10, 20, 30, 40)]
    made += [(hers, Channel.EMAIL, w.bea, m, logged) for m in (5, 60, 120)]
    made += [(hers, Channel.EMAIL, None, 1440, logged)]
    made += [(mine, Channel.PHONE, w.alex, 9999, ny(11, 23, 59))]
    made += [(hers, Channel.EMAIL, w.bea, 9999, ny(14, 0))]
    record_touches(
        [
            touch(opp, recorded - m * MINUTE, channel, recorded_at=recorded, actor=actor)
            for opp, channel, actor, m, recorded in made
        ],
        now=ny(14, 0),
    )


def build_demand(w: World) -> None:
    """The week of 23 March, first response within 1 business hour:

    - pricing P1: arrived Fri 16:30, due Mon 09:30 (30 min Fri, 30 min Mon); answered Mon
      09:20, 2 days 17 hours later on the wall clock: **met**.
    - pricing P2: the same, answered Mon 09:45: **missed**.
    - pricing P3 (chen): arrived Sat 11:00, due Mon 10:00; unanswered at 09:50: **pending**.
    - brochure B1: arrived Thu 10:00, due 11:00, never answered: **missed**.
    - brochure B2: the same, answered 10:59: **met**; its deal (arrived Thu 12:00) continues
      its chain and is not counted again.
    - brochure B3: disqualified at 10:30, unanswered: owed nothing, left out.
    - brochure B4 (chen): lost on Monday, unanswered: **missed**.
    - no segment N1 (chen): arrived Wed 18:00 (after hours), due Thu 10:00; answered Thu
      09:30: **met**.
    - outside the week: O1 arrived Sun 22 March, O2 Mon 30 March 09:00.
    """
    thursday = leads(
        ny(26, 10, 30),
        ("N1", ny(25, 18), w.chen, "west", "web_form"),
        ("B1", ny(26, 10), w.alex, "east", "brochure"),
        ("B2", ny(26, 10), w.bea, "east", "brochure"),
        ("B3", ny(26, 10), w.bea, "east", "brochure", "disqualified"),
        ("O1", ny(22, 12), w.alex, "east", "pricing"),
    )
    (deal,) = Deal.objects.bulk_create(
        [Deal(name="B2 deal", lead=Lead.objects.get(name="B2"), owner=w.bea, created_at=ny(26, 12))]
    )
    sync_objects([deal], ny(26, 12), confirm_owners=True)
    monday = leads(
        ny(30, 9),
        ("P1", ny(27, 16, 30), w.alex, "east", "pricing"),
        ("P2", ny(27, 16, 30), w.alex, "east", "pricing"),
        ("P3", ny(28, 11), w.chen, "west", "pricing"),
        ("B4", ny(26, 10), w.chen, "west", "brochure", "lost"),
        ("O2", ny(30, 9), w.alex, "east", "pricing"),
    )
    record_touches(
        [
            touch(thursday["N1"], ny(26, 9, 30)),
            touch(thursday["B2"], ny(26, 10, 59)),
            touch(monday["P1"], ny(30, 9, 20)),
            touch(monday["P2"], ny(30, 9, 45)),
        ],
        now=LATER,
    )
    w.opportunities.update(thursday, **monday)


def module_world(django_db_blocker: Any) -> Iterator[World]:
    """Body of a module-scoped fixture: the world, built once and rolled back at the end."""
    with django_db_blocker.unblock(), transaction.atomic():
        with override_settings(FOLLOWUP_VISIBILITY_SEVERITY_THRESHOLDS=THRESHOLDS):
            built = build()
        yield built
        transaction.set_rollback(True)


@pytest.fixture(scope="module")
def world(django_db_setup: Any, django_db_blocker: Any) -> Iterator[World]:
    yield from module_world(django_db_blocker)


@pytest.fixture(autouse=True)
def thresholds(world: World, db: Any, settings: Any) -> None:
    settings.FOLLOWUP_VISIBILITY_SEVERITY_THRESHOLDS = THRESHOLDS


# Overdue now ---------------------------------------------------------------------------------


def table(groups: list[metrics.OverdueGroup]) -> dict[Any, tuple[str, int, int]]:
    return {g.key: (g.label, g.opportunities, g.actions) for g in groups}


def test_overdue_now_by_every_dimension(world: World) -> None:
    w = world
    found = metrics.overdue(NOW, metrics.scope(w.ops))
    assert (found.opportunities, found.actions) == (6, 7)
    assert [g.key for g in found.by_severity] == ["critical", "high", "medium", "low"]
    assert table(found.by_severity) == {
        "critical": ("Critical", 3, 3),  # C, E, G
        "high": ("High", 1, 1),  # A
        "medium": ("Medium", 1, 1),  # B
        "low": ("Low", 1, 2),  # D, both alerts
    }
    reasons = table(found.by_reason)
    assert reasons["no_first_touch"] == ("No first touch", 5, 5)  # A, C, D, E, G
    assert reasons["awaiting_reply"] == ("Customer awaiting a reply", 1, 1)  # B
    assert reasons["no_owner"] == ("No confirmed owner", 1, 1)  # D
    assert {k for k, (_label, opps, acts) in reasons.items() if opps or acts} == {
        "no_first_touch",
        "awaiting_reply",
        "no_owner",
    }
    assert len(reasons) == 9  # every reason, zeros included
    assert table(found.by_segment) == {
        "brochure": ("Brochure", 3, 3),  # B, E, G
        "pricing": ("Pricing", 2, 3),  # A, D (two)
        None: ("No segment", 1, 1),  # C
    }
    assert [g.key for g in found.by_segment] == ["brochure", "pricing", None]
    east, west = w.teams["east"].pk, w.teams["west"].pk
    assert table(found.by_team) == {east: ("East", 5, 6), west: ("West", 1, 1)}
    assert table(found.by_owner) == {
        w.alex.pk: ("Alex Adams", 2, 2),  # A, B
        w.bea.pk: ("bea", 2, 2),  # C, G
        w.chen.pk: ("chen", 1, 1),  # E
        None: ("No owner", 1, 2),  # D
    }
    assert found.by_owner[-1].key is None


def test_overdue_is_scoped(world: World) -> None:
    w = world
    alex = metrics.overdue(NOW, metrics.scope(w.alex))
    assert (alex.opportunities, alex.actions) == (2, 2)  # A, B
    assert table(alex.by_owner) == {w.alex.pk: ("Alex Adams", 2, 2)}
    assert {g.key: g.opportunities for g in alex.by_severity if g.opportunities} == {
        "high": 1,
        "medium": 1,
    }
    maria = metrics.overdue(NOW, metrics.scope(w.maria))
    assert (maria.opportunities, maria.actions) == (5, 6)  # East: A, B, C, D, G
    assert table(maria.by_team) == {w.teams["east"].pk: ("East", 5, 6)}
    nina = metrics.overdue(NOW, metrics.scope(w.nina))
    assert (nina.opportunities, nina.actions) == (1, 1)  # E
    west = metrics.overdue(NOW, metrics.scope(w.ops, team=w.teams["west"].pk))
    assert table(west.by_owner) == {w.chen.pk: ("chen", 1, 1)}
    nothing = metrics.overdue(NOW, metrics.scope(w.alex, team=w.teams["west"].pk))
    assert (nothing.opportunities, nothing.actions) == (0, 0)
    assert nothing.by_segment == nothing.by_team == nothing.by_owner == []
    assert [g.opportunities for g in nothing.by_severity] == [0, 0, 0, 0]


def test_overdue_within_a_due_period(world: World) -> None:
    """Alerts that fell due from Wed 14:30: A and B (15:00), D's two (16:00)."""
    scope = metrics.scope(world.ops)
    found = metrics.overdue(NOW, scope, since=ny(11, 14, 30))
    assert (found.opportunities, found.actions) == (3, 4)
    assert table(found.by_severity) == {
        "critical": ("Critical", 0, 0),
        "high": ("High", 1, 1),
        "medium": ("Medium", 1, 1),
        "low": ("Low", 1, 2),
    }
    before_four = metrics.overdue(NOW, scope, since=ny(11, 14, 30), until=NOW)
    assert (before_four.opportunities, before_four.actions) == (2, 2)  # D's are due at 16:00
    # C's alert alone fell due on Monday.
    monday = metrics.overdue(NOW, scope, since=ny(9, 0), until=ny(10, 0))
    assert table(monday.by_owner) == {world.bea.pk: ("bea", 1, 1)}
    assert table(monday.by_severity)["critical"] == ("Critical", 1, 1)


def test_overdue_costs_seven_queries_whatever_the_size(world: World) -> None:
    counts = []
    for user in (world.nina, world.alex, world.ops):  # 1, 2 and 6 rows; 1, 1 and 4 owners
        scope = metrics.scope(user)
        with CaptureQueriesContext(connection) as queries:
            metrics.overdue(NOW, scope)
        counts.append(len(queries.captured_queries))
    assert counts == [7, 7, 7]


# First-response attainment -------------------------------------------------------------------


def rates(found: metrics.FirstResponse) -> dict[Any, tuple[int, int, int, float | None]]:
    return {a.key: (a.met, a.missed, a.pending, a.rate) for a in found.by_segment}


def test_first_response_attainment_in_business_time(world: World) -> None:
    found = metrics.first_response(LATER, metrics.scope(world.ops), WEEK)
    assert rates(found) == {
        "brochure": (1, 2, 0, pytest.approx(1 / 3)),  # B2; B1, B4
        "pricing": (1, 1, 1, 0.5),  # P1; P2; P3
        None: (1, 0, 0, 1.0),  # N1
    }
    assert [a.label for a in found.by_segment] == ["Brochure", "Pricing", "No segment"]
    total = found.total
    assert (total.met, total.missed, total.pending, total.rate) == (3, 3, 1, 0.5)
    assert (found.since, found.until) == (WEEK.since, WEEK.until)

    # The open, unanswered P3 still has its stored deadline: the two computations agree.
    p3 = world.opportunities["P3"]
    stored = Deadline.objects.get(opportunity=p3, signal=AlertSignal.NO_FIRST_RESPONSE)
    due = metrics.first_response_due(
        Context.load(), arrived_at=p3.arrived_at, team_id=p3.team_id, segment_id=p3.segment_id
    )
    assert due == stored.due_at == ny(30, 10)


def test_first_response_is_scoped_and_pending_turns_missed(world: World) -> None:
    w = world
    alex = metrics.first_response(LATER, metrics.scope(w.alex), WEEK)
    assert rates(alex) == {"pricing": (1, 1, 0, 0.5), "brochure": (0, 1, 0, 0.0)}  # P1 P2, B1
    west = metrics.first_response(LATER, metrics.scope(w.nina), WEEK)
    assert rates(west) == {
        "pricing": (0, 0, 1, None),  # P3
        "brochure": (0, 1, 0, 0.0),  # B4
        None: (1, 0, 0, 1.0),  # N1
    }
    # P3 falls due at Monday 10:00.
    at_ten = metrics.first_response(ny(30, 10), metrics.scope(w.nina), WEEK)
    assert rates(at_ten)["pricing"] == (0, 1, 0, 0.0)


def test_the_default_period_is_the_seven_days_up_to_now(world: World) -> None:
    week = metrics.period(LATER)
    assert (week.since, week.until) == (LATER - timedelta(days=7), LATER)
    assert metrics.period(LATER, until=ny(26, 0)).since == ny(19, 0)
    # From Mon 23 09:50: the week's arrivals, and O2 (Mon 30 09:00, due 10:00: pending too).
    found = metrics.first_response(LATER, metrics.scope(world.ops), week)
    assert (found.total.met, found.total.missed, found.total.pending) == (3, 3, 2)


# Logging lag -----------------------------------------------------------------------------------


def seconds(*minutes: float) -> tuple[Any, ...]:
    return tuple(pytest.approx(m * 60, abs=1e-6) for m in minutes)


def row(lag: metrics.Lag | None) -> tuple[Any, ...]:
    assert lag is not None
    return (lag.label, lag.count, lag.p50, lag.p90, lag.p95)


def test_logging_lag_percentiles(world: World) -> None:
    """``percentile_cont``: position p x (n - 1) between the two values around it."""
    w = world
    found = metrics.logging_lag(metrics.scope(w.ops), DAYS)
    # 0 5 10 20 30 40 60 120 1440: p50 at 4 -> 30; p90 at 7.2 -> 120 + 0.2 x 1320 = 384;
    # p95 at 7.6 -> 120 + 0.6 x 1320 = 912.
    assert row(found.overall) == ("All touches", 9, *seconds(30, 384, 912))
    by_channel = {lag.key: row(lag) for lag in found.by_channel}
    assert by_channel == {
        # 0 10 20 30 40: p50 at 2 -> 20; p90 at 3.6 -> 36; p95 at 3.8 -> 38.
        "phone": ("Phone", 5, *seconds(20, 36, 38)),
        # 5 60 120 1440: p50 at 1.5 -> 90; p90 at 2.7 -> 120 + 0.7 x 1320 = 1044; p95 at
        # 2.85 -> 120 + 0.85 x 1320 = 1242.
        "email": ("Email", 4, *seconds(90, 1044, 1242)),
    }
    assert [lag.key for lag in found.by_channel] == ["phone", "email"]  # most touches first
    by_actor = {lag.key: row(lag) for lag in found.by_actor}
    assert by_actor == {
        w.alex.pk: ("Alex Adams", 5, *seconds(20, 36, 38)),
        # 5 60 120: p50 at 1 -> 60; p90 at 1.8 -> 108; p95 at 1.9 -> 114.
        w.bea.pk: ("bea", 3, *seconds(60, 108, 114)),
        None: ("No actor", 1, *seconds(1440, 1440, 1440)),
    }


def test_logging_lag_is_scoped(world: World) -> None:
    alex = metrics.logging_lag(metrics.scope(world.alex), DAYS)
    assert row(alex.overall) == ("All touches", 5, *seconds(20, 36, 38))
    assert [lag.key for lag in alex.by_actor] == [world.alex.pk]
    nina = metrics.logging_lag(metrics.scope(world.nina), DAYS)
    assert (nina.overall, nina.by_channel, nina.by_actor) == (None, [], [])


def test_percentile_cont_and_the_ranked_fetch_agree(world: World) -> None:
    """On PostgreSQL both ways run, the SQL aggregate and the other databases' fetch, and
    give the same floats; elsewhere the fetch is what runs (checked above)."""
    if not is_postgres():
        pytest.skip("percentile_cont needs PostgreSQL")
    touches = Touch.objects.all()
    for dimension in (None, "channel", "actor_id"):
        assert metrics._by_percentile_cont(touches, dimension) == metrics._by_ranked_fetch(
            touches, dimension
        )


def test_interpolation_as_percentile_cont_does_it() -> None:
    values = {0: 10.0, 1: 20.0, 2: 40.0}
    assert metrics.interpolate(values, 3, 0.5) == 20.0
    assert metrics.interpolate(values, 3, 0.9) == 20.0 + 0.8 * 20.0
    assert metrics.interpolate({0: 7.0}, 1, 0.95) == 7.0
    with pytest.raises(ValueError, match="fraction"):
        metrics.PercentileCont("logging_lag", 1.5)
