"""Calendar changes: a new version of a calendar, public holidays seeded into it, and the
recompute of the deadlines it governs (planned through the outbox, after commit)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

import holidays
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from django.utils.translation import gettext as _

from followup_visibility.choices import ClosedDateKind
from followup_visibility.config import generation, recompute
from followup_visibility.models import Calendar, ClosedDate

logger = logging.getLogger(__name__)


def mark_changed(calendar_id: int, *, now: datetime, everything: bool = False) -> None:
    """Bump the calendar's version and recompute the deadlines that use it, after commit.

    ``everything`` recomputes all open opportunities: when the calendar row itself changed
    (time zone, default flag), those that fell back to it as the default may move too.
    """
    Calendar.objects.filter(pk=calendar_id).update(version=F("version") + 1)
    generation.bump(now)
    version = Calendar.objects.filter(pk=calendar_id).values_list("version", flat=True).first()
    if version is not None:
        recompute.schedule_for_calendar(calendar_id, version, now=now, everything=everything)


def seed_holidays(calendar: Calendar, years: Iterable[int], *, now: datetime) -> int:
    """Copy the ``holidays`` package's public holidays for these years into the calendar.

    Dates already present (a company closure, or a holiday edited by hand) are kept as they
    are: the table, not the package, is the source of truth. Returns how many were added.
    """
    if not calendar.holiday_country:
        raise ValidationError(
            {"holiday_country": _("Set the country whose public holidays to seed.")},
            code="no_country",
        )
    try:
        found = holidays.country_holidays(
            calendar.holiday_country,
            subdiv=calendar.holiday_subdivision or None,
            years=list(years),
        )
    except NotImplementedError as exc:
        # Raised for an unknown country and for an unknown subdivision alike.
        field = "holiday_subdivision" if "subdivision" in str(exc) else "holiday_country"
        raise ValidationError({field: str(exc)}, code="unknown_holidays") from None
    with transaction.atomic():
        present = set(calendar.closed_dates.values_list("date", flat=True))
        rows = [
            ClosedDate(
                calendar=calendar,
                date=day,
                name=str(name)[:200],
                kind=ClosedDateKind.PUBLIC_HOLIDAY,
            )
            for day, name in sorted(found.items())
            if day not in present
        ]
        # A concurrent seed or a date typed in meanwhile: the row already there wins.
        ClosedDate.objects.bulk_create(rows, ignore_conflicts=True)
        if rows:
            mark_changed(calendar.pk, now=now)
    logger.info("seeded %d public holidays into calendar %s", len(rows), calendar.pk)
    return len(rows)
