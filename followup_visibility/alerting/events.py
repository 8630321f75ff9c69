"""Alert events: the public signals of :mod:`followup_visibility.signals`, sent after commit.

Every transition of the lifecycle, the sweep and escalation announces itself here, with the
ids it changed: set-based transitions announce one batch per statement.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from followup_visibility.models import Alert
from followup_visibility.signals import (
    alert_status_changed,
    alerts_escalated,
    alerts_raised,
    send_on_commit,
)


def wanted(transition: str | None = None) -> bool:
    """Whether anyone listens: the ids a set-based statement returns cost a little, so a
    statement asks for them only then."""
    if transition is None:
        return alerts_raised.has_listeners(Alert)
    return alert_status_changed.has_listeners(Alert)


def raised(alert_ids: Sequence[int], now: datetime) -> None:
    if alert_ids:
        send_on_commit(alerts_raised, Alert, alert_ids=sorted(alert_ids), now=now)


def changed(
    transition: str, alert_ids: Sequence[int], now: datetime, *, by: Any = None, reason: str = ""
) -> None:
    if alert_ids:
        send_on_commit(
            alert_status_changed,
            Alert,
            alert_ids=sorted(alert_ids),
            transition=str(transition),
            now=now,
            by=by,
            reason=reason,
        )


def escalated(alert_ids: Sequence[int], escalation_ids: Sequence[int], now: datetime) -> None:
    if escalation_ids:
        send_on_commit(
            alerts_escalated,
            Alert,
            alert_ids=sorted(set(alert_ids)),
            escalation_ids=sorted(escalation_ids),
            now=now,
        )
