"""A ready Celery beat schedule the host can merge; importable before Django apps load."""

from __future__ import annotations

from typing import Any

#: Merge into ``app.conf.beat_schedule`` (or ``CELERY_BEAT_SCHEDULE``).
#: Each entry expires after its own interval, so a backlog after an outage never stacks passes.
BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    "followup-visibility-sweep": {
        "task": "followup_visibility.sweep",
        "schedule": 60,
        "options": {"expires": 60},
    },
    "followup-visibility-full-sweep": {
        "task": "followup_visibility.sweep",
        "schedule": 60 * 60,
        # Repairs whatever a steady pass missed (a deadline written while a pass was running).
        "kwargs": {"full": True},
        "options": {"expires": 60 * 60},
    },
    "followup-visibility-escalate": {
        "task": "followup_visibility.escalate",
        "schedule": 60,
        "options": {"expires": 60},
    },
    "followup-visibility-notify": {
        "task": "followup_visibility.notify",
        "schedule": 5 * 60,
        "options": {"expires": 5 * 60},
    },
    "followup-visibility-outbox": {
        "task": "followup_visibility.drain_outbox",
        # A safety net: a commit wakes a worker at once; this catches what a broker outage or
        # a lost wake-up left pending.
        "schedule": 30,
        "options": {"expires": 30},
    },
    "followup-visibility-rescore-register": {
        "task": "followup_visibility.rescore_register",
        # The register ranks by stored scores; this moves their lateness and age.
        "schedule": 10 * 60,
        "options": {"expires": 10 * 60},
    },
    "followup-visibility-reconcile": {
        "task": "followup_visibility.reconcile",
        "schedule": 60 * 60,
        # A backlog after an outage must not stack reconcile runs.
        "options": {"expires": 60 * 60},
    },
}
