"""Contact identity: phone and email normalization, matching and duplicate detection."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import phonenumbers
from django.db.models import F, Q
from email_validator import EmailNotValidError, validate_email

from followup_visibility.choices import IdentityKind, Status
from followup_visibility.conf import app_settings
from followup_visibility.models import ContactIdentity, DuplicateMatch, TrackedOpportunity


def normalize_phone(raw: str, region: str | None = None) -> str:
    """E.164 form of a phone number, or ``""`` when it is not a valid number.

    Only valid numbers become keys: ``555-0100`` parses as "possible" but matches unrelated
    people, so it is kept raw and never used to match.
    """
    try:
        number = phonenumbers.parse(raw, region or app_settings.PHONE_REGION)
    except phonenumbers.NumberParseException:
        return ""
    if not phonenumbers.is_valid_number(number):
        return ""
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def normalize_email(raw: str) -> str:
    """Normalized address (IDNA/NFC domain, casefolded local part), or ``""`` when invalid."""
    try:
        info = validate_email(raw.strip(), check_deliverability=False)
    except EmailNotValidError:
        return ""
    local, _, domain = info.normalized.rpartition("@")
    # Provider rules (gmail dots, +tags) are not applied: they may only hint, never merge.
    return f"{local.casefold()}@{domain.lower()}"


def normalize(kind: str, raw: str) -> str:
    return normalize_phone(raw) if kind == IdentityKind.PHONE else normalize_email(raw)


def identity_rows(
    opportunity: TrackedOpportunity, phones: Iterable[str], emails: Iterable[str]
) -> list[ContactIdentity]:
    rows = {}
    for kind, values in ((IdentityKind.PHONE, phones), (IdentityKind.EMAIL, emails)):
        for raw in values:
            raw = raw.strip()[:255]
            if raw:
                rows[(kind, raw)] = ContactIdentity(
                    opportunity=opportunity, kind=kind, raw=raw, key=normalize(kind, raw)
                )
    return list(rows.values())


def contact_keys(*, phone: str | None = None, email: str | None = None) -> Q:
    """A filter on ``ContactIdentity`` for the valid keys of a phone and an email (may be empty)."""
    keys = Q()
    if phone and (key := normalize_phone(phone)):
        keys |= Q(kind=IdentityKind.PHONE, key=key)
    if email and (key := normalize_email(email)):
        keys |= Q(kind=IdentityKind.EMAIL, key=key)
    return keys


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


def detect_duplicates(opportunity_ids: Iterable[Any], now: datetime) -> int:
    """Record open opportunities sharing a valid key with the given ones.

    One query finds every candidate; the partial unique constraint absorbs pairs already known.
    A lead and the deal it became share contact details by design, so one chain never
    duplicates itself. Returns the number of pairs found, known ones included.
    """
    ids = set(opportunity_ids)
    if not ids:
        return 0
    mine = ContactIdentity.objects.filter(opportunity_id__in=ids, opportunity__status=Status.OPEN)
    mine = mine.exclude(key="")
    rows = (
        ContactIdentity.objects.filter(
            opportunity__status=Status.OPEN,
            kind__in=mine.values("kind"),
            key__in=mine.values("key"),
        )
        .exclude(key="")
        .values_list("opportunity_id", "opportunity__chain_root_id", "kind", "key")
    )
    by_key: dict[tuple[str, str], dict[Any, Any]] = {}
    for opp_id, root_id, kind, key in rows:
        by_key.setdefault((kind, key), {})[opp_id] = root_id or opp_id
    matches: dict[tuple[Any, Any], DuplicateMatch] = {}
    for (kind, key), roots in by_key.items():
        for a, root_a in roots.items():
            for b, root_b in roots.items():
                if root_a != root_b and (a in ids or b in ids) and (a, b) not in matches:
                    matches[(a, b)] = DuplicateMatch(
                        opportunity_id=a, duplicate_id=b, kind=kind, key=key, detected_at=now
                    )
    DuplicateMatch.objects.bulk_create(matches.values(), ignore_conflicts=True)
    return len(matches)


def clear_duplicates(opportunity_ids: Iterable[Any], now: datetime) -> int:
    """Clear open matches involving these opportunities (closed, merged or re-identified)."""
    ids = list(opportunity_ids)
    return DuplicateMatch.objects.filter(
        Q(opportunity_id__in=ids) | Q(duplicate_id__in=ids), cleared_at__isnull=True
    ).update(cleared_at=now)
