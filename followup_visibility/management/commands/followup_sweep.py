from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from followup_visibility.alerting import sweep
from followup_visibility.management.commands._clock import add_now_argument, parse_now


class Command(BaseCommand):
    help = (
        "Run one sweep pass here and now: raise alerts for deadlines that fell due (what the "
        "followup_visibility.sweep task does; for hosts that schedule with cron)."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--full",
            action="store_true",
            help="Look at every deadline, not only those due since the last pass.",
        )
        add_now_argument(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        run = sweep.sweep(parse_now(options["now"]), full=options["full"])
        self.stdout.write(
            f"{'full' if run.full else 'steady'} pass {run.pk}: {run.examined} deadlines "
            f"examined, {run.raised} alerts raised, {run.resolved} resolved since the last "
            f"pass, {run.woken} woken, {run.suppressed} suppressed; lag {run.lag}"
        )
