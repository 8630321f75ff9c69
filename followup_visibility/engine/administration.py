"""What a user may configure: the teams they manage and those below, and nothing wider.

Seeing (``access``) and configuring are separate questions. A team, its calendar and its
escalation and SLA policies decide whose opportunities a manager sees and how they are held,
so a manager who could edit any team could make themselves manager of another team and see
its pipeline. A user without the see-all permission therefore configures only inside the
subtree they manage; company-wide rows (segments, inhibition rules, default policies, a
calendar shared with teams outside the subtree) need the see-all permission.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Q, QuerySet

from followup_visibility.engine import access
from followup_visibility.models import Calendar, Team


def administered_team_ids(user: Any) -> set[int] | None:
    """The teams ``user`` may configure; ``None`` means every team (see-all)."""
    if access.sees_everything(user):
        return None
    if not user.is_active or user.pk is None:
        return set()
    return access.managed_team_ids(user)


def administers_company(user: Any) -> bool:
    """Whether ``user`` may change company-wide configuration."""
    return access.sees_everything(user)


def administers_team(user: Any, team_id: Any, administered: set[int] | None = None) -> bool:
    """Whether ``user`` may configure the team ``team_id`` (``None``: a company-wide row)."""
    if administered is None:
        administered = administered_team_ids(user)
    if administered is None:
        return True
    return team_id is not None and team_id in administered


def top_team_ids(administered: set[int]) -> set[int]:
    """The roots of the subtree: teams whose parent is outside it. Their parent and manager
    are decided above the user, so the user cannot move them or hand them on."""
    parents = Team.objects.filter(pk__in=administered).values_list("pk", "parent_id")
    return {pk for pk, parent in parents if parent not in administered}


def people(administered: set[int] | None) -> QuerySet[Any]:
    """The users a team editor may name as manager or member: everyone for see-all, else the
    members and managers of the administered teams (a manager cannot pull others in)."""
    users = get_user_model().objects.all()
    if administered is None:
        return users
    inside = Q(followup_teams__in=administered) | Q(followup_managed_teams__in=administered)
    # The joins can repeat a user; a key subquery keeps the queryset flat.
    return users.filter(pk__in=users.filter(inside).values("pk"))


def calendar_ids(administered: set[int] | None) -> set[int] | None:
    """Calendars the user may change: those that only administered teams use (the company
    default and unused calendars reach everyone or anyone, so they need see-all)."""
    if administered is None:
        return None
    used = Team.objects.filter(calendar__isnull=False).values_list("calendar_id", "pk")
    inside: set[int] = set()
    outside: set[int] = set()
    for calendar_id, team_id in used:
        (inside if team_id in administered else outside).add(calendar_id)
    default = Calendar.objects.filter(is_default=True).values_list("pk", flat=True)
    return inside - outside - set(default)
