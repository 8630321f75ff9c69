"""Tracked opportunities with their timeline, and the evidence rows (touches, handoffs).

Every write here goes through the domain function that owns it: the CRM owns the mirrored
fields, ``set_segment`` the segment, ``record_touch`` a touch, ``accept_handoff`` a handoff
and ``merge_opportunities`` a merge.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Exists, OuterRef, QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone
from django.utils.text import capfirst
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
from followup_visibility.admin.register import register_view
from followup_visibility.admin.scoped import (
    RecordHistoryAdmin,
    ScopedAdminMixin,
    report_skipped,
    skipped,
)
from followup_visibility.engine import access
from followup_visibility.ingest import handoffs, segments, stalls, touches
from followup_visibility.ingest.merge import merge_opportunities
from followup_visibility.models import (
    ContactIdentity,
    Deadline,
    Handoff,
    Touch,
    TrackedOpportunity,
)
from followup_visibility.registry import adapters

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


class TrackedContentTypeFilter(admin.SimpleListFilter):
    """The tracked host models only, not every content type of the site."""

    title = _("host model")
    parameter_name = "content_type"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        tracked = ContentType.objects.get_for_models(*adapters())
        return sorted(
            ((str(ct.pk), capfirst(model._meta.verbose_name)) for model, ct in tracked.items()),
            key=lambda choice: str(choice[1]),
        )

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value is None or not value.isdigit():
            return queryset
        return queryset.filter(content_type_id=int(value))


#: What the admin shows of an opportunity, all read-only but the segment: the host's fields
#: are mirrored from the CRM (the system of record) and the rest is derived from the timeline
#: or changed through the actions, each a domain function that keeps the deadlines right.
_FIELDSETS: tuple[tuple[Any, tuple[str, ...]], ...] = (
    (
        _("From the CRM"),
        (
            "title",
            "content_type",
            "object_pk",
            "owner",
            "stage",
            "status",
            "close_reason",
            "value",
            "arrived_at",
            "team_key",
            "segment_code",
            "segment_hints",
            "tenant",
        ),
    ),
    (
        _("Follow-up"),
        (
            "team",
            "segment",
            "segment_source",
            "owner_confirmed_at",
            "unowned_since",
            "stage_entered_at",
            "closed_at",
        ),
    ),
    (
        _("Next action"),
        ("next_action_due_at", "next_action_note", "next_action_set_at", "next_action_done_at"),
    ),
    (_("Timeline"), _DERIVED),
    (_("Stall"), ("stalled_until", "stalled_reason", "stalled_at", "stalled_by")),
    (_("Chain"), ("predecessor", "chain_root", "merged_into", "merged_at")),
    (_("Record"), ("synced_at", "created_at", "updated_at")),
)
_EDITABLE = ("segment",)


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
    list_filter = ("status", TrackedContentTypeFilter, "team", "segment", "segment_source", "stage")
    list_select_related = ("content_type", "owner", "team", "segment")
    search_fields = ("title", "object_pk", "identities__key", "identities__raw")
    date_hierarchy = "arrived_at"
    fieldsets = tuple((name, {"fields": fields}) for name, fields in _FIELDSETS)
    readonly_fields = tuple(
        name for _name, fields in _FIELDSETS for name in fields if name not in _EDITABLE
    )
    inlines = (DeadlineInline, HandoffInline, IdentityInline, TouchInline)
    actions = ("merge_into_oldest", "mark_stalled", "clear_stall")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # tracking comes from the CRM through the adapters, never by hand

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view(self.register)
        name = f"{self.opts.app_label}_{self.opts.model_name}_register"
        return [path("register/", view, name=name), *super().get_urls()]

    def register(self, request: HttpRequest) -> TemplateResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        return register_view(self, request)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # a host deletion closes it (sync), keeping its alerts' record

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "segment":
            kwargs["help_text"] = _(
                "Choosing a segment pins it: rules and the host no longer change it. "
                "Empty: back to the rules."
            )
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        # The segment is the only field the form edits, and it is not written with a save:
        # set_segment pins it (rules and the host stop deciding) and recomputes the deadlines
        # its SLAs move. Nothing else on the row is ever written from this form.
        if change and "segment" in form.changed_data:
            segments.set_segment(obj, form.cleaned_data["segment"], timezone.now())

    @admin.action(description=_("Merge selected into the oldest open one"), permissions=("change",))
    def merge_into_oldest(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        report_skipped(self, request, queryset, _("not in this list"))
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
            return report + skipped(request, queryset, _("not in this list"))

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
        report_skipped(self, request, queryset, _("not in this list"))
        now = timezone.now()
        stalled = queryset.filter(stalled_until__isnull=False)
        not_stalled = queryset.filter(stalled_until__isnull=True).count()
        done, refused = call_each(
            stalled.order_by("pk"),
            lambda opp: stalls.clear_stalled(opp, by=request.user, now=now),
        )
        if done:
            text = ngettext("%d stall cleared.", "%d stalls cleared.", len(done))
            self.message_user(request, text % len(done), messages.SUCCESS)
        if not_stalled:
            text = ngettext(
                "%d selected opportunity was not stalled.",
                "%d selected opportunities were not stalled.",
                not_stalled,
            )
            self.message_user(request, text % not_stalled, messages.WARNING)
        for level, text in refusal_messages(refused):
            self.message_user(request, text, level)


class TouchForm(forms.ModelForm):
    """Records a touch through the ingestion function (classification, refresh, handoffs),
    on an opportunity of the user's scope: another id is "not one of the available choices",
    exactly as one that does not exist."""

    class Meta:
        model = Touch
        fields = ["opportunity", "channel", "direction", "outcome", "occurred_at", "summary"]

    request: HttpRequest
    recorded: Touch | None = None

    def _post_clean(self) -> None:
        # Not the model's own validation: the row is built and checked by record_touch.
        pass

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.errors:
            return cleaned
        try:
            recorded = touches.record_touch(
                cleaned["opportunity"],
                channel=cleaned["channel"],
                direction=cleaned["direction"],
                outcome=cleaned.get("outcome") or "",
                occurred_at=cleaned["occurred_at"],
                summary=cleaned.get("summary") or "",
                actor=self.request.user,
                source=ADMIN_SOURCE,
                now=timezone.now(),
            )
        except ValidationError as exc:
            for name, errors in exc.error_dict.items() if hasattr(exc, "error_dict") else ():
                self.add_error(name if name in self.fields else None, errors)
            if not hasattr(exc, "error_dict"):
                self.add_error(None, exc)
            return cleaned
        self.recorded = recorded.touch
        return cleaned


#: The ``source`` of touches recorded by hand in the admin.
ADMIN_SOURCE = "admin"


class TouchAdmin(ScopedAdminMixin, admin.ModelAdmin):
    form = TouchForm
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
    raw_id_fields = ("opportunity",)
    date_hierarchy = "occurred_at"
    readonly_fields = ("is_meaningful", "meaningful_reason", "logging_lag", "created_at")

    def get_form(
        self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any
    ) -> Any:
        form = super().get_form(request, obj, change, **kwargs)
        return type(form.__name__, (form,), {"request": request})

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "opportunity":
            kwargs["queryset"] = access.opportunities_for(request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        # Recorded already, by the form's validation (which is where the domain's field
        # errors belong); the admin goes on with ``obj`` (change log, redirect).
        obj.pk, obj._state.adding = form.recorded.pk, False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Touches are evidence; they are recorded through record_touch(), never edited.
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # evidence: the timeline and the deadlines it implies rest on it


class HandoffAdmin(ScopedAdminMixin, RecordHistoryAdmin):
    """Handoffs are written by owner changes synced from the CRM, and accepted by the new
    owner (here, through the action, or by their first meaningful touch)."""

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
    actions = ("accept",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_accept_permission(self, request: HttpRequest) -> bool:
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.{get_permission_codename('change', opts)}")

    @admin.action(
        description=_("Accept selected handoffs (as their new owner)"), permissions=["accept"]
    )
    def accept(self, request: HttpRequest, queryset: QuerySet[Handoff]) -> None:
        report_skipped(self, request, queryset, _("not in this list"))
        now = timezone.now()
        done, refused = call_each(
            queryset.select_related("opportunity").order_by("pk"),
            lambda handoff: handoffs.accept_handoff(handoff.opportunity, request.user, now),
        )
        if done:
            text = ngettext("%d handoff accepted.", "%d handoffs accepted.", len(done))
            self.message_user(request, text % len(done), messages.SUCCESS)
        for level, text in refusal_messages(refused, lambda h: str(h.opportunity)):
            self.message_user(request, text, level)


class DuplicateMatchAdmin(ScopedAdminMixin, admin.ModelAdmin):
    """Possible duplicates found through a shared phone or email. A row belongs to its
    ``opportunity``; the other side is named only when the viewer may see it."""

    list_display = ("opportunity", "duplicate_shown", "kind", "key", "detected_at", "cleared_at")
    list_filter = ("kind",)
    list_select_related = ("opportunity",)
    search_fields = ("key",)
    fields = ("opportunity", "duplicate_shown", "kind", "key", "detected_at", "cleared_at")
    readonly_fields = fields
    actions = ("merge_duplicate",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        visible = access.opportunities_for(request.user).filter(pk=OuterRef("duplicate_id"))
        queryset: QuerySet[Any] = super().get_queryset(request)
        annotated: QuerySet[Any] = queryset.annotate(fv_duplicate_visible=Exists(visible))
        return annotated.select_related("opportunity", "duplicate")

    @admin.display(description=_("duplicate"))
    def duplicate_shown(self, obj: Any) -> Any:
        if obj.fv_duplicate_visible:
            return obj.duplicate
        return _("an opportunity outside your scope")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # found by identity matching

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_merge_permission(self, request: HttpRequest) -> bool:
        opts = TrackedOpportunity._meta
        return request.user.has_perm(f"{opts.app_label}.{get_permission_codename('change', opts)}")

    @admin.action(description=_("Merge each duplicate into its opportunity"), permissions=["merge"])
    def merge_duplicate(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        report_skipped(self, request, queryset, _("not in this list"))
        now = timezone.now()

        def merge(match: Any) -> None:
            if not match.fv_duplicate_visible:
                raise ValidationError(_("The duplicate is outside your scope."), code="scope")
            merge_opportunities(
                match.duplicate,
                match.opportunity,
                now=now,
                by=request.user,
                reason=f"admin merge by {request.user}",
            )

        done, refused = call_each(queryset.order_by("pk"), merge)
        if done:
            text = ngettext("%d duplicate merged.", "%d duplicates merged.", len(done))
            self.message_user(request, text % len(done), messages.SUCCESS)
        for level, text in refusal_messages(refused, lambda m: str(m.opportunity)):
            self.message_user(request, text, level)
