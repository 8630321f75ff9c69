"""Keep tracked opportunities in step with host saves and deletes."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.db.models.signals import post_delete, post_save
from django.utils import timezone

from followup_visibility import sync
from followup_visibility.registry import is_tracked

_UID = "followup_visibility"


def connect() -> None:
    # Connected for every sender and filtered by the registry, so that overriding the tracked
    # models in settings (tests, multi-tenant hosts) needs no reconnecting.
    post_save.connect(on_host_saved, dispatch_uid=f"{_UID}.saved")
    post_delete.connect(on_host_deleted, dispatch_uid=f"{_UID}.deleted")


def on_host_saved(
    sender: type[models.Model], instance: models.Model, raw: bool = False, **kwargs: Any
) -> None:
    if raw or not is_tracked(sender):
        return
    # Same transaction as the host's save: the mirror commits or rolls back with it.
    sync.sync_objects([instance], timezone.now())


def on_host_deleted(sender: type[models.Model], instance: models.Model, **kwargs: Any) -> None:
    if is_tracked(sender):
        sync.mark_deleted(sender, [instance.pk], timezone.now())
