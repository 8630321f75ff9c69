"""Business calendars: validate stored rows and load them into the engine's calendars."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, time
from typing import Any
from zoneinfo import ZoneInfo

from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _

from followup_visibility.choices import Weekday
from followup_visibility.engine import generation
from followup_visibility.engine.business_time import BusinessCalendar, Window
from followup_visibility.models import Calendar, ClosedDate, SpecialHours, Team, WorkingWindow

# Engine calendars by (pk, version, updated_at, configuration token): a change bumps the
# version; updated_at tells apart a new row that reuses a deleted row's key (SQLite does); the
# token, new and random at every change, keeps an engine built inside a transaction that
# rolled back (its version number is used again by the next change) from being taken.
_cache: dict[tuple[Any, ...], BusinessCalendar] = {}


def _end_after(start: time, end: time) -> bool:
    return end == time(0) or end > start


def validate_windows(windows: Iterable[tuple[Any, time, time]], label: str = "") -> None:
    """Raise ``ValidationError`` for a window ending before it starts or overlapping another.

    ``windows`` are ``(day, start, end)``; ``day`` is a weekday number or a date.
    """
    by_day: dict[Any, list[tuple[time, time]]] = defaultdict(list)
    errors = []
    for day, start, end in windows:
        if not _end_after(start, end):
            errors.append(
                _("%(day)s: %(start)s-%(end)s ends before it starts.")
                % {"day": _day_label(day), "start": f"{start:%H:%M}", "end": f"{end:%H:%M}"}
            )
        else:
            by_day[day].append((start, end))
    for day, spans in by_day.items():
        spans.sort()
        for (s1, e1), (s2, e2) in zip(spans, spans[1:], strict=False):
            if e1 == time(0) or e1 > s2:
                errors.append(
                    _("%(day)s: %(a)s and %(b)s overlap.")
                    % {
                        "day": _day_label(day),
                        "a": f"{s1:%H:%M}-{e1:%H:%M}",
                        "b": f"{s2:%H:%M}-{e2:%H:%M}",
                    }
                )
    if errors:
        raise ValidationError([f"{label}{e}" for e in errors], code="windows")


def _day_label(day: Any) -> str:
    return str(Weekday(day).label) if isinstance(day, int) else str(day)


def build(
    calendar: Calendar,
    windows: Sequence[tuple[int, time, time]],
    closed: Iterable[date],
    special: Sequence[tuple[date, time, time]],
) -> BusinessCalendar:
    """The engine calendar for stored rows; ``ValidationError`` if they cannot make one."""
    validate_windows(windows)
    validate_windows(special)
    weekly: dict[int, list[Window]] = defaultdict(list)
    for weekday, start, end in windows:
        weekly[weekday].append(Window(start, end))
    if not weekly:
        raise ValidationError(
            _("Calendar %(name)s has no working window on any weekday.") % {"name": calendar.name},
            code="no_windows",
        )
    special_days: dict[date, list[Window]] = defaultdict(list)
    for day, start, end in special:
        special_days[day].append(Window(start, end))
    return BusinessCalendar(
        tz=ZoneInfo(calendar.time_zone),
        weekly=weekly,
        closed_dates=frozenset(closed),
        special_days=special_days,
    )


def load(calendar_ids: Iterable[int]) -> dict[int, BusinessCalendar]:
    """Engine calendars for these ids, from the process cache when their version is current."""
    rows = {c.pk: c for c in Calendar.objects.filter(pk__in=set(calendar_ids))}
    token = generation.token() if rows else ""
    found, missing = {}, []
    for pk, row in rows.items():
        cached = _cache.get((pk, row.version, row.updated_at, token)) if token else None
        if cached is None:
            missing.append(pk)
        else:
            found[pk] = cached
    if missing:
        windows: dict[int, list[tuple[int, time, time]]] = defaultdict(list)
        for cid, wd, start, end in WorkingWindow.objects.filter(
            calendar_id__in=missing
        ).values_list("calendar_id", "weekday", "start", "end"):
            windows[cid].append((wd, start, end))
        closed: dict[int, list[date]] = defaultdict(list)
        for cid, day in ClosedDate.objects.filter(calendar_id__in=missing).values_list(
            "calendar_id", "date"
        ):
            closed[cid].append(day)
        special: dict[int, list[tuple[date, time, time]]] = defaultdict(list)
        for cid, day, start, end in SpecialHours.objects.filter(
            calendar_id__in=missing
        ).values_list("calendar_id", "date", "start", "end"):
            special[cid].append((day, start, end))
        for pk in missing:
            row = rows[pk]
            engine = build(row, windows[pk], closed[pk], special[pk])
            for key in [k for k in _cache if k[0] == pk]:
                del _cache[key]
            if token:
                _cache[(pk, row.version, row.updated_at, token)] = engine
            found[pk] = engine
    return found


def default_calendar_id() -> int | None:
    return Calendar.objects.filter(is_default=True).values_list("pk", flat=True).first()


def team_calendar_ids(default: int | None = None) -> dict[int, int | None]:
    """Each team's effective calendar: its own, else the nearest ancestor's, else the default."""
    teams: dict[int, tuple[int | None, int | None]] = {
        pk: (parent, cal)
        for pk, parent, cal in Team.objects.values_list("pk", "parent_id", "calendar_id")
    }
    default = default if default is not None else default_calendar_id()
    result: dict[int, int | None] = {}
    for pk in teams:
        seen: set[int] = set()
        cur: int | None = pk
        found: int | None = None
        while cur is not None and cur not in seen:
            seen.add(cur)
            parent, cal = teams[cur]
            if cal is not None:
                found = cal
                break
            cur = parent
        result[pk] = found if found is not None else default
    return result


@dataclass(frozen=True)
class TeamCalendars:
    """Which calendar governs each team and the company default, with their engine
    calendars: what every user of team calendars reads together, once."""

    default: int | None
    by_team: Mapping[int, int | None]
    engines: Mapping[int, BusinessCalendar]

    @classmethod
    def load(cls) -> TeamCalendars:
        default = default_calendar_id()
        by_team = team_calendar_ids(default)
        ids = {c for c in by_team.values() if c is not None}
        if default is not None:
            ids.add(default)
        return cls(default, by_team, load(ids))

    @classmethod
    def current(cls) -> TeamCalendars:
        """:meth:`load`, kept while the configuration's generation holds (one query, not
        six: the register reads it for every page)."""
        return generation.cached("team_calendars", generation.token(), cls.load)


def teams_using(calendar: Calendar) -> list[int] | None:
    """Teams whose effective calendar is this one; ``None`` means every opportunity may be."""
    if calendar.is_default:
        return None
    return [team for team, cal in team_calendar_ids().items() if cal == calendar.pk]
