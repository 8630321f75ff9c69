"""Mirroring host rows into tracked opportunities: on save, by backfill and by reconcile."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal
from io import StringIO
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import override_settings

from example_project.crm.adapters import DealAdapter, LeadAdapter
from example_project.crm.models import Deal, Lead
from followup_visibility import registry, tasks
from followup_visibility.choices import AcceptedVia, Channel, Direction, Outcome, Status
from followup_visibility.ingest.crm import sync_objects
from followup_visibility.ingest.merge import merge_opportunities
from followup_visibility.ingest.next_actions import schedule_next_action
from followup_visibility.ingest.touches import record_touch
from followup_visibility.models import DuplicateMatch, Handoff, TrackedOpportunity
from followup_visibility.receivers import on_host_saved
from followup_visibility.registry import NotTracked, get_adapter, is_tracked
from followup_visibility.signals import opportunities_synced
from tests.conftest import NOW, tracked

pytestmark = pytest.mark.django_db

LEAD_ADAPTER = "example_project.crm.adapters.LeadAdapter"
DEAL_ADAPTER = "example_project.crm.adapters.DealAdapter"


def host_update(obj, **fields):
    """Change a host row without signals (``queryset.update``) and return it fresh."""
    model = type(obj)
    model.objects.filter(pk=obj.pk).update(**fields)
    return model.objects.get(pk=obj.pk)


def resync(obj, **fields):
    """Change a host row without signals, then return it for an explicit ``sync_objects``."""
    return host_update(obj, **fields) if fields else type(obj).objects.get(pk=obj.pk)


def history_count(opp: TrackedOpportunity) -> int:
    return TrackedOpportunity.history.filter(id=opp.pk).count()


# --- host keys and the registry -------------------------------------------------------------


@pytest.mark.parametrize("factory", ["make_lead", "make_deal"])
def test_host_key_stored_as_text_and_generic_relation_resolves(request, factory):
    obj = request.getfixturevalue(factory)()
    opp = tracked(obj)
    assert opp.object_pk == str(obj.pk)
    assert opp.host_object == obj
    assert type(opp.host_object) is type(obj)
    assert TrackedOpportunity.objects.count() == 1


def test_integer_and_uuid_keys(make_lead, make_deal):
    lead, deal = make_lead(), make_deal()
    assert isinstance(lead.pk, int)
    assert isinstance(deal.pk, uuid.UUID)
    assert tracked(lead).object_pk == str(lead.pk)
    # The hyphenated form, the same one ``str(pk)`` and the generic relation use.
    assert tracked(deal).object_pk == str(deal.pk)
    assert len(tracked(deal).object_pk) == 36


def test_generic_relation_prefetches_both_key_types(make_lead, make_deal):
    lead, deal = make_lead(name="Ann"), make_deal(name="Big deal")
    opps = list(TrackedOpportunity.objects.prefetch_related("host_object").order_by("pk"))
    assert [o.host_object for o in opps] == [lead, deal]


def test_both_models_tracked_at_once(make_lead, make_deal):
    lead, deal = make_lead(), make_deal()
    assert is_tracked(Lead) and is_tracked(Deal)
    assert isinstance(get_adapter(lead), LeadAdapter)
    assert isinstance(get_adapter(Deal), DealAdapter)
    assert {o.host_object for o in TrackedOpportunity.objects.all()} == {lead, deal}


def test_receiver_filters_by_registry(make_lead, make_deal):
    with override_settings(FOLLOWUP_VISIBILITY_TRACKED_MODELS={"crm.Lead": LEAD_ADAPTER}):
        assert not is_tracked(Deal)
        deal = make_deal()
        lead = make_lead()
        assert not TrackedOpportunity.objects.for_object(deal).exists()
        assert tracked(lead).object_pk == str(lead.pk)
        with pytest.raises(NotTracked):
            get_adapter(Deal)
    # The setting is restored: deals are tracked again without reconnecting anything.
    assert is_tracked(Deal)
    other = make_deal()
    assert tracked(other).object_pk == str(other.pk)


class ShoutingLeadAdapter(LeadAdapter):
    def get_title(self, obj):
        return obj.name.upper()


def test_registry_rebuilds_when_setting_changes(make_lead):
    assert type(get_adapter(Lead)) is LeadAdapter
    path = f"{__name__}.ShoutingLeadAdapter"
    with override_settings(FOLLOWUP_VISIBILITY_TRACKED_MODELS={"crm.Lead": path}):
        # setting_changed emptied the cache; it fills again on first use.
        assert registry._build.cache_info().currsize == 0
        assert type(get_adapter(Lead)) is ShoutingLeadAdapter
        assert tracked(make_lead(name="Ann")).title == "ANN"
    assert type(get_adapter(Lead)) is LeadAdapter
    assert tracked(make_lead(name="Bob")).title == "Bob"


def test_tracking_only_deals_ignores_untracked_predecessor(make_deal):
    """The deal's lead model is not tracked: the deal is tracked alone, the host save works."""
    with override_settings(FOLLOWUP_VISIBILITY_TRACKED_MODELS={"crm.Deal": DEAL_ADAPTER}):
        lead = Lead.objects.create(name="Not tracked", created_at=NOW)
        deal = make_deal(lead=lead, amount=Decimal("5"))
        opp = tracked(deal)
        assert (opp.predecessor, opp.chain_root, opp.value) == (None, None, Decimal("5"))
        assert not TrackedOpportunity.objects.for_object(lead).exists()
    assert TrackedOpportunity.objects.count() == 1


def test_raw_save_is_ignored(make_lead):
    """Fixture loading (``raw=True``) does not sync."""
    lead = Lead.objects.bulk_create([Lead(name="Loaded", created_at=NOW)])[0]
    on_host_saved(Lead, lead, raw=True)
    assert not TrackedOpportunity.objects.exists()
    on_host_saved(Lead, lead)
    assert tracked(lead).title == "Loaded"


# --- the mirror ----------------------------------------------------------------------------


def test_lead_mirror(make_lead, make_user, now):
    rep = make_user()
    due = now + timedelta(days=1)
    lead = make_lead(
        name="Ann",
        company="Acme",
        owner=rep,
        source=Lead.Source.PRICING,
        team="east",
        phone="(212) 555-0142",
        email="ann@example.com",
        next_step_at=due,
    )
    opp = tracked(lead)
    assert opp.title == "Ann (Acme)"
    assert opp.owner == rep
    assert opp.stage == "new"
    assert opp.status == Status.OPEN
    assert opp.closed_at is None
    assert opp.close_reason == ""
    assert opp.arrived_at == now - timedelta(hours=3)
    assert opp.value is None
    assert opp.team_key == "east"
    assert opp.segment_hints == {"source": "pricing"}
    assert opp.next_action_due_at == due
    assert sorted(opp.identities.values_list("kind", "raw", "key")) == [
        ("email", "ann@example.com", "ann@example.com"),
        ("phone", "(212) 555-0142", "+12125550142"),
    ]


def test_deal_mirror(make_lead, make_deal, make_user):
    rep = make_user()
    lead = make_lead(source=Lead.Source.MISSED_CALL)
    deal = make_deal(
        name="Fleet renewal",
        owner=rep,
        amount=Decimal("12500.50"),
        team="west",
        lead=lead,
        stage=Deal.Stage.PROPOSAL,
    )
    opp = tracked(deal)
    assert opp.title == "Fleet renewal"
    assert opp.owner == rep
    assert opp.stage == "proposal"
    assert opp.status == Status.OPEN
    assert opp.value == Decimal("12500.50")
    assert opp.team_key == "west"
    assert opp.segment_hints == {"source": "missed_call", "kind": "deal"}
    assert tracked(make_deal()).segment_hints == {"source": "", "kind": "deal"}


@pytest.mark.parametrize(
    ("host_status", "expected"),
    [
        ("new", Status.OPEN),
        ("working", Status.OPEN),
        ("converted", Status.CONVERTED),
        ("disqualified", Status.DISQUALIFIED),
        ("lost", Status.LOST),
    ],
)
def test_lead_status_mapping(make_lead, now, host_status, expected):
    lead = make_lead()
    result = sync_objects([resync(lead, status=host_status)], now)
    opp = tracked(lead)
    assert opp.status == expected
    assert opp.stage == host_status
    assert opp.closed_at == (None if expected == Status.OPEN else now)
    if host_status == "new":
        assert result.unchanged == 1
    else:
        assert result.updated == [opp.pk]


@pytest.mark.parametrize(("host_status", "expected"), [("won", Status.WON), ("lost", Status.LOST)])
def test_deal_status_and_close_reason(make_deal, now, host_status, expected):
    deal = make_deal(amount=Decimal("100"))
    sync_objects([resync(deal, status=host_status, lost_reason="budget cut")], now)
    opp = tracked(deal)
    assert opp.status == expected
    assert opp.closed_at == now
    assert opp.close_reason == "budget cut"


def test_close_keeps_first_closed_at_and_reopen_clears_it(make_lead, now):
    lead = make_lead()
    later, reopened = now + timedelta(hours=1), now + timedelta(hours=2)
    sync_objects([resync(lead, status="lost")], now)
    sync_objects([resync(lead, status="disqualified", disqualify_reason="spam")], later)
    opp = tracked(lead)
    assert (opp.status, opp.closed_at, opp.close_reason) == (Status.DISQUALIFIED, now, "spam")
    sync_objects([resync(lead, status="working", disqualify_reason="")], reopened)
    opp = tracked(lead)
    assert (opp.status, opp.closed_at, opp.close_reason) == (Status.OPEN, None, "")
    assert opp.stage_entered_at == reopened


def test_stage_change_sets_stage_entered_at(make_deal, now):
    t1, t2, t3 = (now + timedelta(hours=h) for h in (1, 2, 3))
    deal = make_deal(amount=Decimal("10"))
    sync_objects([resync(deal, stage=Deal.Stage.PROPOSAL)], t1)
    opp = tracked(deal)
    assert (opp.stage, opp.stage_entered_at) == ("proposal", t1)
    # A change that does not move the stage keeps the stage clock.
    sync_objects([resync(deal, amount=Decimal("99.90"), team="north")], t2)
    opp = tracked(deal)
    assert (opp.stage, opp.stage_entered_at) == ("proposal", t1)
    assert (opp.value, opp.team_key) == (Decimal("99.90"), "north")
    sync_objects([resync(deal, stage=Deal.Stage.NEGOTIATION)], t3)
    assert tracked(deal).stage_entered_at == t3


def test_new_record_enters_stage_at_sync_time(make_lead, now):
    lead = Lead.objects.bulk_create([Lead(name="Bulk", created_at=now - timedelta(days=2))])[0]
    result = sync_objects([lead], now)
    opp = tracked(lead)
    assert result.created == [opp.pk]
    assert (opp.stage_entered_at, opp.synced_at, opp.arrived_at) == (
        now,
        now,
        now - timedelta(days=2),
    )


def test_host_next_step_is_mirrored(make_lead, now):
    due = now + timedelta(days=2)
    lead = make_lead()
    sync_objects([resync(lead, next_step_at=due)], now)
    opp = tracked(lead)
    assert (opp.next_action_due_at, opp.next_action_set_at, opp.next_action_done_at) == (
        due,
        now,
        None,
    )


def test_api_next_action_kept_while_host_has_none(make_lead, now):
    lead = make_lead()
    due = now + timedelta(days=1)
    schedule_next_action(tracked(lead), due, now=now, note="call back")
    # A host change unrelated to the next step: ours stays.
    sync_objects([resync(lead, name="Renamed", team="south")], now + timedelta(hours=1))
    opp = tracked(lead)
    assert opp.title == "Renamed"
    assert (opp.next_action_due_at, opp.next_action_note, opp.next_action_set_at) == (
        due,
        "call back",
        now,
    )


def test_host_next_step_wins_over_api_next_action(make_lead, now):
    lead = make_lead()
    schedule_next_action(tracked(lead), now + timedelta(days=1), now=now)
    opp = tracked(lead)
    opp.next_action_done_at = now
    opp.save()
    host_due, later = now + timedelta(days=3), now + timedelta(hours=2)
    sync_objects([resync(lead, next_step_at=host_due)], later)
    opp = tracked(lead)
    assert (opp.next_action_due_at, opp.next_action_set_at, opp.next_action_done_at) == (
        host_due,
        later,
        None,
    )


def test_unchanged_snapshot_writes_nothing(make_lead, now):
    lead = make_lead(phone="(212) 555-0142")
    opp = tracked(lead)
    before = (history_count(opp), opp.synced_at, opp.updated_at)
    result = sync_objects([resync(lead)], now)
    assert (result.created, result.updated, result.unchanged) == ([], [], 1)
    opp = tracked(lead)
    assert (history_count(opp), opp.synced_at, opp.updated_at) == before


@pytest.mark.parametrize(
    "fields",
    [
        {"amount": Decimal("10")},
        {"amount": 250},
        {"next_step_at": (NOW + timedelta(days=1)).astimezone(ZoneInfo("America/New_York"))},
        {"created_at": (NOW - timedelta(hours=5)).astimezone(ZoneInfo("Asia/Tokyo"))},
    ],
)
def test_reread_host_row_is_unchanged(make_deal, now, fields):
    """The in-memory values of a save and the values read back hash the same."""
    deal = make_deal(**fields)
    opp = tracked(deal)
    history = history_count(opp)
    result = sync_objects([Deal.objects.select_related("lead").get(pk=deal.pk)], now)
    assert (result.updated, result.unchanged) == ([], 1)
    assert history_count(opp) == history


def test_sync_objects_batch_reports_created_updated_unchanged(now):
    a, b, c = Lead.objects.bulk_create(
        [Lead(name=n, created_at=now - timedelta(hours=1)) for n in "abc"]
    )
    first = sync_objects([a, b], now)
    assert len(first.created) == 2 and first.updated == [] and first.unchanged == 0
    b = host_update(b, status="working")
    second = sync_objects([a, b, c], now)
    assert second.created == [tracked(c).pk]
    assert second.updated == [tracked(b).pk]
    assert second.unchanged == 1


def test_sync_sends_opportunities_synced_on_commit(
    make_lead, now, django_capture_on_commit_callbacks
):
    seen = []

    def listener(sender, **kwargs):
        seen.append((kwargs["created"], kwargs["updated"]))

    opportunities_synced.connect(listener)
    try:
        lead = Lead.objects.bulk_create([Lead(name="x", created_at=now)])[0]
        with django_capture_on_commit_callbacks(execute=True):
            sync_objects([lead], now)
            assert seen == []  # not before commit
        assert seen == [([tracked(lead).pk], [])]
        with django_capture_on_commit_callbacks(execute=True):
            sync_objects([lead], now)  # unchanged: nothing to announce
        assert len(seen) == 1
    finally:
        opportunities_synced.disconnect(listener)


# --- history -------------------------------------------------------------------------------


def test_mirrored_change_creates_history_row(make_user, now):
    rep = make_user()
    lead = Lead.objects.bulk_create([Lead(name="x", created_at=now - timedelta(hours=2))])[0]
    sync_objects([lead], now - timedelta(hours=1))
    opp = tracked(lead)
    assert history_count(opp) == 1
    sync_objects([resync(lead, status="lost", owner=rep)], now)
    assert history_count(opp) == 2
    rows = list(
        opp.history.order_by("history_date").values_list(
            "history_type", "status", "owner_id", "history_date"
        )
    )
    assert rows == [
        ("+", Status.OPEN, None, now - timedelta(hours=1)),
        ("~", Status.LOST, rep.pk, now),
    ]


def test_bulk_created_record_has_history_at_now(now):
    lead = Lead.objects.bulk_create([Lead(name="x", created_at=now)])[0]
    sync_objects([lead], now)
    rows = list(tracked(lead).history.values_list("history_type", "history_date"))
    assert rows == [("+", now)]


# --- lead-to-deal chain --------------------------------------------------------------------


def test_deal_links_to_its_lead(make_lead, make_deal):
    lead = make_lead()
    deal = make_deal(lead=lead)
    lead_opp, deal_opp = tracked(lead), tracked(deal)
    assert deal_opp.predecessor == lead_opp
    assert deal_opp.chain_root == lead_opp
    assert deal_opp.root_id == lead_opp.pk
    assert lead_opp.predecessor is None and lead_opp.chain_root is None
    second = tracked(make_deal(lead=lead))
    assert set(lead_opp.successors.all()) == {deal_opp, second}
    assert set(lead_opp.chain_members.all()) == {deal_opp, second}


def test_deal_tracks_an_untracked_lead_on_the_fly(make_deal, make_user):
    rep = make_user()
    lead = Lead.objects.bulk_create(
        [Lead(name="Silent", source="pricing", owner=rep, created_at=NOW - timedelta(days=1))]
    )[0]
    assert not TrackedOpportunity.objects.exists()
    deal = make_deal(lead=lead)
    lead_opp, deal_opp = tracked(lead), tracked(deal)
    assert (lead_opp.title, lead_opp.owner, lead_opp.segment_hints) == (
        "Silent",
        rep,
        {"source": "pricing"},
    )
    assert lead_opp.arrived_at == NOW - timedelta(days=1)
    assert deal_opp.predecessor == lead_opp
    assert deal_opp.chain_root == lead_opp
    assert TrackedOpportunity.objects.count() == 2


def test_new_deal_inherits_its_leads_timeline(make_lead, make_deal, make_user, now):
    """The lead's touches belong to the deal's timeline from the moment the deal exists."""
    rep = make_user()
    lead = make_lead(owner=rep)
    inbound = record_touch(
        lead,
        channel=Channel.WEB_FORM,
        direction=Direction.INBOUND,
        outcome=Outcome.SUBMITTED,
        occurred_at=now - timedelta(hours=3),
        now=now,
    ).touch
    outbound = record_touch(
        lead,
        channel=Channel.PHONE,
        direction=Direction.OUTBOUND,
        outcome=Outcome.CONNECTED,
        occurred_at=now - timedelta(hours=1),
        now=now,
        actor=rep,
    ).touch
    deal = tracked(make_deal(lead=lead, owner=rep))
    assert (deal.first_response_at, deal.first_response_touch_id) == (
        now - timedelta(hours=1),
        outbound.pk,
    )
    assert (deal.first_outbound_at, deal.last_touch_at, deal.awaiting_reply_since) == (
        now - timedelta(hours=1),
        now - timedelta(hours=1),
        None,
    )
    assert inbound.opportunity_id == tracked(lead).pk
    # Unlinked from the lead, the deal's own timeline is empty again.
    sync_objects([resync(deal.host_object, lead=None)], now)
    unlinked = TrackedOpportunity.objects.get(pk=deal.pk)
    assert (unlinked.predecessor, unlinked.first_response_at, unlinked.last_touch_at) == (
        None,
        None,
        None,
    )


def test_deal_linked_to_lead_later(make_lead, make_deal, now):
    lead, deal = make_lead(), make_deal()
    assert tracked(deal).predecessor is None
    sync_objects([resync(deal, lead=lead)], now)
    assert tracked(deal).predecessor == tracked(lead)
    assert tracked(deal).chain_root == tracked(lead)


def test_deal_relinked_to_another_lead(make_lead, make_deal, now):
    """Moving a deal to another lead is a change even when nothing else differs."""
    first, second = make_lead(source="pricing"), make_lead(source="pricing")
    deal = make_deal(lead=first)
    assert tracked(deal).predecessor == tracked(first)
    result = sync_objects([resync(deal, lead=second)], now)
    assert result.updated == [tracked(deal).pk]
    assert tracked(deal).predecessor == tracked(second)
    # The lead is deleted: the deal's FK is nulled without signals, reconcile unlinks it.
    second.delete()
    run("followup_reconcile", "--no-progress", "crm.Deal")
    assert tracked(deal).predecessor is None
    assert tracked(deal).chain_root is None


# --- backfill ------------------------------------------------------------------------------


@pytest.fixture
def bulk_leads(make_user):
    """Five leads created without signals: three owned, two unowned."""
    rep, other = make_user("rep"), make_user("other")
    owners = [rep, other, rep, None, None]
    return Lead.objects.bulk_create(
        [
            Lead(name=f"Bulk {i}", owner=owner, created_at=NOW - timedelta(days=i))
            for i, owner in enumerate(owners)
        ]
    )


def run(command, *args):
    out = StringIO()
    call_command(command, *args, stdout=out)
    return out.getvalue()


@pytest.mark.parametrize("extra", [[], ["--chunk-size", "2"]])
def test_backfill_tracks_every_row_and_confirms_owners(bulk_leads, now, extra):
    assert not TrackedOpportunity.objects.exists()
    with time_machine.travel(now, tick=False):
        out = run("followup_backfill", "--no-progress", "crm.Lead", *extra)
    assert "crm.Lead: 5 created, 0 updated, 0 unchanged" in out
    opps = {o.object_pk: o for o in TrackedOpportunity.objects.for_model(Lead)}
    assert set(opps) == {str(lead.pk) for lead in bulk_leads}
    for lead in bulk_leads:
        opp = opps[str(lead.pk)]
        assert opp.owner_id == lead.owner_id
        if lead.owner_id is None:
            assert opp.owner_confirmed_at is None
            assert not opp.handoffs.exists()
        else:
            assert opp.owner_confirmed_at == now
            handoff = opp.handoffs.get()
            assert (handoff.from_owner_id, handoff.to_owner_id) == (None, lead.owner_id)
            assert (handoff.accepted_at, handoff.accepted_via) == (now, AcceptedVia.BACKFILL)
    assert not Handoff.objects.filter(accepted_at__isnull=True).exists()


def test_backfill_owners_unconfirmed_leaves_handoffs_pending(bulk_leads):
    run("followup_backfill", "--no-progress", "--owners-unconfirmed")
    owned = TrackedOpportunity.objects.filter(owner__isnull=False)
    assert owned.count() == 3
    assert owned.filter(owner_confirmed_at__isnull=True).count() == 3
    assert Handoff.objects.count() == 3
    assert set(Handoff.objects.values_list("accepted_at", "accepted_via")) == {(None, "")}


def test_backfill_is_idempotent(bulk_leads):
    run("followup_backfill", "--no-progress", "--chunk-size", "2")
    snapshot = (
        TrackedOpportunity.objects.count(),
        Handoff.objects.count(),
        TrackedOpportunity.history.count(),
    )
    out = run("followup_backfill", "--no-progress", "--chunk-size", "2")
    assert "crm.Lead: 0 created, 0 updated, 5 unchanged" in out
    assert "crm.Deal: 0 created, 0 updated, 0 unchanged" in out
    assert snapshot == (
        TrackedOpportunity.objects.count(),
        Handoff.objects.count(),
        TrackedOpportunity.history.count(),
    )
    assert snapshot[:2] == (5, 3)


def test_backfill_uuid_deals_in_chunks_with_their_leads(bulk_leads, make_user, now):
    rep = make_user()
    deals = Deal.objects.bulk_create(
        [
            Deal(name=f"D{i}", lead=bulk_leads[i], owner=rep, amount=Decimal(i), created_at=now)
            for i in range(5)
        ]
    )
    with time_machine.travel(now, tick=False):
        run("followup_backfill", "--no-progress", "--chunk-size", "2")
    assert TrackedOpportunity.objects.count() == 10
    for deal, lead in zip(deals, bulk_leads, strict=True):
        deal_opp, lead_opp = tracked(deal), tracked(lead)
        assert deal_opp.predecessor == lead_opp
        assert deal_opp.value == deal.amount
        assert deal_opp.owner_confirmed_at == now
    # Leads tracked on the fly while linking deals are backfilled like the rest:
    # their pre-existing owners are confirmed too, not left as pending handoffs.
    for lead in bulk_leads:
        opp = tracked(lead)
        assert opp.owner_confirmed_at == (None if lead.owner_id is None else now)
    assert not Handoff.objects.filter(accepted_at__isnull=True).exists()


def test_backfill_progress_bar(bulk_leads):
    out = run("followup_backfill", "crm.Lead", "--chunk-size", "2")
    assert "2/5" in out and "4/5" in out
    assert f"[{'#' * 30}] 5/5\n" in out
    assert "crm.Lead" in out
    quiet = run("followup_backfill", "crm.Lead", "--no-progress")
    assert "#" not in quiet and "5/5" not in quiet


@pytest.mark.parametrize("command", ["followup_backfill", "followup_reconcile"])
@pytest.mark.parametrize(
    ("label", "message"),
    [
        ("crm.Nope", "is not an installed model"),
        ("nodot", "is not an installed model"),
        ("auth.User", "is not in FOLLOWUP_VISIBILITY_TRACKED_MODELS"),
    ],
)
def test_command_rejects_bad_model_labels(db, command, label, message):
    with pytest.raises(CommandError, match=message):
        run(command, "--no-progress", label)
    assert not TrackedOpportunity.objects.exists()


@pytest.mark.parametrize("command", ["followup_backfill", "followup_reconcile"])
def test_command_rejects_bad_chunk_size(db, command):
    with pytest.raises(CommandError, match="chunk-size"):
        run(command, "--chunk-size", "0")


# --- reconcile -----------------------------------------------------------------------------


def reconcile_by_command():
    run("followup_reconcile", "--no-progress")


def reconcile_by_task_apply():
    tasks.reconcile.apply().get()


def reconcile_by_function():
    tasks.reconcile()


RECONCILERS = [reconcile_by_command, reconcile_by_task_apply, reconcile_by_function]


@pytest.mark.parametrize("reconcile", RECONCILERS)
def test_reconcile_catches_queryset_update(make_lead, make_user, now, reconcile):
    rep, other = make_user(), make_user()
    lead = make_lead(owner=rep)
    untouched = make_lead(owner=rep)
    Lead.objects.filter(pk=lead.pk).update(status="disqualified", owner=other)
    stale = tracked(lead)
    assert (stale.status, stale.owner_id) == (Status.OPEN, rep.pk)
    with time_machine.travel(now, tick=False):
        reconcile()
    opp = tracked(lead)
    assert (opp.status, opp.stage, opp.owner_id) == (Status.DISQUALIFIED, "disqualified", other.pk)
    assert opp.closed_at == now
    assert opp.owner_confirmed_at is None
    pending = opp.handoffs.get(accepted_at__isnull=True, superseded_at__isnull=True)
    assert (pending.from_owner_id, pending.to_owner_id, pending.handed_at) == (
        rep.pk,
        other.pk,
        now,
    )
    assert opp.handoffs.get(to_owner=rep).superseded_at == now
    assert tracked(untouched).status == Status.OPEN
    assert tracked(untouched).handoffs.count() == 1


def test_reconcile_task_reports_totals(make_lead, make_deal):
    lead, deal = make_lead(), make_deal()
    Lead.objects.bulk_create([Lead(name="new", created_at=NOW)])
    Lead.objects.filter(pk=lead.pk).update(status="lost")
    Deal.objects.filter(pk=deal.pk)._raw_delete(connection.alias)
    assert tasks.reconcile() == {"created": 1, "updated": 1, "deleted": 1}
    assert tasks.reconcile() == {"created": 0, "updated": 0, "deleted": 0}
    assert tasks.reconcile.apply(args=["crm.Lead"]).get() == {
        "created": 0,
        "updated": 0,
        "deleted": 0,
    }


def test_reconcile_command_output(make_lead):
    lead = make_lead()
    make_lead()
    Lead.objects.filter(pk=lead.pk).update(name="Changed")
    out = run("followup_reconcile", "--no-progress", "crm.Lead")
    assert out.strip() == "crm.Lead: 0 created, 1 updated, 0 closed as deleted"
    assert tracked(lead).title == "Changed"


def _raw_sql_delete(obj):
    table = connection.ops.quote_name(type(obj)._meta.db_table)
    pk = type(obj)._meta.pk.get_db_prep_value(obj.pk, connection)
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {table} WHERE id = %s", [pk])


def _queryset_raw_delete(obj):
    type(obj).objects.filter(pk=obj.pk)._raw_delete(connection.alias)


@pytest.mark.parametrize("delete", [_raw_sql_delete, _queryset_raw_delete])
@pytest.mark.parametrize("factory", ["make_lead", "make_deal"])
@pytest.mark.parametrize("chunk", [[], ["--chunk-size", "1"]])
def test_reconcile_marks_rows_deleted_without_signals(request, now, delete, factory, chunk):
    make = request.getfixturevalue(factory)
    keep_before, gone, keep_after = make(), make(), make()
    delete(gone)
    assert tracked(gone).status == Status.OPEN
    with time_machine.travel(now, tick=False):
        out = run("followup_reconcile", "--no-progress", *chunk)
    label = type(gone)._meta.label
    assert f"{label}: 0 created, 0 updated, 1 closed as deleted" in out
    opp = tracked(gone)
    assert (opp.status, opp.closed_at) == (Status.DELETED, now)
    assert tracked(keep_before).status == Status.OPEN
    assert tracked(keep_after).status == Status.OPEN
    # Already closed as deleted: a second pass changes nothing.
    assert "0 closed as deleted" in run("followup_reconcile", "--no-progress", *chunk)


def test_delete_signal_marks_deleted_and_clears_duplicates(make_lead, now):
    a = make_lead(phone="(212) 555-0142")
    b = make_lead(phone="+1 212 555 0142")
    assert DuplicateMatch.objects.filter(cleared_at__isnull=True).count() == 2
    pk = str(a.pk)
    with time_machine.travel(now, tick=False):
        a.delete()
    gone = TrackedOpportunity.objects.for_model(Lead).get(object_pk=pk)
    assert (gone.status, gone.closed_at) == (Status.DELETED, now)
    assert tracked(b).status == Status.OPEN
    assert not DuplicateMatch.objects.filter(cleared_at__isnull=True).exists()
    assert set(DuplicateMatch.objects.values_list("cleared_at", flat=True)) == {now}


def test_deleted_deal_by_signal(make_deal, now):
    deal = make_deal()
    pk = str(deal.pk)
    with time_machine.travel(now, tick=False):
        deal.delete()
    opp = TrackedOpportunity.objects.for_model(Deal).get(object_pk=pk)
    assert (opp.status, opp.closed_at) == (Status.DELETED, now)


@pytest.mark.parametrize("how", ["signal", "reconcile"])
def test_deleting_a_closed_row_keeps_its_closed_at(make_lead, now, how):
    lead = make_lead()
    sync_objects([resync(lead, status="lost")], now)
    pk = str(lead.pk)
    with time_machine.travel(now + timedelta(days=30), tick=False):
        if how == "signal":
            lead.delete()
        else:
            _queryset_raw_delete(lead)
            run("followup_reconcile", "--no-progress")
    opp = TrackedOpportunity.objects.for_model(Lead).get(object_pk=pk)
    assert (opp.status, opp.closed_at) == (Status.DELETED, now)


@pytest.mark.parametrize("how", ["signal", "reconcile"])
def test_deleting_a_merged_row_keeps_it_merged(make_lead, now, how):
    survivor, duplicate = make_lead(), make_lead()
    merge_opportunities(tracked(duplicate), tracked(survivor), now=now)
    pk = str(duplicate.pk)
    with time_machine.travel(now + timedelta(days=1), tick=False):
        if how == "signal":
            duplicate.delete()
        else:
            _queryset_raw_delete(duplicate)
            assert "0 closed as deleted" in run("followup_reconcile", "--no-progress")
    opp = TrackedOpportunity.objects.for_model(Lead).get(object_pk=pk)
    assert (opp.status, opp.merged_into, opp.closed_at) == (Status.MERGED, tracked(survivor), now)
    # What still addresses the merged record lands on the survivor.
    touch = record_touch(
        opp,
        channel=Channel.EMAIL,
        direction=Direction.INBOUND,
        outcome=Outcome.RECEIVED,
        occurred_at=now,
        now=now,
    ).touch
    assert touch.opportunity_id == tracked(survivor).pk


def test_reconcile_task_refuses_an_untracked_model(db):
    from followup_visibility.registry import NotTracked
    from followup_visibility.tasks import reconcile

    with pytest.raises(NotTracked, match="auth.User is not a tracked model"):
        reconcile("auth.User")


def test_a_record_deleted_in_the_crm_is_closed_with_a_history_row(make_lead, now):
    lead = make_lead()
    opp = tracked(lead)
    with time_machine.travel(now, tick=False):
        lead.delete()
    last = opp.history.order_by("-history_id").first()
    assert (last.status, last.history_type) == (Status.DELETED, "~")
    assert last.history_change_reason == "deleted in the CRM"
