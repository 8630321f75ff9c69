"""Admin bases: scoped to what the user may see, and history that is read, never written back."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.translation import ngettext
from simple_history.admin import SimpleHistoryAdmin

from followup_visibility.engine import access, administration
from followup_visibility.models import Team


class ScopedAdminMixin:
    """Rows of opportunities the user may see: a rep their own, a manager their teams'.

    ``scope_path`` leads from the model to its opportunity ("" for the opportunity itself).
    Anything else is absent from lists and answers 404, so it does not reveal it exists.
    """

    scope_path = "opportunity"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        queryset: QuerySet[Any] = super().get_queryset(request)  # type: ignore[misc]
        return access.restrict(queryset, request.user, self.scope_path)

    def get_object(self, request: HttpRequest, object_id: str, from_field: Any = None) -> Any:
        obj = super().get_object(request, object_id, from_field)  # type: ignore[misc]
        if obj is None:
            # Django would redirect with "does not exist"; outside the user's scope a row
            # must not even be confirmed to exist, and a missing one answers the same.
            raise Http404
        return obj


class RecordHistoryAdmin(SimpleHistoryAdmin):
    """Simple-history's pages show old versions; they never write one back.

    Its "revert" form saves a historical instance over the row, bypassing the domain functions
    that keep our rules, and its pages find objects without ``get_queryset``: both are closed.
    """

    def _in_scope(self, request: HttpRequest, object_id: str) -> None:
        if self.get_object(request, unquote(object_id)) is None:
            raise Http404

    def history_view(
        self, request: HttpRequest, object_id: str, extra_context: Any = None
    ) -> HttpResponse:
        self._in_scope(request, object_id)
        return super().history_view(request, object_id, extra_context)  # type: ignore[no-any-return]

    def history_form_view(
        self, request: HttpRequest, object_id: str, version_id: str, extra_context: Any = None
    ) -> HttpResponse:
        if request.method != "GET":
            raise PermissionDenied
        self._in_scope(request, object_id)
        return super().history_form_view(  # type: ignore[no-any-return]
            request, object_id, version_id, extra_context
        )

    def revert_disabled(self, request: HttpRequest, obj: Any = None) -> bool:
        return True


class ReadOnlyMixin:
    """Rows the domain writes (deadlines, sweep runs, escalation steps, policy versions):
    read in the admin, never added, changed or deleted there."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReadOnlyChildInline(ReadOnlyMixin, admin.TabularInline):
    """Part of the parent's record: whoever may see the parent sees these rows."""

    extra = 0
    can_delete = False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        parent = self.admin_site._registry[self.parent_model]
        return bool(parent.has_view_or_change_permission(request, obj))


class AdministeredAdminMixin:
    """Configuration a user changes only inside the subtree of teams they manage.

    ``team_path`` leads from the model to the team a row configures ("" for a team itself);
    ``None`` marks a company-wide model, which only see-all users change. Rows outside the
    subtree stay readable (with the view permission) but not changeable or deletable, and the
    list's actions skip them with a message.
    """

    team_path: str | None = "team"

    def _administers(self, request: HttpRequest, obj: Any) -> bool:
        if self.team_path is None:
            return administration.administers_company(request.user)
        team_id = obj.pk if self.team_path == "" else getattr(obj, f"{self.team_path}_id")
        return administration.administers_team(request.user, team_id)

    def get_object(self, request: HttpRequest, object_id: str, from_field: Any = None) -> Any:
        obj = super().get_object(request, object_id, from_field)  # type: ignore[misc]
        if obj is None:
            raise Http404  # as every other page of the app answers a missing id
        return obj

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        if not super().has_add_permission(request, *args):  # type: ignore[misc]
            return False
        if self.team_path is None:
            return administration.administers_company(request.user)
        return administration.administered_team_ids(request.user) != set()

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        allowed = bool(super().has_change_permission(request, obj))  # type: ignore[misc]
        if not allowed or obj is None:
            return allowed
        return self._administers(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        allowed = bool(super().has_delete_permission(request, obj))  # type: ignore[misc]
        if not allowed or obj is None:
            return allowed
        return self._administers(request, obj)

    def administered(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        """``queryset`` limited to the rows ``request.user`` may change (for actions)."""
        if self.team_path is None:
            return queryset if administration.administers_company(request.user) else queryset.none()
        teams = administration.administered_team_ids(request.user)
        if teams is None:
            return queryset
        return queryset.filter(**{f"{self.team_path or 'pk'}__in": teams})


def selected_ids(request: HttpRequest) -> list[str]:
    """The keys ticked in a change list, as posted (an action's queryset may hold fewer)."""
    return request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)


def skipped(request: HttpRequest, queryset: QuerySet[Any], why: Any) -> list[tuple[int, str]]:
    """A warning saying how many ticked rows an action did not touch because ``queryset``
    left them out (a list filter hid them, they are out of reach, or they are gone), so that
    no refusal is silent; none when every ticked row was acted on."""
    if request.POST.get("select_across") == "1":
        return []  # "all N matching": the queryset is what was asked for
    ticked = set(selected_ids(request))
    if not ticked:
        return []
    present = {str(pk) for pk in queryset.filter(pk__in=ticked).values_list("pk", flat=True)}
    count = len(ticked - present)
    if not count:
        return []
    text = ngettext(
        "%(count)d selected row was not acted on: %(why)s.",
        "%(count)d selected rows were not acted on: %(why)s.",
        count,
    ) % {"count": count, "why": why}
    return [(messages.WARNING, text)]


def report_skipped(
    model_admin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Any], why: Any
) -> None:
    """:func:`skipped`, shown at once (for actions without a form page)."""
    for level, text in skipped(request, queryset, why):
        model_admin.message_user(request, text, level)


def admin_url(model_admin: Any, name: str, *args: Any) -> str:
    """``reverse`` for the admin site ``model_admin`` is registered on (a host may use its
    own site, whose instance namespace is not ``admin``)."""
    return reverse(f"admin:{name}", args=args, current_app=model_admin.admin_site.name)


class ParentGatedInline:
    """Rows edited as part of their parent (a calendar's windows, a policy's levels): they
    change only when the user may change the parent itself."""

    def _parent_allows(self, request: HttpRequest, obj: Any) -> bool:
        parent = self.admin_site._registry[self.parent_model]  # type: ignore[attr-defined]
        return obj is None or bool(parent.has_change_permission(request, obj))

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        allowed = super().has_add_permission(request, obj)  # type: ignore[misc]
        return bool(allowed) and self._parent_allows(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        allowed = super().has_change_permission(request, obj)  # type: ignore[misc]
        return bool(allowed) and self._parent_allows(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        allowed = super().has_delete_permission(request, obj)  # type: ignore[misc]
        return bool(allowed) and self._parent_allows(request, obj)


def administered_teams(request: HttpRequest) -> dict[str, Any]:
    """Form field options for a row's team: the teams the user administers, required when
    that is not every team (a row without a team is company-wide)."""
    teams = administration.administered_team_ids(request.user)
    if teams is None:
        return {}
    return {"queryset": Team.objects.filter(pk__in=teams), "required": True}
