"""The unfollowed register on a hand-built world: who is listed, why, in which order, for whom.

The world is built once per module through the public functions (sync, segments, touches,
next actions, the sweep, the alert lifecycle, stalls, suppressions) at ``NOW``, a Monday, in a
transaction rolled back at the end; each test runs in its own savepoint. The default calendar
runs around the clock in UTC, so business time is wall time, except for the New York team's
weekday 9-17 calendar (the weekend row).

Expected numbers are computed here from the formula (``x / (x + half)`` per factor, the
weighted mean x 100), never by calling the code under test.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection, transaction
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from example_project.crm.models import Deal, Lead
from followup_visibility.alerting import lifecycle, ranking, sweep
from followup_visibility.choices import AlertSignal, AlertStatus, Channel, Direction, Severity
from followup_visibility.config import suppressions
from followup_visibility.engine import priority, severity
from followup_visibility.ingest import next_actions, stalls
from followup_visibility.ingest.crm import sync_objects
from followup_visibility.ingest.segments import set_segment
from followup_visibility.ingest.touches import record_touch
from followup_visibility.models import Alert, Calendar, Segment, Team, TrackedOpportunity
from followup_visibility.register import rows as register
from tests.factories_sla import NEW_YORK, change_host, install_defaults, make_calendar, opportunity

HOUR = timedelta(hours=1)
#: Monday 2 March 2026, 15:00 UTC: 10:00 in New York (EST).
NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
#: Every signal's SLA distinct, so each alert's lateness is known by its signal.
DURATIONS: dict[str, timedelta | None] = {
    "first_response": 4 * HOUR,
    "never_contacted": 8 * HOUR,
    "reply": 2 * HOUR,
    "call_retry": 2 * HOUR,
    "next_action_grace": timedelta(0),
    "no_next_action": 6 * HOUR,
    "stale": 100 * HOUR,
    "owner_assignment": HOUR,
    "handoff_acceptance": 100 * HOUR,
}
AROUND_THE_CLOCK = tuple((day, time(0), time(0)) for day in range(7))
#: Opportunities listed at NOW, and those that are not (with what ``standing`` says).
LISTED = {"hot", "old", "nobody", "weekend", "north", "west", "acknowledged"}
NOT_LISTED = {
    "closed": "closed",
    "stalled": "stalled",
    "snoozed": "snoozed",
    "suppressed": "suppressed",
    "young": "followed",
}


@dataclass
class World:
    users: dict[str, int] = field(default_factory=dict)
    opps: dict[str, int] = field(default_factory=dict)
    teams: dict[str, int] = field(default_factory=dict)

    def user(self, name: str) -> Any:
        return get_user_model().objects.get(pk=self.users[name])

    def opp(self, name: str) -> TrackedOpportunity:
        return TrackedOpportunity.objects.get(pk=self.opps[name])

    def name_of(self, pk: Any) -> str:
        return next(name for name, key in self.opps.items() if key == pk)

    def names(self, opportunities: Any) -> list[str]:
        return [self.name_of(o.pk) for o in opportunities]


def _lead(arrived: datetime, *, confirm: bool = True, **fields: Any) -> TrackedOpportunity:
    (lead,) = Lead.objects.bulk_create([Lead(created_at=arrived, **fields)])
    sync_objects([lead], arrived, confirm_owners=confirm)
    return opportunity(lead)


def build() -> World:
    world = World()
    install_defaults(durations=DURATIONS)
    # The company hours (New York, weekdays 9-17) stay for one team; the default runs always.
    new_york = Calendar.objects.get(is_default=True)
    Calendar.objects.filter(pk=new_york.pk).update(is_default=False)
    make_calendar("Around the clock", "UTC", AROUND_THE_CLOCK, is_default=True)

    User = get_user_model()
    users = {name: User.objects.create_user(name) for name in ("a", "n", "b", "m", "w", "ops")}
    users["ops"].user_permissions.add(
        Permission.objects.get(
            content_type__app_label="followup_visibility", codename="view_all_opportunities"
        )
    )
    east = Team.objects.create(key="east", name="East", manager=users["m"])
    north = Team.objects.create(key="north", name="East North", parent=east)
    west = Team.objects.create(key="west", name="West", manager=users["w"])
    ny = Team.objects.create(key="ny", name="New York", calendar=new_york)
    east.members.add(users["a"])
    north.members.add(users["n"])
    west.members.add(users["b"])
    hot = Segment.objects.create(code="hot", name="Pricing request", intent_weight=Decimal(3))
    cold = Segment.objects.create(code="cold", name="Brochure", intent_weight=Decimal("0.5"))

    a = users["a"]
    (deal,) = Deal.objects.bulk_create(
        [Deal(name="Hot", owner=a, team="east", amount=Decimal(50_000), created_at=NOW - 5 * HOUR)]
    )
    sync_objects([deal], NOW - 5 * HOUR, confirm_owners=True)
    opps = {"hot": opportunity(deal)}
    set_segment(opps["hot"], hot, NOW - 5 * HOUR)
    opps["old"] = _lead(NOW - 240 * HOUR, name="Old", owner=a, team="east")
    set_segment(opps["old"], cold, NOW - 240 * HOUR)
    opps["nobody"] = _lead(NOW - 30 * HOUR, name="Nobody", team="east", confirm=False)
    # Friday 16:00 in New York, an hour before closing: two business hours old at NOW.
    opps["weekend"] = _lead(
        datetime(2026, 2, 27, 16, tzinfo=NEW_YORK), name="Weekend", team="ny", confirm=False
    )
    opps["north"] = north_opp = _lead(NOW - 10 * HOUR, name="North", owner=users["n"], team="north")
    # The customer wrote by email (the arrival channel) and waits for a reply since NOW - 4h;
    # the next step, planned for NOW - 3h, was not done.
    record_touch(
        north_opp,
        channel=Channel.EMAIL,
        direction=Direction.INBOUND,
        occurred_at=NOW - 4 * HOUR,
        now=NOW - 4 * HOUR,
    )
    next_actions.schedule_next_action(north_opp, NOW - 3 * HOUR, now=NOW - 5 * HOUR)
    (small,) = Deal.objects.bulk_create(
        [Deal(name="West", owner=users["b"], team="west", amount=800, created_at=NOW - 10 * HOUR)]
    )
    sync_objects([small], NOW - 10 * HOUR, confirm_owners=True)
    opps["west"] = opportunity(small)
    for name in ("closed", "stalled", "snoozed", "suppressed", "acknowledged"):
        opps[name] = _lead(NOW - 30 * HOUR, name=name.title(), owner=a, team="east")
    opps["young"] = _lead(NOW - HOUR, name="Young", owner=a, team="east")

    sweep.sweep(NOW, full=True)

    change_host(Lead.objects.get(name="Closed"), NOW, status="disqualified")
    stalls.set_stalled(opps["stalled"], until=NOW + 48 * HOUR, reason="Budget round", by=a, now=NOW)
    for alert in Alert.objects.filter(opportunity=opps["snoozed"]):
        lifecycle.snooze(alert, reason="Back from holiday", by=a, now=NOW, until=NOW + 24 * HOUR)
    suppressions.create(
        comment="Trade fair week", by=users["m"], now=NOW, opportunity=opps["suppressed"]
    )
    for alert in Alert.objects.filter(opportunity=opps["acknowledged"]):
        lifecycle.acknowledge(alert, by=a, now=NOW)

    world.users = {name: user.pk for name, user in users.items()}
    world.opps = {name: opp.pk for name, opp in opps.items()}
    world.teams = {"east": east.pk, "north": north.pk, "west": west.pk, "ny": ny.pk}
    return world


def module_world(django_db_blocker: Any) -> Iterator[World]:
    """Body of a module-scoped fixture: this world, built once at ``NOW`` and rolled back at
    the end (the stored ranking's tests share it)."""
    with django_db_blocker.unblock(), transaction.atomic():
        with time_machine.travel(NOW, tick=False):
            built = build()
        yield built
        transaction.set_rollback(True)


@pytest.fixture(scope="module")
def world(django_db_setup: Any, django_db_blocker: Any) -> Iterator[World]:
    yield from module_world(django_db_blocker)


@pytest.fixture(autouse=True)
def frozen(world: World, db: Any) -> Iterator[None]:
    with time_machine.travel(NOW, tick=False):
        yield


def listed(world: World, **kwargs: Any) -> list[str]:
    return world.names(register.unfollowed(NOW, **kwargs))


def row_of(world: World, name: str) -> register.Row:
    (row,) = register.rows(list(register.unfollowed(NOW).filter(pk=world.opps[name])), NOW)
    return row


# Who is listed -------------------------------------------------------------------------------


def test_open_opportunities_with_an_open_or_acknowledged_alert_are_listed(world: World) -> None:
    assert set(listed(world)) == LISTED
    acknowledged = Alert.objects.filter(opportunity=world.opp("acknowledged"))
    assert {a.status for a in acknowledged} == {AlertStatus.ACKNOWLEDGED}


@pytest.mark.parametrize("name", sorted(LISTED))
def test_standing_of_a_listed_opportunity(world: World, name: str) -> None:
    standing = register.standing(world.opp(name), NOW)
    assert standing.listed and standing.state == "listed"


@pytest.mark.parametrize(("name", "state"), sorted(NOT_LISTED.items()))
def test_standing_says_why_an_opportunity_is_not_listed(
    world: World, name: str, state: str
) -> None:
    opp = world.opp(name)
    standing = register.standing(opp, NOW)
    assert (standing.listed, standing.state) == (False, state)
    # None of them is listed for anyone, the see-all user included.
    assert name not in listed(world, user=world.user("ops"))
    if state == "stalled":
        assert standing.until == NOW + 48 * HOUR and "Budget round" in standing.detail
    elif state == "snoozed":
        assert standing.until == NOW + 24 * HOUR and "Back from holiday" in standing.detail
    elif state == "suppressed":
        assert "Trade fair week" in standing.detail
        statuses = set(Alert.objects.filter(opportunity=opp).values_list("status", flat=True))
        assert statuses == {AlertStatus.SUPPRESSED}
    elif state == "closed":
        assert opp.status == "disqualified"
    elif state == "followed":
        assert not Alert.objects.filter(opportunity=opp).exists()


def test_a_stall_that_ended_lists_the_opportunity_again(world: World) -> None:
    later = NOW + 49 * HOUR
    assert world.opps["stalled"] in register.unfollowed(later).values_list("pk", flat=True)
    assert register.standing(world.opp("stalled"), later).state == "listed"


def test_a_snooze_woken_by_the_sweep_lists_the_opportunity_again(world: World) -> None:
    sweep.sweep(NOW + 25 * HOUR, full=True)
    assert register.standing(world.opp("snoozed"), NOW + 25 * HOUR).state == "listed"


# Reasons -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "signals", "reasons"),
    [
        ("hot", {"no_first_response"}, ["no_first_touch"]),
        (
            "old",
            {"no_first_response", "never_contacted", "no_next_action"},
            ["missing_next_action", "no_first_touch", "stale_touch"],
        ),
        (
            "nobody",
            {"no_owner", "no_first_response", "never_contacted", "no_next_action"},
            ["missing_next_action", "no_first_touch", "no_owner", "stale_touch"],
        ),
        ("weekend", {"no_owner"}, ["no_owner"]),
        # A customer waiting and a next step overdue; no "missing next action": there is one.
        (
            "north",
            {"no_first_response", "never_contacted", "customer_waiting", "next_action_overdue"},
            ["awaiting_reply", "no_first_touch", "overdue_next_action", "stale_touch"],
        ),
    ],
)
def test_each_row_carries_the_reasons_of_its_signals(
    world: World, name: str, signals: set[str], reasons: list[str]
) -> None:
    row = row_of(world, name)
    assert {a.signal for a in row.alerts} == signals
    assert row.reasons == reasons
    # Most severe first, each with its severity as the engine grades it.
    assert [a.severity for a in row.alerts] == sorted(
        (a.severity for a in row.alerts), reverse=True
    )
    for alert in row.alerts:
        assert alert.severity == severity.of_alert(alert, NOW)
    assert row.severity == max(a.severity for a in row.alerts)


def test_the_reason_filter_and_the_severity_filter(world: World) -> None:
    base = register.unfollowed(NOW)
    assert set(world.names(register.with_reason(base, ["no_owner"]))) == {"nobody", "weekend"}
    assert set(world.names(register.with_reason(base, ["awaiting_reply", "no_owner"]))) == {
        "north",
        "nobody",
        "weekend",
    }
    by_level: dict[Any, set[str]] = {}
    for row in register.rows(list(base), NOW):
        by_level.setdefault(row.severity, set()).add(world.name_of(row.opportunity.pk))
    for level, names in by_level.items():
        assert set(world.names(register.with_severity(base, [level]))) == names
    assert len(by_level) > 1


# Ranking and the score ----------------------------------------------------------------------


def _level(x: float, half: float) -> float:
    return x / (x + half)


def test_intent_and_value_rank_before_age(world: World) -> None:
    order = listed(world)
    assert order.index("hot") < order.index("old")
    hot, old = row_of(world, "hot"), row_of(world, "old")
    # Hot: intent 3, value 50,000, 1h late on a 4h SLA, 5h old. Old: intent 0.5, no value,
    # first response 236h late on 4h (59 SLAs, its worst), 240h old. Defaults: weights
    # 0.35/0.35/0.2/0.1, half-points 1, 10,000, 1 SLA and 5 days (120h).
    hot_score = 100 * (
        0.35 * _level(3, 1) + 0.35 * _level(50_000, 10_000) + 0.2 * _level(0.25, 1)
    ) + 100 * 0.1 * _level(5, 120)
    old_score = 100 * (0.35 * _level(0.5, 1) + 0.2 * _level(59, 1) + 0.1 * _level(240, 120))
    assert hot.score == pytest.approx(hot_score, rel=1e-12)
    assert old.score == pytest.approx(old_score, rel=1e-12)
    assert round(hot_score, 2) == 59.82 and round(old_score, 2) == 38.0


@override_settings(
    FOLLOWUP_VISIBILITY_REGISTER_WEIGHTS={"intent": 0, "value": 0, "lateness": 1, "age": 1}
)
def test_weights_from_settings_change_the_order(world: World) -> None:
    # Stored scores follow a change of weights at the next rescore (a deploy's settings).
    ranking.rescore(NOW)
    order = listed(world)
    assert order.index("old") < order.index("hot")
    hot = row_of(world, "hot")
    assert hot.factors["intent"].share == hot.factors["value"].share == 0.0
    assert hot.score == pytest.approx(100 * (0.5 * _level(0.25, 1) + 0.5 * _level(5, 120)))


def test_factor_shares_sum_to_one_and_match_the_formula(world: World) -> None:
    row = row_of(world, "hot")
    parts = {
        "intent": 0.35 * 3 / 4,
        "value": 0.35 * 50_000 / 60_000,
        "lateness": 0.2 * 0.25 / 1.25,
        "age": 0.1 * 5 / 125,
    }
    total = sum(parts.values())
    assert {name: f.share for name, f in row.factors.items()} == pytest.approx(
        {name: part / total for name, part in parts.items()}, rel=1e-12
    )
    # Intent 43.9%, value 48.8%, lateness 6.7%, age 0.7%.
    assert [round(100 * f.share, 1) for f in row.factors.values()] == [43.9, 48.8, 6.7, 0.7]
    assert row.factors["value"].raw == 50_000 and row.factors["intent"].raw == 3
    assert row.factors["age"].raw == (5 * HOUR) / timedelta(microseconds=1)
    assert row.factors["lateness"].level == pytest.approx(0.2)
    for every in register.rows(list(register.unfollowed(NOW)), NOW):
        assert sum(f.share for f in every.factors.values()) == pytest.approx(1, rel=1e-12)


def test_the_sql_score_is_the_python_score_of_every_row(world: World) -> None:
    page = list(register.unfollowed(NOW))
    assert len(page) == len(LISTED)
    for row in register.rows(page, NOW):
        opp = row.opportunity
        score, _factors = priority.explain(
            {
                "intent": opp.fv_intent,  # type: ignore[attr-defined]
                "value": opp.fv_value,  # type: ignore[attr-defined]
                "lateness": opp.fv_lateness,  # type: ignore[attr-defined]
                "age": opp.fv_age,  # type: ignore[attr-defined]
            }
        )
        assert opp.fv_score == score == row.score  # type: ignore[attr-defined]
    scores = [o.fv_score for o in page]  # type: ignore[attr-defined]
    assert scores == sorted(scores, reverse=True)


def test_lateness_is_the_worst_alert_in_lengths_of_its_sla(world: World) -> None:
    # North: first response 6h late on 4h (1.5), never contacted 2h on 8h, reply 2h on 2h
    # (1.0), next action 3h late with no grace and no SLA: lengths of one hour (3.0).
    assert row_of(world, "north").lateness == pytest.approx(3.0)
    assert row_of(world, "old").lateness == pytest.approx(59.0)
    assert row_of(world, "weekend").lateness == pytest.approx(
        (NOW - datetime(2026, 2, 27, 17, tzinfo=NEW_YORK)) / HOUR
    )


@pytest.mark.parametrize(
    ("ordering", "check"),
    [
        ("value", lambda r: (-r.factors["value"].raw, -r.score)),
        ("intent", lambda r: (-r.factors["intent"].raw, -r.score)),
        ("lateness", lambda r: (-r.lateness, -r.score)),
        ("age", lambda r: r.opportunity.arrived_at),
        ("unfollowed_since", lambda r: r.unfollowed_since),
    ],
)
def test_every_ordering_orders_by_what_it_names(world: World, ordering: str, check: Any) -> None:
    page = list(register.unfollowed(NOW).order_by(*register.ORDERINGS[ordering]))
    keys = [check(row) for row in register.rows(page, NOW)]
    assert keys == sorted(keys)


# Age -----------------------------------------------------------------------------------------


def test_age_is_business_time_in_the_team_calendar(world: World) -> None:
    weekend = row_of(world, "weekend")
    # Friday 16:00-17:00 and Monday 09:00-10:00 in New York, not the 66 hours between.
    assert weekend.age == 2 * HOUR
    assert NOW - weekend.opportunity.arrived_at == 66 * HOUR
    assert weekend.factors["age"].raw == (66 * HOUR) / timedelta(microseconds=1)
    # Around the clock, business time is wall time.
    assert row_of(world, "old").age == 240 * HOUR
    assert row_of(world, "hot").unfollowed_since == NOW - HOUR


# Scope ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ("a", {"hot", "old", "acknowledged"}),
        ("n", {"north"}),
        ("b", {"west"}),
        # The manager of East sees East, the team below it (North) and what East's members own.
        ("m", {"hot", "old", "acknowledged", "nobody", "north"}),
        ("w", {"west"}),
        ("ops", LISTED),
    ],
)
def test_each_user_sees_the_rows_of_their_scope(
    world: World, user: str, expected: set[str]
) -> None:
    assert set(listed(world, user=world.user(user))) == expected


def test_an_inactive_user_sees_nothing(world: World) -> None:
    ops = world.user("ops")
    ops.is_active = False
    assert listed(world, user=ops) == []


# Cost ----------------------------------------------------------------------------------------


def test_a_page_costs_the_same_queries_whatever_its_length(world: World) -> None:
    def cost(size: int) -> int:
        with CaptureQueriesContext(connection) as queries:
            page = list(register.unfollowed(NOW, user=world.user("ops"))[:size])
            done = register.rows(page, NOW)
            assert len(done) == size
            for row in done:
                str(row.opportunity), row.opportunity.team_id, row.opportunity.segment_id
        return len(queries)

    assert cost(1) == cost(len(LISTED))


def test_severity_levels_of_the_world(world: World) -> None:
    # Hot: 1h late on 4h x intent 3 = 0.75: low. Old: 59 SLAs x 0.5 = 29.5: high.
    assert row_of(world, "hot").severity == Severity.LOW
    assert row_of(world, "old").severity == Severity.HIGH
    assert row_of(world, "nobody").severity is not None
    assert AlertSignal.NO_OWNER in {a.signal for a in row_of(world, "nobody").alerts}
