"""Which tracked opportunity each touch of a batch belongs on, resolved for the whole batch.

A touch names a tracked opportunity, a host object (tracked on the fly when it was created
without signals), or only a phone or email: then the open opportunity with that contact that
was active most recently, or the record continuing a merged or converted one. Every answer is
followed to the current record: a merged duplicate's survivor, a converted lead's deal.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext as _

from followup_visibility.choices import Status
from followup_visibility.engine.identity import contact_pairs
from followup_visibility.ingest import arguments, crm
from followup_visibility.models import ContactIdentity, TrackedOpportunity
from followup_visibility.registry import NotTracked, get_adapter

#: How many records a chain of merges and conversions is followed through at most.
_MAX_HOPS = 20


@dataclass(frozen=True)
class Wanted:
    """Where one touch of a batch should go."""

    target: TrackedOpportunity | models.Model | None
    phone: str | None = None
    email: str | None = None


def resolve(wanted: Mapping[int, Wanted], now: datetime) -> dict[int, TrackedOpportunity]:
    """The current tracked opportunity for each wanted target, by the batch's index.

    Raises ``ValidationError`` keyed ``"<index>.<field>"`` for targets that are not tracked
    models or opportunities that are not stored, and for contacts nothing open matches. A
    handful of queries for the batch: one per host model, one for the contacts, one for the
    opportunities made by hand, and one or two per hop of a merge or conversion.
    """
    found: dict[int, TrackedOpportunity] = {}
    errors: dict[str, str] = {}
    by_model: dict[type[models.Model], dict[int, models.Model]] = defaultdict(dict)
    by_contact: dict[int, Wanted] = {}
    given: dict[int, TrackedOpportunity] = {}
    for index, want in wanted.items():
        if isinstance(want.target, TrackedOpportunity):
            given[index] = want.target
        elif want.target is not None:
            try:
                adapter = get_adapter(want.target)
            except NotTracked as exc:
                errors[f"{index}.target"] = str(exc)
                continue
            by_model[adapter.model][index] = want.target
        elif not want.phone and not want.email:
            errors[f"{index}.target"] = _("Give a target, a phone or an email.")
        else:
            by_contact[index] = want
    found.update(_stored(given, errors))
    for objs in by_model.values():
        found.update(_tracked(objs, now))
    for index, opp in _by_contact(by_contact).items():
        if opp is None:
            errors[f"{index}.contact"] = _("No open opportunity matches this phone or email.")
        else:
            found[index] = opp
    if errors:
        raise ValidationError(errors)
    return follow(found)


def _stored(
    given: Mapping[int, TrackedOpportunity], errors: dict[str, str]
) -> dict[int, TrackedOpportunity]:
    """The given records; those made by hand (``TrackedOpportunity(pk=...)``, never read from
    the database) are read, in one query, so that a key no row has is an error of its item
    rather than a touch pointing nowhere. Records read from the database cost nothing."""
    by_hand = {index: opp.pk for index, opp in given.items() if opp._state.adding}
    current = TrackedOpportunity.objects.in_bulk(set(by_hand.values())) if by_hand else {}
    found = {}
    for index, opp in given.items():
        if index not in by_hand:
            found[index] = opp
        elif by_hand[index] in current:
            found[index] = current[by_hand[index]]
        else:
            errors[f"{index}.target"] = arguments.missing_message(opp)
    return found


def _tracked(objs: Mapping[int, models.Model], now: datetime) -> dict[int, TrackedOpportunity]:
    """The tracked records of host objects of one model; created now for those that have
    none (made without signals: ``bulk_create``, raw SQL)."""
    first = next(iter(objs.values()))
    keys = {index: str(obj.pk) for index, obj in objs.items()}
    tracked = TrackedOpportunity.objects.for_model(type(first))
    have = {opp.object_pk: opp for opp in tracked.filter(object_pk__in=set(keys.values()))}
    missing = {key: obj for index, obj in objs.items() if (key := keys[index]) not in have}
    if missing:
        crm.sync_objects(list(missing.values()), now)
        have.update((opp.object_pk, opp) for opp in tracked.filter(object_pk__in=list(missing)))
    return {index: have[key] for index, key in keys.items()}


def _by_contact(wanted: Mapping[int, Wanted]) -> dict[int, TrackedOpportunity | None]:
    """Each touch's open opportunity by phone or email (the most recently active one), or
    the current record of a merged or converted one that holds the contact."""
    if not wanted:
        return {}
    keys = {index: _keys(w) for index, w in wanted.items()}
    union = Q()
    for item_keys in keys.values():
        for kind, key in item_keys:
            union |= Q(kind=kind, key=key)
    if not union:
        return dict.fromkeys(wanted)
    holders: dict[tuple[str, str], set[Any]] = defaultdict(set)
    for kind, key, opp_id in ContactIdentity.objects.filter(union).values_list(
        "kind", "key", "opportunity_id"
    ):
        holders[(kind, key)].add(opp_id)
    ids = set().union(*holders.values()) if holders else set()
    opps = TrackedOpportunity.objects.in_bulk(list(ids))
    result: dict[int, TrackedOpportunity | None] = {}
    closed: dict[int, list[TrackedOpportunity]] = {}
    for index, item_keys in keys.items():
        matches = [opps[pk] for k in item_keys for pk in holders.get(k, ()) if pk in opps]
        open_ = [opp for opp in matches if opp.status == Status.OPEN]
        if open_:
            # Never-touched records last (as PostgreSQL's NULLS LAST would sort them).
            result[index] = max(
                open_,
                key=lambda o: (o.last_touch_at is not None, o.last_touch_at, o.arrived_at, o.pk),
            )
            continue
        # Merged duplicates and converted leads keep their identities, so their contact's
        # touches still reach the survivor or the deal: the most recently closed first.
        closed[index] = sorted(
            {o.pk: o for o in matches if o.status in (Status.MERGED, Status.CONVERTED)}.values(),
            key=lambda o: (o.closed_at is not None, o.closed_at, o.pk),
            reverse=True,
        )
    candidates = {(index, n): opp for index, opps_ in closed.items() for n, opp in enumerate(opps_)}
    current = follow(candidates)
    for index, opps_ in closed.items():
        result[index] = next(
            (
                current[(index, n)]
                for n in range(len(opps_))
                if current[(index, n)].status == Status.OPEN
            ),
            None,
        )
    return result


def _keys(want: Wanted) -> list[tuple[str, str]]:
    return contact_pairs(phone=want.phone, email=want.email)


def follow(opps: Mapping[Any, TrackedOpportunity]) -> dict[Any, TrackedOpportunity]:
    """Each record followed to the one a touch belongs on now: a merged record's survivor, a
    converted lead's latest deal (the same keys; a cycle written by hand stops the walk)."""
    current = dict(opps)
    seen: dict[Any, set[Any]] = {key: {opp.pk} for key, opp in current.items()}
    for _hop in range(_MAX_HOPS):
        merged = {
            key: opp.merged_into_id
            for key, opp in current.items()
            if opp.status == Status.MERGED and opp.merged_into_id
        }
        converted = {key: opp.pk for key, opp in current.items() if opp.status == Status.CONVERTED}
        if not merged and not converted:
            break
        survivors = TrackedOpportunity.objects.in_bulk(set(merged.values()))
        successors: dict[Any, TrackedOpportunity] = {}
        if converted:
            for deal in TrackedOpportunity.objects.filter(
                predecessor_id__in=set(converted.values())
            ).order_by("predecessor_id", "-arrived_at", "-pk"):
                successors.setdefault(deal.predecessor_id, deal)
        moved = False
        for key, target in merged.items():
            nxt = survivors.get(target)
            if nxt is not None and nxt.pk not in seen[key]:
                seen[key].add(nxt.pk)
                current[key], moved = nxt, True
        for key, pk in converted.items():
            nxt = successors.get(pk)
            if nxt is not None and nxt.pk not in seen[key]:
                seen[key].add(nxt.pk)
                current[key], moved = nxt, True
        if not moved:
            break
    return current
