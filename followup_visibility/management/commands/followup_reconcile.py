from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from followup_visibility.ingest import crm
from followup_visibility.management.commands._sync import (
    ProgressBar,
    add_model_arguments,
    tracked_models,
)


class Command(BaseCommand):
    help = "Catch host changes made without signals (queryset.update, raw SQL, deletes)."

    def add_arguments(self, parser: Any) -> None:
        add_model_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        if options["chunk_size"] is not None and options["chunk_size"] < 1:
            raise CommandError("--chunk-size must be at least 1.")
        now = timezone.now()
        for model in tracked_models(options["models"]):
            progress = ProgressBar(
                self.stdout, model._meta.label, enabled=not options["no_progress"]
            )
            result = crm.sync_model(model, now, chunk_size=options["chunk_size"], progress=progress)
            deleted = crm.reconcile_deleted(model, now, chunk_size=options["chunk_size"])
            self.stdout.write(
                f"{model._meta.label}: {len(result.created)} created, "
                f"{len(result.updated)} updated, {deleted} closed as deleted"
            )
