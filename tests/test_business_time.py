"""Tests for followup_visibility.engine.business_time: fixed DST/holiday cases plus Hypothesis
properties against a brute-force minute-by-minute oracle. Pure Python; no Django, no DB."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import holidays
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from followup_visibility.engine.business_time import (
    BusinessCalendar,
    Window,
    add_business_time,
    business_time_between,
    is_open_at,
    next_opening,
)

NY = ZoneInfo("America/New_York")
H = timedelta(hours=1)
MIN = timedelta(minutes=1)
US_2026 = frozenset(holidays.US(years=2026))


def win(start: str, end: str) -> Window:
    return Window(time.fromisoformat(start), time(0) if end == "24:00" else time.fromisoformat(end))


OFFICE = {wd: (win("09:00", "17:00"),) for wd in range(5)}
SPLIT = {wd: (win("09:00", "12:30"), win("13:30", "18:00")) for wd in range(5)}
NIGHT = {wd: (win("00:00", "06:00"), win("22:00", "24:00")) for wd in range(7)}


def ny(
    weekly: Mapping[int, Sequence[Window]] = OFFICE,
    closed: frozenset[date] = frozenset(),
    special: Mapping[date, Sequence[Window]] | None = None,
) -> BusinessCalendar:
    return BusinessCalendar(NY, weekly, closed, special or {})


def local(y: int, mo: int, d: int, hh: int = 0, mm: int = 0, tz: ZoneInfo = NY) -> datetime:
    return datetime(y, mo, d, hh, mm, tzinfo=tz)


def utc(y: int, mo: int, d: int, hh: int = 0, mm: int = 0) -> datetime:
    return datetime(y, mo, d, hh, mm, tzinfo=UTC)


# --------------------------------------------------------------------------- fixed cases

ADD_CASES = [
    ("spring DST weekend", ny(), local(2026, 3, 6, 16, 30), 2 * H, local(2026, 3, 9, 10, 30)),
    (
        "spring DST + Monday closure",
        ny(closed=frozenset({date(2026, 3, 9)})),
        local(2026, 3, 6, 16, 30),
        2 * H,
        local(2026, 3, 10, 10, 30),
    ),
    ("fall DST weekend", ny(), local(2026, 10, 30, 16, 30), 2 * H, local(2026, 11, 2, 10, 30)),
    (
        "Veterans Day",
        ny(closed=US_2026),
        local(2026, 11, 10, 16),
        2 * H,
        local(2026, 11, 12, 10),
    ),
    ("3 July observed", ny(closed=US_2026), local(2026, 7, 2, 16), 2 * H, local(2026, 7, 6, 10)),
    ("from Saturday", ny(), local(2026, 3, 7, 10), H, local(2026, 3, 9, 10)),
    ("from 07:00", ny(), local(2026, 3, 4, 7), H, local(2026, 3, 4, 10)),
    ("from 17:00 sharp", ny(), local(2026, 3, 4, 17), H, local(2026, 3, 5, 10)),
    ("+40h spans a week", ny(), local(2026, 3, 4, 13), 40 * H, local(2026, 3, 11, 13)),
    ("+40h Monday to Friday close", ny(), local(2026, 6, 1, 9), 40 * H, local(2026, 6, 5, 17)),
    ("lands on 17:00", ny(), local(2026, 3, 4, 9), 8 * H, local(2026, 3, 4, 17)),
    ("lands on 17:00 from before", ny(), local(2026, 3, 4, 6), 8 * H, local(2026, 3, 4, 17)),
    ("split: start in lunch", ny(SPLIT), local(2026, 3, 4, 12, 45), H, local(2026, 3, 4, 14, 30)),
    ("split: across lunch", ny(SPLIT), local(2026, 3, 4, 12), H, local(2026, 3, 4, 14)),
    ("split: lands on 12:30", ny(SPLIT), local(2026, 3, 4, 12), H / 2, local(2026, 3, 4, 12, 30)),
    (
        "half day then Christmas",
        ny(closed=US_2026, special={date(2026, 12, 24): (win("09:00", "13:00"),)}),
        local(2026, 12, 24, 12),
        2 * H,
        local(2026, 12, 28, 10),
    ),
    (
        "closure beats special day",
        ny(closed=frozenset({date(2026, 3, 5)}), special={date(2026, 3, 5): OFFICE[0]}),
        local(2026, 3, 4, 16),
        2 * H,
        local(2026, 3, 6, 10),
    ),
    ("night: spring-forward", ny(NIGHT), local(2026, 3, 8), 5 * H, utc(2026, 3, 8, 10)),
    ("night: fall-back", ny(NIGHT), local(2026, 11, 1), 6 * H, utc(2026, 11, 1, 10)),
    ("night: lands at 24:00", ny(NIGHT), local(2026, 3, 4, 23), H, local(2026, 3, 5)),
    ("zero from outside hours", ny(), local(2026, 3, 7, 10), timedelta(0), local(2026, 3, 7, 10)),
    ("sub-second", ny(), local(2026, 3, 4, 16, 59), MIN - timedelta(microseconds=1),
     local(2026, 3, 4, 16, 59) + MIN - timedelta(microseconds=1)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("cal", "start", "duration", "expected"),
    [case[1:] for case in ADD_CASES],
    ids=[case[0] for case in ADD_CASES],
)
def test_add_business_time_cases(
    cal: BusinessCalendar, start: datetime, duration: timedelta, expected: datetime
) -> None:
    result = add_business_time(cal, start, duration)
    assert result == expected
    assert result.tzinfo is UTC


ELAPSED_CASES = [
    ("spring DST weekend", ny(), local(2026, 3, 6, 16), local(2026, 3, 9, 10), 2 * H),
    ("fall DST weekend", ny(), local(2026, 10, 30, 16), local(2026, 11, 2, 10), 2 * H),
    ("Veterans Day", ny(closed=US_2026), local(2026, 11, 10, 16), local(2026, 11, 12, 10), 2 * H),
    ("3 July observed", ny(closed=US_2026), local(2026, 7, 2, 16), local(2026, 7, 6, 10), 2 * H),
    ("plain weekend", ny(), local(2026, 6, 5, 15), local(2026, 6, 8, 11), 4 * H),
    ("outside to outside", ny(), local(2026, 6, 5, 20), local(2026, 6, 9, 7), 8 * H),
    ("split shift day", ny(SPLIT), local(2026, 6, 1), local(2026, 6, 2), 8 * H),
    ("spring night holds 5h", ny(NIGHT), local(2026, 3, 8), local(2026, 3, 8, 12), 5 * H),
    ("fall night holds 7h", ny(NIGHT), local(2026, 11, 1), local(2026, 11, 1, 12), 7 * H),
    ("end == start", ny(), local(2026, 6, 1, 10), local(2026, 6, 1, 10), timedelta(0)),
    ("end < start", ny(), local(2026, 6, 2, 10), local(2026, 6, 1, 10), timedelta(0)),
]


@pytest.mark.parametrize(
    ("cal", "start", "end", "expected"),
    [case[1:] for case in ELAPSED_CASES],
    ids=[case[0] for case in ELAPSED_CASES],
)
def test_business_time_between_cases(
    cal: BusinessCalendar, start: datetime, end: datetime, expected: timedelta
) -> None:
    assert business_time_between(cal, start, end) == expected


def test_inputs_in_other_zones_are_the_same_instants() -> None:
    start = local(2026, 3, 6, 16, 30).astimezone(ZoneInfo("Asia/Tokyo"))
    assert add_business_time(ny(), start, 2 * H) == local(2026, 3, 9, 10, 30)


def test_dst_gap_boundary_maps_to_first_instant_after_gap() -> None:
    cal = ny({6: (win("02:30", "05:00"),)})  # 2026-03-08: clocks jump 02:00 EST -> 03:00 EDT
    assert next_opening(cal, local(2026, 3, 8)) == local(2026, 3, 8, 3)
    assert business_time_between(cal, local(2026, 3, 8), local(2026, 3, 9)) == 2 * H
    inside_gap_only = ny({6: (win("02:00", "02:45"),), 0: OFFICE[0]})
    assert business_time_between(inside_gap_only, local(2026, 3, 8), local(2026, 3, 9)) == 0 * H


def test_ambiguous_boundaries_use_first_occurrence() -> None:
    # 2026-11-01: 01:00-02:00 happens twice (EDT, then EST).
    starts_in_repeat = ny({6: (win("01:30", "05:00"),)})
    assert next_opening(starts_in_repeat, local(2026, 11, 1)) == utc(2026, 11, 1, 5, 30)
    day = (local(2026, 11, 1), local(2026, 11, 2))
    assert business_time_between(starts_in_repeat, *day) == 4.5 * H
    ends_in_repeat = ny({6: (win("00:00", "01:30"),)})
    assert business_time_between(ends_in_repeat, *day) == 1.5 * H


def test_midnight_end_window() -> None:
    cal = ny({wd: (win("22:00", "24:00"),) for wd in range(7)})
    assert is_open_at(cal, local(2026, 3, 4, 23, 59))
    assert not is_open_at(cal, local(2026, 3, 5))
    assert business_time_between(cal, local(2026, 3, 4), local(2026, 3, 6)) == 4 * H


def test_next_opening_and_is_open_at() -> None:
    cal = ny(SPLIT)
    assert next_opening(cal, local(2026, 3, 4, 10)) == local(2026, 3, 4, 10)
    assert next_opening(cal, local(2026, 3, 4, 12, 30)) == local(2026, 3, 4, 13, 30)
    assert next_opening(cal, local(2026, 3, 6, 18)) == local(2026, 3, 9, 9)
    assert next_opening(cal, local(2026, 3, 4, 10)).tzinfo is UTC
    assert is_open_at(cal, local(2026, 3, 4, 9))
    assert not is_open_at(cal, local(2026, 3, 4, 12, 30))
    assert not is_open_at(cal, local(2026, 3, 4, 18))
    assert not is_open_at(cal, local(2026, 3, 7, 10))


def test_calendar_normalises_and_is_hashable() -> None:
    a = BusinessCalendar(NY, {0: [win("13:00", "17:00"), win("09:00", "12:00")]})
    b = BusinessCalendar(NY, {0: (win("09:00", "12:00"), win("13:00", "17:00")), 3: ()})
    assert a == b
    assert hash(a) == hash(b)
    assert a.weekly[0] == (win("09:00", "12:00"), win("13:00", "17:00"))
    assert a.weekly[6] == ()
    assert {a: 1}[b] == 1
    assert a != BusinessCalendar(NY, {0: [win("09:00", "12:00")]})


NAIVE = datetime(2026, 3, 4, 10)  # noqa: DTZ001 - deliberately naive


@pytest.mark.parametrize(
    "call",
    [
        lambda: add_business_time(ny(), NAIVE, H),
        lambda: business_time_between(ny(), NAIVE, local(2026, 3, 5)),
        lambda: business_time_between(ny(), local(2026, 3, 3), NAIVE),
        lambda: next_opening(ny(), NAIVE),
        lambda: is_open_at(ny(), NAIVE),
    ],
    ids=["add", "between-start", "between-end", "next_opening", "is_open_at"],
)
def test_naive_datetimes_rejected(call: Callable[[], object]) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        call()


def test_negative_duration_rejected() -> None:
    with pytest.raises(ValueError, match="negative"):
        add_business_time(ny(), local(2026, 3, 4, 10), -MIN)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ny({2: (win("09:00", "12:00"), win("11:00", "17:00"))}), "Wednesday.*12:00"),
        (lambda: ny(special={date(2026, 3, 4): (win("09:00", "24:00"), win("10:00", "11:00"))}),
         "2026-03-04"),
        (lambda: win("17:00", "09:00"), "end must be after start"),
        (lambda: win("09:00", "09:00"), "end must be after start"),
        (lambda: Window(time(9, tzinfo=UTC), time(17)), "naive"),
        (lambda: ny({}), "no working windows"),
        (lambda: ny(dict.fromkeys(range(7), ()), special={date(2026, 3, 4): OFFICE[0]}),
         "no working windows"),
        (lambda: ny({7: OFFICE[0]}), "weekdays 0..6"),
        (lambda: ny(closed=frozenset({datetime(2026, 3, 4, tzinfo=UTC)})), "datetime.date"),
    ],
    ids=["overlap", "overlap-special", "end<start", "empty", "aware", "no-windows",
         "only-special", "bad-weekday", "datetime-closure"],
)  # fmt: skip
def test_invalid_calendars_rejected(build: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_decade_of_closures_raises_instead_of_looping() -> None:
    mondays = frozenset(date(2026, 1, 5) + timedelta(weeks=k) for k in range(53 * 11))
    cal = ny({0: OFFICE[0]}, closed=mondays)
    with pytest.raises(ValueError, match="no open window"):
        add_business_time(cal, local(2026, 1, 1), H)
    with pytest.raises(ValueError, match="no open window"):
        next_opening(cal, local(2026, 1, 1))
    assert business_time_between(cal, local(2026, 1, 1), local(2030, 1, 1)) == 0 * H


# ---------------------------------------------------------------------- property tests
#
# The oracle never converts wall times to instants. It walks UTC minutes and keeps the high-water
# mark of the local clock's reading; a minute is business time iff that mark (as date + time)
# lies in a window of its date. That is exactly "a window runs from the first instant the clock
# reads its start on that date to the first instant it reads its end", the documented rule, and
# it gives the gap and fold=0 behaviour without using zoneinfo's fold at all.

ZONES = ["America/New_York", "Europe/London", "Australia/Sydney", "Asia/Kolkata",
         "Australia/Lord_Howe"]  # fmt: skip
HORIZON = 10 * 24 * 60  # minutes scanned by the oracle per example


def transition_days(tz: ZoneInfo, year: int = 2026) -> list[date]:
    noon = [datetime(year, 1, 1, 12, tzinfo=tz) + timedelta(days=k) for k in range(366)]
    found = [b.date() for a, b in itertools.pairwise(noon) if a.utcoffset() != b.utcoffset()]
    return found or [date(year, 1, 1), date(year, 6, 15)]  # no DST: a year end and midsummer


def oracle_flags(cal: BusinessCalendar, start: datetime, minutes: int) -> list[bool]:
    tz = cal.tz
    by_date: dict[date, bytearray] = {}

    def open_minutes(d: date) -> bytearray:
        if d not in by_date:
            flags = bytearray(1440)
            if d not in cal.closed_dates:
                for w in cal.special_days.get(d, cal.weekly.get(d.weekday(), ())):
                    end = 1440 if w.end == time(0) else w.end.hour * 60 + w.end.minute
                    flags[w.start.hour * 60 + w.start.minute : end] = b"\x01" * (
                        end - w.start.hour * 60 - w.start.minute
                    )
            by_date[d] = flags
        return by_date[d]

    # Real zones never set clocks back by more than 3 hours, so this history suffices.
    high = max((start - k * MIN).astimezone(tz).replace(tzinfo=None) for k in range(181))
    result = []
    instant = start
    for _ in range(minutes):
        reading = instant.astimezone(tz).replace(tzinfo=None)
        high = max(high, reading)
        result.append(bool(open_minutes(high.date())[high.hour * 60 + high.minute]))
        instant += MIN
    return result


def window_lists(
    dst_heavy: bool = False, min_size: int = 0
) -> st.SearchStrategy[tuple[Window, ...]]:
    # Quarter-hour boundaries (96 = 24:00). Every zone tested has its DST jumps within
    # 01:00-03:00, so dst_heavy mostly draws from there: windows open or close inside gaps and
    # repeated hours.
    def to_windows(points: list[int]) -> tuple[Window, ...]:
        def at(q: int) -> time:
            return time(0) if q == 96 else time(q // 4, q % 4 * 15)

        return tuple(Window(at(a), at(b)) for a, b in zip(points[::2], points[1::2], strict=False))

    points = st.integers(0, 96)
    if dst_heavy:
        points = st.one_of(points, st.integers(3, 13), st.integers(3, 13))
    lists = st.lists(points, unique=True, min_size=2 * min_size, max_size=6)
    return lists.map(sorted).map(to_windows)


@st.composite
def calendars(draw: st.DrawFn, tz: ZoneInfo, anchor: date) -> BusinessCalendar:
    kind = draw(st.sampled_from(["office", "split", "night", "random", "random"]))
    weekly = {"office": OFFICE, "split": SPLIT, "night": NIGHT}.get(kind)
    if weekly is None:
        weekly = {wd: draw(window_lists(wd == anchor.weekday())) for wd in range(7)}
        if not any(weekly.values()):
            weekly[0] = OFFICE[0]
    nearby = st.sampled_from([anchor + timedelta(days=k) for k in range(-5, 13)])
    closed = draw(st.frozensets(nearby, max_size=4))
    special = draw(st.dictionaries(nearby, window_lists(dst_heavy=True), max_size=2))
    return BusinessCalendar(tz, weekly, closed, special)


@pytest.mark.parametrize("zone", ZONES)
@settings(max_examples=60, deadline=None, database=None)
@given(data=st.data())
def test_agrees_with_minute_oracle(zone: str, data: st.DataObject) -> None:
    tz = ZoneInfo(zone)
    anchor = data.draw(st.sampled_from(transition_days(tz)), label="anchor")
    cal = data.draw(calendars(tz, anchor), label="calendar")
    origin = datetime.combine(anchor, time(0), UTC)
    origin += MIN * data.draw(st.integers(-4 * 1440, 1440), label="origin offset")
    flags = oracle_flags(cal, origin, HORIZON)
    cum = list(itertools.accumulate(flags, initial=0))  # cum[i]: business minutes in [0, i)
    # Half of the probes sit on or next to an opening/closing minute, where off-by-one bugs live.
    edges = [k for k in range(1, HORIZON) if flags[k] != flags[k - 1]] or [0]
    near_edge = st.sampled_from(edges).flatmap(lambda k: st.integers(max(k - 1, 0), k + 1))
    index = st.one_of(st.integers(0, HORIZON), near_edge)

    for i, j in data.draw(st.lists(st.tuples(index, index), min_size=1, max_size=8), label="ij"):
        i, j = min(i, j), max(i, j)
        s, e = origin + i * MIN, origin + j * MIN
        assert business_time_between(cal, s, e) == (cum[j] - cum[i]) * MIN
        if i < HORIZON:
            assert is_open_at(cal, s) == flags[i]
        if cum[-1] > cum[i]:
            first_open = bisect.bisect_left(cum, cum[i] + 1) - 1
            assert next_opening(cal, s) == origin + first_open * MIN
        h = cum[j] - cum[i]  # a duration the oracle can resolve inside the horizon
        deadline = add_business_time(cal, s, h * MIN)
        assert deadline == origin + bisect.bisect_left(cum, cum[i] + h, lo=i) * MIN
        if h:  # lands inside a window or exactly on its closing instant
            assert flags[(deadline - origin) // MIN - 1]


@settings(max_examples=200, deadline=None, database=None)
@given(data=st.data())
def test_round_trip_and_monotonic_at_any_precision(data: st.DataObject) -> None:
    tz = ZoneInfo(data.draw(st.sampled_from(ZONES), label="zone"))
    anchor = data.draw(st.sampled_from(transition_days(tz)), label="anchor")
    cal = data.draw(calendars(tz, anchor), label="calendar")
    start = datetime.combine(anchor, time(0), UTC) + data.draw(
        st.timedeltas(-timedelta(days=5), timedelta(days=2)), label="start offset"
    )
    # Compare instants in UTC: PEP 495 makes == False for a time in a fold or gap vs another zone.
    start_utc = start
    start = start.astimezone(data.draw(st.sampled_from([tz, UTC]), label="input zone"))
    durations = sorted(
        data.draw(st.lists(st.timedeltas(timedelta(0), 400 * H), min_size=1, max_size=6))
    )
    deadlines = [add_business_time(cal, start, h) for h in durations]
    assert deadlines == sorted(deadlines)
    for h, deadline in zip(durations, deadlines, strict=True):
        assert business_time_between(cal, start, deadline) == h
        if h:
            last = timedelta(microseconds=1)
            assert business_time_between(cal, deadline - last, deadline) == last
            assert deadline > start_utc
        else:
            assert deadline == start_utc
    # Elapsed time is additive over adjacent ranges.
    a, b = start, deadlines[-1] + timedelta(hours=3)
    mid = a + (b - a) / 3
    assert business_time_between(cal, a, mid) + business_time_between(cal, mid, b) == (
        business_time_between(cal, a, b)
    )


@pytest.mark.parametrize("zone", ZONES)
@settings(max_examples=25, deadline=None, database=None)
@given(data=st.data())
def test_dst_nights_match_oracle_exhaustively(zone: str, data: st.DataObject) -> None:
    # Every night gets windows with edges around 01:00-03:00; all 2,880 minutes of the two days
    # around a transition are checked, so a wrong gap/fold rule cannot slip through.
    tz = ZoneInfo(zone)
    anchor = data.draw(st.sampled_from(transition_days(tz)), label="anchor")
    nights = data.draw(window_lists(dst_heavy=True, min_size=1), label="nightly windows")
    cal = BusinessCalendar(tz, dict.fromkeys(range(7), nights))
    origin = datetime.combine(anchor - timedelta(days=1), time(12), UTC)  # before any local 01:00
    flags = oracle_flags(cal, origin, 2 * 1440)
    cum = list(itertools.accumulate(flags, initial=0))
    for k, is_open in enumerate(flags):
        assert business_time_between(cal, origin, origin + k * MIN) == cum[k] * MIN
        assert is_open_at(cal, origin + k * MIN) == is_open
    for h in range(cum[-1] + 1):
        expected = origin + bisect.bisect_left(cum, h) * MIN
        assert add_business_time(cal, origin, h * MIN) == expected
