"""Escalation: an alert nobody acknowledges climbs the team tree, level by level.

Level ``n`` of the opportunity's policy fires when the alert is still open ``after`` business
time past its due time (in the opportunity's team calendar), or past the moment it came back
open if a snooze or a suppression held it beyond that. It goes to the ``n``-th distinct
manager walking up from the opportunity's team, skipping teams without a manager and the owner
themselves, as the teams are when it fires. :func:`plan` stores when the next level fires,
:func:`fire` claims the alerts whose time came, re-checks the breach and records each step once.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils.translation import gettext as _
from simple_history.utils import bulk_update_with_history

from followup_visibility import alerts, calendars, notifications, teams
from followup_visibility.business_time import BusinessCalendar, add_business_time
from followup_visibility.choices import AlertStatus, EscalationOutcome
from followup_visibility.models import (
    Alert,
    Deadline,
    Escalation,
    EscalationLevel,
    EscalationPolicy,
    Team,
)
from followup_visibility.policies import MAX_DURATION

logger = logging.getLogger(__name__)

_ZERO = timedelta(0)


@dataclass(frozen=True)
class Policy:
    """One escalation policy as a pass sees it: its thresholds, level 1 first."""

    pk: int
    name: str
    levels: tuple[timedelta, ...]


@dataclass(frozen=True)
class Policies:
    """Escalation policies, the team tree and team calendars, read once per pass (few rows)."""

    by_team: Mapping[int, Policy]
    default: Policy | None
    parents: Mapping[int, int | None]
    managers: Mapping[int, Any]
    team_calendars: Mapping[int, int | None]
    default_calendar: int | None
    engines: Mapping[int, BusinessCalendar]

    @classmethod
    def load(cls) -> Policies:
        levels: dict[int, list[timedelta]] = {}
        for policy_id, after in EscalationLevel.objects.order_by("policy_id", "number").values_list(
            "policy_id", "after"
        ):
            levels.setdefault(policy_id, []).append(after)
        by_team: dict[int, Policy] = {}
        default = None
        for pk, name, team_id, is_default in EscalationPolicy.objects.values_list(
            "pk", "name", "team_id", "is_default"
        ):
            policy = Policy(pk, name, tuple(levels.get(pk, ())))
            if is_default:
                default = policy
            elif team_id is not None:
                by_team[team_id] = policy
        parents, managers = {}, {}
        for pk, parent, manager in Team.objects.values_list("pk", "parent_id", "manager_id"):
            parents[pk], managers[pk] = parent, manager
        default_calendar = calendars.default_calendar_id()
        team_calendars = calendars.team_calendar_ids(default_calendar)
        ids = {c for c in team_calendars.values() if c is not None}
        if default_calendar is not None:
            ids.add(default_calendar)
        return cls(
            by_team=by_team,
            default=default,
            parents=parents,
            managers=managers,
            team_calendars=team_calendars,
            default_calendar=default_calendar,
            engines=calendars.load(ids),
        )

    def chain(self, team_id: int | None) -> Iterator[int]:
        """``team_id`` and its ancestors, nearest first (a cycle stops the walk)."""
        seen: set[int] = set()
        while team_id is not None and team_id in self.parents and team_id not in seen:
            seen.add(team_id)
            yield team_id
            team_id = self.parents[team_id]

    def policy_for(self, team_id: int | None) -> Policy | None:
        for team in self.chain(team_id):
            if team in self.by_team:
                return self.by_team[team]
        return self.default

    def calendar_for(self, team_id: int | None) -> BusinessCalendar | None:
        calendar_id = self.default_calendar
        if team_id is not None:
            calendar_id = self.team_calendars.get(team_id, self.default_calendar)
        return self.engines.get(calendar_id) if calendar_id is not None else None

    def escalate_at(self, team_id: int | None, start: datetime, level: int) -> datetime | None:
        """When level ``level`` (1-based) fires for an alert whose levels count from ``start``
        (see :func:`counts_from`); None if no level is left."""
        policy = self.policy_for(team_id)
        if policy is None or not 1 <= level <= len(policy.levels):
            return None
        after = policy.levels[level - 1]
        calendar = self.calendar_for(team_id)
        # Without any calendar there is no business time to count in: fall back to wall time.
        return add_business_time(calendar, start, after) if calendar else start + after

    def recipient(self, team_id: int | None, level: int, owner_id: Any) -> tuple[Any, int] | None:
        """(manager, their team) for level ``level``, walking up from ``team_id``; None if none."""
        found: list[Any] = []
        for team in self.chain(team_id):
            manager = self.managers[team]
            if manager is None or manager == owner_id or manager in found:
                continue
            found.append(manager)
            if len(found) == level:
                return manager, team
        return None


def counts_from(
    due_at: datetime, raised_at: datetime, escalation_from: datetime | None = None
) -> datetime:
    """When an alert's escalation levels start counting: when it was raised, or when it came
    back open after a snooze or a suppression, and never before it fell due.

    Nobody can acknowledge an alert before it exists. A steady sweep raises within a pass of
    ``due_at``, so normally this is the due time; but the first sweep over an old backlog, or
    one catching up after an outage, would otherwise send every long-past level to managers at
    once, before the owner had heard of the alert.
    """
    return max(t for t in (due_at, raised_at, escalation_from) if t is not None)


def policy_for(team_id: int | None, policies: Policies | None = None) -> Policy | None:
    """The policy of the nearest team up the tree that has one, else the company default."""
    return (policies or Policies.load()).policy_for(team_id)


def validate_levels(thresholds: Sequence[timedelta]) -> None:
    """``ValidationError({"levels": [...]})`` unless the thresholds make a usable policy.

    At least one level; each positive and at most 366 days (business time); each strictly
    later than the one before, since level ``n + 1`` goes further up than level ``n``.
    """
    errors: list[str] = []
    if not thresholds:
        errors.append(_("Give at least one escalation level."))
    previous: timedelta | None = None
    for number, value in enumerate(thresholds, start=1):
        after: object = value  # callers may pass anything (forms, the API)
        if not isinstance(after, timedelta):
            errors.append(_("Level %(n)d: a duration is required.") % {"n": number})
            continue
        if after <= _ZERO:
            errors.append(_("Level %(n)d: must be longer than zero.") % {"n": number})
        elif after > MAX_DURATION:
            errors.append(
                _("Level %(n)d: at most %(max)d days.") % {"n": number, "max": MAX_DURATION.days}
            )
        if previous is not None and after <= previous:
            errors.append(
                _("Level %(n)d (%(this)s) must come later than level %(p)d (%(that)s).")
                % {"n": number, "this": after, "p": number - 1, "that": previous}
            )
        previous = after
    if errors:
        raise ValidationError({"levels": errors})


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
        .update(**alerts.ESCALATION_REPLANNED)
    )


def _replan(policy: EscalationPolicy) -> int:
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


def set_levels(
    policy: EscalationPolicy, thresholds: Sequence[timedelta], *, now: datetime, by: Any = None
) -> None:
    """Replace the policy's levels (all or nothing) and re-plan the open alerts it governs."""
    validate_levels(thresholds)
    with transaction.atomic():
        policy = EscalationPolicy.objects.select_for_update().get(pk=policy.pk)
        policy.levels.all().delete()
        EscalationLevel.objects.bulk_create(
            EscalationLevel(policy=policy, number=n, after=after)
            for n, after in enumerate(thresholds, start=1)
        )
        policy._history_user = by  # type: ignore[attr-defined]
        policy._history_date = now  # type: ignore[attr-defined]
        policy._change_reason = _("levels: %(l)s") % {  # type: ignore[attr-defined]
            "l": ", ".join(str(t) for t in thresholds)
        }
        policy.save()
        _replan(policy)


def create_policy(
    name: str,
    thresholds: Sequence[timedelta],
    *,
    team: Team | None = None,
    is_default: bool = False,
    now: datetime,
    by: Any = None,
) -> EscalationPolicy:
    """A policy for ``team`` (and the teams below it), or the company default, with its levels."""
    errors: dict[str, list[str]] = {}
    try:
        validate_levels(thresholds)
    except ValidationError as exc:
        errors.update(exc.message_dict)
    if not name or not name.strip():
        errors["name"] = [_("Give the policy a name.")]
    if is_default and team is not None:
        errors["team"] = [_("The company default applies to every team; leave the team empty.")]
    elif not is_default and team is None:
        errors["team"] = [_("Choose the team this policy is for, or make it the company default.")]
    elif team is not None and EscalationPolicy.objects.filter(team=team).exists():
        errors["team"] = [_("%(team)s already has an escalation policy.") % {"team": team}]
    if is_default and EscalationPolicy.objects.filter(is_default=True).exists():
        errors["is_default"] = [_("There is already a company default policy.")]
    if errors:
        raise ValidationError(errors)
    try:
        with transaction.atomic():
            policy = EscalationPolicy(name=name.strip(), team=team, is_default=is_default)
            policy._history_user = by  # type: ignore[attr-defined]
            policy._history_date = now  # type: ignore[attr-defined]
            policy.save()
            EscalationLevel.objects.bulk_create(
                EscalationLevel(policy=policy, number=n, after=after)
                for n, after in enumerate(thresholds, start=1)
            )
            _replan(policy)
    except IntegrityError:
        # A concurrent create took the team or the default first: the same user error.
        field = "is_default" if is_default else "team"
        raise ValidationError(
            {field: [_("An escalation policy for this already exists.")]}
        ) from None
    return policy


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
    to = policies.recipient(opp.team_id, level, opp.owner_id)
    if to is None:
        alert._change_reason = _(  # type: ignore[attr-defined]
            "escalation level %(n)d: no manager to send to"
        ) % {"n": level}
        step.outcome = EscalationOutcome.NO_MANAGER
        step.note = _("No manager above the owner at level %(n)d.") % {"n": level}
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
    claimed: list[Alert], now: datetime, policies: Policies, names: Mapping[Any, str]
) -> list[Escalation]:
    current = {
        (opp, signal): (event_at, due_at)
        for opp, signal, event_at, due_at in Deadline.objects.filter(
            opportunity_id__in={a.opportunity_id for a in claimed}
        ).values_list("opportunity_id", "signal", "event_at", "due_at")
    }
    steps = [s for a in claimed if (s := _step(a, now, policies, current, names)) is not None]

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
    notified = [s for s in new if s.outcome == EscalationOutcome.NOTIFIED]
    if notified:
        quiet = notifications.QuietHours.load({s.recipient_id for s in notified})
        for step in notified:
            notifications.notify_escalation(step, now, quiet=quiet)
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
    names = {pk: _display(u) for pk, u in get_user_model().objects.in_bulk(managers).items()}
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
            recorded += _fire_batch(claimed, now, policies, names)
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
