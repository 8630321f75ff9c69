"""Which team and which segment an opportunity belongs to (and so which calendar and SLAs).

Team: the team whose ``key`` the host reports, else the owner's team (the lowest-numbered one
if the owner sits in several). Segment, first answer wins: set by hand in the admin, a code the
host reports through its adapter, the first matching segment rule, the lead's segment for a
deal, none.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from followup_visibility.choices import Direction, SegmentSource
from followup_visibility.engine import timeline
from followup_visibility.models import Segment, SegmentRule, Team, Touch, TrackedOpportunity


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

    @property
    def on_touch(self) -> bool:
        """Whether the rule looks at the arrival touch."""
        return bool(self.channel or self.direction or self.outcome or self.touch_source)

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


class Organisation:
    """Teams, memberships, segments and rules: small tables, each read once per batch and only
    when a decision needs it (a touch that only re-segments never reads the memberships)."""

    @cached_property
    def team_by_key(self) -> dict[str, int]:
        return dict(Team.objects.values_list("key", "pk"))

    @cached_property
    def team_by_member(self) -> dict[Any, int]:
        found: dict[Any, int] = {}
        # Through the relation, not the through table: its column is named after the host's
        # user model.
        memberships = Team.objects.filter(members__isnull=False).order_by("pk")
        for user_id, team_id in memberships.values_list("members", "pk"):
            found.setdefault(user_id, team_id)
        return found

    @cached_property
    def segment_by_code(self) -> dict[str, int]:
        return dict(Segment.objects.values_list("code", "pk"))

    @cached_property
    def rules(self) -> tuple[_Rule, ...]:
        return tuple(
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


def _arrival_touches(opps: Sequence[TrackedOpportunity]) -> dict[int, dict[str, Any]]:
    """Each opportunity's arrival touch, by ``id(opp)``: the chain's earliest customer touch.

    Keyed by object, not primary key: a deal being created has no key yet, but its chain root
    (the lead) already has touches.
    """
    chains = {id(opp): {opp.pk, opp.chain_root_id} - {None} for opp in opps}
    members = set().union(*chains.values())
    if not members:
        return {}
    by_member: dict[Any, list[dict[str, Any]]] = {}
    rows = (
        Touch.objects.filter(opportunity_id__in=members)
        .exclude(direction=Direction.INTERNAL)
        .order_by("occurred_at", "id")
        .values(*timeline.COLUMNS)
    )
    for row in rows:
        by_member.setdefault(row["opportunity_id"], []).append(row)
    result = {}
    for key, chain in chains.items():
        # A deal arrives with its lead: the chain's earliest touch is its arrival.
        first = timeline.arrival(t for pk in chain for t in by_member.get(pk, []))
        if first is not None:
            result[key] = first
    return result


def assign(
    opps: Sequence[TrackedOpportunity],
    org: Organisation | None = None,
    *,
    arrivals: Mapping[Any, dict[str, Any] | None] | None = None,
    teams: bool = True,
) -> list[TrackedOpportunity]:
    """Set team and segment in memory; return the opportunities whose assignment changed.

    ``arrivals`` maps each opportunity's key to its arrival touch when the caller has the
    timelines at hand (the refresh does); otherwise they are read. With ``teams=False`` only
    the segment is decided again (a touch can change the arrival, never the team).
    """
    if not opps:
        return []
    org = org or Organisation()
    found: Mapping[int, dict[str, Any] | None]
    if arrivals is not None:
        found = {id(opp): arrivals.get(opp.pk) for opp in opps}
    else:
        found = _arrival_touches(opps) if _rules_need_arrival(opps, org) else {}
    predecessor_segments = _predecessor_segments(opps)
    # A lead and its deal in one batch (a touch on their chain): decide the lead first, so
    # that the deal inherits its new segment rather than the stored one.
    batch: dict[Any, TrackedOpportunity] = {opp.pk: opp for opp in opps if opp.pk is not None}
    changed = []
    for opp in sorted(opps, key=lambda o: _chain_depth(o, batch)):
        before = (opp.team_id, opp.segment_id, opp.segment_source)
        if teams:
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
            opp.segment_id, opp.segment_source = _segment(opp, org, found.get(id(opp)), inherited)
        if (opp.team_id, opp.segment_id, opp.segment_source) != before:
            changed.append(opp)
    return changed


def _rules_need_arrival(opps: Sequence[TrackedOpportunity], org: Organisation) -> bool:
    """Whether any segment decision here may read the arrival touch (a rule on touches)."""
    if all(opp.segment_source == SegmentSource.MANUAL for opp in opps):
        return False
    return any(rule.on_touch for rule in org.rules)


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
