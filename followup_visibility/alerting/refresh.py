"""The one refresh: the door every change to what an opportunity owes goes through.

A touch, a CRM save, a handoff, a next action, a stall, a segment change, a merge and a
policy or calendar recompute all end in :func:`refresh`, which, for the chains of the
opportunities it is given (a lead and the deals it became share one timeline):

1. locks them, in key order, reading their state in the same query;
2. folds their timelines again (``Cause.timeline``), from one read of their touches;
3. routes them again (``Cause.routing``), or re-segments those whose arrival touch is new;
4. writes the fields that changed, in one statement;
5. recomputes their deadlines, and the duplicate deadlines of the other side of a match
   detected or cleared now, in one statement;
6. resolves the alerts whose condition cleared, wakes the snoozes a reply or a stage change
   ended and re-plans the escalation of those that moved team;
7. announces the alert transitions after commit.

Set-based: a batch costs the same handful of statements whatever its size.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models.functions import Coalesce
from django.utils.translation import gettext as _

from followup_visibility.alerting import deadlines, escalation, lifecycle, ranking, sql
from followup_visibility.choices import AlertSignal, AlertStatus, Channel, SegmentSource
from followup_visibility.engine import clocks, generation, routing, timeline
from followup_visibility.engine.clocks import Context
from followup_visibility.models import Touch, TrackedOpportunity

#: What routing reads and decides, besides the state.
_ROUTING = (
    "team_key",
    "segment_code",
    "segment_hints",
    "content_type_id",
    "predecessor_id",
    "chain_root_id",
    "segment_source",
)
_COLUMNS = tuple(
    dict.fromkeys((*clocks.STATE_FIELDS, *timeline.STATE_FIELDS, *_ROUTING, "arrival_channel"))
)
_ROUTED = ("team_id", "segment_id", "segment_source")


@dataclass(frozen=True)
class Cause:
    """What changed: named on the alerts the change resolves, and which steps it needs."""

    reason: str
    #: New touches: the latest of a chain is named on the alerts it resolves, and a chain
    #: whose arrival touch is among them is segmented again.
    touches: Sequence[Touch] = ()
    #: The timelines changed (new or moved touches): fold them again.
    timeline: bool = False
    #: What decides team and segment changed (rules, teams, the host's keys): route again.
    routing: bool = False
    #: Duplicate matches were found or cleared at ``now``: the other side's duplicate clock
    #: moves too.
    identities: bool = False
    #: A more precise note for the alerts of one signal of one opportunity, by
    #: ``(opportunity id, signal)`` (the owner's touch that accepted a handoff).
    notes: Mapping[tuple[Any, str], str] = field(default_factory=dict)


@dataclass
class RefreshResult:
    opportunities: int = 0
    folded: int = 0
    routed: int = 0
    written: int = 0
    deleted: int = 0
    unchanged: int = 0
    resolved: int = 0
    woken: int = 0

    def __iadd__(self, other: RefreshResult) -> RefreshResult:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self


def lock(opportunity_ids: Iterable[Any]) -> list[Any]:
    """Lock the chains of these opportunities, in key order; their keys.

    For a caller that must write under the lock before it refreshes (the refresh then finds
    the locks held). ``FOR NO KEY UPDATE``: a touch being inserted for one of them takes a
    key-share lock, which this must not wait for, or two writers of one chain deadlock.
    """
    return list(_chains(list(opportunity_ids)).values_list("pk", flat=True))


def _chains(ids: list[Any]) -> Any:
    # The roots are read first: as a subquery in an OR, PostgreSQL scanned the whole table
    # (40 ms at 20k opportunities); as values, both arms are index scans.
    roots = set(
        TrackedOpportunity.objects.filter(sql.among(TrackedOpportunity, "id", ids))
        .annotate(fv_root=Coalesce("chain_root_id", "pk"))
        .values_list("fv_root", flat=True)
    )
    members = sql.among(TrackedOpportunity, "id", sorted(roots | set(ids)))
    return (
        TrackedOpportunity.objects.filter(
            members | sql.among(TrackedOpportunity, "chain_root_id", sorted(roots))
        )
        .select_for_update(no_key=True)
        .order_by("pk")
    )


def refresh(
    opportunity_ids: Iterable[Any],
    *,
    now: datetime,
    cause: Cause,
    ctx: Context | None = None,
) -> RefreshResult:
    """Bring these opportunities' chains up to date with everything stored (see the module).

    Runs in the caller's transaction (or its own). ``ctx``: the policies and calendars, when
    the caller has loaded them for many calls (a recompute); otherwise the cached copy.
    """
    ids = list(dict.fromkeys(opportunity_ids))
    result = RefreshResult()
    if not ids:
        return result
    with transaction.atomic(savepoint=False), ranking.batched(now):
        extra = deadlines.state_annotations(now if cause.identities else None)
        rows = sql.rows_of(_chains(ids).annotate(**extra).values(*_COLUMNS, *extra))
        if not rows:
            return result
        result.opportunities = len(rows)
        current_token = generation.token() if ctx is None else ""
        if ctx is None:
            ctx = generation.cached("context", current_token, Context.load)
        by_id = {row["id"]: row for row in rows}
        chains: dict[Any, list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            chains[row["chain_root_id"] or row["id"]].append(row)
        new_touches = {t.pk for t in cause.touches}
        changes: dict[Any, dict[str, Any]] = defaultdict(dict)
        arrivals: dict[Any, dict[str, Any] | None] = {}
        rerouted: set[Any] = set(by_id) if cause.routing else set()
        if cause.timeline or cause.routing or new_touches:
            touches = _touches_by_chain(by_id, chains)
            for root, members in chains.items():
                chain_touches = touches.get(root, [])
                first = timeline.arrival(chain_touches)
                for row in members:
                    arrivals[row["id"]] = first
                if first is not None and first["id"] in new_touches:
                    rerouted.update(row["id"] for row in members)
                if cause.timeline:
                    state = timeline.fold(chain_touches)
                    channel = first["channel"] if first is not None else ""
                    for row in members:
                        if row["arrival_channel"] != channel:
                            changes[row["id"]]["arrival_channel"] = channel
                        for name in timeline.STATE_FIELDS:
                            if row[name] != getattr(state, name):
                                changes[row["id"]][name] = getattr(state, name)
        result.folded = len(changes)
        moved: list[Any] = []
        if rerouted:
            org = generation.cached("organisation", current_token, routing.Organisation)
            moved = _route(
                [by_id[pk] for pk in sorted(rerouted)], org, arrivals, cause.routing, changes
            )
            result.routed = sum(1 for pk in rerouted if any(n in changes[pk] for n in _ROUTED))
        _write(by_id, changes)
        if moved:
            # Another team may have another escalation policy and calendar: plan again. The
            # recipient is resolved when a level fires anyway, as the teams are then.
            escalation.replan_opportunities(moved)
        deadlines.detect(rows)
        written, current = deadlines.write(rows, now, ctx)
        others = deadlines.others_moved(rows, now)
        if others:
            other_written, other_current = deadlines.write(
                deadlines.states(others), now, ctx, only=deadlines.DUPLICATE_ONLY
            )
            current.update(other_current)
            written.written += other_written.written
            written.deleted += other_written.deleted
        result.written, result.deleted = written.written, written.deleted
        result.unchanged = written.unchanged
        active = [
            alert
            for alert in lifecycle.active_alerts([*by_id, *others])
            if alert[1] in by_id or alert[2] == AlertSignal.DUPLICATE
        ]
        # Alerts whose condition this change cleared resolve now, naming what cleared them.
        resolved = lifecycle.resolve_cleared(
            active, current, now, _clearing(cause, chains), lifecycle.Clearing(cause.reason)
        )
        result.resolved = len(resolved)
        cleared = set(resolved)
        if any(a[4] == AlertStatus.SNOOZED and a[0] not in cleared for a in active):
            # A snooze until the customer replies or the stage changes ends with the news,
            # not at the next full sweep (a steady sweep wakes only snoozes whose time came).
            result.woken = lifecycle.wake_snoozed(now, opportunity_ids=list(by_id))
        # Rank them again when what the score reads may have moved: owner, team, segment,
        # value, status (a CRM change, a handoff, a merge, a stall, a new route). New touches
        # alone move none of it; the alerts they resolve or wake were marked as they changed.
        if result.routed or cause.routing or not cause.touches:
            ranking.mark([*by_id, *others], now)
    return result


def _touches_by_chain(
    by_id: Mapping[Any, dict[str, Any]], chains: Mapping[Any, list[dict[str, Any]]]
) -> dict[Any, list[dict[str, Any]]]:
    """The touches of every chain, read in one query. Merged duplicates need no lookup: a
    merge moves their touches to the survivor."""
    root_of = {row["id"]: root for root, members in chains.items() for row in members}
    found: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    touches = Touch.objects.filter(sql.among(Touch, "opportunity_id", list(by_id)))
    for touch in touches.values(*timeline.COLUMNS):
        found[root_of[touch["opportunity_id"]]].append(touch)
    return found


def _route(
    rows: Sequence[dict[str, Any]],
    org: routing.Organisation,
    arrivals: Mapping[Any, dict[str, Any] | None],
    teams: bool,
    changes: dict[Any, dict[str, Any]],
) -> list[Any]:
    """Decide team and segment again (the segment only, unless ``teams``); the keys of the
    opportunities that moved to another team."""
    opps = [
        TrackedOpportunity(
            id=row["id"],
            owner_id=row["owner_id"],
            team_id=row["team_id"],
            segment_id=row["segment_id"],
            **{name: row[name] for name in _ROUTING},
        )
        for row in rows
        if teams or row["segment_source"] not in (SegmentSource.MANUAL, SegmentSource.ADAPTER)
    ]
    moved = []
    by_id = {row["id"]: row for row in rows}
    for opp in routing.assign(opps, org, arrivals=arrivals, teams=teams):
        row = by_id[opp.pk]
        if opp.team_id != row["team_id"]:
            moved.append(opp.pk)
        for name, value in zip(
            _ROUTED, (opp.team_id, opp.segment_id, opp.segment_source), strict=True
        ):
            if row[name] != value:
                changes[opp.pk][name] = value
    return moved


def _write(by_id: Mapping[Any, dict[str, Any]], changes: Mapping[Any, dict[str, Any]]) -> None:
    """Write the changed fields (derived state: no history rows) and update the states."""
    changed = {pk: values for pk, values in changes.items() if values}
    if not changed:
        return
    names = sorted({name for values in changed.values() for name in values})
    for pk, values in changed.items():
        by_id[pk].update(values)
    sql.update_rows(
        TrackedOpportunity, {pk: {n: by_id[pk][n] for n in names} for pk in changed}, names
    )


def _clearing(cause: Cause, chains: Mapping[Any, list[dict[str, Any]]]) -> dict[Any, Any]:
    """What to name on each opportunity's resolved alerts: the chain's latest new touch,
    else the cause."""
    default = lifecycle.Clearing(cause.reason)
    latest: dict[Any, Touch] = {}
    members = {row["id"]: root for root, rows in chains.items() for row in rows}
    for touch in cause.touches:
        root = members.get(touch.opportunity_id)
        if root is not None and (
            root not in latest
            or (touch.occurred_at, touch.pk) > (latest[root].occurred_at, latest[root].pk)
        ):
            latest[root] = touch
    found: dict[Any, Any] = {}
    notes = {
        channel: _("touch: %(t)s") % {"t": Channel(channel).label}
        for channel in {t.channel for t in latest.values()}
    }
    for root, rows in chains.items():
        last = latest.get(root)
        why = default
        if last is not None:
            why = lifecycle.Clearing(notes[last.channel], last.pk)
        for row in rows:
            found[row["id"]] = why
    for key, note in cause.notes.items():
        by = latest.get(members.get(key[0]))
        found[key] = lifecycle.Clearing(note, by.pk if by else None)
    return found
