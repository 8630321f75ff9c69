"""record_touch: attachment, validation, idempotency, logging lag, handoffs, chains, signals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.test import override_settings

from example_project.crm.models import Lead
from followup_visibility.choices import AcceptedVia, Channel, Direction, Outcome, Status
from followup_visibility.ingest.merge import merge_opportunities
from followup_visibility.ingest.touches import record_touch
from followup_visibility.models import Handoff, Touch, TrackedOpportunity
from followup_visibility.signals import touch_recorded
from tests.conftest import tracked


def _call(target: Any, now: datetime, **kwargs: Any) -> Any:
    """An outbound connected call an hour ago, unless told otherwise."""
    kwargs.setdefault("channel", Channel.PHONE)
    kwargs.setdefault("direction", Direction.OUTBOUND)
    kwargs.setdefault("outcome", Outcome.CONNECTED)
    kwargs.setdefault("occurred_at", now - timedelta(hours=1))
    return record_touch(target, now=now, **kwargs)


# Attachment


def test_attaches_to_lead_with_integer_pk(make_lead, now):
    lead = make_lead()
    result = _call(lead, now)
    assert result.created is True
    touch = Touch.objects.get()
    assert touch.pk == result.touch.pk
    assert touch.opportunity_id == tracked(lead).pk
    assert tracked(lead).object_pk == str(lead.pk)
    assert tracked(lead).last_touch_at == now - timedelta(hours=1)


def test_attaches_to_deal_with_uuid_pk(make_deal, now):
    deal = make_deal()
    result = _call(deal, now)
    opp = tracked(deal)
    assert opp.object_pk == str(deal.pk)
    assert len(opp.object_pk) == 36
    assert Touch.objects.get().opportunity_id == opp.pk == result.touch.opportunity_id
    assert opp.last_touch_at == now - timedelta(hours=1)


def test_attaches_to_tracked_opportunity(make_lead, now):
    opp = tracked(make_lead())
    result = _call(opp, now)
    assert result.touch.opportunity_id == opp.pk
    assert TrackedOpportunity.objects.get(pk=opp.pk).last_touch_at == now - timedelta(hours=1)


def test_host_object_saved_without_signals_is_tracked_on_first_touch(db, now):
    (lead,) = Lead.objects.bulk_create([Lead(name="Bulk", created_at=now - timedelta(days=1))])
    assert not TrackedOpportunity.objects.for_object(lead).exists()
    result = _call(lead, now)
    opp = tracked(lead)
    assert result.touch.opportunity_id == opp.pk
    assert opp.arrived_at == now - timedelta(days=1)


@pytest.mark.parametrize("written", ["+1 212-555-0142", "(212) 555-0142", "212.555.0142"])
def test_attaches_by_phone_whatever_the_formatting(make_lead, now, written):
    lead = make_lead(phone="+1 (212) 555 0142")
    make_lead(phone="(415) 555-0100")
    result = record_touch(
        channel=Channel.PHONE,
        direction=Direction.INBOUND,
        outcome=Outcome.CONNECTED,
        occurred_at=now - timedelta(minutes=10),
        now=now,
        phone=written,
    )
    assert result.touch.opportunity_id == tracked(lead).pk
    assert result.touch.contact == written


@pytest.mark.parametrize("written", ["ann@example.com", "ANN@EXAMPLE.COM", "  Ann@example.COM "])
def test_attaches_by_email_ignoring_case(make_lead, now, written):
    lead = make_lead(email="Ann@Example.com")
    make_lead(email="bob@example.com")
    result = record_touch(
        channel=Channel.EMAIL,
        direction=Direction.INBOUND,
        outcome=Outcome.RECEIVED,
        occurred_at=now - timedelta(minutes=10),
        now=now,
        email=written,
    )
    assert result.touch.opportunity_id == tracked(lead).pk


@pytest.mark.parametrize(
    "contact",
    [
        {"phone": "(646) 555-0199"},
        {"email": "nobody@example.com"},
        {"phone": "555-0100"},  # not a valid number: never matches
        {"email": "not an email"},
    ],
)
def test_no_matching_contact_raises_and_writes_nothing(make_lead, now, contact):
    make_lead(phone="(212) 555-0142", email="ann@example.com")
    before = Touch.objects.count()
    with pytest.raises(ValidationError) as exc:
        record_touch(
            channel=Channel.PHONE,
            direction=Direction.INBOUND,
            occurred_at=now - timedelta(minutes=5),
            now=now,
            **contact,
        )
    assert set(exc.value.message_dict) == {"contact"}
    assert Touch.objects.count() == before


def test_contact_match_ignores_closed_opportunities(make_lead, now):
    make_lead(phone="(212) 555-0142", status=Lead.Status.LOST)
    with pytest.raises(ValidationError) as exc:
        record_touch(
            channel=Channel.PHONE,
            direction=Direction.INBOUND,
            occurred_at=now - timedelta(minutes=5),
            now=now,
            phone="212-555-0142",
        )
    assert set(exc.value.message_dict) == {"contact"}
    assert Touch.objects.count() == 0


# Bad input


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (
            {"occurred_at": datetime(2026, 3, 10, 14, 0, tzinfo=UTC).replace(tzinfo=None)},
            "occurred_at",
        ),
        (
            {"recorded_at": datetime(2026, 3, 10, 14, 0, tzinfo=UTC).replace(tzinfo=None)},
            "recorded_at",
        ),
        ({"channel": "fax"}, "channel"),
        ({"channel": "Phone"}, "channel"),
        ({"direction": "sideways"}, "direction"),
        ({"outcome": "maybe"}, "outcome"),
        ({"occurred_at": datetime(2026, 3, 10, 15, 6, tzinfo=UTC)}, "occurred_at"),
        ({"source": ""}, "source"),
        ({"source": "s" * 51}, "source"),
        ({"external_id": "x" * 256}, "external_id"),
    ],
)
def test_bad_input_raises_with_field_key_and_writes_nothing(make_lead, now, overrides, field):
    lead = make_lead()
    _call(lead, now, occurred_at=now - timedelta(hours=5))
    before = Touch.objects.count()
    with pytest.raises(ValidationError) as exc:
        _call(lead, now, **overrides)
    assert set(exc.value.message_dict) == {field}
    assert Touch.objects.count() == before
    assert tracked(lead).last_touch_at == now - timedelta(hours=5)


def test_several_bad_fields_are_reported_together(make_lead, now):
    with pytest.raises(ValidationError) as exc:
        _call(make_lead(), now, channel="fax", direction="up", outcome="?")
    assert set(exc.value.message_dict) == {"channel", "direction", "outcome"}
    assert Touch.objects.count() == 0


@pytest.mark.parametrize(
    ("ahead", "accepted"),
    [
        (timedelta(minutes=5), True),
        (timedelta(minutes=5, seconds=1), False),
        (timedelta(hours=1), False),
    ],
)
def test_default_clock_skew_is_five_minutes(make_lead, now, ahead, accepted):
    lead = make_lead()
    if accepted:
        result = _call(lead, now, occurred_at=now + ahead)
        assert result.touch.occurred_at == now + ahead
        assert result.touch.logging_lag == -ahead
    else:
        with pytest.raises(ValidationError) as exc:
            _call(lead, now, occurred_at=now + ahead)
        assert set(exc.value.message_dict) == {"occurred_at"}
    assert Touch.objects.count() == (1 if accepted else 0)


@pytest.mark.parametrize(
    ("skew", "ahead", "accepted"),
    [
        (timedelta(minutes=30), timedelta(minutes=29), True),
        (timedelta(minutes=30), timedelta(minutes=31), False),
        (timedelta(0), timedelta(0), True),
        (timedelta(0), timedelta(seconds=1), False),
    ],
)
def test_clock_skew_setting(make_lead, now, skew, ahead, accepted):
    lead = make_lead()
    with override_settings(FOLLOWUP_VISIBILITY_MAX_CLOCK_SKEW=skew):
        if accepted:
            assert _call(lead, now, occurred_at=now + ahead).created is True
        else:
            with pytest.raises(ValidationError) as exc:
                _call(lead, now, occurred_at=now + ahead)
            assert set(exc.value.message_dict) == {"occurred_at"}
    assert Touch.objects.count() == (1 if accepted else 0)


def test_untracked_model_target_raises_target_error(make_user, now):
    user = make_user()
    with pytest.raises(ValidationError) as exc:
        _call(user, now)
    assert set(exc.value.message_dict) == {"target"}
    assert Touch.objects.count() == 0


def test_no_target_and_no_contact_raises_target_error(make_lead, now):
    make_lead(phone="(212) 555-0142")
    for contact in ({}, {"phone": "", "email": ""}, {"phone": None, "email": None}):
        with pytest.raises(ValidationError) as exc:
            _call(None, now, **contact)
        assert set(exc.value.message_dict) == {"target"}
    assert Touch.objects.count() == 0


def test_naive_now_is_a_now_error(make_lead, now):
    lead = make_lead()
    with pytest.raises(ValidationError) as exc:
        _call(lead, now.replace(tzinfo=None), occurred_at=now - timedelta(hours=1))
    assert set(exc.value.message_dict) == {"now"}
    assert Touch.objects.count() == 0


# Idempotency


def test_same_source_and_external_id_is_stored_once(make_lead, now):
    lead = make_lead()
    first = _call(lead, now, source="telephony", external_id="call-1")
    again = _call(
        lead,
        now + timedelta(minutes=1),
        source="telephony",
        external_id="call-1",
        summary="retried webhook",
        outcome=Outcome.NO_ANSWER,
    )
    assert (first.created, again.created) == (True, False)
    assert again.touch.pk == first.touch.pk
    assert Touch.objects.count() == 1
    stored = Touch.objects.get()
    assert (stored.outcome, stored.summary) == (Outcome.CONNECTED, "")


def test_duplicate_delivery_to_another_target_returns_the_stored_touch(make_lead, now):
    lead, other = make_lead(), make_lead()
    first = _call(lead, now, source="telephony", external_id="call-1")
    again = _call(other, now, source="telephony", external_id="call-1")
    assert again.created is False
    assert again.touch.pk == first.touch.pk
    assert again.touch.opportunity_id == tracked(lead).pk
    assert tracked(other).last_touch_at is None


def test_same_external_id_under_another_source_is_another_touch(make_lead, now):
    lead = make_lead()
    a = _call(lead, now, source="telephony", external_id="42")
    b = _call(lead, now, source="chat", external_id="42")
    assert a.created and b.created
    assert a.touch.pk != b.touch.pk
    assert Touch.objects.count() == 2


def test_empty_external_id_never_dedups(make_lead, now):
    lead = make_lead()
    results = [_call(lead, now, source="manual", external_id="") for _ in range(3)]
    assert [r.created for r in results] == [True, True, True]
    assert len({r.touch.pk for r in results}) == 3
    assert Touch.objects.count() == 3


# Logging lag


def test_logging_lag_is_recorded_minus_occurred(make_lead, now):
    tuesday = datetime(2026, 3, 3, 10, 0, tzinfo=UTC)
    friday = datetime(2026, 3, 6, 10, 0, tzinfo=UTC)
    result = _call(make_lead(), now, occurred_at=tuesday, recorded_at=friday)
    stored = Touch.objects.get(pk=result.touch.pk)
    assert stored.occurred_at == tuesday
    assert stored.recorded_at == friday
    assert stored.logging_lag == timedelta(days=3)


def test_recorded_at_defaults_to_now(make_lead, now):
    result = _call(make_lead(), now, occurred_at=now - timedelta(hours=2, minutes=30))
    stored = Touch.objects.get(pk=result.touch.pk)
    assert stored.recorded_at == now
    assert stored.logging_lag == timedelta(hours=2, minutes=30)


# Handoff acceptance by touch


def test_owner_meaningful_outbound_touch_accepts_the_handoff(make_lead, make_user, now):
    rep = make_user()
    lead = make_lead(owner=rep)
    handoff = Handoff.objects.get(opportunity=tracked(lead))
    assert handoff.is_pending and handoff.to_owner_id == rep.pk
    assert tracked(lead).owner_confirmed_at is None
    result = _call(lead, now, actor=rep)
    handoff.refresh_from_db()
    assert handoff.accepted_at == now
    assert handoff.accepted_via == AcceptedVia.TOUCH
    assert handoff.accepted_touch_id == result.touch.pk
    assert tracked(lead).owner_confirmed_at == now


@pytest.mark.parametrize(
    "touch",
    [
        {"outcome": Outcome.NO_ANSWER},
        {"outcome": Outcome.VOICEMAIL},
        {"channel": Channel.EMAIL, "outcome": Outcome.SENT, "metadata": {"template": True}},
        {"channel": Channel.NOTE, "direction": Direction.INTERNAL, "outcome": ""},
        {"channel": Channel.EMAIL, "direction": Direction.INBOUND, "outcome": Outcome.RECEIVED},
    ],
)
def test_owner_touch_that_is_not_meaningful_outbound_does_not_accept(
    make_lead, make_user, now, touch
):
    rep = make_user()
    lead = make_lead(owner=rep)
    _call(lead, now, actor=rep, **touch)
    assert Handoff.objects.get(opportunity=tracked(lead)).is_pending
    assert tracked(lead).owner_confirmed_at is None


def test_another_users_touch_does_not_accept(make_lead, make_user, now):
    rep, colleague = make_user(), make_user()
    lead = make_lead(owner=rep)
    _call(lead, now, actor=colleague)
    _call(lead, now, actor=None)
    assert Handoff.objects.get(opportunity=tracked(lead)).is_pending
    assert tracked(lead).owner_confirmed_at is None


def test_acceptance_by_touch_can_be_switched_off(make_lead, make_user, now):
    rep = make_user()
    lead = make_lead(owner=rep)
    with override_settings(FOLLOWUP_VISIBILITY_ACCEPT_HANDOFF_ON_TOUCH=False):
        _call(lead, now, actor=rep)
    assert Handoff.objects.get(opportunity=tracked(lead)).is_pending
    assert tracked(lead).owner_confirmed_at is None


def test_touch_accepts_only_the_current_handoff(make_lead, make_user, now):
    first, second = make_user(), make_user()
    lead = make_lead(owner=first)
    lead.owner = second
    lead.save()
    _call(lead, now, actor=first)
    assert tracked(lead).owner_confirmed_at is None
    _call(lead, now, actor=second)
    handoffs = list(Handoff.objects.filter(opportunity=tracked(lead)).order_by("pk"))
    assert [(h.to_owner_id, h.accepted_at) for h in handoffs] == [
        (first.pk, None),
        (second.pk, now),
    ]
    assert handoffs[0].superseded_at is not None
    assert tracked(lead).owner_confirmed_at == now


# Lead-to-deal chain and merges


def test_lead_touches_count_in_the_deal_timeline(make_lead, make_deal, make_user, now):
    rep = make_user()
    lead = make_lead(owner=rep)
    asked = now - timedelta(hours=3)
    answered = now - timedelta(hours=2)
    _call(lead, now, channel=Channel.WEB_FORM, direction=Direction.INBOUND, occurred_at=asked)
    reply = _call(lead, now, actor=rep, occurred_at=answered)
    deal = make_deal(lead=lead, owner=rep)
    assert tracked(deal).predecessor_id == tracked(lead).pk
    asks_again = now - timedelta(minutes=30)
    _call(
        deal,
        now,
        channel=Channel.EMAIL,
        direction=Direction.INBOUND,
        outcome=Outcome.RECEIVED,
        occurred_at=asks_again,
    )
    opp = tracked(deal)
    assert opp.first_outbound_at == answered
    assert opp.first_response_at == answered
    assert opp.first_response_touch_id == reply.touch.pk
    assert opp.awaiting_reply_since == asks_again
    assert opp.last_touch_at == asks_again


def test_touch_on_a_converted_lead_lands_on_its_deal(make_lead, make_deal, now):
    lead = make_lead()
    deal = make_deal(lead=lead)
    lead.status = Lead.Status.CONVERTED
    lead.save()
    assert tracked(lead).status == Status.CONVERTED
    result = _call(lead, now)
    assert result.touch.opportunity_id == tracked(deal).pk
    assert tracked(deal).last_touch_at == now - timedelta(hours=1)


def test_touch_on_a_converted_lead_by_contact_lands_on_its_deal(make_lead, make_deal, now):
    lead = make_lead(phone="(212) 555-0142")
    deal = make_deal(lead=lead)
    lead.status = Lead.Status.CONVERTED
    lead.save()
    result = _call(None, now, phone="+1 212 555 0142", direction=Direction.INBOUND)
    assert result.touch.opportunity_id == tracked(deal).pk


def test_touch_on_a_merged_record_lands_on_the_survivor(make_lead, now):
    duplicate, survivor = make_lead(), make_lead()
    early = _call(duplicate, now, occurred_at=now - timedelta(hours=4))
    merge_opportunities(tracked(duplicate), tracked(survivor), now=now)
    assert Touch.objects.get(pk=early.touch.pk).opportunity_id == tracked(survivor).pk
    late = _call(duplicate, now, occurred_at=now - timedelta(minutes=5))
    assert late.touch.opportunity_id == tracked(survivor).pk
    assert tracked(survivor).last_touch_at == now - timedelta(minutes=5)
    assert tracked(duplicate).status == Status.MERGED
    assert Touch.objects.filter(opportunity=tracked(duplicate)).count() == 0


def test_touch_matched_through_a_merged_records_contact_lands_on_the_survivor(make_lead, now):
    duplicate = make_lead(email="ann@example.com")
    survivor = make_lead()
    merge_opportunities(tracked(duplicate), tracked(survivor), now=now)
    result = _call(None, now, email="Ann@Example.COM", direction=Direction.INBOUND)
    assert result.touch.opportunity_id == tracked(survivor).pk
    assert tracked(survivor).awaiting_reply_since == now - timedelta(hours=1)


def test_touch_on_a_lead_refreshes_its_open_deal(make_lead, make_deal, now):
    lead = make_lead()
    deal = make_deal(lead=lead)
    asked = now - timedelta(hours=2)
    _call(lead, now, channel=Channel.EMAIL, direction=Direction.INBOUND, occurred_at=asked)
    assert tracked(deal).awaiting_reply_since == asked
    assert tracked(lead).awaiting_reply_since == asked
    answered = now - timedelta(hours=1)
    reply = _call(deal, now, occurred_at=answered)
    for opp in (tracked(lead), tracked(deal)):
        assert opp.awaiting_reply_since is None
        assert opp.first_response_touch_id == reply.touch.pk
        assert opp.last_touch_at == answered


def test_contact_match_prefers_the_most_recently_active_opportunity(make_lead, now):
    active = make_lead(phone="(212) 555-0142", created_at=now - timedelta(days=3))
    make_lead(phone="(212) 555-0142", created_at=now - timedelta(days=1))
    _call(active, now, occurred_at=now - timedelta(hours=2))
    result = _call(None, now, phone="212 555 0142", direction=Direction.INBOUND)
    assert result.touch.opportunity_id == tracked(active).pk


# AlertSignal


@pytest.fixture
def received() -> Any:
    calls: list[tuple[Any, int, int]] = []

    def receiver(sender: Any, touch: Touch, opportunity: TrackedOpportunity, **kw: Any) -> None:
        calls.append((sender, touch.pk, opportunity.pk))

    touch_recorded.connect(receiver, weak=False)
    yield calls
    touch_recorded.disconnect(receiver)


def test_touch_recorded_sent_after_commit_once_per_new_touch(
    make_lead, now, received, django_capture_on_commit_callbacks
):
    lead = make_lead()
    opp_pk = tracked(lead).pk
    with django_capture_on_commit_callbacks(execute=True):
        first = _call(lead, now, source="telephony", external_id="call-1")
        _call(lead, now, source="telephony", external_id="call-1")
        second = _call(lead, now, source="telephony", external_id="call-2")
        assert received == []  # nothing before the commit
    assert received == [(Touch, first.touch.pk, opp_pk), (Touch, second.touch.pk, opp_pk)]


def test_duplicate_delivery_sends_no_signal(
    make_lead, now, received, django_capture_on_commit_callbacks
):
    lead = make_lead()
    _call(lead, now, source="telephony", external_id="call-1")
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        again = _call(lead, now, source="telephony", external_id="call-1")
    assert again.created is False
    assert callbacks == []
    assert received == []


def test_rejected_touch_sends_no_signal(
    make_lead, now, received, django_capture_on_commit_callbacks
):
    lead = make_lead()
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(ValidationError):
        _call(lead, now, channel="fax")
    assert received == []


def test_recorded_before_it_happened_is_rejected(make_lead, now):
    lead = make_lead()
    with pytest.raises(ValidationError) as excinfo:
        _call(lead, now, occurred_at=now - timedelta(hours=1), recorded_at=now - timedelta(hours=2))
    assert "recorded_at" in excinfo.value.message_dict
    assert not Touch.objects.exists()


def test_recorded_in_the_future_is_rejected(make_lead, now):
    lead = make_lead()
    with pytest.raises(ValidationError) as excinfo:
        _call(lead, now, recorded_at=now + timedelta(hours=1))
    assert "recorded_at" in excinfo.value.message_dict
    assert not Touch.objects.exists()
