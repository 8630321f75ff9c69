from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from followup_visibility.alerting import outbox


class Command(BaseCommand):
    help = (
        "Do the outbox's pending work: recomputes after policy, calendar and team changes, "
        "and queued emails (the drain_outbox task, for hosts that schedule with cron)."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--limit", type=int, default=None, help="Stop after this many messages."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["limit"] is not None and options["limit"] < 1:
            raise CommandError("--limit must be at least 1.")
        result = outbox.drain(limit=options["limit"])
        self.stdout.write(
            f"outbox: {result.done} done, {result.failed} failed"
            + (f", {result.given_up} given up" if result.given_up else "")
            + (" (more left)" if result.more else "")
        )
