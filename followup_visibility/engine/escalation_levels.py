"""Escalation policies as a pass reads them: when each level fires, and to whom.

Level ``n`` of the opportunity's policy fires ``after`` business time past the moment the
alert's levels count from (:func:`counts_from`), in the opportunity's team calendar. It goes
to the ``n``-th distinct manager walking up from the opportunity's team, skipping teams
without a manager and the owner themselves, as the teams are when it fires.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _

from followup_visibility.engine import calendars
from followup_visibility.engine.business_time import BusinessCalendar, add_business_time
from followup_visibility.engine.sla import MAX_DURATION
from followup_visibility.models import EscalationLevel, EscalationPolicy, Team

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
        found = calendars.TeamCalendars.load()
        return cls(
            by_team=by_team,
            default=default,
            parents=parents,
            managers=managers,
            team_calendars=found.by_team,
            default_calendar=found.default,
            engines=found.engines,
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

    def recipient(
        self,
        team_id: int | None,
        level: int,
        owner_id: Any,
        allows: Callable[[Any], bool] | None = None,
    ) -> tuple[Any, int] | None:
        """(manager, their team) for level ``level``, walking up from ``team_id``; None if none.

        ``allows``: whether a manager may be told (with tenancy, of the opportunity's tenant);
        a manager it refuses is passed over like the owner, so the level goes further up.
        """
        found: list[Any] = []
        for team in self.chain(team_id):
            manager = self.managers[team]
            if manager is None or manager == owner_id or manager in found:
                continue
            if allows is not None and not allows(manager):
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
