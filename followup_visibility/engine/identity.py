"""Contact identity: phone and email normalization into the keys duplicates are matched by."""

from __future__ import annotations

from collections.abc import Iterable

import phonenumbers
from django.db.models import Q
from email_validator import EmailNotValidError, validate_email

from followup_visibility.choices import IdentityKind
from followup_visibility.conf import app_settings
from followup_visibility.models import ContactIdentity, TrackedOpportunity


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


def contact_pairs(*, phone: str | None = None, email: str | None = None) -> list[tuple[str, str]]:
    """The valid ``(kind, key)`` identities of a phone and an email (may be empty)."""
    pairs = []
    if phone and (key := normalize_phone(phone)):
        pairs.append((IdentityKind.PHONE.value, key))
    if email and (key := normalize_email(email)):
        pairs.append((IdentityKind.EMAIL.value, key))
    return pairs


def contact_keys(*, phone: str | None = None, email: str | None = None) -> Q:
    """A filter on ``ContactIdentity`` for the valid keys of a phone and an email (may be empty)."""
    keys = Q()
    for kind, key in contact_pairs(phone=phone, email=email):
        keys |= Q(kind=kind, key=key)
    return keys
