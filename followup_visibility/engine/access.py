"""Who sees what: a rep their own opportunities, a manager their teams', ops everything.

One place decides it so that the admin, the API and notifications agree. A user outside an
object's scope should not learn it exists: callers filter with these querysets and answer 404.

On a host that keeps several companies in one database, every scope is also limited to the
user's companies (tenants), as ``FOLLOWUP_VISIBILITY_USER_TENANTS`` names them; a see-all
user sees everything of their tenants only. With the setting unset, tenants play no part.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Q, QuerySet
from django.utils.module_loading import import_string

from followup_visibility.adapters import tenant_key
from followup_visibility.conf import app_settings
from followup_visibility.engine import teams
from followup_visibility.models import Alert, Suppression, Team, TrackedOpportunity

#: Sales operations, analysts and admins: every opportunity and alert.
SEE_ALL_PERMISSION = "followup_visibility.view_all_opportunities"

#: A user's tenants: ``None`` for every tenant.
Tenants = frozenset[str] | None


def sees_everything(user: Any) -> bool:
    return bool(user.is_active and (user.is_superuser or user.has_perm(SEE_ALL_PERMISSION)))


def managed_team_ids(user: Any) -> set[int]:
    """Teams ``user`` manages, with every team below them in the tree."""
    return teams.with_subteams(Team.objects.filter(manager_id=user.pk).values_list("pk", flat=True))


# Tenants ---------------------------------------------------------------------------------------


def tenancy_enabled() -> bool:
    """Whether the host names its users' tenants (``FOLLOWUP_VISIBILITY_USER_TENANTS``)."""
    return bool(app_settings.USER_TENANTS)


def user_tenants(user: Any) -> Tenants:
    """The tenants ``user`` may see and be told about; ``None``: every tenant (tenancy off,
    or the host's hook says so, e.g. for a platform superuser). Asks the hook each call."""
    path = app_settings.USER_TENANTS
    if not path:
        return None
    hook: Callable[[Any], Iterable[Any] | None] = import_string(path)
    found = hook(user)
    if found is None:
        return None
    if isinstance(found, str | bytes):
        # Iterating "acme" would grant the tenants "a", "c", "m" and "e".
        raise TypeError(f"{path} returned the string {found!r}: return a set of tenant keys.")
    return frozenset(tenant_key(t) for t in found)


def tenant_q(tenants: Tenants, path: str = "") -> Q:
    """The opportunities (through ``path``) of these tenants; everything for ``None``."""
    if tenants is None:
        return Q()
    return Q(**{f"{path}__tenant__in" if path else "tenant__in": sorted(tenants)})


def shares_tenant(person: Any, tenants: Tenants) -> bool:
    """Whether ``person`` belongs to one of ``tenants`` (always, for ``None`` on either side)."""
    if tenants is None:
        return True
    theirs = user_tenants(person)
    return theirs is None or bool(theirs & tenants)


class TenantGate:
    """Whether each of a batch's recipients may hear about an opportunity of a tenant.

    For background passes (notifications, escalation): the users are read once and each
    user's tenants asked of the hook at most once, when first needed. With tenancy off it
    reads nothing and allows everything.
    """

    def __init__(self, users: Mapping[Any, Any]) -> None:
        self.enabled = tenancy_enabled()
        self._users = users
        self._tenants: dict[Any, Tenants] = {}

    @classmethod
    def load(cls, user_ids: Iterable[Any]) -> TenantGate:
        """One query for the users, none with tenancy off."""
        if not tenancy_enabled():
            return cls({})
        ids = {pk for pk in user_ids if pk is not None}
        return cls(get_user_model().objects.in_bulk(ids) if ids else {})

    def allows(self, user_id: Any, tenant: str) -> bool:
        if not self.enabled:
            return True
        if user_id not in self._tenants:
            user = self._users.get(user_id)
            # A user the batch did not read (or who is gone) hears of nothing.
            self._tenants[user_id] = frozenset() if user is None else user_tenants(user)
        found = self._tenants[user_id]
        return found is None or tenant in found


# Scopes ----------------------------------------------------------------------------------------


def scope_q(user: Any, path: str = "") -> Q:
    """The ``Q`` of the opportunities (through ``path``) ``user`` may see."""
    everything = sees_everything(user)
    if not everything and (not user.is_active or user.pk is None):
        return Q(pk__in=[])
    return _scope_q(user, everything, user_tenants(user), path)


def _scope_q(user: Any, everything: bool, tenants: Tenants, path: str = "") -> Q:
    q = Q() if everything else _owned_q(user, managed_team_ids(user), path)
    return q & tenant_q(tenants, path)


def _owned_q(user: Any, managed: set[int], path: str = "") -> Q:
    """Rows (opportunities, or rules with the same ``owner`` and ``team`` fields) that are
    ``user``'s own or in, or owned by a member of, the ``managed`` teams.

    Members are a subquery, not a join through the membership table: a join repeats a row
    per team its owner belongs to and made PostgreSQL check the scope row by row (measured
    at 1M opportunities, docs/performance.md); a subquery keeps the rows flat."""
    prefix = f"{path}__" if path else ""
    q = Q(**{f"{prefix}owner": user})
    if managed:
        members = get_user_model().objects.filter(followup_teams__in=managed).values("pk")
        q |= Q(**{f"{prefix}team__in": managed}) | Q(**{f"{prefix}owner__in": members})
    return q


def opportunities_for(user: Any) -> QuerySet[TrackedOpportunity]:
    return restrict(TrackedOpportunity.objects.all(), user)


def alerts_for(user: Any) -> QuerySet[Alert]:
    return restrict(Alert.objects.all(), user, "opportunity")


def restrict(queryset: QuerySet[Any], user: Any, path: str = "") -> QuerySet[Any]:
    """``queryset`` limited to what ``user`` may see; ``path`` leads to the opportunity."""
    return queryset.filter(scope_q(user, path))


def manages_person(user: Any, person: Any) -> bool:
    """Whether ``person`` is ``user`` or a member of a team ``user`` manages (or below it),
    and, with tenancy, belongs to one of ``user``'s tenants."""
    if person.pk == user.pk:
        return True
    if not shares_tenant(person, user_tenants(user)):
        return False
    if sees_everything(user):
        return True
    managed = managed_team_ids(user)
    return bool(managed) and Team.objects.filter(pk__in=managed, members=person).exists()


def suppressions_for(user: Any) -> QuerySet[Suppression]:
    """The suppression rules ``user`` may see and end: those they made, and those confined
    to their scope by an opportunity, an owner or a team of theirs.

    With tenancy a rule carries no tenant of its own, so a user whose tenants are limited sees
    the rules confined to an opportunity they see, and the unconfined ones they made.
    """
    everything = sees_everything(user)
    if not everything and (not user.is_active or user.pk is None):
        return Suppression.objects.none()
    tenants = user_tenants(user)
    if tenants is not None:
        visible = TrackedOpportunity.objects.filter(_scope_q(user, everything, tenants))
        return Suppression.objects.filter(
            Q(opportunity__in=visible.values("pk")) | Q(created_by=user, opportunity__isnull=True)
        )
    if everything:
        return Suppression.objects.all()
    owned = _owned_q(user, managed_team_ids(user))
    visible = TrackedOpportunity.objects.filter(owned)
    return Suppression.objects.filter(
        Q(created_by=user) | Q(opportunity__in=visible.values("pk")) | owned
    )
