"""What-if preview: how many open opportunities a policy change would make overdue now."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from followup_visibility.alerting import deadlines
from followup_visibility.config import recompute
from followup_visibility.engine.clocks import Context, compute
from followup_visibility.engine.sla import PolicyBook, Version, validate_values
from followup_visibility.models import Segment, SlaPolicy, Team
from followup_visibility.models.policy import DURATION_FIELDS

_DRAFT_ID = -1  # never stored: marks deadlines computed with the draft


@dataclass
class WhatIf:
    """Overdue counts now, by ``(signal, segment id)``, under current and proposed policies."""

    now: datetime
    examined: int = 0
    current: Counter[tuple[str, int | None]] = field(default_factory=Counter)
    proposed: Counter[tuple[str, int | None]] = field(default_factory=Counter)
    #: Distinct opportunities with at least one overdue deadline.
    current_opportunities: int = 0
    proposed_opportunities: int = 0

    def rows(self) -> list[dict[str, Any]]:
        """One row per signal and segment that is overdue either way, largest change first."""
        keys = set(self.current) | set(self.proposed)
        names = dict(
            Segment.objects.filter(pk__in={s for _sig, s in keys}).values_list("pk", "name")
        )
        rows = [
            {
                "signal": signal,
                "segment_id": segment,
                "segment": names.get(segment, "") if segment is not None else "",
                "current": self.current[(signal, segment)],
                "proposed": self.proposed[(signal, segment)],
                "change": self.proposed[(signal, segment)] - self.current[(signal, segment)],
            }
            for signal, segment in keys
        ]
        return sorted(rows, key=lambda r: (-abs(r["change"]), r["signal"], r["segment"]))


def what_if(
    values: Mapping[str, Any],
    *,
    now: datetime,
    policy: SlaPolicy | None = None,
    team: Team | None = None,
    segment: Segment | None = None,
    retired: bool = False,
    chunk_size: int = 5000,
) -> WhatIf:
    """Count overdue deadlines now if ``values`` were in force for this scope; saves nothing.

    Give an existing ``policy`` (a change to it) or a ``team`` and/or ``segment`` (a new
    policy). The draft is treated as applying to open opportunities too.
    """
    if policy is not None:
        team_id, segment_id, is_default = policy.team_id, policy.segment_id, policy.is_default
    else:
        team_id = team.pk if team else None
        segment_id = segment.pk if segment else None
        is_default = team_id is None and segment_id is None
    validate_values(values, is_default=is_default, retired=retired)
    book = PolicyBook.load()
    draft = Version(
        id=_DRAFT_ID,
        number=0,
        effective_from=now,
        applies_to_open=True,
        retired=retired,
        durations={s: values.get(f) for s, f in DURATION_FIELDS.items()},
        stage_limits=Version.stage_map(values.get("stage_limits") or {}),
    )
    current = Context.load(book)
    proposed = Context(
        book=book.with_draft((team_id, segment_id), draft),
        team_calendars=current.team_calendars,
        default_calendar=current.default_calendar,
        engines=current.engines,
    )
    scope = recompute.Scope(
        team_ids=[team_id] if team_id else None, segment_ids=[segment_id] if segment_id else None
    )
    result = WhatIf(now=now)
    queryset = scope.queryset().order_by("pk").values_list("pk", flat=True)
    last = None
    while True:
        page = queryset if last is None else queryset.filter(pk__gt=last)
        ids = list(page[:chunk_size])
        if not ids:
            return result
        last = ids[-1]
        for state in deadlines.states(ids):
            result.examined += 1
            for ctx, counts, attr in (
                (current, result.current, "current_opportunities"),
                (proposed, result.proposed, "proposed_opportunities"),
            ):
                overdue = [r for r in compute(state, ctx) if r.due_at <= now]
                counts.update((r.signal, state["segment_id"]) for r in overdue)
                if overdue:
                    setattr(result, attr, getattr(result, attr) + 1)
