"""Recording touches: the one public way events reach an opportunity's timeline."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, models, transaction
from django.db.models import F
from django.utils.translation import gettext as _

from followup_visibility import alerts, assignment, deadlines, identity, timeline
from followup_visibility.choices import (
    AcceptedVia,
    Channel,
    Direction,
    Outcome,
    Status,
)
from followup_visibility.conf import app_settings
from followup_visibility.models import ContactIdentity, Touch, TrackedOpportunity
from followup_visibility.ownership import accept_handoff, pending_handoff
from followup_visibility.registry import NotTracked, get_adapter
from followup_visibility.rules import TouchDraft, classify
from followup_visibility.signals import send_on_commit, touch_recorded
from followup_visibility.sync import sync_objects


@dataclass(frozen=True)
class RecordedTouch:
    touch: Touch
    #: False when this was a repeated delivery of a touch already stored.
    created: bool


def record_touch(
    target: TrackedOpportunity | models.Model | None = None,
    *,
    channel: str,
    direction: str,
    occurred_at: datetime,
    now: datetime,
    outcome: str = "",
    recorded_at: datetime | None = None,
    actor: Any = None,
    source: str = "manual",
    external_id: str = "",
    phone: str | None = None,
    email: str | None = None,
    summary: str = "",
    metadata: Mapping[str, Any] | None = None,
) -> RecordedTouch:
    """Store a touch on an opportunity's timeline and refresh what the timeline implies.

    ``target`` is a tracked opportunity or a host object; without one, the touch attaches to
    the open opportunity matching ``phone`` or ``email``. A repeated ``(source, external_id)``
    returns the stored touch unchanged. Invalid input raises ``ValidationError`` with field
    messages and writes nothing.
    """
    _require_aware(now, "now")
    recorded_at = recorded_at or now
    metadata = dict(metadata or {})
    _validate(channel, direction, outcome, occurred_at, recorded_at, now, source, external_id)
    if external_id and (existing := _existing(source, external_id)) is not None:
        return RecordedTouch(existing, created=False)
    with transaction.atomic():
        opportunity = _resolve(target, phone, email, now)
        # A lead and its deals share one timeline: lock them all, in key order so that touches
        # on different members cannot deadlock; the fold below then sees every touch.
        chain = list(
            TrackedOpportunity.objects.select_for_update()
            .filter(pk__in=timeline.chain_ids(opportunity))
            .order_by("pk")
        )
        opportunity = next(member for member in chain if member.pk == opportunity.pk)
        if external_id and (existing := _existing(source, external_id)) is not None:
            return RecordedTouch(existing, created=False)
        verdict = classify(TouchDraft(channel, direction, outcome, source, summary, metadata))
        touch = Touch(
            opportunity=opportunity,
            channel=channel,
            direction=direction,
            outcome=outcome,
            occurred_at=occurred_at,
            recorded_at=recorded_at,
            logging_lag=recorded_at - occurred_at,
            actor=actor,
            source=source,
            external_id=external_id,
            contact=(phone or email or "")[:255],
            summary=summary,
            metadata=metadata,
            is_meaningful=verdict.meaningful,
            meaningful_reason=verdict.reason,
        )
        try:
            with transaction.atomic():
                touch.save()
        except IntegrityError:
            # A concurrent delivery of the same external id won the race.
            existing = _existing(source, external_id)
            if existing is None:
                raise
            return RecordedTouch(existing, created=False)
        for member in chain:
            timeline.save_refreshed(member)
        _accept_by_touch(opportunity, touch, now)
        # The arrival touch may decide the segment; then every clock of the chain moves.
        assignment.assign_and_save(chain)
        deadlines.recompute(
            [member.pk for member in chain],
            now,
            cause=alerts.Cause(_("touch: %(t)s") % {"t": touch.get_channel_display()}, touch),
        )
        send_on_commit(touch_recorded, Touch, touch=touch, opportunity=opportunity)
    return RecordedTouch(touch, created=True)


def _existing(source: str, external_id: str) -> Touch | None:
    return Touch.objects.filter(source=source, external_id=external_id).first()


def _require_aware(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")


def _validate(
    channel: str,
    direction: str,
    outcome: str,
    occurred_at: datetime,
    recorded_at: datetime,
    now: datetime,
    source: str,
    external_id: str,
) -> None:
    errors: dict[str, str] = {}
    if channel not in Channel.values:
        errors["channel"] = _("Unknown channel %(value)r; expected one of %(choices)s.") % {
            "value": channel,
            "choices": ", ".join(Channel.values),
        }
    if direction not in Direction.values:
        errors["direction"] = _("Unknown direction %(value)r; expected one of %(choices)s.") % {
            "value": direction,
            "choices": ", ".join(Direction.values),
        }
    if outcome not in Outcome.values:
        errors["outcome"] = _("Unknown outcome %(value)r; expected one of %(choices)s.") % {
            "value": outcome,
            "choices": ", ".join(v for v in Outcome.values if v),
        }
    for name, value in (("occurred_at", occurred_at), ("recorded_at", recorded_at)):
        if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
            errors[name] = _("A timezone-aware datetime is required.")
    if "occurred_at" not in errors and occurred_at > now + app_settings.MAX_CLOCK_SKEW:
        errors["occurred_at"] = _("Lies in the future (%(value)s is after %(now)s).") % {
            "value": occurred_at.isoformat(),
            "now": now.isoformat(),
        }
    if "recorded_at" not in errors and "occurred_at" not in errors:
        skew = app_settings.MAX_CLOCK_SKEW
        if recorded_at > now + skew:
            errors["recorded_at"] = _("Lies in the future (after %(now)s).") % {
                "now": now.isoformat()
            }
        elif recorded_at < occurred_at - skew:
            errors["recorded_at"] = _("A touch cannot be logged before it happened.")
    if not source or len(source) > 50:
        errors["source"] = _("A source of 1 to 50 characters is required.")
    if len(external_id) > 255:
        errors["external_id"] = _("At most 255 characters.")
    if errors:
        raise ValidationError(errors)


def _resolve(
    target: TrackedOpportunity | models.Model | None,
    phone: str | None,
    email: str | None,
    now: datetime,
) -> TrackedOpportunity:
    if isinstance(target, TrackedOpportunity):
        opportunity = target
    elif target is not None:
        try:
            get_adapter(target)
        except NotTracked as exc:
            raise ValidationError({"target": str(exc)}) from None
        found = TrackedOpportunity.objects.for_object(target).first()
        if found is None:
            # Created without signals (bulk_create, raw SQL): start tracking it now.
            sync_objects([target], now)
            found = TrackedOpportunity.objects.for_object(target).get()
        opportunity = found
    else:
        if not phone and not email:
            raise ValidationError({"target": _("Give a target, a phone or an email.")})
        matches = identity.find_open_by_contact(phone=phone, email=email)
        found = matches[0] if matches else _continued_by_contact(phone, email)
        if found is None:
            raise ValidationError(
                {"contact": _("No open opportunity matches this phone or email.")}
            )
        opportunity = found
    return follow_to_current(opportunity)


def _continued_by_contact(phone: str | None, email: str | None) -> TrackedOpportunity | None:
    """The open record continuing a merged or converted one that matches the contact.

    Merged duplicates and converted leads keep their identities, so their contact's touches
    still reach the survivor or the deal when that record holds no phone or email of its own.
    """
    keys = identity.contact_keys(phone=phone, email=email)
    if not keys:
        return None
    continued = TrackedOpportunity.objects.filter(
        status__in=[Status.MERGED, Status.CONVERTED],
        pk__in=ContactIdentity.objects.filter(keys).values("opportunity_id"),
    ).order_by(F("closed_at").desc(nulls_last=True), "-pk")
    for opportunity in continued:
        current = follow_to_current(opportunity)
        if current.is_open:
            return current
    return None


def follow_to_current(opportunity: TrackedOpportunity) -> TrackedOpportunity:
    """The record a touch belongs on: a merged record's survivor, a converted lead's deal."""
    seen = set()
    while opportunity.pk not in seen:
        seen.add(opportunity.pk)
        if opportunity.status == Status.MERGED and opportunity.merged_into_id:
            opportunity = TrackedOpportunity.objects.get(pk=opportunity.merged_into_id)
        elif opportunity.status == Status.CONVERTED and (
            successor := opportunity.successors.order_by("-arrived_at", "-pk").first()
        ):
            opportunity = successor
        else:
            break
    return opportunity


def _accept_by_touch(opportunity: TrackedOpportunity, touch: Touch, now: datetime) -> None:
    """The new owner's first meaningful outbound touch is acceptance in deed."""
    if not (
        app_settings.ACCEPT_HANDOFF_ON_TOUCH
        and touch.is_meaningful
        and touch.direction == Direction.OUTBOUND
        and touch.actor_id is not None
        and touch.actor_id == opportunity.owner_id
        and opportunity.owner_confirmed_at is None
    ):
        return
    handoff = pending_handoff(opportunity)
    if handoff is not None and handoff.to_owner_id == touch.actor_id:
        accept_handoff(opportunity, touch.actor_id, now, via=AcceptedVia.TOUCH, touch=touch)
