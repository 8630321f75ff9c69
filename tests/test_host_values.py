"""What the host hands the app: unsaved objects, unknown opportunities and naive clocks are
``ValidationError``s naming the argument (nothing written); a next step kept as a date is due
at the end of that business day in the opportunity's calendar."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from example_project.crm.adapters import LeadAdapter
from example_project.crm.models import Deal, Lead
from followup_visibility.choices import Channel, Direction
from followup_visibility.engine.business_time import (
    BusinessCalendar,
    Window,
    end_of_business_day,
)
from followup_visibility.ingest import crm, handoffs, merge, next_actions, segments, stalls
from followup_visibility.ingest.touches import NewTouch, record_touch, record_touches
from followup_visibility.models import Calendar, Touch, TrackedOpportunity
from tests.factories_sla import (
    BERLIN,
    NEW_YORK,
    install_defaults,
    lead_at,
    make_calendar,
    make_team,
    ny,
    opportunity,
)

pytestmark = pytest.mark.django_db
NOW = ny(3, 10, 10)  # a Tuesday
NAIVE = datetime(2026, 3, 10, 10)  # noqa: DTZ001 - naive on purpose
WEDNESDAY, SATURDAY = date(2026, 3, 11), date(2026, 3, 14)


@pytest.fixture(autouse=True)
def defaults(db: Any) -> Any:
    return install_defaults()  # New York, Monday-Friday 09:00-17:00


def call(target: Any = None, **extra: Any) -> dict[str, Any]:
    return {
        "target": target,
        "channel": Channel.PHONE,
        "direction": Direction.OUTBOUND,
        "occurred_at": NOW - timedelta(hours=1),
        **extra,
    }


def touch(target: Any, now: datetime = NOW, **extra: Any) -> Any:
    item = call(target, **extra)
    return record_touch(item.pop("target"), now=now, **item)


def nothing_written(before: tuple[int, int]) -> bool:
    return (Touch.objects.count(), TrackedOpportunity.objects.count()) == before


def counts() -> tuple[int, int]:
    return Touch.objects.count(), TrackedOpportunity.objects.count()


# Unsaved host objects ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "unsaved",
    [
        lambda: Lead(name="Ann", created_at=NOW),  # integer key: pk is None
        lambda: Deal(name="Big deal", created_at=NOW),  # UUID key: set before any save
    ],
    ids=["integer-key", "uuid-key"],
)
def test_an_unsaved_host_object_is_a_target_error_and_tracks_nothing(
    unsaved: Callable[[], Any],
) -> None:
    before = counts()
    for _ in range(2):  # a second one used to land on the first one's record
        with pytest.raises(ValidationError) as exc:
            touch(unsaved())
        assert set(exc.value.message_dict) == {"target"}
        assert "is not saved" in exc.value.message_dict["target"][0]
    assert nothing_written(before)
    assert not TrackedOpportunity.objects.filter(object_pk="None").exists()


def test_unsaved_objects_in_a_batch_are_errors_of_their_items() -> None:
    saved = lead_at(ny(3, 9, 9))
    before = counts()
    batch = [
        call(saved),
        call(Lead(name="A", created_at=NOW)),
        NewTouch(**call(Lead(name="B", created_at=NOW))),
    ]
    with pytest.raises(ValidationError) as exc:
        record_touches(batch, now=NOW)
    assert set(exc.value.message_dict) == {"1.target", "2.target"}
    assert nothing_written(before)


def test_sync_objects_refuses_unsaved_objects_and_tracks_none() -> None:
    saved = Lead.objects.bulk_create([Lead(name="Saved", created_at=NOW)])[0]
    before = counts()
    with pytest.raises(ValidationError) as exc:
        crm.sync_objects([saved, Lead(name="A", created_at=NOW)], NOW)
    assert set(exc.value.message_dict) == {"objs"}
    assert "Item 1" in exc.value.message_dict["objs"][0]
    assert nothing_written(before)
    with pytest.raises(ValidationError):
        crm.sync_objects([Deal(name="Unsaved deal", created_at=NOW)], NOW)
    assert nothing_written(before)


# Opportunities that are not stored --------------------------------------------------------


def unknown_key() -> int:
    last = TrackedOpportunity.objects.order_by("-pk").values_list("pk", flat=True).first()
    return (last or 0) + 1000


def test_an_opportunity_with_an_unknown_key_is_an_error_of_its_item() -> None:
    opp = opportunity(lead_at(ny(3, 9, 9)))
    before = counts()
    with pytest.raises(ValidationError) as exc:
        record_touches([call(opp), call(TrackedOpportunity(pk=unknown_key()))], now=NOW)
    assert set(exc.value.message_dict) == {"1.target"}
    assert "does not exist" in exc.value.message_dict["1.target"][0]
    # One never saved has no key to look up: an error of the field checks.
    with pytest.raises(ValidationError) as exc:
        record_touches([call(opp), call(TrackedOpportunity())], now=NOW)
    assert exc.value.message_dict == {"1.target": ["This opportunity is not saved."]}
    assert nothing_written(before)


def test_an_opportunity_made_by_hand_with_a_stored_key_is_read_as_stored() -> None:
    opp = opportunity(lead_at(ny(3, 9, 9)))
    result = touch(TrackedOpportunity(pk=opp.pk))
    assert result.touch.opportunity_id == opp.pk
    assert result.touch.opportunity.object_pk == opp.object_pk  # the stored row, not the stub


@pytest.mark.parametrize("target", [42, "3", object()], ids=["int", "str", "object"])
def test_a_target_that_is_no_model_is_a_target_error(target: Any) -> None:
    with pytest.raises(ValidationError) as exc:
        touch(target)
    assert set(exc.value.message_dict) == {"target"}
    assert "tracked opportunity" in exc.value.message_dict["target"][0]


def _stall(opp: TrackedOpportunity, now: datetime) -> Any:
    return stalls.set_stalled(opp, until=ny(3, 20, 9), reason="Budget round", by=None, now=now)


#: Every entry point that takes a tracked opportunity, with the argument naming it.
BY_OPPORTUNITY: dict[str, tuple[str, Callable[[TrackedOpportunity, datetime], Any]]] = {
    "schedule_next_action": (
        "opportunity",
        lambda opp, now: next_actions.schedule_next_action(opp, ny(3, 12, 9), now=now),
    ),
    "complete_next_action": (
        "opportunity",
        lambda opp, now: next_actions.complete_next_action(opp, now=now),
    ),
    "set_stalled": ("opportunity", _stall),
    "clear_stalled": ("opportunity", lambda opp, now: stalls.clear_stalled(opp, by=None, now=now)),
    "set_segment": ("opportunity", lambda opp, now: segments.set_segment(opp, None, now)),
    "accept_handoff": ("opportunity", lambda opp, now: handoffs.accept_handoff(opp, 1, now)),
    "merge_duplicate": (
        "duplicate",
        lambda opp, now: merge.merge_opportunities(opp, opportunity(lead_at(ny(3, 9, 9))), now=now),
    ),
    "merge_survivor": (
        "survivor",
        lambda opp, now: merge.merge_opportunities(opportunity(lead_at(ny(3, 9, 9))), opp, now=now),
    ),
}


@pytest.mark.parametrize("entry", sorted(BY_OPPORTUNITY))
@pytest.mark.parametrize("stub", ["unknown-key", "unsaved"])
def test_entry_points_refuse_an_opportunity_that_is_not_stored(entry: str, stub: str) -> None:
    name, run = BY_OPPORTUNITY[entry]
    opp = TrackedOpportunity(pk=unknown_key()) if stub == "unknown-key" else TrackedOpportunity()
    with pytest.raises(ValidationError) as exc:
        run(opp, NOW)
    assert set(exc.value.message_dict) == {name}


# Naive clocks ----------------------------------------------------------------------------


def test_a_naive_now_is_a_now_error_of_a_touch_and_of_a_batch() -> None:
    lead = lead_at(ny(3, 9, 9))
    before = counts()
    with pytest.raises(ValidationError) as exc:
        touch(lead, now=NAIVE)
    assert exc.value.message_dict == {"now": ["A timezone-aware datetime is required."]}
    with pytest.raises(ValidationError) as exc:
        record_touches([call(lead)], now=NAIVE)
    assert set(exc.value.message_dict) == {"now"}
    assert nothing_written(before)


#: Every entry point that takes ``now`` with a host object or a model.
BY_HOST: dict[str, Callable[[Lead, datetime], Any]] = {
    "sync_objects": lambda lead, now: crm.sync_objects([lead], now),
    "sync_model": lambda lead, now: crm.sync_model(Lead, now),
    "mark_deleted": lambda lead, now: crm.mark_deleted(Lead, [lead.pk], now),
    "reconcile_deleted": lambda lead, now: crm.reconcile_deleted(Lead, now),
}


@pytest.mark.parametrize("entry", sorted(BY_HOST) + sorted(BY_OPPORTUNITY))
def test_entry_points_refuse_a_naive_now_and_write_nothing(entry: str) -> None:
    lead = lead_at(ny(3, 9, 9))
    opp = opportunity(lead)
    stored = TrackedOpportunity.objects.values().get(pk=opp.pk)
    with pytest.raises(ValidationError) as exc:
        if entry in BY_HOST:
            BY_HOST[entry](lead, NAIVE)
        else:
            BY_OPPORTUNITY[entry][1](opp, NAIVE)
    assert "now" in exc.value.message_dict
    assert TrackedOpportunity.objects.values().get(pk=opp.pk) == stored


def test_a_next_action_due_at_that_is_a_date_is_a_due_at_error() -> None:
    opp = opportunity(lead_at(ny(3, 9, 9)))
    with pytest.raises(ValidationError) as exc:
        next_actions.schedule_next_action(opp, WEDNESDAY, now=NOW)  # type: ignore[arg-type]
    assert set(exc.value.message_dict) == {"due_at"}


# The end of a business day ---------------------------------------------------------------

NINE_TO_FIVE = (Window(time(9), time(17)),)


def _calendar(**extra: Any) -> BusinessCalendar:
    weekly = dict.fromkeys(range(5), NINE_TO_FIVE)
    weekly.update(extra.pop("weekly", {}))
    return BusinessCalendar(tz=NEW_YORK, weekly=weekly, **extra)


@pytest.mark.parametrize(
    ("calendar", "day", "end"),
    [
        (_calendar(), WEDNESDAY, ny(3, 11, 17)),
        # Split shift: the close of the day's last window.
        (
            _calendar(weekly={2: (Window(time(13), time(18)), Window(time(8), time(12)))}),
            WEDNESDAY,
            ny(3, 11, 18),
        ),
        (_calendar(), SATURDAY, ny(3, 16, 17)),  # closed: the next business day's close
        (_calendar(closed_dates=frozenset({WEDNESDAY})), WEDNESDAY, ny(3, 12, 17)),
        (
            _calendar(special_days={WEDNESDAY: (Window(time(9), time(13)),)}),
            WEDNESDAY,
            ny(3, 11, 13),
        ),
        # A window to 24:00 ends when the next date begins, on the local clock.
        (_calendar(weekly={2: (Window(time(20), time(0)),)}), WEDNESDAY, ny(3, 12, 0)),
        # Across the spring-forward Sunday (March 8th): Monday's close, in EDT.
        (_calendar(), date(2026, 3, 7), ny(3, 9, 17)),
    ],
    ids=["open", "split-shift", "weekend", "holiday", "half-day", "to-midnight", "dst"],
)
def test_end_of_business_day(calendar: BusinessCalendar, day: date, end: datetime) -> None:
    found = end_of_business_day(calendar, day)
    assert found == end
    assert found.tzinfo is UTC


def test_end_of_business_day_takes_a_date_not_a_datetime() -> None:
    with pytest.raises(ValueError, match="datetime.date"):
        end_of_business_day(_calendar(), ny(3, 11, 9))


# A next step kept as a date ---------------------------------------------------------------


class DayOnlyAdapter(LeadAdapter):
    """A host that plans next steps by the day: its field's date, on the site's calendar."""

    def get_next_action_due_at(self, obj: Any) -> date | None:
        value = obj.next_step_at
        return None if value is None else timezone.localdate(value)


DAY_ONLY = {
    "crm.Lead": "tests.test_host_values.DayOnlyAdapter",
    "crm.Deal": "example_project.crm.adapters.DealAdapter",
}


def dated_lead(day: date | None, now: datetime = NOW, **fields: Any) -> Lead:
    """A lead whose next-step field holds ``day``, as a ``DateField`` would give it: the
    default adapter reads the attribute, so this is the path a real ``DateField`` takes."""
    fields.setdefault("name", "Ann")
    (lead,) = Lead.objects.bulk_create([Lead(created_at=ny(3, 9, 9), **fields)])
    lead.next_step_at = day  # type: ignore[assignment]
    crm.sync_objects([lead], now)
    return lead


def resync(lead: Lead, day: date | None, now: datetime, **changes: Any) -> TrackedOpportunity:
    for name, value in changes.items():
        setattr(lead, name, value)
    Lead.objects.filter(pk=lead.pk).update(**changes)
    lead.next_step_at = day  # type: ignore[assignment]
    crm.sync_objects([lead], now)
    return opportunity(lead)


def test_a_date_read_from_the_field_is_due_at_the_close_of_that_day() -> None:
    opp = opportunity(dated_lead(WEDNESDAY))
    assert opp.next_action_due_at == ny(3, 11, 17)
    assert opp.next_action_set_at == NOW
    assert opp.next_action_done_at is None


def test_a_date_returned_by_an_adapter_method_is_due_at_the_close_of_that_day() -> None:
    with override_settings(FOLLOWUP_VISIBILITY_TRACKED_MODELS=DAY_ONLY):
        lead = lead_at(ny(3, 9, 9), NOW, next_step_at=ny(3, 11, 8))
    assert opportunity(lead).next_action_due_at == ny(3, 11, 17)


def test_a_closed_day_is_due_at_the_close_of_the_next_business_day() -> None:
    assert opportunity(dated_lead(SATURDAY)).next_action_due_at == ny(3, 16, 17)


def test_the_date_is_read_in_the_calendar_of_the_opportunitys_team() -> None:
    make_team("emea", calendar=make_calendar("Berlin", "Europe/Berlin"))
    opp = opportunity(dated_lead(WEDNESDAY, team="emea"))
    assert opp.team is not None and opp.team.key == "emea"
    assert opp.next_action_due_at == datetime(2026, 3, 11, 17, tzinfo=BERLIN)


@override_settings(TIME_ZONE="Europe/Berlin")
def test_without_any_calendar_the_date_ends_at_midnight_on_the_sites_clock() -> None:
    Calendar.objects.all().delete()
    opp = opportunity(dated_lead(WEDNESDAY))
    assert opp.next_action_due_at == datetime(2026, 3, 12, 0, tzinfo=BERLIN)


def test_the_same_date_stays_the_same_plan_and_a_new_date_is_a_new_one() -> None:
    lead = dated_lead(WEDNESDAY)
    next_actions.complete_next_action(opportunity(lead), now=NOW + timedelta(hours=1))
    # Another field changes; the date does not: the plan stays done.
    opp = resync(lead, WEDNESDAY, NOW + timedelta(hours=2), status="working")
    assert (opp.next_action_due_at, opp.next_action_set_at) == (ny(3, 11, 17), NOW)
    assert opp.next_action_done_at == NOW + timedelta(hours=1)
    # A new date is a new next action.
    later = NOW + timedelta(hours=3)
    opp = resync(lead, date(2026, 3, 12), later)
    assert (opp.next_action_due_at, opp.next_action_set_at) == (ny(3, 12, 17), later)
    assert opp.next_action_done_at is None


def test_a_team_move_moves_the_due_time_to_the_new_calendar_and_keeps_the_plan() -> None:
    make_team("emea", calendar=make_calendar("Berlin", "Europe/Berlin"))
    lead = dated_lead(WEDNESDAY)
    next_actions.complete_next_action(opportunity(lead), now=NOW + timedelta(hours=1))
    opp = resync(lead, WEDNESDAY, NOW + timedelta(hours=2), team="emea")
    assert opp.next_action_due_at == datetime(2026, 3, 11, 17, tzinfo=BERLIN)
    assert opp.next_action_set_at == NOW
    assert opp.next_action_done_at == NOW + timedelta(hours=1)


def test_a_datetime_next_step_is_kept_as_it_is() -> None:
    lead = lead_at(ny(3, 9, 9), NOW, next_step_at=ny(3, 11, 8, 30))
    assert opportunity(lead).next_action_due_at == ny(3, 11, 8, 30)


@pytest.mark.parametrize("size", [2, 30])
def test_dating_a_sync_costs_one_query_whatever_its_size(size: int) -> None:
    def sync_queries(n: int, name: str, *, dated: bool) -> int:
        leads = Lead.objects.bulk_create(
            [Lead(name=f"{name}{i}", created_at=ny(3, 9, 9)) for i in range(n)]
        )
        for i, lead in enumerate(leads):
            if dated:
                lead.next_step_at = WEDNESDAY + timedelta(days=i % 5)  # type: ignore[assignment]
        with CaptureQueriesContext(connection) as captured:
            crm.sync_objects(leads, NOW)
        return len(captured)

    sync_queries(1, "warm", dated=True)  # the calendars are read once per process
    # The configuration token, whatever the number of dates (SQLite splits big inserts).
    assert sync_queries(size, "dated", dated=True) == sync_queries(size, "plain", dated=False) + 1
