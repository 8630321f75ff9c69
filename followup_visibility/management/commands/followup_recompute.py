from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from followup_visibility.config import recompute
from followup_visibility.models import Segment, Team


class Command(BaseCommand):
    help = (
        "Recompute the deadlines of open opportunities here and now, chunk by chunk "
        "(what policy and calendar changes do in background tasks)."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--team", action="append", default=[], help="Team key (repeatable).")
        parser.add_argument(
            "--segment", action="append", default=[], help="Segment code (repeatable)."
        )
        parser.add_argument(
            "--reassign",
            action="store_true",
            help="Also re-run team and segment assignment (after editing teams or rules).",
        )
        parser.add_argument("--chunk-size", type=int, default=None)

    def handle(self, *args: Any, **options: Any) -> None:
        if options["chunk_size"] is not None and options["chunk_size"] < 1:
            raise CommandError("--chunk-size must be at least 1.")
        team_ids = self._ids(Team, "key", options["team"])
        segment_ids = self._ids(Segment, "code", options["segment"])
        scope = recompute.Scope(
            team_ids=team_ids, segment_ids=segment_ids, reassign=options["reassign"]
        )
        result = recompute.recompute_all(scope, timezone.now(), chunk_size=options["chunk_size"])
        totals = result.totals
        self.stdout.write(
            f"{result.opportunities} open opportunities: {totals.written} deadlines "
            f"written, {totals.deleted} removed, {totals.unchanged} unchanged; "
            f"{totals.resolved} alerts resolved, {totals.woken} woken"
            + (f"; {totals.routed} reassigned" if options["reassign"] else "")
        )

    def _ids(self, model: Any, field: str, values: list[str]) -> list[int] | None:
        if not values:
            return None
        found = dict(model.objects.filter(**{f"{field}__in": values}).values_list(field, "pk"))
        unknown = sorted(set(values) - set(found))
        if unknown:
            raise CommandError(f"Unknown {model._meta.verbose_name} {field}: {', '.join(unknown)}")
        return list(found.values())
