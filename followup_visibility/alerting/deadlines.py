"""Deadlines: the stored clocks of opportunities, loaded with what they depend on and written.

The computation is the engine's (:mod:`followup_visibility.engine.clocks`); this module reads
the states it needs for a batch (with the pending handoff and the detections of duplicates
and conflicting owners) and makes the stored rows match, in the caller's transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime
from itertools import pairwise
from typing import Any

from django.db.models import Exists, OuterRef, Q, Subquery

from followup_visibility.alerting import sql
from followup_visibility.alerting.sql import DeadlineWrite
from followup_visibility.choices import AlertSignal, Direction, Status
from followup_visibility.engine.clocks import STATE_FIELDS, Context, DeadlineRow, compute
from followup_visibility.engine.timeline import NOT_ATTEMPT_REASONS
from followup_visibility.models import DuplicateMatch, Handoff, Touch, TrackedOpportunity

logger = logging.getLogger(__name__)

#: (event, due) of each (opportunity, signal) as just computed.
Current = dict[tuple[Any, str], tuple[datetime, datetime]]


def state_annotations(now: datetime | None = None) -> dict[str, Any]:
    """What a state needs beyond its columns, as annotations of an opportunity query: the
    pending handoff's time, the first open duplicate's detection and, with ``now``, whether a
    duplicate match was detected or cleared at ``now`` (``matches_moved``)."""
    pending = Handoff.objects.filter(
        opportunity=OuterRef("pk"), accepted_at__isnull=True, superseded_at__isnull=True
    ).values("handed_at")[:1]
    matches = DuplicateMatch.objects.filter(opportunity=OuterRef("pk"))
    duplicate = matches.filter(cleared_at__isnull=True, duplicate__status=Status.OPEN)
    found: dict[str, Any] = {
        "handoff_at": Subquery(pending),
        "duplicate_at": Subquery(duplicate.order_by("detected_at").values("detected_at")[:1]),
    }
    if now is not None:
        found["matches_moved"] = Exists(matches.filter(_moved(now)))
    return found


def _moved(now: datetime) -> Q:
    return Q(detected_at=now) | Q(cleared_at=now)


def states(opportunity_ids: Iterable[Any]) -> list[dict[str, Any]]:
    """``STATE_FIELDS`` of these opportunities, with their pending handoff's time and detections.

    One query, plus two only when some of them have a pending handoff (see :func:`detect`).
    """
    extra = state_annotations()
    rows = list(
        TrackedOpportunity.objects.filter(pk__in=list(opportunity_ids))
        .annotate(**extra)
        .values(*STATE_FIELDS, *extra)
    )
    detect(rows)
    return rows


def detect(rows: Sequence[dict[str, Any]]) -> None:
    """Add ``conflict_at`` to states that have ``handoff_at`` (see :func:`_conflicts`)."""
    conflicts = _conflicts([row["id"] for row in rows if row["handoff_at"] is not None])
    for row in rows:
        row["conflict_at"] = conflicts.get(row["id"])


def others_moved(rows: Sequence[dict[str, Any]], now: datetime) -> set[Any]:
    """The other sides of the duplicate matches of ``rows`` detected or cleared at ``now``.

    Their duplicate deadlines move with this change although nothing else of theirs did:
    detection and clearing happen at ``now`` in the caller's transaction, just before it
    recomputes. Matches are stored in both directions, so each side reads its own rows.
    """
    changed = [row["id"] for row in rows if row.get("matches_moved")]
    if not changed:
        return set()
    found = DuplicateMatch.objects.filter(_moved(now), opportunity_id__in=changed)
    return set(found.values_list("duplicate_id", flat=True)) - {row["id"] for row in rows}


def _conflicts(ids: list[Any]) -> dict[Any, datetime]:
    """When the previous owner was first seen working an opportunity handed to someone else.

    Applies to opportunities with a pending handoff (``ids``) whose previous owner had accepted
    ownership: the handoff before the pending one went to them and was accepted. The earliest
    outbound attempt by that owner at or after the pending handoff is the detection; two people
    now believe they own the opportunity. Accepting or superseding the handoff clears it.
    """
    if not ids:
        return {}
    handoffs = (
        Handoff.objects.filter(opportunity_id__in=ids)
        .order_by("opportunity", "handed_at", "id")
        .values_list(
            "opportunity_id",
            "from_owner_id",
            "to_owner_id",
            "handed_at",
            "accepted_at",
            "superseded_at",
        )
    )
    # (opportunity, previous owner) -> when the pending handoff took it from them
    contested: dict[tuple[Any, Any], datetime] = {}
    for before, handoff in pairwise(handoffs):
        opportunity_id, from_owner, _to, handed_at, accepted_at, superseded_at = handoff
        if (
            accepted_at is None
            and superseded_at is None
            and from_owner is not None
            and before[0] == opportunity_id
            and before[2] == from_owner
            and before[4] is not None
        ):
            contested[(opportunity_id, from_owner)] = handed_at
    if not contested:
        return {}
    touches = (
        Touch.objects.filter(
            opportunity_id__in={opp for opp, _owner in contested},
            actor_id__in={owner for _opp, owner in contested},
            direction=Direction.OUTBOUND,
            occurred_at__gte=min(contested.values()),
        )
        # An auto-reply or an untargeted template sent in their name is nobody working it.
        .exclude(meaningful_reason__in=NOT_ATTEMPT_REASONS)
        .values_list("opportunity_id", "actor_id", "occurred_at")
    )
    found: dict[Any, datetime] = {}
    for opportunity_id, actor_id, occurred_at in touches:
        since = contested.get((opportunity_id, actor_id))
        if since is not None and occurred_at >= since:
            _keep_earliest(found, opportunity_id, occurred_at)
    return found


def _keep_earliest(found: dict[Any, datetime], key: Any, at: datetime) -> None:
    if key not in found or at < found[key]:
        found[key] = at


def write(
    rows: Sequence[Mapping[str, Any]],
    now: datetime,
    ctx: Context,
    *,
    only: Collection[str] | None = None,
) -> tuple[DeadlineWrite, Current]:
    """Store the deadlines computed from these states (of the ``only`` signals, if given);
    what was written, and the (event, due) of each deadline now in force.

    Runs in the caller's transaction and writes only rows that changed.
    """
    desired: list[DeadlineRow] = []
    for state in rows:
        desired += [r for r in compute(state, ctx) if only is None or r.signal in only]
    ids = [state["id"] for state in rows]
    written = sql.write_deadlines(ids, desired, now, only=sorted(only) if only else None)
    current = {(r.opportunity_id, r.signal): (r.event_at, r.due_at) for r in desired}
    return written, current


DUPLICATE_ONLY = frozenset({AlertSignal.DUPLICATE})
