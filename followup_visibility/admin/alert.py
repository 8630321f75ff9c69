"""Alert triage: the alerts a user may see, ranked by severity, changed only through actions."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.db.models import F, Max, QuerySet
from django.http import Http404, HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from followup_visibility.admin.forms import (
    SUPPRESS_ALL,
    DismissForm,
    Message,
    ResolveForm,
    SnoozeForm,
    SuppressAlertsForm,
    action_page,
    call_each,
    format_duration,
    refusal_messages,
)
from followup_visibility.admin.scoped import (
    ReadOnlyChildInline,
    RecordHistoryAdmin,
    admin_url,
    skipped,
)
from followup_visibility.alerting import lifecycle
from followup_visibility.choices import ACTIVE_ALERT_STATUSES, AlertSignal, AlertStatus, Severity
from followup_visibility.config import suppressions
from followup_visibility.engine import access, severity
from followup_visibility.models import (
    Alert,
    Escalation,
    EscalationLevel,
    Notification,
    Suppression,
)


class StatusFilter(admin.SimpleListFilter):
    """Active alerts unless asked otherwise: closed episodes are the history, not the queue."""

    title = _("status")
    parameter_name = "status"
    ALL = "all"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [*AlertStatus.choices, (self.ALL, _("All"))]

    def choices(self, changelist: Any) -> Any:
        choices = list(super().choices(changelist))
        choices[0]["display"] = _("Active")
        return choices

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value is None:
            return queryset.filter(status__in=ACTIVE_ALERT_STATUSES)
        if value == self.ALL:
            return queryset
        return queryset.filter(status=value)


class SeverityFilter(admin.SimpleListFilter):
    """Filters on the severity ``get_queryset`` computes in SQL, so paging stays in the database."""

    title = _("severity")
    parameter_name = "severity"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [(str(value), label) for value, label in Severity.choices]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value is None or not value.isdigit():
            return queryset
        return queryset.filter(severity=int(value))


class EscalationLevelFilter(admin.SimpleListFilter):
    """Levels from the policies (a few rows), not a DISTINCT over every alert."""

    title = _("escalation level")
    parameter_name = "escalation_level"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        top = EscalationLevel.objects.aggregate(top=Max("number"))["top"] or 0
        return [("0", _("Not escalated")), *((str(n), str(n)) for n in range(1, top + 1))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value is None or not value.isdigit():
            return queryset
        return queryset.filter(escalation_level=int(value))


class _AlertChildInline(ReadOnlyChildInline):
    show_change_link = False


class EscalationInline(_AlertChildInline):
    model = Escalation
    fields = ("level", "fired_at", "outcome", "recipient", "team", "policy", "note")
    readonly_fields = fields
    ordering = ("level",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return super().get_queryset(request).select_related("recipient", "team", "policy")


class NotificationInline(_AlertChildInline):
    model = Notification
    fields = ("created_at", "recipient", "kind", "channel", "subject", "sent_at", "read_at")
    readonly_fields = fields
    ordering = ("-created_at", "-id")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return super().get_queryset(request).select_related("recipient")


class AlertAdmin(RecordHistoryAdmin):
    list_display = (
        "opportunity_link",
        "signal",
        "status",
        "severity_label",
        "due_at",
        "raised_at",
        "escalation_level",
        "owner",
        "team",
        "segment",
    )
    list_display_links = ("signal",)
    list_filter = (
        StatusFilter,
        SeverityFilter,
        "signal",
        # Every segment and team (few rows), rather than a DISTINCT over every alert.
        "opportunity__segment",
        "opportunity__team",
        EscalationLevelFilter,
    )
    list_select_related = ("opportunity__owner", "opportunity__team", "opportunity__segment")
    search_fields = ("opportunity__title",)
    show_full_result_count = False  # a count of every alert ever raised, on each page
    actions = ("acknowledge", "snooze", "dismiss", "resolve", "suppress")
    inlines = (EscalationInline, NotificationInline)
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "opportunity_link",
                    "signal",
                    "status",
                    "severity_label",
                    "episode_at",
                    "clock_start",
                    "due_at",
                    "business_sla",
                    "raised_at",
                )
            },
        ),
        (
            _("Triage"),
            {
                "fields": (
                    "acknowledged_at",
                    "acknowledged_by",
                    "snoozed_at",
                    "snoozed_until",
                    "snooze_condition",
                    "snooze_reason",
                    "suppression",
                    "dismissed_at",
                    "dismissed_reason",
                    "resolved_at",
                    "resolution",
                    "resolution_note",
                    "resolved_touch",
                    "changed_by",
                )
            },
        ),
        (_("Escalation"), {"fields": ("escalation_level", "escalate_at")}),
        (_("History"), {"fields": ("history_log",)}),
    )
    readonly_fields = ("opportunity_link", "severity_label", "business_sla", "history_log")

    # Scope and reading -------------------------------------------------------------------------

    def get_queryset(self, request: HttpRequest) -> QuerySet[Alert]:
        # One user's view: a rep their own alerts, a manager their teams', ops everything.
        # Severity is derived from the clock, never stored, so it is computed here in SQL.
        return severity.annotate(access.alerts_for(request.user), timezone.now())

    def get_ordering(self, request: HttpRequest) -> Any:
        return (F("severity").desc(nulls_last=True), "due_at")

    def get_object(self, request: HttpRequest, object_id: str, from_field: Any = None) -> Any:
        obj = super().get_object(request, object_id, from_field)
        if obj is None:
            # Django would redirect with "does not exist"; outside the user's scope an alert
            # must not even be confirmed to exist.
            raise Http404
        return obj

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # alerts are raised by the sweep

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None:
            # The change page is read-only: an alert changes only through the actions, which
            # keep the lifecycle's rules and record who did what.
            return False
        return bool(super().has_change_permission(request))

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # dismiss or resolve instead; the episode stays on record

    def has_suppress_permission(self, request: HttpRequest) -> bool:
        """Suppressing writes a rule as well as changing alerts: it needs both permissions."""
        opts = Suppression._meta
        return self.has_change_permission(request) and request.user.has_perm(
            f"{opts.app_label}.{get_permission_codename('add', opts)}"
        )

    @admin.display(description=_("opportunity"), ordering="opportunity__title")
    def opportunity_link(self, obj: Alert) -> str:
        url = admin_url(self, "followup_visibility_trackedopportunity_change", obj.opportunity_id)
        return format_html('<a href="{}">{}</a>', url, obj.opportunity)

    @admin.display(description=_("severity"), ordering="severity")
    def severity_label(self, obj: Any) -> str:
        value = getattr(obj, "severity", None)
        return str(Severity(value).label) if value is not None else "-"

    @admin.display(description=_("owner"), ordering="opportunity__owner")
    def owner(self, obj: Alert) -> Any:
        return obj.opportunity.owner or "-"

    @admin.display(description=_("team"), ordering="opportunity__team__name")
    def team(self, obj: Alert) -> Any:
        return obj.opportunity.team or "-"

    @admin.display(description=_("segment"), ordering="opportunity__segment__name")
    def segment(self, obj: Alert) -> Any:
        return obj.opportunity.segment or "-"

    @admin.display(description=_("SLA (business time)"))
    def business_sla(self, obj: Alert) -> str:
        return format_duration(obj.sla)

    @admin.display(description=_("changes"))
    def history_log(self, obj: Alert) -> str:
        rows = obj.history.select_related("history_user").order_by("-history_date", "-history_id")
        items = [
            (
                timezone.localtime(row.history_date).strftime("%Y-%m-%d %H:%M"),
                row.history_user or _("system"),
                AlertStatus(row.status).label,
                row.history_change_reason or "",
            )
            for row in rows
        ]
        return format_html(
            "<table><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead>"
            "<tbody>{}</tbody></table>",
            _("when"),
            _("by"),
            _("status"),
            _("why"),
            format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", items),
        )

    # Actions: each calls the lifecycle function per alert --------------------------------------

    def _report(
        self, skip: list[Message], done: list[Any], refused: list[Any], success: str
    ) -> list[Message]:
        report = refusal_messages(refused, describe)
        if done:
            report.insert(0, (messages.SUCCESS, success % len(done)))
        return report + skip

    @admin.action(description=_("Acknowledge selected alerts"), permissions=["change"])
    def acknowledge(self, request: HttpRequest, queryset: QuerySet[Alert]) -> None:
        now, skip = timezone.now(), skipped(request, queryset, _SKIPPED)
        done, refused = call_each(
            queryset.order_by("pk"),
            lambda alert: lifecycle.acknowledge(alert, by=request.user, now=now),
        )
        text = ngettext("%d alert acknowledged.", "%d alerts acknowledged.", len(done))
        for level, message in self._report(skip, done, refused, text):
            self.message_user(request, message, level)

    @admin.action(description=_("Snooze selected alerts…"), permissions=["change"])
    def snooze(self, request: HttpRequest, queryset: QuerySet[Alert]) -> TemplateResponse | None:
        def perform(form: forms.Form) -> list[Message]:
            now, data = timezone.now(), form.cleaned_data
            skip = skipped(request, queryset, _SKIPPED)  # before acting: closed ones leave
            done, refused = call_each(
                queryset.order_by("pk"),
                lambda alert: lifecycle.snooze(
                    alert,
                    reason=data["reason"],
                    by=request.user,
                    now=now,
                    until=data["until"],
                    condition=data["condition"],
                ),
                form.fields,
            )
            return self._report(
                skip,
                done,
                refused,
                ngettext("%d alert snoozed.", "%d alerts snoozed.", len(done)),
            )

        return action_page(
            self,
            request,
            queryset,
            form_class=SnoozeForm,
            title=_("Snooze alerts"),
            submit=_("Snooze"),
            perform=perform,
            describe=describe,
        )

    @admin.action(description=_("Dismiss selected alerts…"), permissions=["change"])
    def dismiss(self, request: HttpRequest, queryset: QuerySet[Alert]) -> TemplateResponse | None:
        def perform(form: forms.Form) -> list[Message]:
            now, reason = timezone.now(), form.cleaned_data["reason"]
            skip = skipped(request, queryset, _SKIPPED)  # before acting: closed ones leave
            done, refused = call_each(
                queryset.order_by("pk"),
                lambda alert: lifecycle.dismiss(alert, reason=reason, by=request.user, now=now),
                form.fields,
            )
            return self._report(
                skip,
                done,
                refused,
                ngettext("%d alert dismissed.", "%d alerts dismissed.", len(done)),
            )

        return action_page(
            self,
            request,
            queryset,
            form_class=DismissForm,
            title=_("Dismiss alerts"),
            submit=_("Dismiss"),
            perform=perform,
            describe=describe,
        )

    @admin.action(description=_("Resolve selected alerts by hand…"), permissions=["change"])
    def resolve(self, request: HttpRequest, queryset: QuerySet[Alert]) -> TemplateResponse | None:
        def perform(form: forms.Form) -> list[Message]:
            now, evidence = timezone.now(), form.cleaned_data["evidence"]
            skip = skipped(request, queryset, _SKIPPED)  # before acting: closed ones leave
            done, refused = call_each(
                queryset.order_by("pk"),
                lambda alert: lifecycle.resolve(alert, evidence=evidence, by=request.user, now=now),
                form.fields,
            )
            return self._report(
                skip,
                done,
                refused,
                ngettext("%d alert resolved.", "%d alerts resolved.", len(done)),
            )

        return action_page(
            self,
            request,
            queryset,
            form_class=ResolveForm,
            title=_("Resolve alerts by hand"),
            submit=_("Resolve"),
            perform=perform,
            describe=describe,
        )

    @admin.action(description=_("Suppress selected alerts…"), permissions=["suppress"])
    def suppress(self, request: HttpRequest, queryset: QuerySet[Alert]) -> TemplateResponse | None:
        def perform(form: forms.Form) -> list[Message]:
            now, data = timezone.now(), form.cleaned_data
            skip = skipped(request, queryset, _SKIPPED)  # before acting: held ones leave
            # One rule per opportunity (and signal): grouped, since several selected alerts
            # may share an opportunity and one rule covers them all.
            groups: dict[str, set[Any]] = defaultdict(set)
            for opportunity_id, signal in queryset.values_list("opportunity_id", "signal"):
                groups["" if data["scope"] == SUPPRESS_ALL else signal].add(opportunity_id)
            created: list[Suppression] = []

            def suppress_group(group: tuple[str, set[Any]]) -> None:
                signal, opportunity_ids = group
                created.extend(
                    suppressions.suppress_opportunities(
                        sorted(opportunity_ids),
                        comment=data["comment"],
                        by=request.user,
                        now=now,
                        ends_at=data["ends_at"],
                        signal=signal,
                    )
                )

            _done, refused = call_each(sorted(groups.items()), suppress_group, form.fields)
            rules = len(created)
            report: list[Message] = [
                (messages.WARNING, f"{_signal_label(signal)}: {' '.join(exc.messages)}")
                for (signal, _ids), exc in refused
            ]
            if rules:
                text = ngettext(
                    "%d suppression rule created.", "%d suppression rules created.", rules
                )
                report.insert(0, (messages.SUCCESS, text % rules))
            return report + skip

        return action_page(
            self,
            request,
            queryset,
            form_class=SuppressAlertsForm,
            title=_("Suppress alerts"),
            submit=_("Suppress"),
            perform=perform,
            describe=describe,
        )


#: Why a ticked alert may be missing from an action's queryset.
_SKIPPED = _(
    "closed, or hidden by the list's filters (the status filter shows active alerts unless "
    "asked otherwise), or no longer yours to act on"
)


def describe(alert: Alert) -> str:
    """An alert as triage names it: what is wrong, and where (its status may have moved on)."""
    return f"{alert.get_signal_display()}: {alert.opportunity}"


def _signal_label(signal: str) -> str:
    return str(AlertSignal(signal).label) if signal else str(_("all signals"))
