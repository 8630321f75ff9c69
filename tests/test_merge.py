"""Merging duplicate opportunities into one timeline."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError

from example_project.crm.models import Lead
from followup_visibility.choices import Channel, Direction, Outcome, Status
from followup_visibility.ingest.crm import sync_objects
from followup_visibility.ingest.merge import merge_opportunities
from followup_visibility.ingest.touches import record_touch
from followup_visibility.models import DuplicateMatch, Touch, TrackedOpportunity
from followup_visibility.signals import opportunities_merged
from tests.conftest import tracked

PHONE = "+12125550142"


@pytest.fixture
def rep(make_user):
    return make_user("rep")


@pytest.fixture
def pair(make_lead, rep, now):
    """A customer who wrote in twice: the survivor waits on a web form, the duplicate was called."""
    survivor = make_lead(name="Ann (form)", phone="(212) 555-0142", owner=rep)
    duplicate = make_lead(name="Ann (call)", phone="212.555.0142", owner=rep)
    inbound = record_touch(
        survivor,
        channel=Channel.WEB_FORM,
        direction=Direction.INBOUND,
        outcome=Outcome.SUBMITTED,
        occurred_at=now - timedelta(hours=3),
        now=now,
    ).touch
    outbound = record_touch(
        duplicate,
        channel=Channel.PHONE,
        direction=Direction.OUTBOUND,
        outcome=Outcome.CONNECTED,
        occurred_at=now - timedelta(hours=2),
        now=now,
        actor=rep,
    ).touch
    return survivor, duplicate, inbound, outbound


def state(*opps):
    """Everything a refused merge must leave alone."""
    return (
        [
            TrackedOpportunity.objects.filter(pk=o.pk)
            .values(
                "status",
                "merged_into_id",
                "merged_at",
                "closed_at",
                "first_response_at",
                "awaiting_reply_since",
            )
            .get()
            for o in opps
        ],
        sorted(Touch.objects.values_list("pk", "opportunity_id")),
        TrackedOpportunity.history.count(),
        sorted(DuplicateMatch.objects.values_list("pk", "cleared_at")),
    )


def test_merge_moves_touches_and_recomputes_survivor(pair, now, rep):
    survivor_lead, duplicate_lead, inbound, outbound = pair
    survivor, duplicate = tracked(survivor_lead), tracked(duplicate_lead)
    assert (survivor.first_response_at, survivor.awaiting_reply_since) == (
        None,
        now - timedelta(hours=3),
    )
    later = now + timedelta(minutes=5)
    result = merge_opportunities(duplicate, survivor, now=later, by=rep, reason="same buyer")

    survivor = tracked(survivor_lead)
    assert result == survivor
    assert result.first_response_at == now - timedelta(hours=2)
    assert survivor.first_response_at == now - timedelta(hours=2)
    assert survivor.first_response_touch_id == outbound.pk
    assert survivor.first_outbound_at == now - timedelta(hours=2)
    assert survivor.last_touch_at == now - timedelta(hours=2)
    assert survivor.last_meaningful_touch_id == outbound.pk
    assert survivor.awaiting_reply_since is None
    assert survivor.status == Status.OPEN
    assert set(Touch.objects.values_list("pk", "opportunity_id")) == {
        (inbound.pk, survivor.pk),
        (outbound.pk, survivor.pk),
    }

    duplicate = tracked(duplicate_lead)
    assert duplicate.status == Status.MERGED
    assert duplicate.merged_into == survivor
    assert (duplicate.merged_at, duplicate.closed_at) == (later, later)
    assert list(survivor.merged_from.all()) == [duplicate]


def test_merge_leaves_host_rows_alone(pair, now):
    survivor_lead, duplicate_lead, _inbound, _outbound = pair
    before = list(Lead.objects.order_by("pk").values())
    merge_opportunities(tracked(duplicate_lead), tracked(survivor_lead), now=now)
    assert list(Lead.objects.order_by("pk").values()) == before


def test_host_save_of_merged_lead_keeps_it_merged(pair, now):
    survivor_lead, duplicate_lead, _inbound, _outbound = pair
    merge_opportunities(tracked(duplicate_lead), tracked(survivor_lead), now=now)
    duplicate_lead.name = "Ann (renamed)"
    duplicate_lead.save()
    opp = tracked(duplicate_lead)
    assert (opp.title, opp.status, opp.merged_into_id) == (
        "Ann (renamed)",
        Status.MERGED,
        tracked(survivor_lead).pk,
    )
    # Neither a host close nor a reopen brings it back.
    later = now + timedelta(hours=1)
    for host_status in ("lost", "working"):
        Lead.objects.filter(pk=duplicate_lead.pk).update(status=host_status)
        sync_objects([Lead.objects.get(pk=duplicate_lead.pk)], later)
        opp = tracked(duplicate_lead)
        assert (opp.status, opp.stage, opp.closed_at) == (Status.MERGED, host_status, now)
    assert not DuplicateMatch.objects.filter(cleared_at__isnull=True).exists()


def test_touch_on_merged_record_lands_on_survivor(pair, now):
    survivor_lead, duplicate_lead, _inbound, _outbound = pair
    merge_opportunities(tracked(duplicate_lead), tracked(survivor_lead), now=now)
    later = record_touch(
        duplicate_lead,
        channel=Channel.EMAIL,
        direction=Direction.INBOUND,
        outcome=Outcome.RECEIVED,
        occurred_at=now,
        now=now,
    ).touch
    assert later.opportunity_id == tracked(survivor_lead).pk
    assert tracked(survivor_lead).awaiting_reply_since == now


def test_merge_clears_duplicate_matches_of_the_merged_record(pair, make_lead, now):
    survivor_lead, duplicate_lead, _inbound, _outbound = pair
    third = tracked(make_lead(phone="+1 212 555 0142"))
    survivor, duplicate = tracked(survivor_lead), tracked(duplicate_lead)
    assert DuplicateMatch.objects.filter(cleared_at__isnull=True).count() == 6
    merge_opportunities(duplicate, survivor, now=now)
    assert set(
        DuplicateMatch.objects.filter(cleared_at__isnull=True).values_list(
            "opportunity_id", "duplicate_id", "key"
        )
    ) == {(survivor.pk, third.pk, PHONE), (third.pk, survivor.pk, PHONE)}
    assert DuplicateMatch.objects.filter(cleared_at=now).count() == 4


def test_merge_history_row_has_reason_and_user(pair, now, rep):
    survivor_lead, duplicate_lead, _inbound, _outbound = pair
    duplicate = tracked(duplicate_lead)
    before = duplicate.history.count()
    merge_opportunities(duplicate, tracked(survivor_lead), now=now, by=rep, reason="same buyer")
    assert duplicate.history.count() == before + 1
    row = duplicate.history.order_by("-history_id").first()
    assert (row.history_type, row.status, row.history_change_reason, row.history_user) == (
        "~",
        Status.MERGED,
        "same buyer",
        rep,
    )
    assert row.merged_into_id == tracked(survivor_lead).pk
    assert (row.history_date, row.merged_at) == (now, now)


def test_merge_default_reason_names_survivor(pair, now):
    survivor_lead, duplicate_lead, _inbound, _outbound = pair
    survivor = tracked(survivor_lead)
    merge_opportunities(tracked(duplicate_lead), survivor, now=now)
    row = tracked(duplicate_lead).history.order_by("-history_id").first()
    assert row.history_change_reason == f"merged into {survivor.pk}"
    assert row.history_user is None


def test_merge_sends_signal_on_commit(pair, now, django_capture_on_commit_callbacks):
    survivor_lead, duplicate_lead, _inbound, _outbound = pair
    seen = []

    def listener(sender, **kwargs):
        seen.append((kwargs["survivor"].pk, kwargs["merged"].pk, kwargs["merged"].status))

    opportunities_merged.connect(listener)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            merge_opportunities(tracked(duplicate_lead), tracked(survivor_lead), now=now)
            assert seen == []
    finally:
        opportunities_merged.disconnect(listener)
    assert seen == [(tracked(survivor_lead).pk, tracked(duplicate_lead).pk, Status.MERGED)]


def test_chain_repointing(make_lead, now):
    a, b, c = (tracked(make_lead(name=n)) for n in "abc")
    touch = record_touch(
        a,
        channel=Channel.EMAIL,
        direction=Direction.OUTBOUND,
        outcome=Outcome.SENT,
        occurred_at=now - timedelta(hours=1),
        now=now,
    ).touch
    merge_opportunities(a, b, now=now)
    merge_opportunities(b, c, now=now + timedelta(minutes=1))
    a, b, c = (TrackedOpportunity.objects.get(pk=o.pk) for o in (a, b, c))
    assert a.merged_into == c
    assert b.merged_into == c
    assert set(c.merged_from.all()) == {a, b}
    assert (a.merged_at, b.merged_at) == (now, now + timedelta(minutes=1))
    assert Touch.objects.get(pk=touch.pk).opportunity == c
    assert c.first_response_at == now - timedelta(hours=1)


def _self(opps, now):
    return opps[0], opps[0]


def _closed_survivor(opps, now):
    Lead.objects.filter(pk=opps[1].host_object.pk).update(status="lost")
    sync_objects([Lead.objects.get(pk=opps[1].host_object.pk)], now)
    return opps[0], opps[1]


def _merged_survivor(opps, now):
    merge_opportunities(opps[1], opps[2], now=now)
    return opps[0], opps[1]


def _already_merged(opps, now):
    merge_opportunities(opps[0], opps[2], now=now)
    return opps[0], opps[1]


def _lead_with_a_deal(opps, now):
    from example_project.crm.models import Deal

    Deal.objects.create(name="deal", lead=opps[0].host_object, created_at=now)
    return opps[0], opps[1]


@pytest.mark.parametrize(
    ("arrange", "code"),
    [
        (_self, "self"),
        (_lead_with_a_deal, "has_successors"),
        (_closed_survivor, "survivor_closed"),
        (_merged_survivor, "survivor_closed"),
        (_already_merged, "already_merged"),
    ],
)
def test_refused_merges_change_nothing(make_lead, now, arrange, code):
    leads = [make_lead(name=n, phone="(212) 555-0142") for n in "abc"]
    opps = [tracked(lead) for lead in leads]
    record_touch(
        opps[0],
        channel=Channel.PHONE,
        direction=Direction.OUTBOUND,
        outcome=Outcome.CONNECTED,
        occurred_at=now - timedelta(hours=1),
        now=now,
    )
    duplicate, survivor = arrange(opps, now)
    duplicate, survivor = (TrackedOpportunity.objects.get(pk=o.pk) for o in (duplicate, survivor))
    before = state(*opps)
    with pytest.raises(ValidationError) as excinfo:
        merge_opportunities(duplicate, survivor, now=now + timedelta(hours=1))
    assert excinfo.value.code == code
    assert state(*opps) == before
