"""The triage actions: each one's parameters, permissions, grouping and domain call."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError

from followup_visibility.alerting import lifecycle
from followup_visibility.api import base
from followup_visibility.api.alerts.parameters import (
    SUPPRESS_ALL,
    Acknowledge,
    Dismiss,
    Reassign,
    Resolve,
    Snooze,
    Suppress,
)
from followup_visibility.choices import SnoozeCondition
from followup_visibility.config import suppressions
from followup_visibility.ingest import ownership
from followup_visibility.models import Alert


@dataclass(frozen=True)
class Action:
    """One triage action: its parameters, the permissions it needs, what it acts on together
    (an alert, or an opportunity for reassign and suppress) and the domain call."""

    request: type[base.Strict]
    permissions: tuple[str, ...]
    perform: Callable[[Alert, Mapping[str, Any], Any, datetime], object]
    group: Callable[[Alert, Mapping[str, Any]], Hashable] = lambda alert, data: alert.pk


def _snooze(alert: Alert, data: Mapping[str, Any], by: Any, now: datetime) -> object:
    try:
        return lifecycle.snooze(
            alert,
            reason=data["reason"],
            by=by,
            now=now,
            until=data.get("until"),
            condition=data.get("condition", SnoozeCondition.TIME),
        )
    except DjangoValidationError as exc:
        if "span" in data and hasattr(exc, "error_dict") and "until" in exc.error_dict:
            # The caller gave a duration: name it, not the time computed from it.
            exc.error_dict["for"] = exc.error_dict.pop("until")
        raise


def _suppress(alert: Alert, data: Mapping[str, Any], by: Any, now: datetime) -> object:
    suppressions.check_scope(by, opportunity=alert.opportunity)
    return suppressions.suppress_opportunities(
        [alert.opportunity_id],
        comment=data["comment"],
        by=by,
        now=now,
        ends_at=data.get("ends_at"),
        signal="" if data["scope"] == SUPPRESS_ALL else alert.signal,
    )


ACTIONS: dict[str, Action] = {
    "acknowledge": Action(
        Acknowledge,
        ("change_alert",),
        lambda alert, data, by, now: lifecycle.acknowledge(alert, by=by, now=now),
    ),
    "snooze": Action(Snooze, ("change_alert",), _snooze),
    "dismiss": Action(
        Dismiss,
        ("change_alert",),
        lambda alert, data, by, now: lifecycle.dismiss(
            alert, reason=data["reason"], by=by, now=now
        ),
    ),
    "resolve": Action(
        Resolve,
        ("change_alert",),
        lambda alert, data, by, now: lifecycle.resolve(
            alert, evidence=data["evidence"], by=by, now=now
        ),
    ),
    # Reassigning changes the opportunity, in the CRM: the permission the admin asks for the
    # other changes of an opportunity (merge, stall, segment) as well as the triage one.
    "reassign": Action(
        Reassign,
        ("change_alert", "change_trackedopportunity"),
        lambda alert, data, by, now: ownership.reassign(
            alert.opportunity, to=data["owner"], by=by, now=now
        ),
        group=lambda alert, data: alert.opportunity_id,
    ),
    "suppress": Action(
        Suppress,
        ("change_alert", "add_suppression"),
        _suppress,
        group=lambda alert, data: (
            alert.opportunity_id,
            "" if data["scope"] == SUPPRESS_ALL else alert.signal,
        ),
    ),
}


def refusal(exc: DjangoValidationError) -> str:
    """The domain's refusal as one text: a 409's detail, or a refused bulk item's."""
    return " ".join(str(m) for m in exc.messages)


def about_input(exc: DjangoValidationError, spec: Action) -> bool:
    """Whether the domain refused the request's parameters rather than the item's state."""
    fields = set(spec.request().fields)
    return hasattr(exc, "error_dict") and bool(set(exc.error_dict) & fields)
