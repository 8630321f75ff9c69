"""Public Django signals. All are sent after the surrounding transaction commits (a rollback
sends nothing), and a receiver that raises is logged without stopping the others.

Timeline and CRM:

``touch_recorded``: ``sender=Touch``; ``touch``, ``opportunity``.
    A new touch was stored (repeated deliveries send nothing). One per touch, also for a batch.
``opportunities_synced``: ``sender=TrackedOpportunity``; ``created`` and ``updated`` (lists of
    ids). Host rows were read into tracked opportunities.
``handoff_accepted``: ``sender=Handoff``; ``handoff``.
``opportunities_merged``: ``sender=TrackedOpportunity``; ``survivor``, ``merged``.

Alert events, in batches (a sweep raising 500k alerts sends one signal per chunk, not one per
alert); ``alert_ids`` is a list of ``Alert`` keys in ascending order, never empty:

``alerts_raised``: ``sender=Alert``; ``alert_ids``, ``now``.
    New alerts (new episodes) were raised by the sweep.
``alert_status_changed``: ``sender=Alert``; ``alert_ids``, ``transition``, ``now``, ``by``
    (the user, or None for the system), ``reason``. ``transition`` is an
    :class:`~followup_visibility.choices.AlertTransition` value: ``acknowledged``, ``snoozed``,
    ``woken``, ``dismissed``, ``resolved``, ``reopened``, ``held`` (a suppression took them)
    or ``released`` (no suppression holds them any more).
``alerts_escalated``: ``sender=Alert``; ``alert_ids``, ``escalation_ids``, ``now``.
    Escalation levels fired (``escalation_ids``: the ``Escalation`` steps recorded, any
    outcome; ``alert_ids``: their alerts).
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.dispatch import Signal

touch_recorded = Signal()
opportunities_synced = Signal()
handoff_accepted = Signal()
opportunities_merged = Signal()

alerts_raised = Signal()
alert_status_changed = Signal()
alerts_escalated = Signal()


def send_on_commit(signal: Signal, sender: Any, **kwargs: Any) -> None:
    """Send ``signal`` once the current transaction commits, if anyone listens."""
    if signal.has_listeners(sender):
        transaction.on_commit(lambda: signal.send_robust(sender=sender, **kwargs), robust=True)
