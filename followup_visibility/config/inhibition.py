"""Inhibition rules as people change them: validated, saved with their history.

While a rule's source is due on an opportunity the sweep does not raise its target there
(:mod:`followup_visibility.alerting.holds`). The sweep reads the rules on each pass and leaves
an alert already raised alone, so a change plans no recompute, as a save in the admin plans
none: the next pass follows it, and the hourly full pass raises the targets a rule switched off
or deleted held back.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypedDict, Unpack

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils.translation import gettext as _

from followup_visibility.choices import AlertSignal
from followup_visibility.models import InhibitionRule

_COMMENT_MAX = 255


class RuleChanges(TypedDict, total=False):
    """What :func:`change` may change."""

    source: str
    target: str
    is_active: bool
    comment: str


def _check(source: str, target: str, comment: str, pk: Any = None) -> None:
    """Field errors for a rule with these values (``pk``: the rule being changed)."""
    errors: dict[str, str] = {}
    for name, value in (("source", source), ("target", target)):
        if value not in AlertSignal.values:
            errors[name] = _("Not a signal: %(s)s.") % {"s": value}
    if not errors and source == target:
        errors["target"] = _("A signal cannot inhibit itself.")
    if len(comment) > _COMMENT_MAX:
        errors["comment"] = _("At most %(n)d characters.") % {"n": _COMMENT_MAX}
    taken = InhibitionRule.objects.filter(source=source, target=target).exclude(pk=pk)
    if not errors and taken.exists():
        errors["target"] = _("A rule for this source and target exists already.")
    if errors:
        raise ValidationError(errors)


def _save(rule: InhibitionRule, by: Any, now: datetime, reason: str) -> None:
    rule._history_user = by  # type: ignore[attr-defined]
    rule._history_date = now  # type: ignore[attr-defined]
    rule._change_reason = reason  # type: ignore[attr-defined]
    try:
        with transaction.atomic():
            rule.save()
    except IntegrityError:
        # A concurrent save took the pair between the check and the write: the same error.
        raise ValidationError(
            {"target": _("A rule for this source and target exists already.")}
        ) from None


def create(
    *, source: str, target: str, by: Any, now: datetime, is_active: bool = True, comment: str = ""
) -> InhibitionRule:
    """Add a rule "while ``source`` is due, do not raise ``target``"; ``ValidationError``
    by field for an unknown signal, a signal inhibiting itself or a pair that exists."""
    comment = (comment or "").strip()
    _check(source, target, comment)
    rule = InhibitionRule(source=source, target=target, is_active=is_active, comment=comment)
    _save(rule, by, now, _("created"))
    return rule


def change(
    rule: InhibitionRule, *, by: Any, now: datetime, **changes: Unpack[RuleChanges]
) -> InhibitionRule:
    """Change a rule's signals, active flag or comment; nothing is saved when nothing differs."""
    with transaction.atomic():
        current: InhibitionRule = InhibitionRule.objects.select_for_update().get(pk=rule.pk)
        source = changes.get("source", current.source)
        target = changes.get("target", current.target)
        is_active = changes.get("is_active", current.is_active)
        comment = (changes.get("comment", current.comment) or "").strip()
        after = (source, target, is_active, comment)
        if after == (current.source, current.target, current.is_active, current.comment):
            return current
        _check(source, target, comment, pk=current.pk)
        current.source, current.target, current.is_active, current.comment = after
        _save(current, by, now, _("changed"))
    return current


def delete(rule: InhibitionRule, *, by: Any, now: datetime) -> None:
    """Delete a rule; its history keeps a record of who deleted it, and when."""
    rule._history_user = by  # type: ignore[attr-defined]
    rule._history_date = now  # type: ignore[attr-defined]
    rule._change_reason = _("deleted")  # type: ignore[attr-defined]
    rule.delete()
