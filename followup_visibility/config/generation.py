"""Announce a configuration change to every process's cached copy of it."""

from __future__ import annotations

import uuid
from datetime import datetime

from followup_visibility.models import ConfigurationGeneration


def bump(now: datetime) -> None:
    """Give the configuration a new generation token: cached copies load again."""
    token = uuid.uuid4().hex
    # One row, key 1 (the migration creates it); made again if someone deleted it.
    if not ConfigurationGeneration.objects.filter(pk=1).update(token=token, changed_at=now):
        ConfigurationGeneration.objects.update_or_create(
            pk=1, defaults={"token": token, "changed_at": now}
        )
