"""The unfollowed register in the admin: the same ranked rows the API serves, for one screen."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.translation import gettext as _

from followup_visibility.choices import Reason, Severity
from followup_visibility.models import TrackedOpportunity
from followup_visibility.register import rows as register

PAGE_SIZE = 50


def _filtered(
    request: HttpRequest, now: Any
) -> tuple[QuerySet[TrackedOpportunity], dict[str, str]]:
    """The user's register with the page's filters (unknown values are ignored, as the
    admin's own list filters ignore them)."""
    queryset = register.unfollowed(now, user=request.user).select_related(
        "owner", "team", "segment"
    )
    chosen: dict[str, str] = {}
    reason = request.GET.get("reason", "")
    if reason in Reason.values:
        queryset, chosen["reason"] = register.with_reason(queryset, [reason]), reason
    severity = request.GET.get("severity", "")
    if severity in {s.name.lower() for s in Severity}:
        level = Severity[severity.upper()]
        queryset, chosen["severity"] = register.with_severity(queryset, [level]), severity
    ordering = request.GET.get("o", "priority")
    if ordering in register.ORDERINGS:
        queryset = queryset.order_by(*register.ORDERINGS[ordering])
        chosen["o"] = ordering
    return queryset, chosen


def register_view(model_admin: admin.ModelAdmin[Any], request: HttpRequest) -> TemplateResponse:
    """``trackedopportunity/register/``: one row per unfollowed opportunity, ranked, with its
    reasons, severity, business-time age and each factor's share of its priority."""
    now = timezone.now()
    queryset, chosen = _filtered(request, now)
    page = Paginator(queryset, PAGE_SIZE).get_page(request.GET.get("p"))
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.model._meta,
        "title": _("Unfollowed register"),
        "rows": register.rows(list(page.object_list), now),
        "page": page,
        "chosen": chosen,
        "reasons": Reason.choices,
        "severities": [s.name.lower() for s in Severity],
        "orderings": list(register.ORDERINGS),
        "now": now,
    }
    return TemplateResponse(request, "admin/followup_visibility/register.html", context)
