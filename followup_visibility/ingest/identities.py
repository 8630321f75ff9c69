"""Contact identities of tracked opportunities: refreshed from the host, matched against
touches, and the duplicates they reveal."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from django.db.models import F, Q, Window
from django.db.models.functions import RowNumber

from followup_visibility.adapters import Snapshot
from followup_visibility.choices import Status
from followup_visibility.engine.identity import contact_keys, identity_rows
from followup_visibility.models import ContactIdentity, DuplicateMatch, TrackedOpportunity

#: The most other holders of one phone or email a newly identified opportunity is matched
#: with (the most recent ones): a shared switchboard number must not make every save of a
#: lead cost a pair for each of the thousands of leads that called from it.
MATCHES_PER_KEY = 25


def find_open_by_contact(
    *, phone: str | None = None, email: str | None = None
) -> list[TrackedOpportunity]:
    """Open, unmerged opportunities whose contact matches, most recently active first."""
    keys = contact_keys(phone=phone, email=email)
    if not keys:
        return []
    ids = ContactIdentity.objects.filter(keys).values("opportunity_id")
    return list(
        TrackedOpportunity.objects.open()
        .filter(pk__in=ids)
        # Never-touched records last on every database (PostgreSQL sorts NULL first in DESC).
        .order_by(F("last_touch_at").desc(nulls_last=True), "-arrived_at", "-pk")
    )


def refresh(pairs: Sequence[tuple[TrackedOpportunity, Snapshot]], now: datetime) -> None:
    """Store the phones and emails the host reports, and find or clear duplicates."""
    if not pairs:
        return
    ids = [opp.pk for opp, _snap in pairs]
    current: dict[Any, set[tuple[str, str]]] = defaultdict(set)
    for opp_id, kind, raw in ContactIdentity.objects.filter(opportunity_id__in=ids).values_list(
        "opportunity_id", "kind", "raw"
    ):
        current[opp_id].add((kind, raw))
    stale, rows = [], []
    for opp, snap in pairs:
        wanted = identity_rows(opp, snap.phones, snap.emails)
        if {(r.kind, r.raw) for r in wanted} != current[opp.pk]:
            stale.append(opp.pk)
            rows += wanted
    if stale:
        ContactIdentity.objects.filter(opportunity_id__in=stale).delete()
        ContactIdentity.objects.bulk_create(rows)
    closed = [opp.pk for opp, _snap in pairs if opp.status != Status.OPEN]
    clear_duplicates(closed + stale, now)
    detect_duplicates([opp.pk for opp, _snap in pairs if opp.status == Status.OPEN], now)


def detect_duplicates(opportunity_ids: Iterable[Any], now: datetime) -> int:
    """Record open opportunities sharing a valid key with the given ones; pairs found.

    Each given opportunity is paired, both ways, with at most :data:`MATCHES_PER_KEY` of the
    most recent other holders of each of its keys: one query reads them (ranked per key in
    the database), one insert stores the pairs, and the partial unique constraint absorbs
    those already known. A lead and the deal it became share contact details by design, so
    one chain never duplicates itself; and two companies' records (tenants) are never paired.
    """
    ids = set(opportunity_ids)
    if not ids:
        return 0
    mine = ContactIdentity.objects.filter(
        opportunity_id__in=ids, opportunity__status=Status.OPEN
    ).exclude(key="")
    holders = (
        ContactIdentity.objects.filter(
            opportunity__status=Status.OPEN,
            kind__in=mine.values("kind"),
            key__in=mine.values("key"),
        )
        .exclude(key="")
        .annotate(
            fv_root=F("opportunity__chain_root_id"),
            fv_tenant=F("opportunity__tenant"),
            fv_rank=Window(
                RowNumber(),
                partition_by=[F("kind"), F("key"), F("opportunity__tenant")],
                order_by=F("opportunity_id").desc(),
            ),
        )
        # The given ones are kept whatever their rank: they are the ones being matched.
        .filter(Q(fv_rank__lte=MATCHES_PER_KEY + 1) | Q(opportunity_id__in=ids))
        .values_list("opportunity_id", "fv_root", "kind", "key", "fv_tenant", "fv_rank")
    )
    # Keyed by tenant too: one company's contact is no duplicate of another's.
    by_key: dict[tuple[str, str, str], list[tuple[Any, Any, int]]] = defaultdict(list)
    for opp_id, root_id, kind, key, tenant, rank in holders:
        by_key[(kind, key, tenant)].append((opp_id, root_id or opp_id, rank))
    matches: dict[tuple[Any, Any], DuplicateMatch] = {}
    for (kind, key, _tenant), found in by_key.items():
        ranked = sorted((rank, o, root) for o, root, rank in found)
        for a, root_a, _rank in found:
            if a not in ids:
                continue
            # The most recent holders of other chains (its own chain is no duplicate).
            others = [(b, root) for _r, b, root in ranked if root != root_a][:MATCHES_PER_KEY]
            for b, _root_b in others:
                for pair in ((a, b), (b, a)):
                    if pair not in matches:
                        matches[pair] = DuplicateMatch(
                            opportunity_id=pair[0],
                            duplicate_id=pair[1],
                            kind=kind,
                            key=key,
                            detected_at=now,
                        )
    DuplicateMatch.objects.bulk_create(matches.values(), ignore_conflicts=True)
    return len(matches)


def clear_duplicates(opportunity_ids: Iterable[Any], now: datetime) -> int:
    """Clear open matches involving these opportunities (closed, merged or re-identified)."""
    ids = list(opportunity_ids)
    if not ids:
        return 0
    return DuplicateMatch.objects.filter(
        Q(opportunity_id__in=ids) | Q(duplicate_id__in=ids), cleared_at__isnull=True
    ).update(cleared_at=now)
