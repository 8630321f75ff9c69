"""Demo alerts: two days of sweeps, escalations and triage, played with explicit time.

Runs after the leads are seeded. Scripted scenarios make sure every signal shows up at least
once (two reps working one lead, a customer stalled for a known reason), then staff act on some
alerts the way they would in the admin: acknowledge, snooze, dismiss, suppress old brochure
requests. Everything goes through the app's public functions.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from example_project.crm.models import Lead
from followup_visibility.alerting import escalation, lifecycle, notifications, sweep
from followup_visibility.choices import AlertStatus, SnoozeCondition, Status
from followup_visibility.config import suppressions
from followup_visibility.ingest import stalls
from followup_visibility.ingest.crm import sync_objects
from followup_visibility.ingest.touches import record_touch
from followup_visibility.models import Alert, Handoff, Segment, TrackedOpportunity

DAY = timedelta(days=1)


def _opportunity(lead: Lead) -> TrackedOpportunity:
    opportunity: TrackedOpportunity = TrackedOpportunity.objects.for_object(lead).get()
    return opportunity


def _conflicting_owners(now: datetime, users: dict[str, Any]) -> int:
    """Alex owned and accepted a lead; the CRM gives it to Bea; Alex keeps calling."""
    accepted = (
        Handoff.objects.filter(
            accepted_at__isnull=False,
            to_owner=users["alex"],
            opportunity__status=Status.OPEN,
            opportunity__content_type__model="lead",
        )
        .order_by("opportunity__arrived_at")
        .first()
    )
    if accepted is None:
        return 0
    lead = Lead.objects.get(pk=accepted.opportunity.object_pk)
    moved = now - 30 * timedelta(hours=1)
    Lead.objects.filter(pk=lead.pk).update(owner=users["bea"])
    sync_objects([Lead.objects.get(pk=lead.pk)], moved)
    record_touch(
        lead,
        channel="phone",
        direction="outbound",
        outcome="connected",
        actor=users["alex"],
        occurred_at=moved + timedelta(hours=2),
        now=moved + timedelta(hours=2),
        summary="Alex called about the quote, not knowing the lead had moved to Bea.",
    )
    return 1


def _stall(now: datetime, users: dict[str, Any]) -> None:
    """A customer asked to be called after their budget round: stalled, not faked as active."""
    opp = (
        TrackedOpportunity.objects.open()
        .filter(deadlines__signal="stale", deadlines__due_at__lte=now)
        .order_by("arrived_at")
        .first()
    )
    if opp is not None:
        stalls.set_stalled(
            opp,
            until=now + 21 * DAY,
            reason="Budget round closes in three weeks; the customer asked us to call then.",
            by=opp.owner or users["ops"],
            now=now - DAY,
        )


def _triage(now: datetime, users: dict[str, Any], rng: random.Random) -> None:
    """Owners acknowledge, snooze and dismiss some of yesterday's alerts."""
    open_ = list(
        Alert.objects.filter(status=AlertStatus.OPEN, opportunity__owner__isnull=False)
        .select_related("opportunity__owner")
        .order_by("id")
    )
    rng.shuffle(open_)
    at = now - 20 * timedelta(hours=1)
    for alert in open_[:6]:
        lifecycle.acknowledge(alert, by=alert.opportunity.owner, now=at)
    for alert in open_[6:8]:
        lifecycle.snooze(
            alert,
            reason="Customer is travelling; agreed to follow up after the weekend.",
            until=now + 3 * DAY,
            by=alert.opportunity.owner,
            now=at,
        )
    waiting = [a for a in open_[8:] if a.signal == "customer_waiting"][:1]
    for alert in waiting:
        lifecycle.snooze(
            alert,
            reason="Sent the pricing sheet; waiting for their questions.",
            condition=SnoozeCondition.CUSTOMER_REPLIES,
            by=alert.opportunity.owner,
            now=at,
        )
    for alert in [a for a in open_[8:] if a not in waiting][:1]:
        lifecycle.dismiss(
            alert,
            reason="Spoke to the customer at the trade fair; logged in the CRM next week.",
            by=alert.opportunity.owner,
            now=at,
        )


def play(now: datetime, users: dict[str, Any], rng: random.Random) -> int:
    """Play the scenarios and passes; return the number of touches recorded."""
    yesterday = now - DAY
    touches = _conflicting_owners(now, users)
    _stall(now, users)
    # Last week's and yesterday's passes, as beat would have run them. Escalation levels
    # count from when an alert was raised, so the week-old backlog has reached the managers
    # by now whatever the weekday and hour the demo is seeded at.
    sweep.sweep(now - 7 * DAY, full=True)
    sweep.sweep(yesterday - DAY, full=True)
    sweep.sweep(yesterday)
    escalation.escalate(yesterday)
    _triage(now, users, rng)
    brochure = Segment.objects.filter(code="brochure").first()
    if brochure is not None:
        # A rule over a whole segment reaches every team: operations makes it, not a manager.
        suppressions.create(
            comment="Brochure requests older than 30 days go to the nurture emails instead.",
            segment=brochure,
            older_than=30 * DAY,
            by=users["ops"],
            now=yesterday,
        )
    # This morning's passes.
    sweep.sweep(now)
    escalation.escalate(now)
    notifications.notify_alerts(now)
    return touches
