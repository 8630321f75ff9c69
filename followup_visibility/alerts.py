"""The alert lifecycle: acknowledge, dismiss, resolve; automatic resolution when cleared."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.translation import gettext as _
from simple_history.utils import bulk_update_with_history

from followup_visibility.choices import ACTIVE_ALERT_STATUSES, AlertStatus, Resolution
from followup_visibility.models import Alert, Touch


@dataclass(frozen=True)
class Cause:
    """What changed an opportunity: named on the alerts it resolves."""

    reason: str
    touch: Touch | None = None


def resolve_cleared(
    opportunity_ids: Iterable[Any],
    current: Mapping[tuple[Any, str], tuple[datetime, datetime]],
    now: datetime,
    cause: Cause | None = None,
) -> int:
    """Resolve active alerts whose condition no longer holds.

    ``current`` maps (opportunity, signal) to the deadline's (event, due) as just recomputed.
    An alert is cleared when its signal has no deadline any more, when a new event started a
    new episode, or when the deadline moved past ``now``.
    """
    active = list(
        Alert.objects.filter(
            opportunity_id__in=list(opportunity_ids), status__in=ACTIVE_ALERT_STATUSES
        )
    )
    cleared = []
    for alert in active:
        found = current.get((alert.opportunity_id, alert.signal))
        if found is None or found[0] != alert.episode_at or found[1] > now:
            alert.status = AlertStatus.RESOLVED
            alert.resolved_at = now
            alert.resolution = Resolution.AUTO
            alert.resolution_note = (cause.reason if cause else _("condition cleared"))[:255]
            alert.resolved_touch = cause.touch if cause else None
            cleared.append(alert)
    if cleared:
        bulk_update_with_history(
            cleared,
            Alert,
            ["status", "resolved_at", "resolution", "resolution_note", "resolved_touch"],
            default_date=now,
            default_change_reason=cleared[0].resolution_note,
        )
    return len(cleared)


def _locked(alert: Alert) -> Alert:
    return Alert.objects.select_for_update().get(pk=alert.pk)


def _locked_active(alert: Alert) -> Alert:
    """The alert, locked; ``ValidationError`` if its episode is over (nothing changes)."""
    alert = _locked(alert)
    if not alert.is_active:
        raise ValidationError(
            _("This alert is already %(s)s.") % {"s": alert.get_status_display().lower()},
            code="not_active",
        )
    return alert


def _save(alert: Alert, by: Any, now: datetime, reason: str, fields: list[str]) -> None:
    alert.changed_by = by
    alert._history_user = by  # type: ignore[attr-defined]
    alert._history_date = now  # type: ignore[attr-defined]
    alert._change_reason = reason  # type: ignore[attr-defined]
    alert.save(update_fields=[*fields, "changed_by"])


def acknowledge(alert: Alert, *, by: Any, now: datetime) -> Alert:
    """Someone owns the problem: stops escalation, keeps the alert in the register."""
    with transaction.atomic():
        alert = _locked(alert)
        if alert.status not in (AlertStatus.OPEN, AlertStatus.SNOOZED):
            raise ValidationError(
                _("Only an open or snoozed alert can be acknowledged; this one is %(s)s.")
                % {"s": alert.get_status_display().lower()},
                code="not_open",
            )
        alert.status = AlertStatus.ACKNOWLEDGED
        alert.acknowledged_at = now
        alert.acknowledged_by = by
        _save(alert, by, now, _("acknowledged"), ["status", "acknowledged_at", "acknowledged_by"])
    return alert


def dismiss(alert: Alert, *, reason: str, by: Any, now: datetime) -> Alert:
    """Close this episode without action; the next episode of the signal alerts again."""
    if not reason or not reason.strip():
        raise ValidationError({"reason": _("Say why the alert is dismissed.")})
    with transaction.atomic():
        alert = _locked_active(alert)
        alert.status = AlertStatus.DISMISSED
        alert.dismissed_at = now
        alert.dismissed_reason = reason.strip()[:255]
        _save(
            alert, by, now, alert.dismissed_reason, ["status", "dismissed_at", "dismissed_reason"]
        )
    return alert


def resolve(alert: Alert, *, evidence: str, by: Any, now: datetime) -> Alert:
    """Resolve by hand, with evidence of what was done (the CRM may not show it yet)."""
    if not evidence or not evidence.strip():
        raise ValidationError({"evidence": _("Give the evidence that the problem is solved.")})
    with transaction.atomic():
        alert = _locked_active(alert)
        alert.status = AlertStatus.RESOLVED
        alert.resolved_at = now
        alert.resolution = Resolution.MANUAL
        alert.resolution_note = evidence.strip()[:255]
        _save(
            alert,
            by,
            now,
            alert.resolution_note,
            ["status", "resolved_at", "resolution", "resolution_note"],
        )
    return alert
