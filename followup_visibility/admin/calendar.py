"""Business calendars: weekly windows, closed dates and half days, edited together."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from followup_visibility.admin.scoped import (
    AdministeredAdminMixin,
    ParentGatedInline,
    report_skipped,
)
from followup_visibility.config import calendars
from followup_visibility.engine import administration
from followup_visibility.engine.calendars import validate_windows
from followup_visibility.models import Calendar, ClosedDate, SpecialHours, WorkingWindow

#: Seeding covers this year and the next two, so the calendar never runs out mid-year.
SEED_YEARS = 3


class CalendarRowFormSet(forms.BaseInlineFormSet):
    """Inline windows checked together: none may end before it starts or overlap another."""

    day_field = "weekday"

    def clean(self) -> None:
        super().clean()
        rows = []
        for form in self.forms:
            data = getattr(form, "cleaned_data", None) or {}
            if data.get("DELETE"):
                continue
            day, start, end = data.get(self.day_field), data.get("start"), data.get("end")
            # A missing value already has its field error (or the row is an empty extra one).
            if day is not None and start is not None and end is not None:
                rows.append((day, start, end))
        # Raising here makes the formset invalid, so the admin saves nothing at all.
        validate_windows(rows)


class SpecialHoursFormSet(CalendarRowFormSet):
    day_field = "date"


class WorkingWindowInline(ParentGatedInline, admin.TabularInline):
    model = WorkingWindow
    formset = CalendarRowFormSet
    extra = 0
    fields = ("weekday", "start", "end")


class ClosedDateInline(ParentGatedInline, admin.TabularInline):
    model = ClosedDate
    extra = 0
    fields = ("date", "name", "kind")
    ordering = ("date",)


class SpecialHoursInline(ParentGatedInline, admin.TabularInline):
    model = SpecialHours
    formset = SpecialHoursFormSet
    extra = 0
    fields = ("date", "start", "end", "name")


class CalendarForm(forms.ModelForm):
    class Meta:
        model = Calendar
        fields = ["name", "time_zone", "is_default", "holiday_country", "holiday_subdivision"]
        help_texts = {"time_zone": _("An IANA name such as America/New_York or Europe/Berlin.")}

    def clean_is_default(self) -> bool:
        value: bool = self.cleaned_data["is_default"]
        current = Calendar.objects.filter(is_default=True).exclude(pk=self.instance.pk).first()
        if value and current is not None:
            # Clearer than the database constraint's message, and says what to do.
            raise ValidationError(
                _("“%(name)s” is the company default: untick it there first."),
                params={"name": current.name},
                code="default_taken",
            )
        return value


class CalendarAdmin(AdministeredAdminMixin, admin.ModelAdmin):
    """A manager changes the calendars only their subtree's teams use; adding one, and the
    company default, need the see-all permission."""

    team_path = None
    form = CalendarForm
    list_display = (
        "name",
        "time_zone",
        "is_default",
        "holiday_country",
        "window_count",
        "closed_date_count",
        "special_hours_count",
    )
    list_filter = ("is_default", "holiday_country")
    search_fields = ("name", "time_zone")
    readonly_fields = ("updated_at",)
    inlines = (WorkingWindowInline, ClosedDateInline, SpecialHoursInline)
    actions = ("seed_public_holidays",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Calendar]:
        queryset: QuerySet[Calendar] = super().get_queryset(request)
        return queryset.annotate(
            window_count=Count("windows", distinct=True),
            closed_date_count=Count("closed_dates", distinct=True),
            special_hours_count=Count("special_hours", distinct=True),
        )

    @admin.display(description=_("windows"), ordering="window_count")
    def window_count(self, obj: Any) -> int:
        return int(obj.window_count)

    @admin.display(description=_("closed dates"), ordering="closed_date_count")
    def closed_date_count(self, obj: Any) -> int:
        return int(obj.closed_date_count)

    @admin.display(description=_("special hours"), ordering="special_hours_count")
    def special_hours_count(self, obj: Any) -> int:
        return int(obj.special_hours_count)

    def _administers(self, request: HttpRequest, obj: Any) -> bool:
        calendars_ = administration.calendar_ids(administration.administered_team_ids(request.user))
        return calendars_ is None or obj.pk in calendars_

    def administered(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        calendars_ = administration.calendar_ids(administration.administered_team_ids(request.user))
        return queryset if calendars_ is None else queryset.filter(pk__in=calendars_)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Teams without a calendar of their own fall back to the default; keep one.
        if obj is not None and obj.is_default:
            return False
        return super().has_delete_permission(request, obj)

    @admin.action(
        description=_("Seed public holidays (this year and the next two)"),
        permissions=["change"],
    )
    def seed_public_holidays(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        year = timezone.now().year
        years = range(year, year + SEED_YEARS)
        mine = self.administered(request, queryset)
        report_skipped(self, request, mine, _("used by teams outside the ones you manage"))
        for calendar in mine:
            try:
                added = calendars.seed_holidays(calendar, years, now=timezone.now())
            except ValidationError as exc:
                self.message_user(
                    request, f"{calendar.name}: {'; '.join(exc.messages)}", messages.ERROR
                )
                continue
            message = ngettext(
                "%(name)s: %(count)d public holiday added for %(first)d-%(last)d.",
                "%(name)s: %(count)d public holidays added for %(first)d-%(last)d.",
                added,
            ) % {"name": calendar.name, "count": added, "first": years[0], "last": years[-1]}
            self.message_user(request, message, messages.SUCCESS if added else messages.INFO)
