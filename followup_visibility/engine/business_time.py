"""Business-time arithmetic over :mod:`zoneinfo` calendars (pure standard library).

A :class:`BusinessCalendar` gives working windows per weekday in one IANA zone, whole-day
closures and per-date replacement windows (half days). :func:`add_business_time` computes
deadlines, :func:`business_time_between` measures elapsed working time, and
:func:`next_opening` / :func:`is_open_at` inspect the calendar, and :func:`end_of_business_day`
turns a date into the instant its business day ends.

Semantics callers can rely on:

* Every datetime argument must be timezone-aware; a naive one raises ``ValueError``. Every
  datetime returned is in UTC (``datetime.timezone.utc``).
* Business time is *real elapsed time* inside wall-clock windows. Each window of a local date
  becomes one UTC interval ``[opens, closes)``, so 00:00-06:00 holds 5 real hours on the
  spring-forward night and 7 on the fall-back night.
* A window boundary is *the first instant at which the local clock reads that time on that
  date*. A wall time inside a spring-forward gap therefore maps to the first instant after the
  gap (02:30 on the US spring-forward day means 03:00 EDT), and an ambiguous fall-back wall time
  maps to its first occurrence (``fold=0``), for window starts and ends alike.
* ``Window.end == time(0)`` means midnight at the end of the day (24:00), i.e. the first instant
  of the next local date.
* A date in ``closed_dates`` has no windows, even if it is also in ``special_days``. A date in
  ``special_days`` uses those windows instead of its weekday's; an empty sequence closes it.
* ``add_business_time(cal, s, timedelta(0))`` is ``s`` itself (as UTC), even outside hours.
  For a positive duration counting starts at ``s`` if open, else at the next opening. A deadline
  that uses up the duration exactly at a closing time *is* that closing time, not the next
  opening. (Compare results in UTC: per PEP 495, ``==`` between a local time that falls in a
  fold or gap and a datetime in another zone is always False.)
* ``business_time_between(cal, s, e)`` is ``timedelta(0)`` when ``e <= s``.
* A negative duration raises ``ValueError``, and so does needing to look past roughly ten
  years of consecutive dates without a single open window.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from itertools import pairwise
from typing import TypeVar
from zoneinfo import ZoneInfo

__all__ = [
    "BusinessCalendar",
    "Window",
    "add_business_time",
    "business_time_between",
    "end_of_business_day",
    "is_open_at",
    "next_opening",
]

_ZERO = timedelta(0)
_DAY = timedelta(days=1)
_MICROSECOND = timedelta(microseconds=1)
_MIDNIGHT = time(0)
_MAX_CLOSED_DAYS = 3660  # ~10 years: a longer closed run means the calendar is unusable
_CACHE_LIMIT = 20_000  # cached dates per calendar (~55 years); cleared, not evicted, beyond it
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

_K = TypeVar("_K")
_V = TypeVar("_V")
_Span = tuple[datetime, datetime]
_Day = tuple[tuple[_Span, ...], timedelta]  # UTC [opens, closes) spans and their total length


class _FrozenMap(Mapping[_K, _V]):
    """Read-only hashable mapping, so that a calendar can be a dict or cache key."""

    __slots__ = ("_data", "_hash")

    def __init__(self, data: Mapping[_K, _V]) -> None:
        self._data = dict(data)
        self._hash = hash(frozenset(self._data.items()))

    def __getitem__(self, key: _K) -> _V:
        return self._data[key]

    def __iter__(self) -> Iterator[_K]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return repr(self._data)


def _time_of_day(t: time) -> timedelta:
    return timedelta(hours=t.hour, minutes=t.minute, seconds=t.second, microseconds=t.microsecond)


@dataclass(frozen=True)
class Window:
    """One working window in the calendar's local wall-clock time, within a single day.

    ``start`` and ``end`` are naive times with ``start < end``; ``end == time(0)`` means
    midnight at the end of the day (24:00).
    """

    start: time
    end: time

    def __post_init__(self) -> None:
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError(f"window {self} must use naive wall-clock times")
        if self._end_offset() <= _time_of_day(self.start):
            raise ValueError(f"window {self}: end must be after start (end=00:00 means 24:00)")

    def _end_offset(self) -> timedelta:
        return _DAY if self.end == _MIDNIGHT else _time_of_day(self.end)

    def __str__(self) -> str:
        def fmt(t: time) -> str:
            return t.isoformat("minutes" if not (t.second or t.microsecond) else "auto")

        return f"{fmt(self.start)}-{'24:00' if self.end == _MIDNIGHT else fmt(self.end)}"


def _checked(windows: Sequence[Window], label: str) -> tuple[Window, ...]:
    for window in windows:
        if not isinstance(window, Window):
            raise TypeError(f"{label}: expected Window instances, got {window!r}")
    ordered = tuple(sorted(windows, key=lambda w: (_time_of_day(w.start), w._end_offset())))
    for before, after in pairwise(ordered):
        if before._end_offset() > _time_of_day(after.start):
            raise ValueError(f"overlapping windows on {label}: {before} and {after}")
    return ordered


def _plain_date(value: object, what: str) -> date:
    # A datetime would hash differently from the date it stands for and silently never match.
    if isinstance(value, datetime) or not isinstance(value, date):
        raise ValueError(f"{what} must contain datetime.date objects, got {value!r}")
    return value


@dataclass(frozen=True)
class BusinessCalendar:
    """Working windows per weekday (0=Monday..6=Sunday) in ``tz``, plus closures and overrides.

    Windows of a day may be given in any order but must not overlap. Missing weekdays are
    closed; at least one weekday must have a window. After construction ``weekly`` maps all
    seven weekdays and, like ``special_days``, is a read-only hashable mapping of tuples.
    """

    tz: ZoneInfo
    weekly: Mapping[int, Sequence[Window]]
    closed_dates: frozenset[date] = frozenset()
    special_days: Mapping[date, Sequence[Window]] = field(default_factory=dict)
    # Per local-date cache of UTC spans; the calendar is immutable, so entries never go stale.
    _days: dict[int, _Day] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.tz, tzinfo):
            raise TypeError(f"tz must be a zoneinfo.ZoneInfo, got {self.tz!r}")
        unknown = set(self.weekly) - set(range(7))
        if unknown:
            raise ValueError(f"weekly keys must be weekdays 0..6, got {sorted(unknown)}")
        weekly = {wd: _checked(self.weekly.get(wd, ()), _WEEKDAYS[wd]) for wd in range(7)}
        if not any(weekly.values()):
            raise ValueError("calendar has no working windows on any weekday")
        special = {
            _plain_date(d, "special_days"): _checked(ws, d.isoformat())
            for d, ws in self.special_days.items()
        }
        closed = frozenset(_plain_date(d, "closed_dates") for d in self.closed_dates)
        object.__setattr__(self, "weekly", _FrozenMap(weekly))
        object.__setattr__(self, "special_days", _FrozenMap(special))
        object.__setattr__(self, "closed_dates", closed)


def _as_utc(value: datetime, name: str) -> datetime:
    if value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {value!r}")
    return value.astimezone(UTC)


def _first_reach(tz: tzinfo, wall: datetime) -> datetime:
    """First UTC instant at which the clock in ``tz`` reads ``wall`` or later."""
    instant = wall.replace(tzinfo=tz).astimezone(UTC)  # fold=0: first of two readings
    if instant.astimezone(tz).replace(tzinfo=None) == wall:
        return instant
    # ``wall`` lies in a gap: fold=0 used the pre-jump offset (an instant after the jump) and
    # fold=1 uses the post-jump one (an instant before it). Bisect down to the jump itself;
    # this runs only on transition days and the result is cached with the day.
    lo, hi = wall.replace(tzinfo=tz, fold=1).astimezone(UTC), instant
    while hi - lo > _MICROSECOND:
        mid = lo + (hi - lo) // 2
        if mid.astimezone(tz).replace(tzinfo=None) >= wall:
            hi = mid
        else:
            lo = mid
    return hi


def _day(cal: BusinessCalendar, ordinal: int) -> _Day:
    cached = cal._days.get(ordinal)
    if cached is not None:
        return cached
    d = date.fromordinal(ordinal)
    windows: Sequence[Window] = ()
    if d not in cal.closed_dates:
        windows = cal.special_days.get(d, cal.weekly[d.weekday()])
    spans: list[_Span] = []
    for w in windows:
        opens = _first_reach(cal.tz, datetime.combine(d, w.start))
        closes = _first_reach(cal.tz, datetime.combine(d, _MIDNIGHT) + w._end_offset())
        if opens < closes:  # a window lying wholly inside a DST gap never opens
            spans.append((opens, closes))
    day = (tuple(spans), sum((c - o for o, c in spans), _ZERO))
    if len(cal._days) >= _CACHE_LIMIT:
        cal._days.clear()
    cal._days[ordinal] = day
    return day


def _local_ordinal(cal: BusinessCalendar, instant: datetime) -> int:
    # No window of an earlier date can close after ``instant``: it closes no later than the
    # clock first reads this date's 00:00. So scanning forward from here misses nothing.
    return instant.astimezone(cal.tz).toordinal()


def _days_from(cal: BusinessCalendar, ordinal: int) -> Iterator[_Day]:
    closed_run = 0
    while True:
        day = _day(cal, ordinal)
        closed_run = 0 if day[0] else closed_run + 1
        if closed_run > _MAX_CLOSED_DAYS:
            start = date.fromordinal(ordinal - closed_run + 1)
            raise ValueError(f"calendar has no open window in the ~10 years from {start}")
        yield day
        ordinal += 1


def add_business_time(cal: BusinessCalendar, start: datetime, duration: timedelta) -> datetime:
    """Return the instant (UTC) when ``duration`` of business time has elapsed after ``start``."""
    cur = _as_utc(start, "start")
    if duration < _ZERO:
        raise ValueError(f"duration must not be negative, got {duration!r}")
    if not duration:
        return cur
    remaining = duration
    for spans, total in _days_from(cal, _local_ordinal(cal, cur)):
        if spans and remaining > total and cur <= spans[0][0]:
            remaining -= total  # the whole day is used up; no need to visit its windows
            continue
        for opens, closes in spans:
            if closes <= cur:
                continue
            if opens > cur:
                cur = opens
            if remaining <= closes - cur:
                return cur + remaining
            remaining -= closes - cur
            cur = closes
    raise AssertionError("unreachable: _days_from never ends")  # pragma: no cover


def business_time_between(cal: BusinessCalendar, start: datetime, end: datetime) -> timedelta:
    """Return the business time inside ``[start, end)``; ``timedelta(0)`` if ``end <= start``."""
    s, e = _as_utc(start, "start"), _as_utc(end, "end")
    if e <= s:
        return _ZERO
    total = _ZERO
    # +2: a clock set back across midnight can read the previous date while a window of the
    # next one is already open.
    for ordinal in range(_local_ordinal(cal, s), _local_ordinal(cal, e) + 2):
        spans, day_total = _day(cal, ordinal)
        if spans and s <= spans[0][0] and spans[-1][1] <= e:
            total += day_total
            continue
        for opens, closes in spans:
            if opens >= e:
                return total
            if closes > s:
                total += min(closes, e) - max(opens, s)
    return total


def next_opening(cal: BusinessCalendar, at: datetime) -> datetime:
    """Return ``at`` (in UTC) if the calendar is open then, else the start of the next window."""
    cur = _as_utc(at, "at")
    for spans, _ in _days_from(cal, _local_ordinal(cal, cur)):
        for opens, closes in spans:
            if cur < closes:
                return max(opens, cur)
    raise AssertionError("unreachable: _days_from never ends")  # pragma: no cover


def end_of_business_day(cal: BusinessCalendar, day: date) -> datetime:
    """Return the close (UTC) of the last window of the local date ``day``; for a date with no
    open window (a weekend, a holiday), the close of the next date that has one."""
    if isinstance(day, datetime) or not isinstance(day, date):
        raise ValueError(f"day must be a datetime.date, got {day!r}")
    for spans, _ in _days_from(cal, day.toordinal()):
        if spans:
            return spans[-1][1]
    raise AssertionError("unreachable: _days_from never ends")  # pragma: no cover


def is_open_at(cal: BusinessCalendar, at: datetime) -> bool:
    """Return whether ``at`` falls inside a window (opening instant included, closing excluded)."""
    cur = _as_utc(at, "at")
    ordinal = _local_ordinal(cal, cur)
    for spans, _ in (_day(cal, ordinal), _day(cal, ordinal + 1)):
        for opens, closes in spans:
            if cur < opens:
                return False
            if cur < closes:
                return True
    return False
