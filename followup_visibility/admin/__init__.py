"""The admin: the follow-up record, alert triage, and their configuration.

Django's autodiscovery imports this package, which registers the model admins on the sites
``FOLLOWUP_VISIBILITY_ADMIN_SITES`` names (Django's default site unless set). A host that
sends its staff to an admin site of its own names that site there, or sets the setting to
``[]`` and calls :func:`register` with its site itself.
"""

from __future__ import annotations

from typing import Any

from django.contrib.admin import AdminSite, ModelAdmin
from django.db.models import Model

from followup_visibility.admin.alert import AlertAdmin
from followup_visibility.admin.calendar import CalendarAdmin
from followup_visibility.admin.deadline import DeadlineAdmin
from followup_visibility.admin.escalation import (
    EscalationAdmin,
    EscalationPolicyAdmin,
    NotificationAdmin,
    SweepRunAdmin,
)
from followup_visibility.admin.opportunity import (
    DuplicateMatchAdmin,
    HandoffAdmin,
    TouchAdmin,
    TrackedOpportunityAdmin,
)
from followup_visibility.admin.org import SegmentAdmin, TeamAdmin
from followup_visibility.admin.policy import SlaPolicyAdmin
from followup_visibility.admin.suppressions import InhibitionRuleAdmin, SuppressionAdmin
from followup_visibility.models import (
    Alert,
    Calendar,
    Deadline,
    DuplicateMatch,
    Escalation,
    EscalationPolicy,
    Handoff,
    InhibitionRule,
    Notification,
    Segment,
    SlaPolicy,
    Suppression,
    SweepRun,
    Team,
    Touch,
    TrackedOpportunity,
)
from followup_visibility.registry import configured_admin_sites

#: Every model admin of the app, in the order a reader meets them.
MODEL_ADMINS: tuple[tuple[type[Model], type[ModelAdmin[Any]]], ...] = (
    (Alert, AlertAdmin),
    (TrackedOpportunity, TrackedOpportunityAdmin),
    (Touch, TouchAdmin),
    (Handoff, HandoffAdmin),
    (DuplicateMatch, DuplicateMatchAdmin),
    (Deadline, DeadlineAdmin),
    (Suppression, SuppressionAdmin),
    (InhibitionRule, InhibitionRuleAdmin),
    (Escalation, EscalationAdmin),
    (Notification, NotificationAdmin),
    (EscalationPolicy, EscalationPolicyAdmin),
    (SlaPolicy, SlaPolicyAdmin),
    (Calendar, CalendarAdmin),
    (Segment, SegmentAdmin),
    (Team, TeamAdmin),
    (SweepRun, SweepRunAdmin),
)


def register(site: AdminSite) -> None:
    """Register the app's model admins on ``site``; models already registered there are
    left as they are (so calling it for a site the setting names too is harmless)."""
    for model, model_admin in MODEL_ADMINS:
        if not site.is_registered(model):
            site.register(model, model_admin)


for _site in configured_admin_sites():
    register(_site)

__all__ = ["MODEL_ADMINS", "register"]
