"""Admin bases: scoped to what the user may see, and history that is read, never written back."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from simple_history.admin import SimpleHistoryAdmin

from followup_visibility.engine import access


class ScopedAdminMixin:
    """Rows of opportunities the user may see: a rep their own, a manager their teams'.

    ``scope_path`` leads from the model to its opportunity ("" for the opportunity itself).
    Anything else is absent from lists and answers 404, so it does not reveal it exists.
    """

    scope_path = "opportunity"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        queryset: QuerySet[Any] = super().get_queryset(request)  # type: ignore[misc]
        return access.restrict(queryset, request.user, self.scope_path)


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
