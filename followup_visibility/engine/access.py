"""Who sees what: a rep their own opportunities, a manager their teams', ops everything.

One place decides it so that the admin, the API and notifications agree. A user outside an
object's scope should not learn it exists: callers filter with these querysets and answer 404.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet

from followup_visibility.engine import teams
from followup_visibility.models import Alert, Suppression, Team, TrackedOpportunity

#: Sales operations, analysts and admins: every opportunity and alert.
SEE_ALL_PERMISSION = "followup_visibility.view_all_opportunities"


def sees_everything(user: Any) -> bool:
    return bool(user.is_active and (user.is_superuser or user.has_perm(SEE_ALL_PERMISSION)))


def managed_team_ids(user: Any) -> set[int]:
    """Teams ``user`` manages, with every team below them in the tree."""
    return teams.with_subteams(Team.objects.filter(manager_id=user.pk).values_list("pk", flat=True))


def scope_q(user: Any) -> Q:
    """The ``Q`` of the opportunities ``user`` may see."""
    if sees_everything(user):
        return Q()
    if not user.is_active or user.pk is None:
        return Q(pk__in=[])
    return _owned_q(user, managed_team_ids(user))


def _owned_q(user: Any, managed: set[int]) -> Q:
    """Rows (opportunities, or rules with the same ``owner`` and ``team`` fields) that are
    ``user``'s own or in, or owned by a member of, the ``managed`` teams."""
    q = Q(owner=user)
    if managed:
        q |= Q(team__in=managed) | Q(owner__followup_teams__in=managed)
    return q


def opportunities_for(user: Any) -> QuerySet[TrackedOpportunity]:
    return restrict(TrackedOpportunity.objects.all(), user)


def alerts_for(user: Any) -> QuerySet[Alert]:
    return restrict(Alert.objects.all(), user, "opportunity")


def restrict(queryset: QuerySet[Any], user: Any, path: str = "") -> QuerySet[Any]:
    """``queryset`` limited to what ``user`` may see; ``path`` leads to the opportunity."""
    if sees_everything(user):
        return queryset
    # The membership join can repeat a row; a key subquery keeps the queryset flat.
    visible = TrackedOpportunity.objects.filter(scope_q(user)).values("pk")
    return queryset.filter(**{f"{path or 'pk'}__in": visible})


def manages_person(user: Any, person: Any) -> bool:
    """Whether ``person`` is ``user`` or a member of a team ``user`` manages (or below it)."""
    if sees_everything(user) or person.pk == user.pk:
        return True
    managed = managed_team_ids(user)
    return bool(managed) and Team.objects.filter(pk__in=managed, members=person).exists()


def suppressions_for(user: Any) -> QuerySet[Suppression]:
    """The suppression rules ``user`` may see and end: those they made, and those confined
    to their scope by an opportunity, an owner or a team of theirs."""
    if sees_everything(user):
        return Suppression.objects.all()
    if not user.is_active or user.pk is None:
        return Suppression.objects.none()
    owned = _owned_q(user, managed_team_ids(user))
    visible = TrackedOpportunity.objects.filter(owned).values("pk")
    q = Q(created_by=user) | Q(opportunity__in=visible) | owned
    # The membership join can repeat a row; a key subquery keeps the queryset flat.
    return Suppression.objects.filter(pk__in=Suppression.objects.filter(q).values("pk"))
