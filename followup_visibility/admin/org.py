"""Segments with their assignment rules, and teams (members, manager, parent, calendar)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.contenttypes.models import ContentType
from django.db.models import Count, ForeignKey, QuerySet
from django.forms import ModelChoiceField
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from followup_visibility.admin.scoped import AdministeredAdminMixin, ParentGatedInline
from followup_visibility.engine import administration
from followup_visibility.models import Segment, SegmentRule, Team
from followup_visibility.registry import adapters


class SegmentRuleInline(ParentGatedInline, admin.TabularInline):
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


class SegmentAdmin(AdministeredAdminMixin, admin.ModelAdmin):
    team_path = None  # company-wide: a segment's rules and SLAs reach every team

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


class TeamAdmin(AdministeredAdminMixin, admin.ModelAdmin):
    """A manager changes the teams they manage and those below, naming only people already
    in that subtree; a team's place in the tree and its manager, at the top of the subtree,
    are decided above them. Otherwise a manager could make themselves manager of another team
    (or pull its people in) and see its pipeline."""

    team_path = ""
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

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        teams = administration.administered_team_ids(request.user)
        if obj is not None and teams is not None and obj.pk in administration.top_team_ids(teams):
            return ("parent", "manager")
        return ()

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        teams = administration.administered_team_ids(request.user)
        if teams is not None and db_field.name == "parent":
            # A new team, or one inside the subtree, hangs below a team of the subtree.
            kwargs.update(queryset=Team.objects.filter(pk__in=teams), required=True)
        elif teams is not None and db_field.name == "manager":
            kwargs["queryset"] = administration.people(teams)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def formfield_for_manytomany(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        teams = administration.administered_team_ids(request.user)
        if teams is not None and db_field.name == "members":
            kwargs["queryset"] = administration.people(teams)
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    @admin.display(description=_("members"), ordering="member_count")
    def member_count(self, obj: Any) -> int:
        return int(obj.member_count)
