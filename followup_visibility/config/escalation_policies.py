"""Escalation policy changes: create a policy, replace its levels, and re-plan the open
alerts it governs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils.translation import gettext as _

from followup_visibility.alerting import escalation
from followup_visibility.engine.escalation_levels import validate_levels
from followup_visibility.models import EscalationLevel, EscalationPolicy, Team


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
        escalation.replan_policy(policy)


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
            escalation.replan_policy(policy)
    except IntegrityError:
        # A concurrent create took the team or the default first: the same user error.
        field = "is_default" if is_default else "team"
        raise ValidationError(
            {field: [_("An escalation policy for this already exists.")]}
        ) from None
    return policy
