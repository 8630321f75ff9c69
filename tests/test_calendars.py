"""Business calendars: change tracking, recompute after commit, team resolution, holidays."""

from __future__ import annotations

from datetime import date, time, timedelta

import pytest
from django.core.exceptions import ValidationError

from followup_visibility.alerting import outbox
from followup_visibility.choices import AlertSignal, ClosedDateKind, Weekday
from followup_visibility.config import calendars as calendar_changes
from followup_visibility.config import recompute
from followup_visibility.engine import calendars
from followup_visibility.engine.business_time import add_business_time
from followup_visibility.models import Calendar, ClosedDate, SpecialHours, WorkingWindow
from tests.conftest import NOW
from tests.factories_sla import (
    due,
    install_defaults,
    lead_at,
    make_calendar,
    make_team,
    ny,
    snapshot,
)

S = AlertSignal


@pytest.fixture(autouse=True)
def defaults(db):
    yield install_defaults()
    calendars._cache.clear()


def version(calendar):
    return Calendar.objects.get(pk=calendar.pk).version


# Edits bump the version; deadlines move after commit


@pytest.mark.parametrize(
    ("edit", "first_response_due"),
    [
        # Arrival Friday 16:30: normally due Monday 09:30.
        (
            lambda cal: ClosedDate.objects.create(calendar=cal, date=date(2026, 3, 9)),
            ny(3, 10, 9, 30),
        ),
        (
            lambda cal: WorkingWindow.objects.create(
                calendar=cal, weekday=Weekday.SATURDAY, start=time(10), end=time(12)
            ),
            ny(3, 7, 10, 30),
        ),
        (
            lambda cal: SpecialHours.objects.create(
                calendar=cal, date=date(2026, 3, 9), start=time(11), end=time(12)
            ),
            ny(3, 9, 11, 30),
        ),
        (lambda cal: cal.windows.filter(weekday=Weekday.MONDAY).delete(), ny(3, 10, 9, 30)),
        (
            lambda cal: cal.windows.filter(weekday=Weekday.FRIDAY).update(end=time(16)),
            None,  # a queryset update sends no signal: nothing moves
        ),
    ],
    ids=["closed-date", "saturday-window", "special-hours", "window-deleted", "silent-update"],
)
def test_calendar_row_edits_move_deadlines_after_commit(
    defaults, django_capture_on_commit_callbacks, edit, first_response_due
):
    lead = lead_at(ny(3, 6, 16, 30))
    before = due(lead)[S.NO_FIRST_RESPONSE]
    assert before == ny(3, 9, 9, 30)
    old = version(defaults.calendar)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        edit(defaults.calendar)
    if first_response_due is None:
        assert version(defaults.calendar) == old
        assert callbacks == []
        return
    assert version(defaults.calendar) > old
    assert due(lead)[S.NO_FIRST_RESPONSE] == before  # not before commit
    for callback in callbacks:
        callback()
    assert due(lead)[S.NO_FIRST_RESPONSE] == first_response_due


def test_several_edits_in_one_transaction_recompute_once(defaults, monkeypatch):
    lead = lead_at(ny(3, 6, 16, 30))
    ran = []
    real = recompute.recompute_range

    def recompute_range(first, last, scope, now, **kwargs):
        ran.append(scope.calendar)
        return real(first, last, scope, now, **kwargs)

    outbox.drain()  # what setting up the calendar planned (on the wall clock)
    monkeypatch.setattr(recompute, "recompute_range", recompute_range)
    ClosedDate.objects.create(calendar=defaults.calendar, date=date(2026, 3, 9))
    ClosedDate.objects.create(calendar=defaults.calendar, date=date(2026, 3, 10))
    # Both edits are on record in the outbox, each planned for its calendar version.
    assert outbox.pending([recompute.PLAN]).count() == 2
    outbox.drain()  # the receivers planned on the wall clock
    # The first plan is for an outdated version and is skipped; only the last one runs.
    assert ran == [(defaults.calendar.pk, version(defaults.calendar))]
    assert due(lead)[S.NO_FIRST_RESPONSE] == ny(3, 11, 9, 30)


def test_time_zone_change_moves_deadlines(defaults, django_capture_on_commit_callbacks):
    lead = lead_at(ny(3, 9, 9))
    assert due(lead)[S.NO_FIRST_RESPONSE] == ny(3, 9, 10)
    calendar = Calendar.objects.get(pk=defaults.calendar.pk)
    calendar.time_zone = "America/Los_Angeles"
    with django_capture_on_commit_callbacks(execute=True):
        calendar.save()
    # 09:00 in New York is 06:00 in Los Angeles: the clock starts at 09:00 Pacific.
    assert due(lead)[S.NO_FIRST_RESPONSE] == ny(3, 9, 13)


def test_team_calendar_change_moves_only_its_teams(defaults, django_capture_on_commit_callbacks):
    berlin = make_calendar("Berlin", "Europe/Berlin")
    make_team("berlin", calendar=berlin)
    in_berlin = lead_at(ny(3, 9, 9), team="berlin")
    in_new_york = lead_at(ny(3, 9, 9))
    new_york_before = snapshot(in_new_york)
    with django_capture_on_commit_callbacks(execute=True):
        ClosedDate.objects.create(calendar=berlin, date=date(2026, 3, 10))
    # Monday 09:00 in New York is 14:00 in Berlin: 3h on Monday, Tuesday closed, 2h Wednesday.
    assert due(in_berlin)[S.NO_NEXT_ACTION] == ny(3, 11, 6)
    assert snapshot(in_new_york) == new_york_before


def test_unused_calendar_schedules_nothing(django_capture_on_commit_callbacks):
    spare = make_calendar("Spare", "Europe/Paris")
    with django_capture_on_commit_callbacks() as callbacks:
        ClosedDate.objects.create(calendar=spare, date=date(2026, 3, 10))
    assert version(spare) == 2
    assert callbacks == []


def test_loaded_engine_follows_the_version(defaults):
    engine = calendars.load([defaults.calendar.pk])[defaults.calendar.pk]
    assert calendars.load([defaults.calendar.pk])[defaults.calendar.pk] is engine  # cached
    ClosedDate.objects.create(calendar=defaults.calendar, date=date(2026, 3, 9))
    fresh = calendars.load([defaults.calendar.pk])[defaults.calendar.pk]
    assert fresh is not engine
    assert add_business_time(fresh, ny(3, 6, 16, 30), timedelta(hours=1)) == ny(3, 10, 9, 30)


# Team calendar resolution


def test_team_calendar_ids_own_parent_or_default(defaults):
    london = make_calendar("London", "Europe/London")
    tokyo = make_calendar("Tokyo", "Asia/Tokyo")
    emea = make_team("emea", calendar=london)
    uk = make_team("uk", parent=emea)
    uk_north = make_team("uk-north", parent=uk)
    japan = make_team("japan", parent=emea, calendar=tokyo)
    lone = make_team("lone")
    assert calendars.team_calendar_ids() == {
        emea.pk: london.pk,
        uk.pk: london.pk,
        uk_north.pk: london.pk,
        japan.pk: tokyo.pk,
        lone.pk: defaults.calendar.pk,
    }
    assert sorted(calendars.teams_using(london)) == sorted([emea.pk, uk.pk, uk_north.pk])
    assert calendars.teams_using(defaults.calendar) is None  # everyone may use the default


# Public holidays


def test_seed_us_holidays(defaults):
    calendar = defaults.calendar
    calendar.holiday_country = "US"
    calendar.save()
    old = version(calendar)
    added = calendar_changes.seed_holidays(calendar, [2026], now=NOW)
    assert added == 12
    observed = ClosedDate.objects.get(calendar=calendar, date=date(2026, 7, 3))
    assert observed.kind == ClosedDateKind.PUBLIC_HOLIDAY
    assert "Independence Day" in observed.name
    assert ClosedDate.objects.filter(calendar=calendar, date=date(2026, 11, 26)).exists()
    assert version(calendar) == old + 1
    # Seeding again adds nothing and leaves the version alone.
    assert calendar_changes.seed_holidays(calendar, [2026], now=NOW) == 0
    assert version(calendar) == old + 1


def test_seed_holidays_keeps_existing_rows(defaults):
    calendar = defaults.calendar
    calendar.holiday_country = "US"
    calendar.holiday_subdivision = "CA"
    calendar.save()
    ClosedDate.objects.create(
        calendar=calendar, date=date(2026, 12, 25), name="Office party", kind="closure"
    )
    added = calendar_changes.seed_holidays(calendar, [2026], now=NOW)
    kept = ClosedDate.objects.get(calendar=calendar, date=date(2026, 12, 25))
    assert (kept.name, kept.kind) == ("Office party", ClosedDateKind.CLOSURE)
    total = ClosedDate.objects.filter(calendar=calendar).count()
    assert added == total - 1
    # California adds its own days, e.g. Cesar Chavez Day.
    assert ClosedDate.objects.filter(calendar=calendar, date=date(2026, 3, 31)).exists()


def test_seeded_holiday_moves_deadlines(defaults, django_capture_on_commit_callbacks):
    lead = lead_at(ny(7, 2, 16, 30))  # Thursday before the observed Independence Day
    assert due(lead)[S.NO_FIRST_RESPONSE] == ny(7, 3, 9, 30)
    calendar = defaults.calendar
    calendar.holiday_country = "US"
    calendar.save()
    with django_capture_on_commit_callbacks(execute=True):
        calendar_changes.seed_holidays(calendar, [2026], now=NOW)
    assert due(lead)[S.NO_FIRST_RESPONSE] == ny(7, 6, 9, 30)


@pytest.mark.parametrize(
    ("country", "subdivision", "field"),
    [
        ("XX", "", "holiday_country"),
        ("", "", "holiday_country"),
        ("US", "ZZ", "holiday_subdivision"),
    ],
)
def test_seed_holidays_rejects_unknown_places(defaults, country, subdivision, field):
    calendar = defaults.calendar
    calendar.holiday_country = country
    calendar.holiday_subdivision = subdivision
    calendar.save()
    old = version(calendar)
    with pytest.raises(ValidationError) as exc:
        calendar_changes.seed_holidays(calendar, [2026], now=NOW)
    assert set(exc.value.message_dict) == {field}
    assert not ClosedDate.objects.filter(calendar=calendar).exists()
    assert version(calendar) == old


# Window validation


@pytest.mark.parametrize(
    "windows",
    [
        [(0, time(9), time(17))],
        [(0, time(9), time(12)), (0, time(12), time(17))],  # touching is fine
        [(0, time(22), time(0))],  # 00:00 is midnight at the end of the day
        [(0, time(9), time(17)), (1, time(9), time(17))],
        [(date(2026, 3, 9), time(9), time(12))],
    ],
)
def test_validate_windows_accepts(windows):
    calendars.validate_windows(windows)


@pytest.mark.parametrize(
    ("windows", "fragment"),
    [
        ([(0, time(17), time(9))], "ends before it starts"),
        ([(0, time(9), time(9))], "ends before it starts"),
        ([(0, time(9), time(13)), (0, time(12), time(17))], "overlap"),
        ([(0, time(12), time(17)), (0, time(9), time(13))], "overlap"),  # any order
        ([(0, time(20), time(0)), (0, time(21), time(22))], "overlap"),
        (
            [(date(2026, 3, 9), time(9), time(12)), (date(2026, 3, 9), time(11), time(14))],
            "overlap",
        ),
    ],
)
def test_validate_windows_rejects(windows, fragment):
    with pytest.raises(ValidationError) as exc:
        calendars.validate_windows(windows)
    assert any(fragment in message for message in exc.value.messages)


def test_window_model_rejects_end_before_start(defaults):
    window = WorkingWindow(calendar=defaults.calendar, weekday=0, start=time(17), end=time(9))
    with pytest.raises(ValidationError) as exc:
        window.full_clean()
    assert "end" in exc.value.message_dict


def test_build_refuses_a_calendar_without_windows():
    calendar = make_calendar("Empty", "UTC", windows=())
    with pytest.raises(ValidationError):
        calendars.load([calendar.pk])


def test_a_calendar_edit_rolled_back_is_not_used_by_later_refreshes(defaults):
    # Its version number is taken again by the next edit: the engine built inside the
    # rolled-back transaction must not be mistaken for that one.
    from django.db import transaction

    from followup_visibility.alerting import refresh
    from followup_visibility.engine.clocks import Context
    from tests.factories_sla import opportunity

    lead = lead_at(ny(3, 9, 9))
    monday = WorkingWindow.objects.get(calendar=defaults.calendar, weekday=Weekday.MONDAY)
    tuesday = WorkingWindow.objects.get(calendar=defaults.calendar, weekday=Weekday.TUESDAY)
    with pytest.raises(RuntimeError), transaction.atomic():
        monday.end = time(10)
        monday.save()
        refresh.refresh([opportunity(lead).pk], now=NOW, cause=refresh.Cause("test"))
        raise RuntimeError("rolled back")
    tuesday.end = time(12)
    tuesday.save()
    engine = Context.load().engines[defaults.calendar.pk]
    assert engine.weekly[Weekday.MONDAY][0].end == WorkingWindow.objects.get(pk=monday.pk).end
    assert engine.weekly[Weekday.MONDAY][0].end != time(10)
    assert engine.weekly[Weekday.TUESDAY][0].end == time(12)
