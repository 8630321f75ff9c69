"""SLA policy changes: create a policy, publish a version, and recompute open opportunities
when the publisher asks for it (planned through the outbox, after commit).

Which version applies to whom is the engine's business (:mod:`followup_visibility.engine.sla`):
a version published for "new opportunities only" applies to those arriving from its
``effective_from`` on, one published "also for open ones" to every opportunity.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils.translation import gettext as _

from followup_visibility.config import recompute
from followup_visibility.engine.sla import validate_values
from followup_visibility.models import Segment, SlaPolicy, SlaPolicyVersion, Team
from followup_visibility.models.policy import DURATION_FIELDS


def publish_version(
    policy: SlaPolicy,
    values: Mapping[str, Any],
    *,
    now: datetime,
    apply_to_open: bool,
    by: Any = None,
    comment: str = "",
    retired: bool = False,
) -> SlaPolicyVersion:
    """Add a version to ``policy``; recompute open opportunities' deadlines if asked to.

    ``apply_to_open`` is the publisher's choice: False keeps open opportunities on the version
    they had and applies this one to opportunities arriving from ``now`` on.
    """
    validate_values(values, is_default=policy.is_default, retired=retired)
    with transaction.atomic():
        SlaPolicy.objects.select_for_update().filter(pk=policy.pk).get()
        last = policy.versions.aggregate(n=Max("number"))["n"] or 0
        version = SlaPolicyVersion.objects.create(
            policy=policy,
            number=last + 1,
            effective_from=now,
            applies_to_open=apply_to_open,
            retired=retired,
            created_by=by,
            comment=comment[:255],
            stage_limits=dict(values.get("stage_limits") or {}),
            **{name: values.get(name) for name in DURATION_FIELDS.values()},
        )
        if apply_to_open:
            recompute.schedule_for_policy(
                policy, now=now, reason=f"policy {policy.pk} v{version.number}"
            )
    return version


def create_policy(
    name: str,
    values: Mapping[str, Any],
    *,
    now: datetime,
    team: Team | None = None,
    segment: Segment | None = None,
    apply_to_open: bool = False,
    by: Any = None,
    comment: str = "",
) -> SlaPolicy:
    """Create a policy for a scope with its first version; the scope must be free."""
    is_default = team is None and segment is None
    validate_values(values, is_default=is_default)
    if SlaPolicy.objects.filter(team=team, segment=segment, is_default=is_default).exists():
        raise ValidationError(_("A policy for this scope already exists."), code="scope_taken")
    try:
        with transaction.atomic():
            policy = SlaPolicy.objects.create(
                name=name, team=team, segment=segment, is_default=is_default
            )
            publish_version(
                policy,
                values,
                now=now,
                apply_to_open=apply_to_open or is_default,
                by=by,
                comment=comment,
            )
    except IntegrityError:
        # A concurrent create won the race for this scope: the same user error.
        raise ValidationError(
            _("A policy for this scope already exists."), code="scope_taken"
        ) from None
    return policy


def current_values(policy: SlaPolicy) -> dict[str, Any]:
    """The newest version's fields, as a starting point for the next one."""
    latest = policy.versions.order_by("-number").first()
    if latest is None:
        return {}
    values: dict[str, Any] = {name: getattr(latest, name) for name in DURATION_FIELDS.values()}
    values["stage_limits"] = dict(latest.stage_limits)
    return values
