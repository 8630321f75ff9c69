"""Who reads and who changes company configuration, as the admin decides it."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy as _
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from followup_visibility.api import base
from followup_visibility.engine import administration


def may_view(model_name: str) -> type[BasePermission]:
    """Active, with the view or the change permission (the admin shows the page read-only to
    either)."""
    wanted = [f"followup_visibility.{action}_{model_name}" for action in ("view", "change")]

    class MayView(base.ActiveUser):
        def has_permission(self, request: Request, view: Any) -> bool:
            user = request.user
            return super().has_permission(request, view) and any(user.has_perm(p) for p in wanted)

    MayView.__name__ = f"MayView({model_name})"
    return MayView


class CompanyWide(base.ActiveUser):
    """Company-wide configuration changes only for users who see everything."""

    message = _("Only users with the see-all permission change company-wide configuration.")

    def has_permission(self, request: Request, view: Any) -> bool:
        return super().has_permission(request, view) and administration.administers_company(
            request.user
        )
