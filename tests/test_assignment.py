"""Team and segment assignment: which calendar and which SLAs an opportunity gets."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.contenttypes.models import ContentType
from django.test import override_settings

from example_project.crm.adapters import LeadAdapter
from example_project.crm.models import Deal, Lead
from followup_visibility.alerting import refresh
from followup_visibility.choices import AlertSignal, Channel, Direction, Outcome, SegmentSource
from followup_visibility.engine import calendars, routing
from followup_visibility.ingest.segments import set_segment
from followup_visibility.ingest.touches import record_touch
from followup_visibility.models import SegmentRule, TrackedOpportunity
from tests.factories_sla import (
    change_host,
    deal_at,
    due,
    install_defaults,
    lead_at,
    make_policy,
    make_segment,
    make_team,
    ny,
    opportunity,
    run_pending_commit_hooks,
)

S = AlertSignal
DEAL_ADAPTER = "example_project.crm.adapters.DealAdapter"


class CodedLeadAdapter(LeadAdapter):
    """The host keeps a segment code in ``company`` (referenced as a dotted path)."""

    segment_field = "company"


CODED = {"crm.Lead": "tests.test_assignment.CodedLeadAdapter", "crm.Deal": DEAL_ADAPTER}


@pytest.fixture(autouse=True)
def defaults(db):
    yield install_defaults()
    calendars._cache.clear()


@pytest.fixture
def segments():
    """Segments with their own first-response time, and rules that pick them."""
    found = {code: make_segment(code) for code in ("missed-call", "brochure", "pricing")}
    for minutes, code in ((15, "missed-call"), (24 * 60, "brochure"), (120, "pricing")):
        make_policy(segment=found[code], first_response=timedelta(minutes=minutes))
    SegmentRule.objects.create(
        segment=found["missed-call"],
        priority=10,
        channel=Channel.PHONE,
        direction=Direction.INBOUND,
        outcome=Outcome.NO_ANSWER,
    )
    SegmentRule.objects.create(
        segment=found["brochure"], priority=20, hint_field="source", hint_value="BROCHURE"
    )
    return found


def assigned(obj):
    opp = opportunity(obj)
    return (opp.segment.code if opp.segment else None), opp.segment_source


# Segments


def test_rule_on_the_arrival_touch(segments):
    lead = lead_at(ny(3, 9, 9), source="phone")
    assert assigned(lead) == (None, SegmentSource.NONE)
    record_touch(
        lead,
        channel=Channel.PHONE,
        direction=Direction.INBOUND,
        outcome=Outcome.NO_ANSWER,
        occurred_at=ny(3, 9, 9),
        now=ny(3, 9, 9, 1),
    )
    assert assigned(lead) == ("missed-call", SegmentSource.RULE)
    # The segment's 15-minute first response applies in the same transaction.
    assert due(lead)[S.NO_FIRST_RESPONSE] == ny(3, 9, 9, 15)


def test_rule_looks_only_at_the_arrival_touch(segments):
    lead = lead_at(ny(3, 9, 9))
    touch = {"channel": Channel.PHONE, "direction": Direction.INBOUND}
    record_touch(lead, **touch, outcome=Outcome.CONNECTED, occurred_at=ny(3, 9, 9), now=ny(3, 9, 9))
    record_touch(
        lead, **touch, outcome=Outcome.NO_ANSWER, occurred_at=ny(3, 9, 10), now=ny(3, 9, 10)
    )
    assert assigned(lead) == (None, SegmentSource.NONE)


def test_hint_rule_ignores_case(segments):
    lead = lead_at(ny(3, 9, 9), source=Lead.Source.BROCHURE)
    assert assigned(lead) == ("brochure", SegmentSource.RULE)
    assert due(lead)[S.NO_FIRST_RESPONSE] == ny(3, 11, 17)  # 24 business hours


def test_rules_in_priority_order(segments):
    SegmentRule.objects.filter(segment__code="brochure").update(priority=1)
    SegmentRule.objects.create(
        segment=segments["pricing"], priority=5, hint_field="source", hint_value="brochure"
    )
    assert assigned(lead_at(ny(3, 9, 9), source="brochure"))[0] == "brochure"
    SegmentRule.objects.filter(segment__code="brochure").update(active=False)
    assert assigned(lead_at(ny(3, 9, 9), source="brochure"))[0] == "pricing"


def test_rule_limited_to_a_host_model(segments):
    SegmentRule.objects.filter(segment__code="brochure").update(
        content_type=ContentType.objects.get_for_model(Deal)
    )
    assert assigned(lead_at(ny(3, 9, 9), source="brochure")) == (None, SegmentSource.NONE)


@override_settings(FOLLOWUP_VISIBILITY_TRACKED_MODELS=CODED)
def test_adapter_code_wins_over_rules(segments):
    lead = lead_at(ny(3, 9, 9), source="brochure", company="pricing")
    assert assigned(lead) == ("pricing", SegmentSource.ADAPTER)
    assert due(lead)[S.NO_FIRST_RESPONSE] == ny(3, 9, 11)
    # A code that names no segment leaves the decision to the rules.
    other = lead_at(ny(3, 9, 9), source="brochure", company="Acme Inc")
    assert assigned(other) == ("brochure", SegmentSource.RULE)
    # The host changing its code moves the segment and the clocks.
    change_host(other, ny(3, 9, 10), company="missed-call")
    assert assigned(other) == ("missed-call", SegmentSource.ADAPTER)
    assert due(other)[S.NO_FIRST_RESPONSE] == ny(3, 9, 9, 15)


def test_deal_inherits_the_leads_segment(segments):
    SegmentRule.objects.filter(segment__code="brochure").update(
        content_type=ContentType.objects.get_for_model(Lead)
    )
    lead = lead_at(ny(3, 9, 9), source="brochure")
    assert assigned(lead) == ("brochure", SegmentSource.RULE)
    deal = deal_at(ny(3, 10, 9), lead=lead)
    assert opportunity(deal).predecessor == opportunity(lead)
    assert assigned(deal) == ("brochure", SegmentSource.PREDECESSOR)
    assert due(deal)[S.NO_FIRST_RESPONSE] == ny(3, 12, 17)


def test_deal_matches_the_arrival_touch_of_its_lead(segments):
    lead = lead_at(ny(3, 9, 9))
    record_touch(
        lead,
        channel=Channel.PHONE,
        direction=Direction.INBOUND,
        outcome=Outcome.NO_ANSWER,
        occurred_at=ny(3, 9, 9),
        now=ny(3, 9, 9),
    )
    deal = deal_at(ny(3, 10, 9), lead=lead)
    assert assigned(deal) == ("missed-call", SegmentSource.RULE)


def test_deal_follows_its_lead_assigned_by_a_touch_later(segments):
    """The lead's segment is decided by its arrival touch after the deal exists."""
    SegmentRule.objects.filter(segment__code="missed-call").update(
        content_type=ContentType.objects.get_for_model(Lead)
    )
    lead = lead_at(ny(3, 9, 9))
    deal = deal_at(ny(3, 9, 9, 30), lead=lead)
    record_touch(
        lead,
        channel=Channel.PHONE,
        direction=Direction.INBOUND,
        outcome=Outcome.NO_ANSWER,
        occurred_at=ny(3, 9, 9),
        now=ny(3, 9, 10),
    )
    assert assigned(lead) == ("missed-call", SegmentSource.RULE)
    assert assigned(deal) == ("missed-call", SegmentSource.PREDECESSOR)


def test_manual_pin_survives_resync_and_can_be_released(segments):
    lead = lead_at(ny(3, 9, 9), source="brochure")
    opp = opportunity(lead)
    set_segment(opp, segments["pricing"], ny(3, 9, 10))
    assert assigned(lead) == ("pricing", SegmentSource.MANUAL)
    assert due(lead)[S.NO_FIRST_RESPONSE] == ny(3, 9, 11)
    change_host(lead, ny(3, 9, 11), name="Ann B.", source="email")
    assert assigned(lead) == ("pricing", SegmentSource.MANUAL)
    record_touch(
        lead,
        channel=Channel.PHONE,
        direction=Direction.INBOUND,
        outcome=Outcome.NO_ANSWER,
        occurred_at=ny(3, 9, 11, 30),
        now=ny(3, 9, 11, 30),
    )
    assert assigned(lead) == ("pricing", SegmentSource.MANUAL)
    set_segment(opportunity(lead), None, ny(3, 9, 12))
    assert assigned(lead) == ("missed-call", SegmentSource.RULE)
    assert due(lead)[S.NO_FIRST_RESPONSE] == ny(3, 9, 9, 15)


def test_new_rule_reassigns_open_opportunities_after_commit(
    segments, django_capture_on_commit_callbacks
):
    open_lead = lead_at(ny(3, 9, 9), source="pricing")
    lost = lead_at(ny(3, 9, 9), source="pricing", status=Lead.Status.LOST)
    run_pending_commit_hooks()
    with django_capture_on_commit_callbacks(execute=True):
        SegmentRule.objects.create(
            segment=segments["pricing"], hint_field="source", hint_value="pricing"
        )
    assert assigned(open_lead) == ("pricing", SegmentSource.RULE)
    assert due(open_lead)[S.NO_FIRST_RESPONSE] == ny(3, 9, 11)
    assert assigned(lost) == (None, SegmentSource.NONE)


# Teams


@pytest.fixture
def teams(make_user):
    rep, both = make_user("rep"), make_user("both")
    east = make_team("east")
    west = make_team("west", members=[rep, both])
    north = make_team("north", members=[both])
    return {"rep": rep, "both": both, "east": east, "west": west, "north": north}


@pytest.mark.parametrize(
    ("team_key", "owner", "team"),
    [
        ("east", "rep", "east"),  # the host's key wins over membership
        ("", "rep", "west"),
        ("nowhere", "rep", "west"),  # an unknown key falls back to membership
        ("east", None, "east"),
        ("", None, None),
        ("", "both", "west"),  # several memberships: the first team created
    ],
)
def test_team_from_key_else_owners_membership(teams, team_key, owner, team):
    lead = lead_at(ny(3, 9, 9), team=team_key, owner=teams[owner] if owner else None)
    expected = teams[team].pk if team else None
    assert opportunity(lead).team_id == expected


def test_owner_change_moves_the_team(teams):
    lead = lead_at(ny(3, 9, 9))
    assert opportunity(lead).team_id is None
    change_host(lead, ny(3, 9, 10), owner=teams["rep"])
    assert opportunity(lead).team_id == teams["west"].pk


def test_new_membership_reassigns_after_commit(
    teams, make_user, django_capture_on_commit_callbacks
):
    newcomer = make_user()
    lead = lead_at(ny(3, 9, 9), owner=newcomer)
    assert opportunity(lead).team_id is None
    run_pending_commit_hooks()
    with django_capture_on_commit_callbacks(execute=True):
        teams["east"].members.add(newcomer)
    assert opportunity(lead).team_id == teams["east"].pk


def test_assign_reports_only_changes(segments):
    lead = lead_at(ny(3, 9, 9), source="brochure")
    opp = opportunity(lead)
    assert routing.assign([opp]) == []
    again = refresh.refresh([opp.pk], now=ny(3, 9, 10), cause=refresh.Cause("test", routing=True))
    assert again.routed == 0
    assert TrackedOpportunity.objects.get(pk=opp.pk).segment == segments["brochure"]
