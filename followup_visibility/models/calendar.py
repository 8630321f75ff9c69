from __future__ import annotations

import zoneinfo
from datetime import time

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from followup_visibility.choices import ClosedDateKind, Weekday


def validate_time_zone(value: str) -> None:
    if value not in zoneinfo.available_timezones():
        raise ValidationError(
            _("Unknown time zone %(value)r: use an IANA name such as Europe/Berlin."),
            params={"value": value},
            code="time_zone",
        )


def validate_window(start: time | None, end: time | None) -> None:
    """``end == 00:00`` means midnight at the end of the day; otherwise end follows start."""
    if start is None or end is None:
        return
    if end != time(0) and end <= start:
        raise ValidationError(
            {"end": _("The window must end after it starts (00:00 means midnight at day end).")},
            code="window_order",
        )


class Calendar(models.Model):
    """A business calendar: time zone, weekly windows, closed dates and special hours."""

    name = models.CharField(_("name"), max_length=100, unique=True)
    time_zone = models.CharField(_("time zone"), max_length=64, validators=[validate_time_zone])
    is_default = models.BooleanField(
        _("company default"),
        default=False,
        help_text=_("Used by teams without a calendar of their own (or of a parent team)."),
    )
    holiday_country = models.CharField(
        _("public holidays of"),
        max_length=3,
        blank=True,
        help_text=_("ISO country code for seeding public holidays, e.g. US, GB, DE."),
    )
    holiday_subdivision = models.CharField(
        _("subdivision"), max_length=10, blank=True, help_text=_("e.g. CA for California.")
    )
    #: Bumped by every change to the calendar or its rows; loaded calendars are cached by it.
    version = models.PositiveIntegerField(default=1, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("business calendar")
        verbose_name_plural = _("business calendars")
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"], condition=Q(is_default=True), name="fv_calendar_one_default"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.time_zone})"


class WorkingWindow(models.Model):
    """One weekly working window in the calendar's local time; several per day make shifts."""

    calendar = models.ForeignKey(Calendar, on_delete=models.CASCADE, related_name="windows")
    weekday = models.PositiveSmallIntegerField(_("weekday"), choices=Weekday)
    start = models.TimeField(_("opens"))
    end = models.TimeField(_("closes"), help_text=_("00:00 means midnight at the end of the day."))

    class Meta:
        verbose_name = _("working window")
        verbose_name_plural = _("working windows")
        ordering = ["weekday", "start"]

    def __str__(self) -> str:
        return f"{self.get_weekday_display()} {self.start:%H:%M}-{self.end:%H:%M}"

    def clean(self) -> None:
        validate_window(self.start, self.end)


class ClosedDate(models.Model):
    """A whole day without business hours: a public holiday or a company closure."""

    calendar = models.ForeignKey(Calendar, on_delete=models.CASCADE, related_name="closed_dates")
    date = models.DateField(_("date"))
    name = models.CharField(_("name"), max_length=200, blank=True)
    kind = models.CharField(
        _("kind"), max_length=20, choices=ClosedDateKind, default=ClosedDateKind.CLOSURE
    )

    class Meta:
        verbose_name = _("closed date")
        verbose_name_plural = _("closed dates (holidays and closures)")
        ordering = ["date"]
        constraints = [
            models.UniqueConstraint(fields=["calendar", "date"], name="fv_closed_date_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.date} {self.name}".strip()


class SpecialHours(models.Model):
    """Replacement hours for one date (a half day); all rows of a date together replace it."""

    calendar = models.ForeignKey(Calendar, on_delete=models.CASCADE, related_name="special_hours")
    date = models.DateField(_("date"))
    start = models.TimeField(_("opens"))
    end = models.TimeField(_("closes"), help_text=_("00:00 means midnight at the end of the day."))
    name = models.CharField(_("name"), max_length=200, blank=True)

    class Meta:
        verbose_name = _("special hours")
        verbose_name_plural = _("special hours (half days)")
        ordering = ["date", "start"]

    def __str__(self) -> str:
        return f"{self.date} {self.start:%H:%M}-{self.end:%H:%M}"

    def clean(self) -> None:
        validate_window(self.start, self.end)
