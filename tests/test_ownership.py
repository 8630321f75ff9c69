"""Ownership: handoffs opened by owner changes, and their acceptance."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from example_project.crm.models import Lead
from followup_visibility.choices import AcceptedVia
from followup_visibility.ingest.crm import sync_objects
from followup_visibility.ingest.handoffs import (
    accept_handoff,
    pending_handoff,
    record_owner_changes,
)
from followup_visibility.models import Handoff, TrackedOpportunity
from followup_visibility.signals import handoff_accepted
from tests.conftest import tracked


def assign(lead, owner, now):
    """The CRM reassigns the lead; the mirror follows at ``now``."""
    Lead.objects.filter(pk=lead.pk).update(owner=owner)
    sync_objects([Lead.objects.get(pk=lead.pk)], now)
    return tracked(lead)


def handoffs(opp):
    return list(
        opp.handoffs.order_by("id").values_list(
            "from_owner_id", "to_owner_id", "handed_at", "accepted_at", "superseded_at"
        )
    )


@pytest.fixture
def lead(make_lead):
    return make_lead(name="Ann")


def test_new_owner_opens_pending_handoff(lead, make_user, now):
    rep = make_user()
    opp = assign(lead, rep, now)
    assert opp.owner == rep
    assert opp.owner_confirmed_at is None
    assert not opp.owner_confirmed
    assert handoffs(opp) == [(None, rep.pk, now, None, None)]
    handoff = pending_handoff(opp)
    assert handoff is not None and handoff.is_pending
    assert handoff.accepted_via == ""


def test_owner_on_creation_opens_pending_handoff(make_lead, make_user):
    rep = make_user()
    opp = tracked(make_lead(owner=rep))
    handoff = opp.handoffs.get()
    assert (handoff.from_owner_id, handoff.to_owner_id, handoff.is_pending) == (None, rep.pk, True)
    assert opp.owner_confirmed_at is None


def test_unowned_lead_has_no_handoff(lead):
    opp = tracked(lead)
    assert opp.owner is None
    assert not opp.handoffs.exists()
    assert pending_handoff(opp) is None


def test_reassign_supersedes_pending_handoff(lead, make_user, now):
    rep, other = make_user(), make_user()
    later = now + timedelta(hours=1)
    assign(lead, rep, now)
    opp = assign(lead, other, later)
    assert opp.owner == other
    assert handoffs(opp) == [
        (None, rep.pk, now, None, later),
        (rep.pk, other.pk, later, None, None),
    ]
    assert (
        Handoff.objects.filter(
            opportunity=opp, accepted_at__isnull=True, superseded_at__isnull=True
        ).count()
        == 1
    )
    assert pending_handoff(opp).to_owner == other


def test_reassign_after_acceptance_resets_confirmation(lead, make_user, now):
    rep, other = make_user(), make_user()
    later = now + timedelta(hours=1)
    opp = assign(lead, rep, now)
    accept_handoff(opp, rep, now)
    assert tracked(lead).owner_confirmed_at == now
    opp = assign(lead, other, later)
    assert opp.owner_confirmed_at is None
    # The accepted handoff is history, not superseded; a new one waits.
    assert handoffs(opp) == [
        (None, rep.pk, now, now, None),
        (rep.pk, other.pk, later, None, None),
    ]


def test_second_pending_handoff_violates_constraint(lead, make_user, now):
    rep, other = make_user(), make_user()
    opp = assign(lead, rep, now)
    with pytest.raises(IntegrityError), transaction.atomic():
        Handoff.objects.create(opportunity=opp, from_owner=rep, to_owner=other, handed_at=now)
    assert opp.handoffs.count() == 1
    # Accepted or superseded handoffs do not count against the constraint.
    Handoff.objects.create(opportunity=opp, to_owner=other, handed_at=now, accepted_at=now)
    Handoff.objects.create(opportunity=opp, to_owner=other, handed_at=now, superseded_at=now)
    assert opp.handoffs.count() == 3


def test_accept_handoff_by_recipient(lead, make_user, now, django_capture_on_commit_callbacks):
    rep = make_user()
    opp = assign(lead, rep, now)
    later = now + timedelta(minutes=30)
    seen = []

    def listener(sender, handoff, **kwargs):
        seen.append(handoff.pk)

    handoff_accepted.connect(listener)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            handoff = accept_handoff(opp, rep, later)
    finally:
        handoff_accepted.disconnect(listener)
    assert seen == [handoff.pk]
    handoff.refresh_from_db()
    assert (handoff.accepted_at, handoff.accepted_via, handoff.accepted_touch) == (
        later,
        AcceptedVia.EXPLICIT,
        None,
    )
    assert opp.owner_confirmed_at == later
    fresh = tracked(lead)
    assert fresh.owner_confirmed_at == later
    assert fresh.owner_confirmed
    assert pending_handoff(fresh) is None


def test_accept_handoff_by_user_id(lead, make_user, now):
    rep = make_user()
    opp = assign(lead, rep, now)
    handoff = accept_handoff(opp, rep.pk, now)
    assert handoff.accepted_at == now
    assert tracked(lead).owner_confirmed_at == now


def test_accept_handoff_by_someone_else_is_refused(lead, make_user, now):
    rep, intruder = make_user(), make_user()
    opp = assign(lead, rep, now)
    with pytest.raises(ValidationError) as excinfo:
        accept_handoff(opp, intruder, now)
    assert excinfo.value.code == "not_recipient"
    assert handoffs(opp) == [(None, rep.pk, now, None, None)]
    assert tracked(lead).owner_confirmed_at is None


@pytest.mark.parametrize("situation", ["unowned", "already_accepted", "superseded_only"])
def test_accept_without_pending_handoff_is_refused(lead, make_user, now, situation):
    rep = make_user()
    opp = tracked(lead)
    if situation == "already_accepted":
        opp = assign(lead, rep, now)
        accept_handoff(opp, rep, now)
    elif situation == "superseded_only":
        assign(lead, rep, now)
        opp = assign(lead, None, now + timedelta(minutes=1))
    before = (handoffs(opp), tracked(lead).owner_confirmed_at)
    with pytest.raises(ValidationError) as excinfo:
        accept_handoff(opp, rep, now + timedelta(hours=1))
    assert excinfo.value.code == "no_handoff"
    assert (handoffs(opp), tracked(lead).owner_confirmed_at) == before


def test_unassigning_supersedes_and_opens_none(lead, make_user, now):
    rep = make_user()
    later = now + timedelta(hours=2)
    assign(lead, rep, now)
    opp = assign(lead, None, later)
    assert opp.owner is None
    assert opp.owner_confirmed_at is None
    assert handoffs(opp) == [(None, rep.pk, now, None, later)]
    assert pending_handoff(opp) is None


def test_record_owner_changes_confirmed(lead, make_user, now):
    rep = make_user()
    opp = tracked(lead)
    [handoff] = record_owner_changes([(opp, None, rep.pk)], now, confirmed=True, by=rep)
    assert (handoff.accepted_at, handoff.accepted_via, handoff.created_by) == (
        now,
        AcceptedVia.BACKFILL,
        rep,
    )
    assert record_owner_changes([], now) == []


def test_owner_querysets(make_lead, make_user, now):
    rep = make_user()
    unowned = tracked(make_lead())
    pending = tracked(make_lead(owner=rep))
    confirmed = tracked(make_lead(owner=rep))
    accept_handoff(confirmed, rep, now)
    assert list(TrackedOpportunity.objects.unowned()) == [unowned]
    assert list(TrackedOpportunity.objects.owner_unconfirmed()) == [pending]
    assert set(TrackedOpportunity.objects.exclude(pk=unowned.pk).exclude(pk=pending.pk)) == {
        confirmed
    }
    # They compose with the other queryset methods.
    assert list(TrackedOpportunity.objects.open().owner_unconfirmed()) == [pending]
    Lead.objects.filter(pk=pending.host_object.pk).update(status="lost")
    sync_objects([Lead.objects.get(pk=pending.host_object.pk)], now)
    assert list(TrackedOpportunity.objects.open().owner_unconfirmed()) == []
    assert list(TrackedOpportunity.objects.owner_unconfirmed()) == [pending]


def test_handoff_history_is_dated_by_now(lead, make_user, now):
    """Opening, superseding and accepting each leave a history row, at ``now``."""
    rep, other = make_user(), make_user()
    t1, t2, t3 = now, now + timedelta(hours=1), now + timedelta(hours=2)
    first = assign(lead, rep, t1).handoffs.get()
    second = assign(lead, other, t2).handoffs.get(to_owner=other)
    accept_handoff(tracked(lead), other, t3)

    def rows(handoff):
        return list(
            handoff.history.order_by("history_id").values_list(
                "history_type", "history_date", "superseded_at", "accepted_at", "history_user"
            )
        )

    assert rows(first) == [("+", t1, None, None, None), ("~", t2, t2, None, None)]
    assert rows(second) == [("+", t2, None, None, None), ("~", t3, None, t3, other.pk)]


def test_record_owner_changes_history_user(lead, make_user, now):
    rep, manager = make_user(), make_user()
    opp = tracked(lead)
    record_owner_changes([(opp, None, rep.pk)], now, by=manager)
    record_owner_changes([(opp, rep.pk, None)], now + timedelta(minutes=1), by=manager)
    handoff = opp.handoffs.get()
    assert list(handoff.history.order_by("history_id").values_list("history_user", flat=True)) == [
        manager.pk,
        manager.pk,
    ]
    assert handoff.superseded_at == now + timedelta(minutes=1)
