"""A ready Celery beat schedule the host can merge; importable before Django apps load."""

from __future__ import annotations

from typing import Any

#: Merge into ``app.conf.beat_schedule`` (or ``CELERY_BEAT_SCHEDULE``).
BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    "followup-visibility-reconcile": {
        "task": "followup_visibility.reconcile",
        "schedule": 60 * 60,
        # A backlog after an outage must not stack reconcile runs.
        "options": {"expires": 60 * 60},
    },
}
