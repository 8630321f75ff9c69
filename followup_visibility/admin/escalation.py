"""Escalation policies and their levels, the escalation record, the inbox and the sweep runs."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import QuerySet
from django.http import Http404, HttpRequest
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from followup_visibility.admin.forms import BusinessDurationField, format_duration
from followup_visibility.admin.scoped import (
    AdministeredAdminMixin,
    ParentGatedInline,
    ReadOnlyMixin,
    RecordHistoryAdmin,
    admin_url,
    administered_teams,
    report_skipped,
)
from followup_visibility.alerting import notifications
from followup_visibility.config import escalation_policies
from followup_visibility.engine import access, administration
from followup_visibility.engine.escalation_levels import validate_levels
from followup_visibility.models import (
    Escalation,
    EscalationLevel,
    EscalationPolicy,
    Notification,
    SweepRun,
)


class ReadOnlyAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """Records written by the sweep and escalation passes: read, never edited."""

    def get_object(self, request: HttpRequest, object_id: str, from_field: Any = None) -> Any:
        obj = super().get_object(request, object_id, from_field)
        if obj is None:
            raise Http404  # outside the user's scope, or gone: either way not found
        return obj


def _alert_link(model_admin: Any, alert_id: int, text: Any) -> str:
    url = admin_url(model_admin, "followup_visibility_alert_change", alert_id)
    return format_html('<a href="{}">{}</a>', url, text)


# Policies -------------------------------------------------------------------------------------


class LevelFormSet(forms.BaseInlineFormSet):
    """The levels, checked together by ``validate_levels`` (in level order)."""

    thresholds: list[Any]

    def clean(self) -> None:
        super().clean()
        self.thresholds = []
        if any(form.errors for form in self.forms):
            return  # a row that did not parse says so already
        rows = []
        for form in self.forms:
            data = getattr(form, "cleaned_data", None) or {}
            if data and not data.get("DELETE"):
                rows.append((data["number"], data["after"]))
        thresholds = [after for _number, after in sorted(rows, key=lambda row: row[0])]
        try:
            validate_levels(thresholds)
        except ValidationError as exc:
            # Raised here, the error makes the formset invalid and the admin saves nothing.
            raise ValidationError(exc.messages) from exc
        self.thresholds = thresholds


class LevelInline(ParentGatedInline, admin.TabularInline):
    model = EscalationLevel
    formset = LevelFormSet
    extra = 0
    fields = ("number", "after")
    ordering = ("number",)
    formfield_overrides = {models.DurationField: {"form_class": BusinessDurationField}}

    def get_formset(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        formset = super().get_formset(request, obj, **kwargs)
        formset.form.base_fields["after"].help_text = _(
            "Business time past due, in the opportunity's calendar, e.g. 4:00:00. Each level "
            "must come later than the one before."
        )
        return formset


class EscalationPolicyForm(forms.ModelForm):
    class Meta:
        model = EscalationPolicy
        fields = ["name", "team", "is_default"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        # The database refuses a default with a team; a policy with neither governs nothing.
        team, is_default = cleaned.get("team"), cleaned.get("is_default")
        if not self.has_error("team") and (team is None) == (not is_default):
            message = (
                _("The company default applies to every team; leave the team empty.")
                if is_default
                else _("Choose the team this policy is for, or make it the company default.")
            )
            self.add_error("team", ValidationError(message, code="team_or_default"))
        return cleaned


class EscalationPolicyAdmin(AdministeredAdminMixin, RecordHistoryAdmin):
    """A manager changes the policies of the teams they manage; the company default needs
    the see-all permission."""

    form = EscalationPolicyForm
    list_display = ("name", "team", "is_default", "levels_summary")
    list_select_related = ("team",)
    list_filter = ("is_default",)
    search_fields = ("name", "team__name")
    autocomplete_fields = ("team",)
    inlines = (LevelInline,)
    fieldsets = (
        (
            None,
            {
                "fields": ("name", "team", "is_default"),
                "description": _(
                    "A policy applies to its team's opportunities and those of the teams below "
                    "it (the nearest team with a policy wins); the company default applies "
                    "everywhere else. Level 1 goes to the manager of the opportunity's team, "
                    "level 2 to the next manager up, and so on."
                ),
            },
        ),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[EscalationPolicy]:
        queryset: QuerySet[EscalationPolicy] = super().get_queryset(request)
        return queryset.prefetch_related("levels")

    def has_add_permission(self, request: HttpRequest) -> bool:
        # A policy is created with its levels (save_formset): without the permission to add
        # levels the form would have no levels section, and nothing to create.
        opts = EscalationLevel._meta
        can_add_levels = request.user.has_perm(
            f"{opts.app_label}.{get_permission_codename('add', opts)}"
        )
        return can_add_levels and super().has_add_permission(request)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if administration.administers_company(request.user):
            return ()
        return ("is_default",)  # the company default reaches every team

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "team":
            kwargs.update(administered_teams(request))
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    @admin.display(description=_("levels"))
    def levels_summary(self, obj: EscalationPolicy) -> str:
        levels = sorted(obj.levels.all(), key=lambda level: level.number)
        return ", ".join(f"{level.number}: {format_duration(level.after)}" for level in levels)

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
        # A new policy is created with its levels, once they are known (save_formset).

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        if not isinstance(formset, LevelFormSet):
            super().save_formset(request, form, formset, change)
            return
        # Through the domain functions, which write all levels at once and re-plan the open
        # alerts they govern, instead of the formset writing rows one by one.
        policy, now = form.instance, timezone.now()
        if not change:
            created = escalation_policies.create_policy(
                policy.name,
                formset.thresholds,
                team=policy.team,
                is_default=policy.is_default,
                now=now,
                by=request.user,
            )
            # The admin goes on with ``policy`` (change log, redirect): make it the created row.
            policy.pk = created.pk
            policy.refresh_from_db()
        elif formset.thresholds != [level.after for level in policy.levels.order_by("number")]:
            escalation_policies.set_levels(policy, formset.thresholds, now=now, by=request.user)
        # The change message reads these; the levels are in the policy's history instead.
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and obj.is_default:
            return False  # the policy of every team without its own
        return bool(super().has_delete_permission(request, obj))


# The record -----------------------------------------------------------------------------------


class EscalationAdmin(ReadOnlyAdmin):
    list_display = ("alert_link", "level", "fired_at", "outcome", "recipient", "team", "policy")
    list_filter = ("outcome", "level", "team")
    list_select_related = ("alert__opportunity", "recipient", "team", "policy")
    search_fields = ("alert__opportunity__title",)
    date_hierarchy = "fired_at"
    ordering = ("-fired_at", "-id")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Escalation]:
        queryset: QuerySet[Escalation] = super().get_queryset(request)
        return access.restrict(queryset, request.user, "alert__opportunity")

    @admin.display(description=_("alert"), ordering="alert")
    def alert_link(self, obj: Escalation) -> str:
        return _alert_link(self, obj.alert_id, obj.alert)


class UnreadFilter(admin.SimpleListFilter):
    title = _("read")
    parameter_name = "unread"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [("1", _("Unread")), ("0", _("Read"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() in ("0", "1"):
            return queryset.filter(read_at__isnull=self.value() == "1")
        return queryset


class NotificationAdmin(ReadOnlyAdmin):
    """The inbox: one's own notifications (everyone's for those who see everything)."""

    list_display = (
        "created_at",
        "subject",
        "alert_link",
        "kind",
        "channel",
        "recipient",
        "deliver_after",
        "sent_at",
        "read_at",
    )
    list_filter = (UnreadFilter, "kind", "channel")
    list_select_related = ("recipient", "alert")
    search_fields = ("subject",)
    actions = ("mark_read",)
    fields = (
        "subject",
        "body",
        "alert_link",
        "kind",
        "channel",
        "recipient",
        "created_at",
        "deliver_after",
        "sent_at",
        "delivery",
        "read_at",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[Notification]:
        queryset: QuerySet[Notification] = super().get_queryset(request)
        if access.sees_everything(request.user):
            # The whole notification log, every channel (within the user's companies).
            return access.restrict(queryset, request.user, "alert__opportunity")
        return queryset.filter(pk__in=notifications.inbox(request.user).values("pk"))

    @admin.display(description=_("alert"), ordering="alert")
    def alert_link(self, obj: Notification) -> str:
        return _alert_link(self, obj.alert_id, obj.alert)

    # On the page of one message only: it reads the recipient's queued digests.
    @admin.display(description=_("delivery"))
    def delivery(self, obj: Notification) -> str:
        return notifications.delivery_state(obj, timezone.now())

    # Reading one's own inbox needs no change permission; mark_read touches only one's own.
    @admin.action(description=_("Mark as read"), permissions=["view"])
    def mark_read(self, request: HttpRequest, queryset: QuerySet[Notification]) -> None:
        report_skipped(self, request, queryset, _("not in your inbox"))
        ids = list(queryset.values_list("pk", flat=True))
        count = notifications.mark_read(ids, request.user, timezone.now())
        text = ngettext(
            "%d notification marked as read.", "%d notifications marked as read.", count
        )
        self.message_user(request, text % count, messages.SUCCESS)


class SweepRunAdmin(ReadOnlyAdmin):
    """The sweep's consistency monitor: what each pass covered, did, and how late it was."""

    list_display = (
        "started_at",
        "swept_until",
        "full",
        "examined",
        "raised",
        "resolved",
        "woken",
        "suppressed",
        "chunk_progress",
        "lag",
        "finished_at",
    )
    list_filter = ("full",)
    date_hierarchy = "started_at"

    @admin.display(description=_("chunks done"))
    def chunk_progress(self, obj: SweepRun) -> str:
        return f"{obj.chunks_done}/{obj.chunks}"
