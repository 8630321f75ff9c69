"""Fold a touch timeline into the state later signals read (first response, waiting, ...).

:func:`fold` is pure; :func:`chain_ids` and :func:`timeline` only read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from django.db.models import Q

from followup_visibility.choices import UNANSWERED_CALL_OUTCOMES, Channel, Direction
from followup_visibility.models import Touch, TrackedOpportunity


@dataclass
class TimelineState:
    first_outbound_at: datetime | None = None
    first_response_at: datetime | None = None
    first_response_touch_id: Any = None
    last_touch_at: datetime | None = None
    last_meaningful_touch_at: datetime | None = None
    last_meaningful_touch_id: Any = None
    awaiting_reply_since: datetime | None = None
    last_unanswered_call_at: datetime | None = None


STATE_FIELDS = [f.name for f in fields(TimelineState)]

#: The touch columns :func:`fold` and :func:`arrival` read (``values(*COLUMNS)``).
COLUMNS = (
    "id",
    "opportunity_id",
    "channel",
    "direction",
    "outcome",
    "source",
    "occurred_at",
    "is_meaningful",
    "meaningful_reason",
)

# Outbound touches that are no attempt to reach this customer: nobody tried anything.
# Everything else outbound (an unanswered call, a bounced mail) is an attempt.
NOT_ATTEMPT_REASONS = frozenset({"auto_reply", "untargeted_template"})


def fold(touches: Iterable[dict[str, Any]]) -> TimelineState:
    """State after the touches, taken in the customer's order (``occurred_at``, then id).

    Ordering by the customer's clock is what makes late logging harmless: a call logged on
    Friday that happened on Tuesday answers the Monday email, whatever order they arrived in.
    """
    state = TimelineState()
    for t in sorted(touches, key=lambda t: (t["occurred_at"], t["id"])):
        if t["direction"] == Direction.INTERNAL:
            continue
        at = t["occurred_at"]
        state.last_touch_at = at
        outbound = t["direction"] == Direction.OUTBOUND
        attempt = t.get("meaningful_reason") not in NOT_ATTEMPT_REASONS
        if outbound and attempt and state.first_outbound_at is None:
            state.first_outbound_at = at
        if t["is_meaningful"]:
            state.last_meaningful_touch_at, state.last_meaningful_touch_id = at, t["id"]
            if outbound:
                if state.first_response_at is None:
                    state.first_response_at, state.first_response_touch_id = at, t["id"]
                state.awaiting_reply_since = None
            elif state.awaiting_reply_since is None:
                state.awaiting_reply_since = at
        unanswered = t["channel"] == Channel.PHONE and t["outcome"] in UNANSWERED_CALL_OUTCOMES
        if outbound and unanswered:
            state.last_unanswered_call_at = at
        elif (outbound and t["channel"] == Channel.PHONE) or t["is_meaningful"]:
            # A later attempt or any real conversation settles the retry.
            state.last_unanswered_call_at = None
    return state


def arrival(touches: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """The touch an opportunity arrived with: its chain's earliest customer touch, if any."""
    customer = [t for t in touches if t["direction"] != Direction.INTERNAL]
    return min(customer, key=lambda t: (t["occurred_at"], t["id"]), default=None)


def chain_ids(opportunity: TrackedOpportunity) -> list[Any]:
    """Ids whose touches make up this opportunity's timeline: the lead and deal of one chain.

    Merged duplicates need no lookup here: a merge moves their touches to the survivor.
    """
    root = opportunity.root_id
    ids = set(
        TrackedOpportunity.objects.filter(Q(pk=root) | Q(chain_root_id=root)).values_list(
            "pk", flat=True
        )
    )
    ids.add(opportunity.pk)
    return sorted(ids)


def timeline(opportunity: TrackedOpportunity) -> Any:
    """The touches of the whole chain (lead and deal), oldest first."""
    return Touch.objects.filter(opportunity_id__in=chain_ids(opportunity)).order_by(
        "occurred_at", "id"
    )
