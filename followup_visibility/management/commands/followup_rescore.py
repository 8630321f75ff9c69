from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from followup_visibility.alerting import ranking
from followup_visibility.management.commands._clock import add_now_argument, parse_now


class Command(BaseCommand):
    help = (
        "Score every row of the unfollowed register again (the rescore_register task, for "
        "hosts that schedule with cron: every ten minutes). The register ranks by stored "
        "scores, renewed on every change; this moves their lateness and age with the clock, "
        "follows a change of weights, and repairs what a write made without the app left."
    )

    def add_arguments(self, parser: Any) -> None:
        add_now_argument(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        stored = ranking.rescore(parse_now(options["now"]))
        self.stdout.write(f"register: {stored} rows scored")
