"""Receivers: host saves and deletes reach the tracked opportunities; configuration edits
plan recomputes and re-plans; outbox work is registered and a worker woken for it."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_save
from django.utils import timezone

from followup_visibility import tasks
from followup_visibility.alerting import escalation, notifications, outbox, ranking
from followup_visibility.config import calendars, generation, recompute
from followup_visibility.ingest import crm
from followup_visibility.models import (
    Calendar,
    ClosedDate,
    EscalationPolicy,
    Segment,
    SegmentRule,
    SlaPolicy,
    SlaPolicyVersion,
    SpecialHours,
    Team,
    WorkingWindow,
)
from followup_visibility.registry import is_tracked

_UID = "followup_visibility"


#: Configuration the engine caches per process (see ``engine.generation``).
_CACHED_CONFIGURATION = (
    SlaPolicy,
    SlaPolicyVersion,
    Calendar,
    WorkingWindow,
    ClosedDate,
    SpecialHours,
    Team,
    Segment,
    SegmentRule,
)


def connect() -> None:
    # The work the outbox carries, by kind.
    outbox.register(recompute.PLAN, recompute.drain_plan)
    outbox.register(recompute.RANGE, recompute.drain_range)
    outbox.register(ranking.RANGE, ranking.drain_range)
    outbox.register(notifications.EMAIL, notifications.send_email, atomic=False)
    outbox.ready.connect(on_outbox_ready, dispatch_uid=f"{_UID}.outbox")
    for model in _CACHED_CONFIGURATION:
        for signal in (post_save, post_delete):
            signal.connect(on_configuration_changed, sender=model, dispatch_uid=f"{_UID}.gen")
    m2m_changed.connect(
        on_configuration_changed, sender=Team.members.through, dispatch_uid=f"{_UID}.gen_m2m"
    )
    # Connected for every sender and filtered by the registry, so that overriding the tracked
    # models in settings (tests, multi-tenant hosts) needs no reconnecting.
    post_save.connect(on_host_saved, dispatch_uid=f"{_UID}.saved")
    post_delete.connect(on_host_deleted, dispatch_uid=f"{_UID}.deleted")
    # Configuration edits move deadlines: recompute them in background tasks after commit.
    for model in (WorkingWindow, ClosedDate, SpecialHours):
        for signal in (post_save, post_delete):
            signal.connect(on_calendar_row_changed, sender=model, dispatch_uid=f"{_UID}.cal")
    post_save.connect(on_calendar_saved, sender=Calendar, dispatch_uid=f"{_UID}.calendar")
    for org_model in (Team, Segment, SegmentRule):
        for signal in (post_save, post_delete):
            signal.connect(on_organisation_changed, sender=org_model, dispatch_uid=f"{_UID}.org")
    m2m_changed.connect(
        on_organisation_changed, sender=Team.members.through, dispatch_uid=f"{_UID}.members"
    )
    # Which policy and calendar govern a team's escalations: re-plan what they move.
    for keyed in (EscalationPolicy, Team):
        pre_save.connect(remember_escalation_keys, sender=keyed, dispatch_uid=f"{_UID}.esc_pre")
        post_save.connect(on_escalation_keys_saved, sender=keyed, dispatch_uid=f"{_UID}.esc")
        post_delete.connect(on_escalation_keys_deleted, sender=keyed, dispatch_uid=f"{_UID}.esc")


def on_host_saved(
    sender: type[models.Model], instance: models.Model, raw: bool = False, **kwargs: Any
) -> None:
    if raw or not is_tracked(sender):
        return
    # Same transaction as the host's save: the mirror commits or rolls back with it.
    crm.sync_objects([instance], timezone.now())


def on_host_deleted(sender: type[models.Model], instance: models.Model, **kwargs: Any) -> None:
    if is_tracked(sender):
        crm.mark_deleted(sender, [instance.pk], timezone.now())


def on_outbox_ready(sender: Any, *, count: int = 1, **kwargs: Any) -> None:
    tasks.wake(count=count)


def on_configuration_changed(sender: Any, **kwargs: Any) -> None:
    # Raw saves (fixtures) too: a cached copy must never outlive what it copied.
    if not kwargs.get("action", "post_").startswith("pre_"):
        generation.bump(timezone.now())


def on_calendar_row_changed(sender: type[models.Model], instance: Any, **kwargs: Any) -> None:
    if kwargs.get("raw"):
        return
    calendars.mark_changed(instance.calendar_id, now=timezone.now())


def on_calendar_saved(sender: type[Calendar], instance: Calendar, **kwargs: Any) -> None:
    if not kwargs.get("raw") and not kwargs.get("created"):
        # The default flag or time zone may have moved: recompute everything open.
        calendars.mark_changed(instance.pk, now=timezone.now(), everything=True)


def on_organisation_changed(sender: Any, **kwargs: Any) -> None:
    """Teams, memberships, segments or rules changed: re-run assignment for open ones."""
    if kwargs.get("raw") or kwargs.get("action", "post_").startswith("pre_"):
        return
    recompute.schedule(
        recompute.Scope(reassign=True, reason=f"{sender._meta.label} changed"), now=timezone.now()
    )


#: The columns of each model that decide which policy, calendar and manager chain govern the
#: escalations of a team's opportunities.
_ESCALATION_KEYS: dict[type[models.Model], tuple[str, ...]] = {
    EscalationPolicy: ("team_id",),
    Team: ("parent_id", "calendar_id"),
}


def remember_escalation_keys(sender: Any, instance: Any, raw: bool = False, **kwargs: Any) -> None:
    fields = _ESCALATION_KEYS[sender]
    before = None
    if not raw and instance.pk is not None:
        before = sender._default_manager.filter(pk=instance.pk).values_list(*fields).first()
    instance._fv_escalation_keys = before


def on_escalation_keys_saved(sender: Any, instance: Any, raw: bool = False, **kwargs: Any) -> None:
    before = getattr(instance, "_fv_escalation_keys", None)
    if raw or before is None:
        return  # new: a new policy re-plans what it governs itself; a new team has no one
    after = tuple(getattr(instance, f) for f in _ESCALATION_KEYS[sender])
    if before == after:
        return
    if sender is EscalationPolicy:
        escalation.replan_teams([before[0], instance.team_id])
    else:
        escalation.replan_teams([instance.pk])


def on_escalation_keys_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    # A deleted policy's teams fall back to the next one up; a deleted team's opportunities
    # were left without a team (SET_NULL) before this runs.
    team = instance.team_id if sender is EscalationPolicy else None
    escalation.replan_teams([team])
