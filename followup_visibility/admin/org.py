"""Segments with their assignment rules, and teams (members, manager, parent, calendar)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.contenttypes.models import ContentType
from django.db.models import Count, ForeignKey, QuerySet
from django.forms import ModelChoiceField
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from followup_visibility.models import Segment, SegmentRule, Team
from followup_visibility.registry import adapters


class SegmentRuleInline(admin.TabularInline):
    model = SegmentRule
    extra = 0
    fields = (
        "priority",
        "active",
        "channel",
        "direction",
        "outcome",
        "touch_source",
        "hint_field",
        "hint_value",
        "content_type",
    )
    ordering = ("priority", "id")

    def formfield_for_foreignkey(
        self, db_field: ForeignKey[Any, Any], request: HttpRequest, **kwargs: Any
    ) -> ModelChoiceField | None:
        if db_field.name == "content_type":
            # Only the tracked host models make sense here, not every model of the project.
            tracked = ContentType.objects.get_for_models(*adapters()).values()
            kwargs["queryset"] = ContentType.objects.filter(pk__in=[ct.pk for ct in tracked])
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


@admin.register(Segment)
class SegmentAdmin(admin.ModelAdmin):
    list_display = ("name", "code", "intent_weight", "rule_count")
    search_fields = ("name", "code")
    prepopulated_fields = {"code": ("name",)}
    inlines = (SegmentRuleInline,)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Segment]:
        queryset: QuerySet[Segment] = super().get_queryset(request)
        return queryset.annotate(rule_count=Count("rules"))

    @admin.display(description=_("rules"), ordering="rule_count")
    def rule_count(self, obj: Any) -> int:
        return int(obj.rule_count)


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ("name", "key", "parent", "manager", "calendar", "member_count")
    list_select_related = ("parent", "manager", "calendar")
    list_filter = ("calendar",)
    search_fields = ("name", "key")
    # Users by id: the host's user admin may not offer the search autocomplete needs.
    raw_id_fields = ("manager",)
    autocomplete_fields = ("parent", "calendar")
    filter_horizontal = ("members",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Team]:
        queryset: QuerySet[Team] = super().get_queryset(request)
        return queryset.annotate(member_count=Count("members"))

    @admin.display(description=_("members"), ordering="member_count")
    def member_count(self, obj: Any) -> int:
        return int(obj.member_count)
