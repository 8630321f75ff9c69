"""Deadlines, read-only: they are computed from the timeline, calendars and policies."""

from __future__ import annotations

from django.contrib import admin
from django.utils.translation import gettext_lazy as _

from followup_visibility.admin.forms import format_duration
from followup_visibility.admin.scoped import ReadOnlyMixin, ScopedAdminMixin
from followup_visibility.models import Deadline


class DeadlineAdmin(ReadOnlyMixin, ScopedAdminMixin, admin.ModelAdmin):
    # Edits would be overwritten by the next recompute; change the policy or calendar instead.
    list_display = (
        "opportunity",
        "signal",
        "due_at",
        "clock_start",
        "business_sla",
        "policy_version",
        "calendar",
    )
    list_filter = ("signal", "calendar")
    list_select_related = ("opportunity", "policy_version__policy", "calendar")
    search_fields = ("opportunity__title",)
    date_hierarchy = "due_at"
    ordering = ("due_at",)

    @admin.display(description=_("SLA (business time)"), ordering="sla")
    def business_sla(self, obj: Deadline) -> str:
        return format_duration(obj.sla)
