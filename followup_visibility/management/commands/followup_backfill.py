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
    help = "Start tracking host rows that existed before the app was installed."

    def add_arguments(self, parser: Any) -> None:
        add_model_arguments(parser)
        parser.add_argument(
            "--owners-unconfirmed",
            action="store_true",
            help="Treat existing owners as unconfirmed handoffs instead of accepted ones.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["chunk_size"] is not None and options["chunk_size"] < 1:
            raise CommandError("--chunk-size must be at least 1.")
        now = timezone.now()
        for model in tracked_models(options["models"]):
            progress = ProgressBar(
                self.stdout, model._meta.label, enabled=not options["no_progress"]
            )
            result = crm.sync_model(
                model,
                now,
                confirm_owners=not options["owners_unconfirmed"],
                chunk_size=options["chunk_size"],
                progress=progress,
            )
            self.stdout.write(
                f"{model._meta.label}: {len(result.created)} created, "
                f"{len(result.updated)} updated, {result.unchanged} unchanged"
            )
