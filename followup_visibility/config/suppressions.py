"""Suppression rules as people make them: validated, scoped to what their maker sees, saved
with history, and applied to the alerts they match at once.

While a rule is active what it matches raises no alert and leaves the register; the matching
itself, and the holding and releasing of alerts, is
:mod:`followup_visibility.alerting.holds`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, TypedDict, Unpack

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from simple_history.utils import bulk_create_with_history

from followup_visibility.alerting import holds, lifecycle
from followup_visibility.choices import AlertSignal, IdentityKind
from followup_visibility.engine import access
from followup_visibility.engine.identity import normalize_email, normalize_phone
from followup_visibility.models import Segment, Suppression, Team, TrackedOpportunity


def _identity(raw: str) -> tuple[str, str]:
    """(kind, normalized key) of a phone number or email address; key ``""`` when invalid."""
    if "@" in raw:
        return IdentityKind.EMAIL, normalize_email(raw)
    return IdentityKind.PHONE, normalize_phone(raw)


def _check_time(errors: dict[str, str], name: str, value: datetime | None) -> None:
    if value is not None and timezone.is_naive(value):
        errors[name] = _("Give the time with its time zone.")


def _check_common(
    errors: dict[str, str], comment: str, now: datetime, ends_at: datetime | None, signal: str
) -> None:
    if not comment:
        errors["comment"] = _("Say why these alerts are suppressed.")
    _check_time(errors, "ends_at", ends_at)
    if "ends_at" not in errors and ends_at is not None and ends_at <= now:
        errors["ends_at"] = _("A suppression must end in the future.")
    if signal and signal not in AlertSignal.values:
        errors["signal"] = _("Not a signal: %(s)s.") % {"s": signal}


def _save(rule: Suppression, by: Any, now: datetime, reason: str) -> None:
    rule._history_user = by  # type: ignore[attr-defined]
    rule._history_date = now  # type: ignore[attr-defined]
    rule._change_reason = reason[: lifecycle.REASON_MAX]  # type: ignore[attr-defined]
    rule.save()


class RuleFields(TypedDict, total=False):
    """What a rule matches and when it is active: :func:`build`'s optional arguments."""

    starts_at: datetime | None
    ends_at: datetime | None
    opportunity: TrackedOpportunity | None
    identity: str
    segment: Segment | None
    owner: Any
    team: Team | None
    signal: str
    older_than: timedelta | None


def rule_fields(data: Mapping[str, Any]) -> RuleFields:
    """:class:`RuleFields` from a form's or a request's cleaned data: absent matchers are
    none, absent text matchers empty (the admin and the API read the same names)."""
    return RuleFields(
        starts_at=data.get("starts_at"),
        ends_at=data.get("ends_at"),
        opportunity=data.get("opportunity"),
        identity=data.get("identity") or "",
        segment=data.get("segment"),
        owner=data.get("owner"),
        team=data.get("team"),
        signal=data.get("signal") or "",
        older_than=data.get("older_than"),
    )


def create(*, comment: str, by: Any, now: datetime, **fields: Unpack[RuleFields]) -> Suppression:
    """Create a rule and hold the active alerts it matches at once (if it has started).

    ``identity`` is a raw phone number or email address; it is normalized as contact
    identities are, so it matches however the CRM wrote it. ``starts_at`` defaults to now.
    """
    return add(build(comment=comment, by=by, now=now, **fields), by=by, now=now)


def check_scope(
    user: Any,
    *,
    opportunity: TrackedOpportunity | None = None,
    owner: Any = None,
    team: Team | None = None,
) -> None:
    """Refuse a rule that would reach beyond what ``user`` sees (``ValidationError``).

    For callers acting on a user's request (the admin, an API): :func:`create` itself trusts
    its caller. Whoever sees every opportunity may make any rule. Anyone else must confine it
    to their own scope with one of the matchers that scope is made of (an opportunity they
    see, themselves or a member of a team they manage as the owner, a team they manage), and
    each of those they give must be theirs: a manager silences their own teams, not the
    company's.

    With tenancy, a user whose tenants are limited (see-all or not) must name an opportunity
    they see: a rule carries no tenant, so one without an opportunity would reach the alerts
    of every company.
    """
    everything = access.sees_everything(user)
    tenants = access.user_tenants(user)
    if everything and tenants is None:
        return
    errors: dict[str, str] = {}
    if opportunity is not None and not (
        access.opportunities_for(user).filter(pk=opportunity.pk).exists()
    ):
        errors["opportunity"] = _("Choose one of the opportunities you can see.")
    elif opportunity is None and tenants is not None:
        errors["opportunity"] = _(
            "Choose one of the opportunities you can see: a rule without one would reach "
            "other companies' alerts too."
        )
    if not everything and owner is not None and not access.manages_person(user, owner):
        errors["owner"] = _("Choose yourself or someone in a team you manage.")
    if not everything and team is not None and team.pk not in access.managed_team_ids(user):
        errors["team"] = _("Choose a team you manage.")
    if not errors and opportunity is None and owner is None and team is None:
        errors[NON_FIELD_ERRORS] = _(
            "A rule you make must stay within what you see: name one of your opportunities, "
            "yourself or someone in your teams as the owner, or one of your teams."
        )
    if errors:
        raise ValidationError(errors)


def build(
    *,
    comment: str,
    by: Any,
    now: datetime,
    starts_at: datetime | None = None,
    ends_at: datetime | None = None,
    opportunity: TrackedOpportunity | None = None,
    identity: str = "",
    segment: Segment | None = None,
    owner: Any = None,
    team: Team | None = None,
    signal: str = "",
    older_than: timedelta | None = None,
) -> Suppression:
    """Validate and normalize a rule without saving it: :func:`add` saves it.

    For a form that validates before it saves (the admin's); raises ``ValidationError`` with
    the errors by field. Arguments as for :func:`create` (:class:`RuleFields`).
    """
    errors: dict[str, str] = {}
    comment = (comment or "").strip()
    identity = (identity or "").strip()
    starts_at = starts_at or now
    _check_common(errors, comment, now, ends_at, signal)
    _check_time(errors, "starts_at", starts_at)
    valid_times = not errors.get("ends_at") and not errors.get("starts_at")
    if valid_times and ends_at is not None and ends_at <= starts_at:
        errors["ends_at"] = _("A suppression must end after it starts.")
    kind, key = "", ""
    if identity:
        kind, key = _identity(identity)
        if not key:
            errors["identity"] = _("Not a valid phone number or email address.")
    if older_than is not None and older_than <= timedelta(0):
        errors["older_than"] = _("Give a positive age.")
    matchers = (opportunity, identity, segment, owner, team, signal, older_than)
    if all(m is None or m == "" for m in matchers):
        errors[NON_FIELD_ERRORS] = _(
            "Say what to suppress: an opportunity, a contact, a segment, an owner, a team, "
            "a signal or an age."
        )
    if errors:
        raise ValidationError(errors)
    rule = Suppression(
        opportunity=opportunity,
        identity_kind=kind,
        identity_key=key,
        segment=segment,
        owner=owner,
        team=team,
        signal=signal,
        older_than=older_than,
        starts_at=starts_at,
        ends_at=ends_at,
        comment=comment[:255],
        created_by=by,
        created_at=now,
    )
    return rule


def add(rule: Suppression, *, by: Any, now: datetime) -> Suppression:
    """Save a rule :func:`build` made, with its history, and hold what it matches at once."""
    with transaction.atomic():
        _save(rule, by, now, _("created"))
        holds.apply(now, by=by)
    return rule


def end(suppression: Suppression, *, by: Any, now: datetime) -> Suppression:
    """End a rule now; the alerts it held return to open unless another rule holds them."""
    with transaction.atomic():
        rule: Suppression = Suppression.objects.select_for_update().get(pk=suppression.pk)
        if rule.ends_at is not None and rule.ends_at <= now:
            raise ValidationError(
                {"ends_at": ValidationError(_("This suppression has already ended."), code="ended")}
            )
        if rule.starts_at >= now:
            # A rule cannot end before it starts (the database checks it too).
            raise ValidationError(
                {
                    "ends_at": ValidationError(
                        _("This suppression has not started; delete it or change its start."),
                        code="not_started",
                    )
                }
            )
        rule.ends_at = now
        _save(rule, by, now, _("ended"))
        holds.release(now, by=by)
        # Alerts another active rule also matches stay suppressed, now under that rule.
        holds.apply(now, by=by)
    return rule


def suppress_opportunities(
    opportunity_ids: Iterable[Any],
    *,
    comment: str,
    by: Any,
    now: datetime,
    ends_at: datetime | None = None,
    signal: str = "",
) -> list[Suppression]:
    """One rule per opportunity (and ``signal``, if given), starting now; for bulk actions."""
    errors: dict[str, str] = {}
    comment = (comment or "").strip()
    _check_common(errors, comment, now, ends_at, signal)
    if errors:
        raise ValidationError(errors)
    ids = TrackedOpportunity.objects.filter(pk__in=list(opportunity_ids)).order_by("pk")
    rules = [
        Suppression(
            opportunity_id=pk,
            signal=signal,
            starts_at=now,
            ends_at=ends_at,
            comment=comment[:255],
            created_by=by,
            created_at=now,
        )
        for pk in ids.values_list("pk", flat=True)
    ]
    if not rules:
        return []
    with transaction.atomic():
        created = bulk_create_with_history(
            rules, Suppression, default_user=by, default_date=now, default_change_reason="created"
        )
        holds.apply(now, by=by)
    return list(created)


def suppress_older_than(
    age: timedelta,
    *,
    comment: str,
    by: Any,
    now: datetime,
    segment: Segment | None = None,
    team: Team | None = None,
    ends_at: datetime | None = None,
) -> Suppression:
    """One rule for every opportunity that arrived more than ``age`` ago (old leads)."""
    return create(
        comment=comment, by=by, now=now, segment=segment, team=team, ends_at=ends_at, older_than=age
    )
