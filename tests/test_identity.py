"""Contact identity: normalization, and duplicate detection between open opportunities."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import override_settings

from example_project.crm.models import Lead
from followup_visibility.choices import Channel, Direction, IdentityKind, Outcome, Status
from followup_visibility.engine.identity import normalize, normalize_email, normalize_phone
from followup_visibility.ingest.crm import sync_objects
from followup_visibility.ingest.identities import detect_duplicates, find_open_by_contact
from followup_visibility.ingest.touches import record_touch
from followup_visibility.models import ContactIdentity, DuplicateMatch
from tests.conftest import tracked

# --- normalization -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("(212) 555-0142", None, "+12125550142"),
        ("+1 212 555 0142", None, "+12125550142"),
        ("212.555.0142", None, "+12125550142"),
        ("1-212-555-0142", None, "+12125550142"),
        ("+44 20 7946 0018", None, "+442079460018"),
        ("0044 20 7946 0018", "GB", "+442079460018"),
        ("020 7946 0018", "GB", "+442079460018"),
        ("020 7946 0018", "US", ""),
        ("555-0100", None, ""),
        ("555-0100", "US", ""),
        ("call me maybe", None, ""),
        ("", None, ""),
        ("+", None, ""),
    ],
)
def test_normalize_phone(raw, region, expected):
    assert normalize_phone(raw, region) == expected


def test_phone_region_setting_changes_national_parsing():
    assert normalize_phone("020 7946 0018") == ""
    assert normalize_phone("(212) 555-0142") == "+12125550142"
    with override_settings(FOLLOWUP_VISIBILITY_PHONE_REGION="GB"):
        assert normalize_phone("020 7946 0018") == "+442079460018"
        assert normalize_phone("0044 20 7946 0018") == "+442079460018"
        # International format does not depend on the region.
        assert normalize_phone("+1 212 555 0142") == "+12125550142"
        # An explicit region beats the setting.
        assert normalize_phone("212.555.0142", "US") == "+12125550142"
    assert normalize_phone("020 7946 0018") == ""


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Ann@Example.COM", "ann@example.com"),
        ("  ann@example.com  ", "ann@example.com"),
        ("ANN@EXAMPLE.COM", "ann@example.com"),
        ("user@Bücher.example", "user@bücher.example"),
        ("user@xn--bcher-kva.example", "user@bücher.example"),
        ("USER@BÜCHER.EXAMPLE", "user@bücher.example"),
        # Provider rules are not applied: these stay distinct keys.
        ("first.last+crm@gmail.com", "first.last+crm@gmail.com"),
        ("not-an-email", ""),
        ("ann@", ""),
        ("@example.com", ""),
        ("ann@localhost", ""),
        ("", ""),
    ],
)
def test_normalize_email(raw, expected):
    assert normalize_email(raw) == expected


def test_normalize_dispatches_by_kind():
    assert normalize(IdentityKind.PHONE, "212.555.0142") == "+12125550142"
    assert normalize(IdentityKind.EMAIL, "Ann@Example.COM") == "ann@example.com"


# --- identities stored on sync ---------------------------------------------------------------


def test_identity_rows_keep_raw_and_key(make_lead):
    lead = make_lead(phone=" 555-0100 ", email="Ann@Example.COM")
    rows = sorted(tracked(lead).identities.values_list("kind", "raw", "key"))
    # An invalid number is kept raw, with no key: it never matches anybody.
    assert rows == [("email", "Ann@Example.COM", "ann@example.com"), ("phone", "555-0100", "")]


def test_identity_rows_replaced_when_contact_changes(make_lead, now):
    lead = make_lead(phone="(212) 555-0142")
    Lead.objects.filter(pk=lead.pk).update(phone="", email="new@example.com")
    sync_objects([Lead.objects.get(pk=lead.pk)], now)
    assert list(tracked(lead).identities.values_list("kind", "key")) == [
        ("email", "new@example.com")
    ]


# --- duplicate detection -------------------------------------------------------------------


def open_matches():
    return set(
        DuplicateMatch.objects.filter(cleared_at__isnull=True).values_list(
            "opportunity_id", "duplicate_id", "kind", "key"
        )
    )


def close_lead(lead, now, status="lost"):
    Lead.objects.filter(pk=lead.pk).update(status=status)
    sync_objects([Lead.objects.get(pk=lead.pk)], now)


def test_same_phone_in_different_formats_matches_both_ways(make_lead):
    a = tracked(make_lead(phone="(212) 555-0142"))
    b = tracked(make_lead(phone="+1 212 555 0142"))
    assert open_matches() == {
        (a.pk, b.pk, "phone", "+12125550142"),
        (b.pk, a.pk, "phone", "+12125550142"),
    }


def test_same_email_different_case_matches(make_lead):
    a = tracked(make_lead(email="Ann@Example.com"))
    b = tracked(make_lead(email="ann@EXAMPLE.COM"))
    assert open_matches() == {
        (a.pk, b.pk, "email", "ann@example.com"),
        (b.pk, a.pk, "email", "ann@example.com"),
    }


def test_idna_domains_match(make_lead):
    a = tracked(make_lead(email="user@Bücher.example"))
    b = tracked(make_lead(email="user@xn--bcher-kva.example"))
    assert open_matches() == {
        (a.pk, b.pk, "email", "user@bücher.example"),
        (b.pk, a.pk, "email", "user@bücher.example"),
    }


def test_lead_and_deal_sharing_contact_match(make_lead, make_deal):
    lead = tracked(make_lead(email="buyer@example.com"))
    deal = tracked(make_deal(contact_email="Buyer@example.com"))
    assert open_matches() == {
        (lead.pk, deal.pk, "email", "buyer@example.com"),
        (deal.pk, lead.pk, "email", "buyer@example.com"),
    }


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"phone": "555-0100"}, {"phone": "555-0100"}),
        ({"phone": "12345"}, {"phone": "12345"}),
        ({"email": "not-an-email"}, {"email": "not-an-email"}),
        ({"phone": "(212) 555-0142"}, {"phone": "(212) 555-0143"}),
        ({"email": "ann@example.com"}, {"email": "ann@example.org"}),
    ],
)
def test_no_match_without_a_shared_valid_key(make_lead, first, second):
    make_lead(**first)
    make_lead(**second)
    assert ContactIdentity.objects.count() == 2
    assert not DuplicateMatch.objects.exists()


def test_pair_sharing_phone_and_email_is_one_match_per_direction(make_lead):
    a = tracked(make_lead(phone="(212) 555-0142", email="ann@example.com"))
    b = tracked(make_lead(phone="212.555.0142", email="Ann@example.com"))
    assert DuplicateMatch.objects.count() == 2
    assert {(m[0], m[1]) for m in open_matches()} == {(a.pk, b.pk), (b.pk, a.pk)}


def test_closing_one_lead_clears_matches(make_lead, now):
    a = make_lead(phone="(212) 555-0142")
    make_lead(phone="212.555.0142")
    assert len(open_matches()) == 2
    close_lead(a, now)
    assert open_matches() == set()
    assert list(DuplicateMatch.objects.values_list("cleared_at", flat=True)) == [now, now]


def test_reopening_detects_again(make_lead, now):
    a = make_lead(phone="(212) 555-0142")
    b = make_lead(phone="212.555.0142")
    close_lead(a, now)
    Lead.objects.filter(pk=a.pk).update(status="working")
    sync_objects([Lead.objects.get(pk=a.pk)], now + timedelta(hours=1))
    assert open_matches() == {
        (tracked(a).pk, tracked(b).pk, "phone", "+12125550142"),
        (tracked(b).pk, tracked(a).pk, "phone", "+12125550142"),
    }
    assert DuplicateMatch.objects.count() == 4
    assert set(
        DuplicateMatch.objects.filter(cleared_at__isnull=True).values_list("detected_at", flat=True)
    ) == {now + timedelta(hours=1)}


def test_closed_opportunity_is_not_matched(make_lead, now):
    a = make_lead(phone="(212) 555-0142")
    close_lead(a, now, status="disqualified")
    make_lead(phone="212.555.0142")
    assert not DuplicateMatch.objects.exists()


def test_changing_contact_clears_match(make_lead, now):
    a = make_lead(phone="(212) 555-0142")
    make_lead(phone="212.555.0142")
    Lead.objects.filter(pk=a.pk).update(phone="(212) 555-0199")
    sync_objects([Lead.objects.get(pk=a.pk)], now)
    assert open_matches() == set()
    assert DuplicateMatch.objects.filter(cleared_at=now).count() == 2


def test_third_duplicate_adds_matches_without_repeating(make_lead):
    a = tracked(make_lead(phone="(212) 555-0142"))
    b = tracked(make_lead(phone="+1 212 555 0142"))
    first_rows = set(DuplicateMatch.objects.values_list("pk", "detected_at"))
    c = tracked(make_lead(phone="212.555.0142"))
    key = "+12125550142"
    assert open_matches() == {
        (x.pk, y.pk, "phone", key) for x in (a, b, c) for y in (a, b, c) if x != y
    }
    assert DuplicateMatch.objects.count() == 6
    assert first_rows <= set(DuplicateMatch.objects.values_list("pk", "detected_at"))


def test_detect_duplicates_is_idempotent(make_lead, now):
    a = tracked(make_lead(phone="(212) 555-0142"))
    b = tracked(make_lead(phone="212.555.0142"))
    DuplicateMatch.objects.all().delete()
    assert detect_duplicates([a.pk], now) == 2
    assert detect_duplicates([a.pk, b.pk], now) == 2
    assert DuplicateMatch.objects.count() == 2
    assert detect_duplicates([], now) == 0


def test_a_lead_and_its_own_deal_are_not_duplicates(make_lead, make_deal):
    lead = make_lead(phone="(212) 555-0142", email="ann@example.com")
    deal = make_deal(lead=lead, contact_phone="212.555.0142", contact_email="ANN@example.com")
    other = make_lead(phone="+1 212 555 0142")

    pairs = {(a, b) for a, b, _kind, _key in open_matches()}
    lead_opp, deal_opp, other_opp = tracked(lead), tracked(deal), tracked(other)
    assert (lead_opp.pk, deal_opp.pk) not in pairs
    assert (deal_opp.pk, lead_opp.pk) not in pairs
    # A stranger sharing the phone is a duplicate of both members of the chain.
    assert {(other_opp.pk, lead_opp.pk), (other_opp.pk, deal_opp.pk)} <= pairs


def test_resave_does_not_duplicate_matches(make_lead):
    a = make_lead(phone="(212) 555-0142")
    make_lead(phone="212.555.0142")
    a.name = "Renamed"
    a.save()
    assert DuplicateMatch.objects.count() == 2
    assert len(open_matches()) == 2


def test_find_open_by_contact(make_lead, now):
    a = make_lead(phone="(212) 555-0142", email="ann@example.com")
    b = make_lead(email="bob@example.com")
    assert find_open_by_contact(phone="+1 212 555 0142") == [tracked(a)]
    assert find_open_by_contact(email="BOB@example.com") == [tracked(b)]
    assert find_open_by_contact(phone="555-0100") == []
    assert find_open_by_contact() == []
    close_lead(a, now)
    assert find_open_by_contact(phone="212.555.0142") == []
    assert tracked(a).status == Status.LOST


def test_find_open_by_contact_prefers_recent_activity(make_lead, now):
    """Most recently touched first; never-touched ones after, newest arrival first."""
    touched_early = make_lead(phone="(212) 555-0142", created_at=now - timedelta(days=5))
    touched_late = make_lead(phone="(212) 555-0142", created_at=now - timedelta(days=4))
    untouched_old = make_lead(phone="(212) 555-0142", created_at=now - timedelta(days=3))
    untouched_new = make_lead(phone="(212) 555-0142", created_at=now - timedelta(days=1))
    for lead, hours in ((touched_early, 5), (touched_late, 2)):
        record_touch(
            lead,
            channel=Channel.PHONE,
            direction=Direction.OUTBOUND,
            outcome=Outcome.CONNECTED,
            occurred_at=now - timedelta(hours=hours),
            now=now,
        )
    assert find_open_by_contact(phone="212.555.0142") == [
        tracked(touched_late),
        tracked(touched_early),
        tracked(untouched_new),
        tracked(untouched_old),
    ]


def test_a_shared_number_pairs_each_save_with_a_bounded_number_of_holders(make_lead, now):
    # A switchboard number many leads called from: before, every save paired every holder
    # with every other one (quadratic); now each new holder is paired with the most recent
    # ones only, in a number of queries that does not grow with the holders.
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from followup_visibility.ingest.identities import MATCHES_PER_KEY

    Lead.objects.bulk_create(
        [Lead(name=f"caller {i}", phone="+1 212 555 0142", created_at=now) for i in range(60)]
    )
    sync_objects(list(Lead.objects.all()), now)
    counts = []
    for _ in range(2):
        before = DuplicateMatch.objects.count()
        with CaptureQueriesContext(connection) as captured:
            newest = tracked(make_lead(phone="212.555.0142"))
        counts.append(len(captured))
        made = DuplicateMatch.objects.count() - before
        assert made == 2 * MATCHES_PER_KEY
        assert DuplicateMatch.objects.filter(opportunity=newest).count() == MATCHES_PER_KEY
    assert counts[0] == counts[1]
