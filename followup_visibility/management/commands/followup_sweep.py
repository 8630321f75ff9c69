from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from followup_visibility.alerting import sweep
from followup_visibility.management.commands._clock import add_now_argument, parse_now


class Command(BaseCommand):
    help = (
        "Run one sweep pass here and now: raise alerts for deadlines that fell due, and run "
        "the chunks of a full pass that a lost worker left undone (what the "
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
        now = parse_now(options["now"])
        run = sweep.sweep(now, full=options["full"])
        self.stdout.write(
            f"{'full' if run.full else 'steady'} pass {run.pk}: {run.examined} deadlines "
            f"examined, {run.raised} alerts raised, {run.resolved} resolved since the last "
            f"pass, {run.woken} woken, {run.suppressed} suppressed; lag {run.lag}"
        )
        # A full pass started by a worker that died (or by a command that was killed) is
        # finished here rather than by the next full pass, up to an hour later.
        if lost := sweep.finish_lost(now):
            self.stdout.write(
                f"full pass {lost[0].run_id}: {len(lost)} chunks left undone by a lost worker, "
                "run here"
            )
