"""The alert lifecycle: acknowledge, snooze, dismiss, resolve; waking; automatic resolution."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import (
    Case,
    CharField,
    Exists,
    F,
    OuterRef,
    Q,
    QuerySet,
    Value,
    When,
)
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.translation import gettext as _

from followup_visibility.alerting import events, ranking, sql
from followup_visibility.alerting.sql import FromMatch
from followup_visibility.choices import (
    ACTIVE_ALERT_STATUSES,
    AlertStatus,
    AlertTransition,
    Direction,
    Resolution,
    SnoozeCondition,
)
from followup_visibility.conf import app_settings
from followup_visibility.models import Alert, Touch, TrackedOpportunity

__all__ = ["FromMatch"]

#: simple-history's change-reason column holds this many characters.
REASON_MAX = 100

#: Fields a snooze sets, cleared again when it ends (woken, acknowledged or suppressed).
SNOOZE_CLEARED: dict[str, Any] = {
    "snoozed_at": None,
    "snoozed_until": None,
    "snooze_condition": SnoozeCondition.TIME,
    "snooze_reason": "",
    "snooze_stage": "",
}
#: An alert back in the open goes through escalation planning again, from its new start.
ESCALATION_REPLANNED: dict[str, Any] = {"escalation_planned": False, "escalate_at": None}


def escalation_restarted(now: datetime) -> dict[str, Any]:
    """Changes for an alert that comes back open at ``now`` after being put aside (a snooze
    woke, a suppression released it): planned again, its levels counting from ``now``, so
    that waking does not page every manager whose level passed while it slept."""
    return {**ESCALATION_REPLANNED, "escalation_from": now}


@dataclass(frozen=True)
class Clearing:
    """What cleared an opportunity's alerts: the note and touch named on those it resolves."""

    note: str
    touch_id: Any = None


#: ``(pk, opportunity_id, signal, episode_at, status)`` of an active alert.
ActiveAlert = tuple[Any, Any, str, datetime, str]


def active_alerts(opportunity_ids: Iterable[Any]) -> list[ActiveAlert]:
    """The active alerts of these opportunities, as :func:`resolve_cleared` reads them."""
    return list(
        Alert.objects.active()
        .filter(sql.among(Alert, "opportunity_id", list(opportunity_ids)))
        .values_list("pk", "opportunity_id", "signal", "episode_at", "status")
    )


def resolve_cleared(
    active: Iterable[ActiveAlert],
    current: Mapping[tuple[Any, str], tuple[datetime, datetime]],
    now: datetime,
    clearing: Mapping[Any, Clearing],
    default: Clearing | None = None,
) -> list[int]:
    """Resolve the ``active`` alerts whose condition no longer holds; their ids.

    ``current`` maps (opportunity, signal) to the deadline's (event, due) as just recomputed.
    An alert is cleared when its signal has no deadline any more, when a new event started a
    new episode, or when the deadline moved past ``now``. Snoozed and suppressed alerts are
    active too: a snooze or a suppression never keeps a solved problem alive. ``clearing``
    names, per (opportunity, signal) or per opportunity, what cleared it (else ``default``,
    else ``condition cleared``).
    One statement resolves them all, with their history.
    """
    default = default or Clearing(_("condition cleared"))
    groups: dict[Clearing, list[Any]] = defaultdict(list)
    for pk, opportunity_id, signal, episode_at, _status in active:
        found = current.get((opportunity_id, signal))
        if found is None or found[0] != episode_at or found[1] > now:
            why = clearing.get((opportunity_id, signal)) or clearing.get(opportunity_id, default)
            groups[why].append(pk)
    if not groups:
        return []
    rows = sql.Rows(
        [("fv_reason", "text"), ("fv_note", "text"), ("fv_touch", "bigint")],
        {
            pk: (why.note[:REASON_MAX], why.note[:255], why.touch_id)
            for why, group in groups.items()
            for pk in group
        },
    )
    done = sql.transition_alerts(
        rows,
        from_statuses=ACTIVE_ALERT_STATUSES,
        changes={
            "status": AlertStatus.RESOLVED,
            "resolved_at": now,
            "resolution": Resolution.AUTO,
            "resolution_note": FromMatch("fv_note"),
            "resolved_touch": FromMatch("fv_touch"),
        },
        now=now,
    )
    # One event per note: each chain of a batch has its own touch, not its own reason.
    by_note: dict[str, list[int]] = defaultdict(list)
    for pk, _reason in done:
        by_note[rows.values[pk][1]].append(pk)
    for note, ids in by_note.items():
        events.changed(AlertTransition.RESOLVED, ids, now, reason=note)
    ranking.mark_alerts([pk for pk, _reason in done], now)
    return [pk for pk, _reason in done]


def resolve_unbacked(matched: QuerySet[Alert], now: datetime) -> list[int]:
    """Resolve the ``matched`` active alerts automatically, as :func:`resolve_cleared` does,
    for the sweep's check of alerts that no due deadline stands behind; their ids.

    One statement on PostgreSQL, with the history rows; a ``resolved`` event for them.
    """
    note = _("condition cleared: no due deadline")
    return bulk_transition(
        matched.annotate(fv_reason=Value(note[:REASON_MAX], output_field=CharField())),
        from_statuses=ACTIVE_ALERT_STATUSES,
        changes={
            "status": AlertStatus.RESOLVED,
            "resolved_at": now,
            "resolution": Resolution.AUTO,
            "resolution_note": note[:255],
        },
        now=now,
        event=AlertTransition.RESOLVED,
    )


def _locked(alert: Alert) -> Alert:
    locked: Alert = Alert.objects.select_for_update().get(pk=alert.pk)
    return locked


def _locked_active(alert: Alert) -> Alert:
    """The alert, locked; ``ValidationError`` if its episode is over (nothing changes)."""
    alert = _locked(alert)
    if not alert.is_active:
        raise ValidationError(
            _("This alert is already %(s)s.") % {"s": alert.get_status_display().lower()},
            code="not_active",
        )
    return alert


def _save(alert: Alert, by: Any, now: datetime, reason: str, fields: list[str], event: str) -> None:
    alert.changed_by = by
    alert._history_user = by  # type: ignore[attr-defined]
    alert._history_date = now  # type: ignore[attr-defined]
    alert._change_reason = reason[:REASON_MAX]  # type: ignore[attr-defined]
    alert.save(update_fields=[*fields, "changed_by"])
    events.changed(event, [alert.pk], now, by=by, reason=reason)
    ranking.mark([alert.opportunity_id], now)


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
        # Acknowledging a snoozed alert ends the snooze: someone is on it now.
        for name, value in SNOOZE_CLEARED.items():
            setattr(alert, name, value)
        _save(
            alert,
            by,
            now,
            _("acknowledged"),
            ["status", "acknowledged_at", "acknowledged_by", *SNOOZE_CLEARED],
            AlertTransition.ACKNOWLEDGED,
        )
    return alert


def _describe(span: timedelta) -> str:
    if span % timedelta(days=1) == timedelta(0):
        return _("%(n)d days") % {"n": span.days}
    return _("%(n)g hours") % {"n": span / timedelta(hours=1)}


def snooze(
    alert: Alert,
    *,
    reason: str,
    by: Any,
    now: datetime,
    until: datetime | None = None,
    condition: str = SnoozeCondition.TIME,
) -> Alert:
    """Put an open or acknowledged alert aside until a time, or until a condition is met.

    A snooze until a condition ("the customer replies", "the stage changes") ends at
    ``until`` at the latest, which defaults to ``SNOOZE_MAX`` from now; a plain snooze needs
    ``until``. A reason is always required. The sweep wakes it (see ``wake_snoozed``).
    """
    errors: dict[str, str] = {}
    reason = (reason or "").strip()
    if not reason:
        errors["reason"] = _("Say why the alert is snoozed.")
    if condition not in SnoozeCondition.values:
        errors["condition"] = _("Not a snooze condition: %(c)s.") % {"c": condition}
    limit = now + app_settings.SNOOZE_MAX
    if until is None:
        if condition == SnoozeCondition.TIME:
            errors["until"] = _("Say until when the alert is snoozed.")
        until = limit
    elif timezone.is_naive(until):
        errors["until"] = _("Give the time with its time zone.")
    elif until <= now:
        errors["until"] = _("A snooze must end in the future.")
    elif until > limit:
        errors["until"] = _("A snooze may last %(max)s at most.") % {
            "max": _describe(app_settings.SNOOZE_MAX)
        }
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        alert = _locked(alert)
        if alert.status not in (AlertStatus.OPEN, AlertStatus.ACKNOWLEDGED):
            raise ValidationError(
                _("Only an open or acknowledged alert can be snoozed; this one is %(s)s.")
                % {"s": alert.get_status_display().lower()},
                code="not_snoozable",
            )
        alert.status = AlertStatus.SNOOZED
        alert.snoozed_at = now
        alert.snoozed_until = until
        alert.snooze_condition = condition
        alert.snooze_reason = reason[:255]
        # "Until the stage changes" compares with the stage as it is now.
        alert.snooze_stage = (
            TrackedOpportunity.objects.filter(pk=alert.opportunity_id)
            .values_list("stage", flat=True)
            .get()
        )
        _save(
            alert,
            by,
            now,
            _("snoozed: %(r)s") % {"r": reason},
            ["status", *SNOOZE_CLEARED],
            AlertTransition.SNOOZED,
        )
    return alert


def _chains(opportunity_ids: Iterable[Any]) -> QuerySet[TrackedOpportunity]:
    """The given opportunities and every opportunity in a chain with one of them (a query)."""
    roots = (
        TrackedOpportunity.objects.filter(pk__in=list(opportunity_ids))
        .annotate(fv_root=Coalesce("chain_root_id", "pk"))
        .values("fv_root")
    )
    return TrackedOpportunity.objects.filter(Q(pk__in=roots) | Q(chain_root_id__in=roots))


def wake_snoozed(
    now: datetime, *, conditions: bool = True, opportunity_ids: Iterable[Any] | None = None
) -> int:
    """Wake snoozed alerts whose time came or whose condition is met; how many.

    Set-based: one statement finds and updates them, with their history. The episode stays
    the same. A woken alert is open again, or acknowledged if it was acknowledged before its
    snooze (see :func:`back_from_aside`); an open one is planned for escalation again, its
    levels counting from ``now``.

    Checking the conditions reads every snoozed alert, so it is done where the news arrives:
    ``opportunity_ids`` limits the check to those opportunities' chains (a recompute after a
    touch or a CRM change passes its opportunities), and the steady sweep passes
    ``conditions=False`` to wake only snoozes whose time came (an index range). A full sweep
    checks every condition, repairing whatever an event missed.
    """
    root = Coalesce("opportunity__chain_root_id", "opportunity_id")
    # A reply we learn of after snoozing counts, even if it was logged late: whoever snoozed
    # could not have known it.
    replied = Exists(
        Touch.objects.filter(
            Q(opportunity_id=OuterRef("fv_root"))
            | Q(opportunity__chain_root_id=OuterRef("fv_root")),
            Q(occurred_at__gt=OuterRef("snoozed_at")) | Q(recorded_at__gt=OuterRef("snoozed_at")),
            direction=Direction.INBOUND,
            is_meaningful=True,
        )
    )
    on_reply = Q(snooze_condition=SnoozeCondition.CUSTOMER_REPLIES) & Q(replied)
    on_stage = Q(snooze_condition=SnoozeCondition.STAGE_CHANGES) & ~Q(
        opportunity__stage=F("snooze_stage")
    )
    snoozed = Alert.objects.filter(status=AlertStatus.SNOOZED)
    if opportunity_ids is not None:
        snoozed = snoozed.filter(opportunity_id__in=_chains(opportunity_ids).values("pk"))
    if conditions:
        woke = (
            snoozed.annotate(fv_root=root)
            .filter(Q(snoozed_until__lte=now) | on_reply | on_stage)
            .annotate(
                fv_reason=Case(
                    When(on_reply, then=Value(_("woke: customer replied"))),
                    When(on_stage, then=Value(_("woke: stage changed"))),
                    default=Value(_("woke: time passed")),
                    output_field=CharField(),
                )
            )
        )
    else:
        woke = snoozed.filter(snoozed_until__lte=now).annotate(
            fv_reason=Value(_("woke: time passed"), output_field=CharField())
        )
    woken = bulk_transition(
        woke.annotate(fv_status=back_from_aside()),
        from_statuses=[AlertStatus.SNOOZED],
        changes={
            "status": FromMatch("fv_status"),
            **SNOOZE_CLEARED,
            **escalation_restarted(now),
        },
        now=now,
        event=AlertTransition.WOKEN,
    )
    return len(woken)


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
            alert,
            by,
            now,
            alert.dismissed_reason,
            ["status", "dismissed_at", "dismissed_reason"],
            AlertTransition.DISMISSED,
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
            AlertTransition.RESOLVED,
        )
    return alert


# Set-based transitions ---------------------------------------------------------------------


def back_from_aside() -> Case:
    """The status an alert put aside (snoozed, suppressed) returns to: acknowledged if someone
    acknowledged this raise before, so that it does not escalate to managers; else open."""
    return Case(
        When(acknowledged_at__isnull=False, then=Value(AlertStatus.ACKNOWLEDGED)),
        default=Value(AlertStatus.OPEN),
        output_field=CharField(),
    )


def bulk_transition(
    matched: QuerySet[Alert],
    *,
    from_statuses: Sequence[str],
    changes: Mapping[str, Any],
    now: datetime,
    event: str,
    by: Any = None,
) -> list[int]:
    """Apply ``changes`` to the ``matched`` alerts, with one history row each; their ids.

    ``matched`` is annotated with ``fv_reason`` (the history's change reason) and with the
    annotation each :class:`FromMatch` change names. Only rows still in ``from_statuses`` when
    written change: a concurrent resolve between finding and writing wins. Runs in the
    caller's transaction and never loads the alerts into Python; announces ``event`` for the
    alerts it changed, one batch per reason (see :mod:`followup_visibility.alerting.events`).
    """
    done = sql.transition_alerts(
        matched,
        from_statuses=from_statuses,
        changes=changes,
        now=now,
        user_id=getattr(by, "pk", None),
    )
    by_reason: dict[str, list[int]] = defaultdict(list)
    for pk, reason in done:
        by_reason[reason].append(pk)
    for reason, ids in by_reason.items():
        events.changed(event, ids, now, by=by, reason=reason)
    ranking.mark_alerts([pk for pk, _reason in done], now)
    return [pk for pk, _reason in done]
