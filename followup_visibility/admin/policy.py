"""SLA policies: each save publishes a new immutable version; "Preview" shows its effect first."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib import admin
from django.db.models import Max, OuterRef, QuerySet, Subquery
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.html import format_html_join
from django.utils.translation import gettext_lazy as _

from followup_visibility.admin.forms import (
    APPLY_OPEN,
    SlaPolicyForm,
    format_duration,
    version_field_label,
)
from followup_visibility.admin.scoped import (
    AdministeredAdminMixin,
    ReadOnlyChildInline,
    administered_teams,
)
from followup_visibility.choices import AlertSignal
from followup_visibility.config import policies, preview
from followup_visibility.models import SlaPolicy, SlaPolicyVersion
from followup_visibility.models.policy import DURATION_FIELDS

_DURATIONS_HELP = _(
    "Durations are business time: only the calendar's working hours count. Enter "
    "hours:minutes:seconds: 4:00:00 is four working hours, 40:00:00 five 8-hour days; "
    "“1 day, 0:00:00” means 24 working hours, not one working day. Leave a duration empty "
    "to inherit it from the broader policy (segment, team, then the company default)."
)


class VersionInline(ReadOnlyChildInline):
    """The versions are the policy's content and its audit trail: deadlines point at them,
    so they are never edited."""

    model = SlaPolicyVersion
    fields = (
        "number",
        "effective_from",
        "applies_to_open",
        "retired",
        "created_by",
        "comment",
        "durations",
    )
    readonly_fields = fields
    ordering = ("-number",)
    verbose_name_plural = _("published versions (newest first)")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return super().get_queryset(request).select_related("created_by")

    @admin.display(description=_("durations"))
    def durations(self, obj: SlaPolicyVersion) -> str:
        items = [
            (version_field_label(name), format_duration(getattr(obj, name)))
            for name in DURATION_FIELDS.values()
            if getattr(obj, name) is not None
        ]
        items += [
            (_("stage “%s”") % stage, format_duration(timedelta(seconds=float(secs))))
            for stage, secs in obj.stage_limits.items()
        ]
        return format_html_join(", ", "{}: {}", items) or "-"


class SlaPolicyAdmin(AdministeredAdminMixin, admin.ModelAdmin):
    """A manager adds and changes the policies of the teams they manage; company-wide ones
    (the default, and a segment's policy for every team) need the see-all permission."""

    form = SlaPolicyForm
    list_display = ("name", "scope", "latest_version", "retired", "is_default")
    list_select_related = ("team", "segment")
    list_filter = ("is_default", "team", "segment")
    search_fields = ("name", "team__name", "segment__name")
    inlines = (VersionInline,)

    def get_queryset(self, request: HttpRequest) -> QuerySet[SlaPolicy]:
        queryset: QuerySet[SlaPolicy] = super().get_queryset(request)
        newest = SlaPolicyVersion.objects.filter(policy=OuterRef("pk")).order_by("-number")
        return queryset.annotate(
            latest_version=Max("versions__number"),
            latest_retired=Subquery(newest.values("retired")[:1]),
        )

    @admin.display(description=_("scope"))
    def scope(self, obj: SlaPolicy) -> str:
        return obj.scope_label

    @admin.display(description=_("version"), ordering="latest_version")
    def latest_version(self, obj: Any) -> str:
        return f"v{obj.latest_version}" if obj.latest_version else "-"

    @admin.display(description=_("retired"), boolean=True)
    def retired(self, obj: Any) -> bool:
        return bool(obj.latest_retired)

    def get_form(
        self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any
    ) -> Any:
        # Only the policy row's own fields; the form adds the version's fields itself.
        kwargs["fields"] = ["name"] if obj is not None else ["name", "team", "segment"]
        return super().get_form(request, obj, change, **kwargs)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return ("scope",) if obj is not None else ()

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "team":
            kwargs.update(administered_teams(request))
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            scope: tuple[str, ...] = ("name", "team", "segment")
        else:
            scope = ("name", "scope")
            if not self.has_change_permission(request, obj):
                return [(None, {"fields": scope})]  # viewers read the versions below
        publish = ["apply_to", "comment"]
        if obj is not None and not obj.is_default:
            publish.append("retired")
        return [
            (None, {"fields": scope}),
            (
                _("Next version") if obj is not None else _("First version"),
                {
                    "fields": [*DURATION_FIELDS.values(), "stage_limits"],
                    "description": _DURATIONS_HELP,
                },
            ),
            (_("Publish"), {"fields": publish}),
        ]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Versions are kept for the deadlines and history that name them: a scope is retired
        # (a version with "retired" ticked), never deleted.
        return False

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Any = None,
    ) -> HttpResponse:
        form = context["adminform"].form
        if getattr(form, "previewing", False) and not form.errors:
            context["preview"] = self._preview(form, obj)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def _preview(self, form: SlaPolicyForm, obj: SlaPolicy | None) -> dict[str, Any]:
        result = preview.what_if(
            form.version_values(),
            now=timezone.now(),
            policy=obj,
            team=form.cleaned_data.get("team"),
            segment=form.cleaned_data.get("segment"),
            retired=bool(form.cleaned_data.get("retired")),
        )
        rows = [
            {
                **row,
                "signal": AlertSignal(row["signal"]).label,
                "change": f"{row['change']:+d}" if row["change"] else "0",
            }
            for row in result.rows()
        ]
        change = result.proposed_opportunities - result.current_opportunities
        return {
            "rows": rows,
            "examined": result.examined,
            "current": result.current_opportunities,
            "proposed": result.proposed_opportunities,
            "change": f"{change:+d}" if change else "0",
        }

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        now, values = timezone.now(), form.version_values()
        apply_to_open = form.cleaned_data["apply_to"] == APPLY_OPEN
        comment = form.cleaned_data.get("comment", "")
        if not change:
            created = policies.create_policy(
                obj.name,
                values,
                now=now,
                team=obj.team,
                segment=obj.segment,
                apply_to_open=apply_to_open,
                by=request.user,
                comment=comment,
            )
            # The admin goes on with ``obj`` (change log, redirect): make it the created row.
            obj.pk = created.pk
            obj.refresh_from_db()
            return
        if "name" in form.changed_data:
            obj.save(update_fields=["name"])
        if not form.publishes():
            self.message_user(
                request, _("Nothing in the next version changed: no version published.")
            )
            return
        version = policies.publish_version(
            obj,
            values,
            now=now,
            apply_to_open=apply_to_open,
            by=request.user,
            comment=comment,
            retired=bool(form.cleaned_data.get("retired")),
        )
        if apply_to_open:
            text = _("Published version %(n)d: open opportunities' deadlines are recomputed.")
        else:
            text = _("Published version %(n)d: it applies to opportunities arriving from now on.")
        self.message_user(request, text % {"n": version.number})
