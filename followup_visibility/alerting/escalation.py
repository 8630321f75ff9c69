"""Escalation: an alert nobody acknowledges climbs the team tree, level by level.

:func:`plan` stores when the next level fires (:mod:`followup_visibility.engine.escalation_levels`
decides when and to whom), :func:`fire` claims the alerts whose time came, re-checks the breach
and records each step once, and the ``replan_*`` functions have the next :func:`plan` compute
again what a configuration change moved.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Q
from django.utils.translation import gettext as _
from simple_history.utils import bulk_update_with_history

from followup_visibility.alerting import events, lifecycle, notifications
from followup_visibility.choices import AlertStatus, EscalationOutcome
from followup_visibility.engine import access, teams
from followup_visibility.engine.escalation_levels import Policies, counts_from
from followup_visibility.models import Alert, Deadline, Escalation, EscalationPolicy

logger = logging.getLogger(__name__)


def _governed_q(policy: EscalationPolicy) -> Q:
    """The alerts (by their opportunity's team) whose escalation ``policy`` now decides."""
    policies = Policies.load()
    teams = [t for t in policies.parents if (p := policies.policy_for(t)) and p.pk == policy.pk]
    q = Q(opportunity__team__in=teams)
    if policy.is_default:
        q |= Q(opportunity__team__isnull=True)
    return q


def _unplan(q: Q) -> int:
    """Have the next :func:`plan` recompute the pending escalations of the open alerts ``q``
    matches; how many."""
    return (
        Alert.objects.filter(status=AlertStatus.OPEN, escalation_planned=True)
        .filter(q)
        .update(**lifecycle.ESCALATION_REPLANNED)
    )


def replan_policy(policy: EscalationPolicy) -> int:
    """Have the next :func:`plan` recompute the pending escalations ``policy`` now decides."""
    return _unplan(_governed_q(policy))


def replan_teams(team_ids: Iterable[int | None]) -> int:
    """Have the next :func:`plan` recompute the pending escalations of open alerts whose
    opportunity is in one of these teams or below it (``None``: opportunities without a team).

    For changes that move which policy, calendar or manager chain governs a team: a policy
    moved to another team or deleted, a team moved in the tree or given another calendar.
    """
    ids = set(team_ids)
    q = Q(opportunity__team__in=teams.with_subteams(i for i in ids if i is not None))
    if None in ids:
        q |= Q(opportunity__team__isnull=True)
    return _unplan(q)


def replan_opportunities(opportunity_ids: Iterable[Any]) -> int:
    """Have the next :func:`plan` recompute the pending escalations of these opportunities'
    open alerts (their calendar's hours or holidays changed)."""
    return _unplan(Q(opportunity_id__in=list(opportunity_ids)))


def plan(now: datetime, *, batch: int = 5000) -> int:
    """Store when the next level fires for open alerts not planned yet; return how many.

    Only unplanned alerts are read, so the cost follows what changed (new alerts, re-plans).
    Planning writes no history rows: ``escalate_at`` is bookkeeping, not a change anyone made;
    the escalation itself is recorded when it fires.
    """
    policies = Policies.load()
    planned, last_pk = 0, 0
    while True:
        with transaction.atomic():
            rows = list(
                Alert.objects.select_for_update(skip_locked=True, of=("self",))
                # Matches the partial index fv_alert_unplanned: reads only what is new.
                .filter(status=AlertStatus.OPEN, escalation_planned=False, pk__gt=last_pk)
                .order_by("pk")
                .values_list(
                    "pk",
                    "due_at",
                    "raised_at",
                    "escalation_from",
                    "escalation_level",
                    "opportunity__team_id",
                )[:batch]
            )
            if not rows:
                break
            last_pk = rows[-1][0]
            Alert.objects.bulk_update(
                [
                    Alert(
                        pk=pk,
                        escalate_at=policies.escalate_at(
                            team_id, counts_from(due_at, raised_at, back), level + 1
                        ),
                        escalation_planned=True,
                    )
                    for pk, due_at, raised_at, back, level, team_id in rows
                ],
                ["escalate_at", "escalation_planned"],
            )
            planned += len(rows)
    return planned


def _display(user: Any) -> str:
    full_name = user.get_full_name() if hasattr(user, "get_full_name") else ""
    return str(full_name or user.get_username())


def _step(
    alert: Alert,
    now: datetime,
    policies: Policies,
    current: Mapping[tuple[Any, str], tuple[datetime, datetime]],
    names: Mapping[Any, str],
    gate: access.TenantGate,
) -> Escalation | None:
    """Advance one claimed alert (in memory) and return the step to record, if any."""
    opp = alert.opportunity
    level = alert.escalation_level + 1
    policy = policies.policy_for(opp.team_id)
    step = Escalation(
        alert=alert,
        level=level,
        alert_raised_at=alert.raised_at,
        fired_at=now,
        team_id=opp.team_id,
        policy_id=policy.pk if policy else None,
    )
    found = current.get((alert.opportunity_id, alert.signal))
    if found is None or found[0] != alert.episode_at or found[1] > now:
        # The condition cleared (or a new episode began) and the alert is not resolved yet:
        # nothing to escalate, and nothing more unless it is planned again.
        alert.escalate_at = None
        alert._change_reason = _(  # type: ignore[attr-defined]
            "escalation to level %(n)d stopped: the breach no longer holds"
        ) % {"n": level}
        step.outcome = EscalationOutcome.CLEARED
        step.note = _("The deadline no longer holds for this episode.")
        return step
    if policy is None or level > len(policy.levels):
        # The policy lost levels since this one was planned.
        alert.escalate_at = None
        alert._change_reason = _("no escalation level left")  # type: ignore[attr-defined]
        return None
    alert.escalation_level = level
    alert.escalate_at = policies.escalate_at(
        opp.team_id, counts_from(alert.due_at, alert.raised_at, alert.escalation_from), level + 1
    )
    # With tenancy, a manager outside the opportunity's tenant is passed over: the level goes
    # to the next manager up who may hear of it.
    to = policies.recipient(
        opp.team_id, level, opp.owner_id, lambda manager: gate.allows(manager, opp.tenant)
    )
    if to is None:
        alert._change_reason = _(  # type: ignore[attr-defined]
            "escalation level %(n)d: no manager to send to"
        ) % {"n": level}
        step.outcome = EscalationOutcome.NO_MANAGER
        step.note = _("No manager above the owner at level %(n)d.") % {"n": level}
        if gate.enabled and policies.recipient(opp.team_id, level, opp.owner_id) is not None:
            step.note = _(
                "No manager above the owner at level %(n)d belongs to the opportunity's "
                "company; those who do not were passed over."
            ) % {"n": level}
        return step
    who = names.get(to[0], "?")
    alert._change_reason = _("escalated to level %(n)d: %(who)s") % {  # type: ignore[attr-defined]
        "n": level,
        "who": who,
    }
    step.outcome = EscalationOutcome.NOTIFIED
    step.recipient_id, step.team_id = to
    step.note = _("Sent to %(who)s.") % {"who": who}
    return step


def _fire_batch(
    claimed: list[Alert], now: datetime, policies: Policies, users: Mapping[Any, Any]
) -> list[Escalation]:
    names = {pk: _display(user) for pk, user in users.items()}
    # Each manager's tenants are asked of the host at most once per batch.
    gate = access.TenantGate(users)
    current = {
        (opp, signal): (event_at, due_at)
        for opp, signal, event_at, due_at in Deadline.objects.filter(
            opportunity_id__in={a.opportunity_id for a in claimed}
        ).values_list("opportunity_id", "signal", "event_at", "due_at")
    }
    steps = [s for a in claimed if (s := _step(a, now, policies, current, names, gate)) is not None]

    # The claim's row locks already keep overlapping passes apart; this keeps a step that is
    # somehow on record (a pass retried after its alert update was lost) from being recorded
    # or notified twice. A step is the same when it is for the same raise of the alert and
    # level, and both or neither found the breach cleared.
    def key(alert_id: Any, raised_at: datetime, level: int, outcome: str) -> tuple[Any, ...]:
        return alert_id, raised_at, level, outcome == EscalationOutcome.CLEARED

    done = {
        key(*row)
        for row in Escalation.objects.filter(alert__in=claimed).values_list(
            "alert_id", "alert_raised_at", "level", "outcome"
        )
    }
    new = [s for s in steps if key(s.alert_id, s.alert_raised_at, s.level, s.outcome) not in done]
    Escalation.objects.bulk_create(new)
    bulk_update_with_history(
        claimed,
        Alert,
        ["escalation_level", "escalate_at"],
        default_date=now,
        default_change_reason=_("escalation"),
    )
    events.escalated([s.alert_id for s in new], [s.pk for s in new], now)
    notified = [s for s in new if s.outcome == EscalationOutcome.NOTIFIED]
    if notified:
        quiet = notifications.QuietHours.load({s.recipient_id for s in notified})
        for step in notified:
            notifications.notify_escalation(step, now, quiet=quiet, gate=gate)
    return new


def fire(now: datetime, *, batch: int = 500) -> list[Escalation]:
    """Fire the levels that fell due by ``now``; return the steps recorded.

    Alerts are claimed with ``SELECT ... FOR UPDATE SKIP LOCKED`` in a transaction per batch,
    so overlapping passes split the work. Only open alerts are claimed: acknowledging,
    snoozing, suppressing or resolving stops escalation. A pass that ran late fires every
    level that fell due meanwhile, one batch round per level.
    """
    policies = Policies.load()
    managers = {m for m in policies.managers.values() if m is not None}
    users = get_user_model().objects.in_bulk(managers)
    recorded: list[Escalation] = []
    while True:
        with transaction.atomic():
            claimed = list(
                Alert.objects.select_for_update(skip_locked=True, of=("self",))
                .filter(status=AlertStatus.OPEN, escalate_at__lte=now)
                .select_related("opportunity__segment", "opportunity__owner")
                .order_by("escalate_at", "pk")[:batch]
            )
            if not claimed:
                break
            recorded += _fire_batch(claimed, now, policies, users)
    outcomes = Counter(s.outcome for s in recorded)
    logger.info("escalation fired %d steps: %s", len(recorded), dict(outcomes))
    return recorded


def escalate(now: datetime) -> dict[str, int]:
    """Plan new alerts, then fire what fell due: what the task and the command run."""
    planned = plan(now)
    steps = fire(now)
    outcomes = Counter(s.outcome for s in steps)
    return {
        "planned": planned,
        "notified": outcomes[EscalationOutcome.NOTIFIED],
        "no_manager": outcomes[EscalationOutcome.NO_MANAGER],
        "cleared": outcomes[EscalationOutcome.CLEARED],
    }
