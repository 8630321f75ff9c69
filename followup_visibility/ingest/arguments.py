"""The checks every ingest entry point makes of what the host hands it.

A naive ``now``, a host object that was never saved or an opportunity that is not stored is
the caller's mistake. Each is a ``ValidationError`` naming the argument, raised before
anything is written, rather than a ``TypeError`` deep in a comparison, or a record tracked
under ``object_pk="None"`` that every other unsaved object then shares.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models
from django.utils.translation import gettext as _

from followup_visibility.alerting import refresh


def is_aware(value: object) -> bool:
    return isinstance(value, datetime) and value.utcoffset() is not None


def require_aware(**values: object) -> None:
    """Raise ``ValidationError`` keyed by the name of each value that is not an aware datetime."""
    errors = {
        name: ValidationError(_("A timezone-aware datetime is required."), code="naive")
        for name, value in values.items()
        if not is_aware(value)
    }
    if errors:
        raise ValidationError(errors)


def is_unsaved(obj: models.Model) -> bool:
    """Never saved: no key yet, or a key its default gave it before any save (a UUID)."""
    return obj.pk is None or obj._state.adding


def unsaved_message(obj: models.Model) -> str:
    return _("%(model)s %(obj)r is not saved: save it first, so that it has a key of its own.") % {
        "model": obj._meta.label,
        "obj": str(obj),
    }


def require_saved(objs: Sequence[models.Model], name: str) -> None:
    """Raise ``ValidationError`` keyed ``name`` when any of the host objects is unsaved.

    Their text key would be ``"None"`` (or a key no row has), so that every unsaved object
    would share one tracked record and merge the timelines of unrelated customers.
    """
    unsaved = [index for index, obj in enumerate(objs) if is_unsaved(obj)]
    if unsaved:
        message = _("Item %(index)d: %(problem)s")
        raise ValidationError(
            {
                name: [
                    ValidationError(
                        message % {"index": i, "problem": unsaved_message(objs[i])},
                        code="unsaved",
                    )
                    for i in unsaved
                ]
            }
        )


def lock_stored(opportunities: Mapping[str, Any]) -> list[Any]:
    """Lock the chains of these opportunities (``refresh.lock``), by argument name; raise
    ``ValidationError`` keyed by the name of each one that was never saved or is gone.

    The lock reads the rows anyway, so that asking whether they exist costs nothing more.
    """
    keys = [opp.pk for opp in opportunities.values() if opp.pk is not None]
    locked = refresh.lock(keys) if keys else []
    errors = {
        name: ValidationError(missing_message(opp), code="missing")
        for name, opp in opportunities.items()
        if opp.pk is None or opp.pk not in locked
    }
    if errors:
        raise ValidationError(errors)
    return locked


def missing_message(opportunity: Any) -> str:
    if opportunity.pk is None:
        return _("This opportunity is not saved.")
    return _("Opportunity %(pk)s does not exist.") % {"pk": opportunity.pk}
