"""Tracked opportunities with their timeline, and the evidence rows (touches, handoffs)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from followup_visibility.admin.forms import (
    Message,
    StallForm,
    action_page,
    call_each,
    format_duration,
    refusal_messages,
)
from followup_visibility.admin.scoped import RecordHistoryAdmin, ScopedAdminMixin
from followup_visibility.ingest import segments, stalls
from followup_visibility.ingest.merge import merge_opportunities
from followup_visibility.models import (
    ContactIdentity,
    Deadline,
    DuplicateMatch,
    Handoff,
    Touch,
    TrackedOpportunity,
)

_DERIVED = (
    "first_outbound_at",
    "first_response_at",
    "first_response_touch",
    "last_touch_at",
    "last_meaningful_touch_at",
    "last_meaningful_touch",
    "awaiting_reply_since",
    "last_unanswered_call_at",
)


class TouchInline(admin.TabularInline):
    model = Touch
    extra = 0
    can_delete = False
    show_change_link = True
    fields = (
        "occurred_at",
        "channel",
        "direction",
        "outcome",
        "is_meaningful",
        "meaningful_reason",
        "actor",
        "logging_lag",
    )
    readonly_fields = fields
    ordering = ("-occurred_at",)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class IdentityInline(admin.TabularInline):
    model = ContactIdentity
    extra = 0
    can_delete = False
    fields = ("kind", "raw", "key")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class HandoffInline(admin.TabularInline):
    model = Handoff
    extra = 0
    can_delete = False
    fields = ("handed_at", "from_owner", "to_owner", "accepted_at", "accepted_via", "superseded_at")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class DeadlineInline(admin.TabularInline):
    model = Deadline
    extra = 0
    can_delete = False
    fields = (
        "signal",
        "due_at",
        "event_at",
        "clock_start",
        "business_sla",
        "policy_version",
        "calendar",
        "computed_at",
    )
    readonly_fields = fields
    ordering = ("due_at",)

    @admin.display(description=_("SLA (business time)"))
    def business_sla(self, obj: Deadline) -> str:
        return format_duration(obj.sla)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return super().get_queryset(request).select_related("policy_version__policy", "calendar")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(TrackedOpportunity)
class TrackedOpportunityAdmin(ScopedAdminMixin, RecordHistoryAdmin):
    scope_path = ""

    list_display = (
        "__str__",
        "content_type",
        "owner",
        "team",
        "segment",
        "segment_source",
        "stage",
        "status",
        "arrived_at",
        "first_response_at",
        "last_meaningful_touch_at",
        "awaiting_reply_since",
        "next_action_due_at",
    )
    list_filter = ("status", "content_type", "team", "segment", "segment_source", "stage")
    list_select_related = ("content_type", "owner", "team", "segment")
    search_fields = ("title", "object_pk", "identities__key", "identities__raw")
    date_hierarchy = "arrived_at"
    raw_id_fields = ("owner", "predecessor", "chain_root", "merged_into")
    readonly_fields = (
        "content_type",
        "object_pk",
        "team",
        "segment_source",
        "snapshot_digest",
        "synced_at",
        "created_at",
        "updated_at",
        "merged_at",
        *_DERIVED,
    )
    inlines = (DeadlineInline, HandoffInline, IdentityInline, TouchInline)
    actions = ("merge_into_oldest", "mark_stalled", "clear_stall")

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "segment":
            kwargs["help_text"] = _(
                "Choosing a segment pins it: rules and the host no longer change it. "
                "Empty: back to the rules."
            )
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        pin = change and "segment" in form.changed_data
        segment = obj.segment
        if pin:
            # Not written with the rest: set_segment pins it (so rules and the host stop
            # deciding) and recomputes the deadlines its SLAs move.
            obj.segment_id = form.initial.get("segment")
        super().save_model(request, obj, form, change)
        if pin:
            segments.set_segment(obj, segment, timezone.now())

    @admin.action(description=_("Merge selected into the oldest open one"), permissions=("change",))
    def merge_into_oldest(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        opps = list(queryset.order_by("arrived_at", "pk"))
        if len(opps) < 2:
            self.message_user(request, _("Select at least two."), messages.WARNING)
            return
        survivor, now = opps[0], timezone.now()
        try:
            for duplicate in opps[1:]:
                merge_opportunities(
                    duplicate,
                    survivor,
                    now=now,
                    by=request.user,
                    reason=f"admin merge by {request.user}",
                )
        except ValidationError as exc:
            self.message_user(request, "; ".join(exc.messages), messages.ERROR)
            return
        self.message_user(request, _("Merged %d into %s.") % (len(opps) - 1, survivor))

    @admin.action(description=_("Mark selected as stalled until a date…"), permissions=["change"])
    def mark_stalled(
        self, request: HttpRequest, queryset: QuerySet[Any]
    ) -> TemplateResponse | None:
        def perform(form: Any) -> list[Message]:
            now, data = timezone.now(), form.cleaned_data
            done, refused = call_each(
                queryset.order_by("pk"),
                lambda opp: stalls.set_stalled(
                    opp, until=data["until"], reason=data["reason"], by=request.user, now=now
                ),
                form.fields,
            )
            report = refusal_messages(refused)
            if done:
                text = ngettext(
                    "%d opportunity marked stalled.", "%d opportunities marked stalled.", len(done)
                )
                report.insert(0, (messages.SUCCESS, text % len(done)))
            return report

        return action_page(
            self,
            request,
            queryset,
            form_class=StallForm,
            title=_("Mark stalled for a known reason"),
            submit=_("Mark stalled"),
            perform=perform,
        )

    @admin.action(description=_("Clear the stall of selected"), permissions=["change"])
    def clear_stall(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        now = timezone.now()
        done, refused = call_each(
            queryset.filter(stalled_until__isnull=False).order_by("pk"),
            lambda opp: stalls.clear_stalled(opp, by=request.user, now=now),
        )
        if done:
            text = ngettext("%d stall cleared.", "%d stalls cleared.", len(done))
            self.message_user(request, text % len(done), messages.SUCCESS)
        for level, text in refusal_messages(refused):
            self.message_user(request, text, level)


@admin.register(Touch)
class TouchAdmin(ScopedAdminMixin, admin.ModelAdmin):
    list_display = (
        "occurred_at",
        "opportunity",
        "channel",
        "direction",
        "outcome",
        "is_meaningful",
        "meaningful_reason",
        "logging_lag",
        "source",
    )
    list_filter = ("channel", "direction", "is_meaningful", "meaningful_reason", "source")
    list_select_related = ("opportunity", "actor")
    search_fields = ("external_id", "contact", "summary")
    raw_id_fields = ("opportunity", "actor")
    date_hierarchy = "occurred_at"
    readonly_fields = ("is_meaningful", "meaningful_reason", "logging_lag", "created_at")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Touches are evidence; they are recorded through record_touch(), never edited.
        return False


@admin.register(Handoff)
class HandoffAdmin(ScopedAdminMixin, RecordHistoryAdmin):
    list_display = (
        "opportunity",
        "from_owner",
        "to_owner",
        "handed_at",
        "accepted_at",
        "accepted_via",
        "superseded_at",
    )
    list_filter = ("accepted_via",)
    list_select_related = ("opportunity", "from_owner", "to_owner")
    raw_id_fields = ("opportunity", "from_owner", "to_owner", "accepted_touch", "created_by")


@admin.register(DuplicateMatch)
class DuplicateMatchAdmin(ScopedAdminMixin, admin.ModelAdmin):
    list_display = ("opportunity", "duplicate", "kind", "key", "detected_at", "cleared_at")
    list_filter = ("kind",)
    list_select_related = ("opportunity", "duplicate")
    raw_id_fields = ("opportunity", "duplicate")
    search_fields = ("key",)
