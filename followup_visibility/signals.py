"""Public signals. All are sent after the surrounding transaction commits.

``touch_recorded``: ``sender=Touch``; ``touch``, ``opportunity``.
    A new touch was stored (duplicate deliveries send nothing).
``opportunities_synced``: ``sender=TrackedOpportunity``; ``created`` and ``updated`` (lists of
    ids). Host rows were read into tracked opportunities.
``handoff_accepted``: ``sender=Handoff``; ``handoff``.
``opportunities_merged``: ``sender=TrackedOpportunity``; ``survivor``, ``merged``.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.dispatch import Signal

touch_recorded = Signal()
opportunities_synced = Signal()
handoff_accepted = Signal()
opportunities_merged = Signal()


def send_on_commit(signal: Signal, sender: Any, **kwargs: Any) -> None:
    transaction.on_commit(lambda: signal.send(sender=sender, **kwargs), robust=True)
