"""Suppression rules (created and ended through ``suppression``) and inhibition rules."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db.models import Q, QuerySet
from django.http import Http404, HttpRequest
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from followup_visibility.admin.forms import call_each, format_duration, refusal_messages
from followup_visibility.admin.scoped import (
    AdministeredAdminMixin,
    RecordHistoryAdmin,
    report_skipped,
)
from followup_visibility.choices import AlertSignal, AlertStatus
from followup_visibility.config import suppressions
from followup_visibility.engine import access, administration
from followup_visibility.models import Suppression, Team

_SUPPRESSION_HELP = _(
    "Every matcher you fill in must match; empty ones match everything, and at least one is "
    "needed. While the rule is active no alert is raised for what it matches, and matching "
    "alerts leave the register at once (they come back when the rule ends). To bulk-suppress "
    "old leads, set “arrived more than” to “90 days” (and a segment or team to keep it to "
    "that part of the business)."
)
_MATCHERS = ("opportunity", "identity", "segment", "owner", "team", "signal", "older_than")


class SuppressionForm(forms.ModelForm):
    """The add form; ``suppressions.build`` validates and normalizes, ``suppressions.add`` saves."""

    identity = forms.CharField(
        label=_("Contact identity"),
        max_length=255,
        required=False,
        help_text=_("A phone number or email address, in any format: it is normalized."),
    )

    #: Set by the admin before validation: who creates the rule, and when.
    by: Any = None
    now: Any = None

    class Meta:
        model = Suppression
        fields = [
            "opportunity",
            "segment",
            "owner",
            "team",
            "signal",
            "older_than",
            "starts_at",
            "ends_at",
            "comment",
        ]
        help_texts = {
            "starts_at": _("Empty: now."),
            "older_than": _(
                "Opportunities that arrived longer ago than this (wall-clock time), such as "
                "“90 days”. A bare number is seconds."
            ),
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "starts_at" in self.fields:  # not on the read-only page of an existing rule
            self.fields["starts_at"].required = False

    def _post_clean(self) -> None:
        # Instead of the model's validation: the domain's, which also normalizes the contact
        # identity; its errors become field errors. Nothing is saved here (save_model does).
        if self.errors:
            return
        data = self.cleaned_data
        try:
            suppressions.check_scope(
                self.by,
                opportunity=data.get("opportunity"),
                owner=data.get("owner"),
                team=data.get("team"),
            )
            self.instance = suppressions.build(
                comment=data["comment"],
                by=self.by,
                now=self.now,
                **suppressions.rule_fields(data),
            )
        except ValidationError as exc:
            if not hasattr(exc, "error_dict"):
                self.add_error(None, exc)
                return
            for name, error_list in exc.error_dict.items():
                self.add_error(name if name in self.fields else None, error_list)


class StateFilter(admin.SimpleListFilter):
    title = _("state")
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [("active", _("Active")), ("scheduled", _("Not started")), ("ended", _("Ended"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        now = timezone.now()
        ended = Q(ends_at__lte=now)
        if self.value() == "active":
            return queryset.filter(starts_at__lte=now).exclude(ended)
        if self.value() == "scheduled":
            return queryset.filter(starts_at__gt=now)
        if self.value() == "ended":
            return queryset.filter(ended)
        return queryset


def _age(value: timedelta) -> str:
    if value % timedelta(days=1) == timedelta(0):
        days = value.days
        return ngettext("%d day", "%d days", days) % days
    return format_duration(value)


class SuppressionAdmin(RecordHistoryAdmin):
    form = SuppressionForm
    list_display = (
        "comment",
        "matchers",
        "starts_at",
        "ends_at",
        "state",
        "created_by",
        "created_at",
    )
    list_filter = (StateFilter, "signal", "segment", "team")
    list_select_related = ("opportunity", "segment", "owner", "team", "created_by")
    search_fields = ("comment", "identity_key", "opportunity__title")
    raw_id_fields = ("opportunity", "owner")
    date_hierarchy = "starts_at"
    actions = ("end_now",)

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return [
                (_("Matches"), {"fields": _MATCHERS, "description": _SUPPRESSION_HELP}),
                (_("Active"), {"fields": ("starts_at", "ends_at", "comment")}),
            ]
        return [
            (_("Matches"), {"fields": ("matchers",)}),
            (_("Active"), {"fields": ("starts_at", "ends_at", "state", "comment")}),
            (_("Record"), {"fields": ("created_by", "created_at", "held_alerts")}),
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return ("matchers", "state", "held_alerts") if obj is not None else ()

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        # A manager sees and ends the rules of their scope (and their own), not the company's;
        # any other rule answers 404.
        return access.suppressions_for(request.user).select_related(*self.list_select_related)

    def get_object(self, request: HttpRequest, object_id: str, from_field: Any = None) -> Any:
        obj = super().get_object(request, object_id, from_field)
        if obj is None:
            raise Http404  # outside the user's scope: not even confirmed to exist
        return obj

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        # An id outside the user's scope is "not one of the available choices", exactly as
        # one that does not exist (check_scope then confines what is left).
        user: Any = request.user
        if db_field.name == "opportunity":
            kwargs["queryset"] = access.opportunities_for(user)
        elif not access.sees_everything(user) and db_field.name in ("owner", "team"):
            managed = access.managed_team_ids(user)
            if db_field.name == "team":
                kwargs["queryset"] = Team.objects.filter(pk__in=managed)
            else:
                people = administration.people(managed) | get_user_model().objects.filter(
                    pk=user.pk
                )
                kwargs["queryset"] = people.distinct()
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        return {"starts_at": timezone.now(), **super().get_changeform_initial_data(request)}

    def get_form(
        self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any
    ) -> Any:
        form = super().get_form(request, obj, change, **kwargs)
        # The domain's validation (see SuppressionForm) records who creates the rule, and when.
        return type(form.__name__, (form,), {"by": request.user, "now": timezone.now()})

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        # Not obj.save(): the rule is saved with its history and applied to the alerts at once.
        suppressions.add(obj, by=request.user, now=form.now)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None:
            return False  # a rule is a record: end it, and create another if need be
        return bool(super().has_change_permission(request))

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Alerts name the rule that held them, so a rule that started is ended, not deleted;
        # one that has not started held nothing and cannot be ended yet.
        if obj is not None and obj.starts_at <= timezone.now():
            return False
        return bool(super().has_delete_permission(request, obj))

    def get_actions(self, request: HttpRequest) -> Any:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # it would not check each rule's start
        return actions

    @admin.display(description=_("matches"))
    def matchers(self, obj: Suppression) -> str:
        parts = []
        if obj.opportunity_id is not None:
            parts.append(f"{_('opportunity')} {obj.opportunity}")
        if obj.identity_key:
            parts.append(f"{obj.get_identity_kind_display()} {obj.identity_key}")
        if obj.segment_id is not None:
            parts.append(f"{_('segment')} {obj.segment}")
        if obj.owner_id is not None:
            parts.append(f"{_('owner')} {obj.owner}")
        if obj.team_id is not None:
            parts.append(f"{_('team')} {obj.team}")
        if obj.signal:
            parts.append(f"{_('signal')} {AlertSignal(obj.signal).label}")
        if obj.older_than is not None:
            parts.append(f"{_('arrived more than')} {_age(obj.older_than)} {_('ago')}")
        return "; ".join(parts) or "-"

    @admin.display(description=_("state"))
    def state(self, obj: Suppression) -> str:
        now = timezone.now()
        if obj.ends_at is not None and obj.ends_at <= now:
            return str(_("Ended"))
        if obj.starts_at > now:
            return str(_("Not started"))
        return str(_("Active"))

    @admin.display(description=_("alerts held now"))
    def held_alerts(self, obj: Suppression) -> int:
        return obj.alerts.filter(status=AlertStatus.SUPPRESSED).count()

    @admin.action(description=_("End selected rules now"), permissions=["change"])
    def end_now(self, request: HttpRequest, queryset: QuerySet[Suppression]) -> None:
        report_skipped(self, request, queryset, _("not in this list"))
        now = timezone.now()
        done, refused = call_each(
            queryset.order_by("pk"),
            lambda rule: suppressions.end(rule, by=request.user, now=now),
        )
        if done:
            text = ngettext("%d rule ended.", "%d rules ended.", len(done)) % len(done)
            self.message_user(request, text, messages.SUCCESS)
        for level, text in refusal_messages(refused):
            self.message_user(request, text, level)


class InhibitionRuleAdmin(AdministeredAdminMixin, RecordHistoryAdmin):
    team_path = None  # company-wide: they silence signals for every team
    list_display = ("source", "target", "is_active", "comment")
    list_filter = ("is_active", "source", "target")
    search_fields = ("comment",)
