"""The queue's filters: ``alerts/``' query parameters, and ``bulk/``'s ``filter`` object."""

from __future__ import annotations

from typing import Any

import django_filters
from django.db.models import Q, QuerySet
from django.utils.translation import gettext_lazy as _

from followup_visibility.api.fields import SEVERITY_NAMES
from followup_visibility.api.filters import AwareDateTimeFilter, CodeFilter, KeyFilter
from followup_visibility.choices import ACTIVE_ALERT_STATUSES, AlertSignal, AlertStatus
from followup_visibility.engine import teams
from followup_visibility.models import Alert


class AlertFilter(django_filters.FilterSet):
    """The list's filters; ``bulk/`` takes the same names as its ``filter`` object."""

    # ``distinct=False``: no join repeats an alert, and DISTINCT would sort the whole queue.
    signal = django_filters.MultipleChoiceFilter(choices=AlertSignal.choices, distinct=False)
    severity = django_filters.MultipleChoiceFilter(
        choices=[(name, name) for name in SEVERITY_NAMES], method="with_severity", distinct=False
    )
    status = django_filters.MultipleChoiceFilter(
        choices=AlertStatus.choices,
        distinct=False,
        help_text=_("Default: the active statuses (open, acknowledged, snoozed, suppressed)."),
    )
    team = KeyFilter(method="in_team", help_text=_("A team's id: it and the teams below it."))
    owner = KeyFilter(field_name="opportunity__owner_id", help_text=_("A user's id."))
    segment = CodeFilter(field_name="opportunity__segment__code", help_text=_("A segment's code."))
    raised_after = AwareDateTimeFilter(field_name="raised_at", lookup_expr="gte")
    raised_before = AwareDateTimeFilter(field_name="raised_at", lookup_expr="lt")
    due_after = AwareDateTimeFilter(field_name="due_at", lookup_expr="gte")
    due_before = AwareDateTimeFilter(field_name="due_at", lookup_expr="lt")

    class Meta:
        model = Alert
        fields: list[str] = []

    def is_valid(self) -> bool:
        valid: bool = super().is_valid()
        # A parameter given empty (``?due_before=``) is a mistake, not "no filter".
        for name in self.filters:
            values = self.data.getlist(name) if hasattr(self.data, "getlist") else []
            if "" in values:
                self.form.add_error(name, _("Give a value, or leave the parameter out."))
                valid = False
        return valid

    def filter_queryset(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        queryset = super().filter_queryset(queryset)
        if not self.form.cleaned_data.get("status"):
            # Closed episodes are the history, not the queue.
            queryset = queryset.filter(status__in=ACTIVE_ALERT_STATUSES)
        return queryset

    def in_team(self, queryset: QuerySet[Any], name: str, value: int) -> QuerySet[Any]:
        return queryset.filter(opportunity__team__in=teams.with_subteams([value]))

    def with_severity(self, queryset: QuerySet[Any], name: str, value: list[str]) -> QuerySet[Any]:
        if not value:
            return queryset
        # On the annotation ``get_queryset`` adds: the derived severity at the page's moment.
        return queryset.filter(Q(severity__in=[int(SEVERITY_NAMES[v]) for v in value]))
