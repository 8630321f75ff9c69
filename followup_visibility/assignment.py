"""Which team and which segment an opportunity belongs to (and so which calendar and SLAs).

Team: the team whose ``key`` the host reports, else the owner's team (the lowest-numbered one
if the owner sits in several). Segment, first answer wins: set by hand in the admin, a code the
host reports through its adapter, the first matching segment rule, the lead's segment for a
deal, none.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import transaction

from followup_visibility.choices import AlertStatus, Direction, SegmentSource
from followup_visibility.models import Alert, Segment, SegmentRule, Team, Touch, TrackedOpportunity

ASSIGNED_FIELDS = ["team", "segment", "segment_source"]


@dataclass(frozen=True)
class _Rule:
    segment_id: int
    content_type_id: int | None
    channel: str
    direction: str
    outcome: str
    touch_source: str
    hint_field: str
    hint_value: str

    def matches(self, opp: TrackedOpportunity, arrival: dict[str, Any] | None) -> bool:
        if self.content_type_id is not None and self.content_type_id != opp.content_type_id:
            return False
        if self.hint_field:
            value = str((opp.segment_hints or {}).get(self.hint_field, ""))
            if value.casefold() != self.hint_value.casefold():
                return False
        wanted = {
            "channel": self.channel,
            "direction": self.direction,
            "outcome": self.outcome,
            "source": self.touch_source,
        }
        wanted = {k: v for k, v in wanted.items() if v}
        if wanted:
            if arrival is None:
                return False
            return all(arrival[k] == v for k, v in wanted.items())
        return True


@dataclass(frozen=True)
class Organisation:
    """Teams, memberships, segments and rules, read once per batch (they are small tables)."""

    team_by_key: dict[str, int]
    team_by_member: dict[Any, int]
    segment_by_code: dict[str, int]
    rules: tuple[_Rule, ...]

    @classmethod
    def load(cls) -> Organisation:
        team_by_member: dict[Any, int] = {}
        # Through the relation, not the through table: its column is named after the host's
        # user model.
        memberships = Team.objects.filter(members__isnull=False).order_by("pk")
        for user_id, team_id in memberships.values_list("members", "pk"):
            team_by_member.setdefault(user_id, team_id)
        rules = tuple(
            _Rule(*row)
            for row in SegmentRule.objects.filter(active=True)
            .order_by("priority", "id")
            .values_list(
                "segment_id",
                "content_type_id",
                "channel",
                "direction",
                "outcome",
                "touch_source",
                "hint_field",
                "hint_value",
            )
        )
        return cls(
            team_by_key=dict(Team.objects.values_list("key", "pk")),
            team_by_member=team_by_member,
            segment_by_code=dict(Segment.objects.values_list("code", "pk")),
            rules=rules,
        )


def _arrival_touches(opps: Sequence[TrackedOpportunity]) -> dict[int, dict[str, Any]]:
    """Each opportunity's arrival touch, by ``id(opp)``: the chain's earliest customer touch.

    Keyed by object, not primary key: a deal being created has no key yet, but its chain root
    (the lead) already has touches.
    """
    chains = {id(opp): {opp.pk, opp.chain_root_id} - {None} for opp in opps}
    members = set().union(*chains.values())
    if not members:
        return {}
    first: dict[Any, Any] = {}
    rows = (
        Touch.objects.filter(opportunity_id__in=members)
        .exclude(direction=Direction.INTERNAL)
        .order_by("occurred_at", "id")
        .values("id", "opportunity_id", "channel", "direction", "outcome", "source", "occurred_at")
    )
    for row in rows:
        first.setdefault(row["opportunity_id"], row)
    result = {}
    for key, chain in chains.items():
        # A deal arrives with its lead: the chain's earliest touch is its arrival.
        candidates = [first[pk] for pk in chain if pk in first]
        if candidates:
            result[key] = min(candidates, key=lambda r: (r["occurred_at"], r["id"]))
    return result


def assign(
    opps: Sequence[TrackedOpportunity], org: Organisation | None = None
) -> list[TrackedOpportunity]:
    """Set team and segment in memory; return the opportunities whose assignment changed."""
    if not opps:
        return []
    org = org or Organisation.load()
    arrivals = _arrival_touches(opps) if org.rules else {}
    predecessor_segments = _predecessor_segments(opps)
    # A lead and its deal in one batch (a touch on their chain): decide the lead first, so
    # that the deal inherits its new segment rather than the stored one.
    batch: dict[Any, TrackedOpportunity] = {opp.pk: opp for opp in opps if opp.pk is not None}
    changed, moved = [], []
    for opp in sorted(opps, key=lambda o: _chain_depth(o, batch)):
        before = (opp.team_id, opp.segment_id, opp.segment_source)
        opp.team_id = org.team_by_key.get(opp.team_key) if opp.team_key else None
        if opp.team_id is None and opp.owner_id is not None:
            opp.team_id = org.team_by_member.get(opp.owner_id)
        if opp.segment_source != SegmentSource.MANUAL:
            predecessor = batch.get(opp.predecessor_id)
            inherited = (
                predecessor.segment_id
                if predecessor is not None
                else predecessor_segments.get(opp.predecessor_id)
            )
            opp.segment_id, opp.segment_source = _segment(
                opp, org, arrivals.get(id(opp)), inherited
            )
        if (opp.team_id, opp.segment_id, opp.segment_source) != before:
            changed.append(opp)
            if opp.pk is not None and opp.team_id != before[0]:
                moved.append(opp.pk)
    if moved:
        # Another team may have another escalation policy and calendar: plan again. The
        # recipient is resolved when a level fires anyway, as the teams are then.
        Alert.objects.filter(opportunity_id__in=moved, status=AlertStatus.OPEN).update(
            escalation_planned=False, escalate_at=None
        )
    return changed


def _chain_depth(opp: TrackedOpportunity, batch: dict[Any, TrackedOpportunity]) -> int:
    """How many of ``opp``'s predecessors are in the batch (0 for a lead)."""
    depth, seen = 0, set()
    while opp.predecessor_id in batch and opp.predecessor_id not in seen:
        seen.add(opp.predecessor_id)
        opp = batch[opp.predecessor_id]
        depth += 1
    return depth


def _segment(
    opp: TrackedOpportunity,
    org: Organisation,
    arrival: dict[str, Any] | None,
    inherited: int | None,
) -> tuple[int | None, str]:
    if opp.segment_code and opp.segment_code in org.segment_by_code:
        return org.segment_by_code[opp.segment_code], SegmentSource.ADAPTER
    for rule in org.rules:
        if rule.matches(opp, arrival):
            return rule.segment_id, SegmentSource.RULE
    if inherited is not None:
        return inherited, SegmentSource.PREDECESSOR
    return None, SegmentSource.NONE


def _predecessor_segments(opps: Iterable[TrackedOpportunity]) -> dict[Any, int | None]:
    ids = {opp.predecessor_id for opp in opps if opp.predecessor_id is not None}
    if not ids:
        return {}
    return dict(TrackedOpportunity.objects.filter(pk__in=ids).values_list("pk", "segment_id"))


def assign_and_save(opps: Sequence[TrackedOpportunity], org: Organisation | None = None) -> int:
    """``assign`` stored opportunities and write the changed assignments."""
    changed = assign(opps, org)
    if changed:
        TrackedOpportunity.objects.bulk_update(changed, ASSIGNED_FIELDS)
    return len(changed)


def set_segment(
    opportunity: TrackedOpportunity, segment: Segment | None, now: datetime
) -> TrackedOpportunity:
    """Pin a segment by hand (rules and the host no longer decide); ``None`` unpins it."""
    from followup_visibility import deadlines

    with transaction.atomic():
        opportunity.segment = segment
        opportunity.segment_source = SegmentSource.MANUAL if segment else SegmentSource.NONE
        if segment is None:
            assign([opportunity])
        TrackedOpportunity.objects.filter(pk=opportunity.pk).update(
            segment=opportunity.segment_id, segment_source=opportunity.segment_source
        )
        deadlines.recompute([opportunity.pk], now)
    return opportunity
