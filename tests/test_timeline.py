"""The state a touch timeline folds into: timeline.fold on plain rows, then end to end."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from typing import Any

import pytest

from followup_visibility.choices import Channel, Direction, Outcome
from followup_visibility.engine.timeline import STATE_FIELDS, TimelineState, fold
from followup_visibility.ingest.touches import record_touch
from followup_visibility.models import Touch
from tests.conftest import NOW, tracked

IN, OUT, INTERNAL = Direction.INBOUND, Direction.OUTBOUND, Direction.INTERNAL
_ids = itertools.count(1)


def at(hours: float) -> datetime:
    """``hours`` after a fixed Monday 09:00 UTC."""
    return NOW - timedelta(days=1, hours=6) + timedelta(hours=hours)


def row(
    hours: float,
    direction: str,
    channel: str = Channel.EMAIL,
    outcome: str = "",
    meaningful: bool = True,
    id: int | None = None,
) -> dict[str, Any]:
    return {
        "id": next(_ids) if id is None else id,
        "channel": channel,
        "direction": direction,
        "outcome": outcome,
        "occurred_at": at(hours),
        "is_meaningful": meaningful,
    }


def call(hours: float, outcome: str = Outcome.CONNECTED, direction: str = OUT) -> dict[str, Any]:
    return row(hours, direction, Channel.PHONE, outcome, meaningful=outcome == Outcome.CONNECTED)


# fold


def test_empty_timeline():
    assert fold([]) == TimelineState()


def test_internal_touches_change_nothing():
    note = row(1, INTERNAL, Channel.NOTE, meaningful=False)
    internal_call = row(2, INTERNAL, Channel.PHONE, Outcome.NO_ANSWER, meaningful=True)
    assert fold([note, internal_call]) == TimelineState()
    inbound = row(0, IN)
    assert fold([inbound, note, internal_call]) == fold([inbound])


def test_unanswered_call_is_a_first_outbound_attempt_but_not_a_response():
    state = fold([row(0, IN, Channel.WEB_FORM), call(1, Outcome.NO_ANSWER)])
    assert state.first_outbound_at == at(1)
    assert state.first_response_at is None
    assert state.first_response_touch_id is None


def test_first_response_is_the_first_meaningful_outbound():
    touches = [
        row(0, IN),
        call(1, Outcome.NO_ANSWER),
        row(2, OUT, outcome=Outcome.SENT, meaningful=False),  # an auto-acknowledgement
        row(3, OUT, Channel.PHONE, Outcome.CONNECTED, id=903),
        row(4, OUT, outcome=Outcome.SENT),
    ]
    state = fold(touches)
    assert state.first_outbound_at == at(1)
    assert (state.first_response_at, state.first_response_touch_id) == (at(3), 903)


def test_meaningful_inbound_waits_until_a_meaningful_outbound():
    assert fold([row(0, IN)]).awaiting_reply_since == at(0)
    assert fold([row(0, IN), row(1, IN)]).awaiting_reply_since == at(0)
    assert fold([row(0, IN), row(1, OUT)]).awaiting_reply_since is None
    assert fold([row(0, IN), row(1, OUT), row(2, IN)]).awaiting_reply_since == at(2)


@pytest.mark.parametrize(
    "outbound",
    [
        row(1, OUT, outcome=Outcome.SENT, meaningful=False),  # auto-reply
        row(1, OUT, outcome=Outcome.BOUNCED, meaningful=False),
        call(1, Outcome.NO_ANSWER),
        call(1, Outcome.VOICEMAIL),
    ],
)
def test_non_meaningful_outbound_does_not_end_the_wait(outbound):
    assert fold([row(0, IN), outbound]).awaiting_reply_since == at(0)


def test_non_meaningful_inbound_does_not_start_a_wait():
    auto_reply = row(0, IN, meaningful=False)
    state = fold([auto_reply])
    assert state.awaiting_reply_since is None
    assert state.last_touch_at == at(0)
    assert state.last_meaningful_touch_at is None


@pytest.mark.parametrize(
    ("touches", "waiting"),
    [
        # The reply was logged later (higher id) but happened before the customer wrote again.
        ([row(5, IN, id=1), row(3, OUT, id=2)], at(5)),
        ([row(5, OUT, id=1), row(3, IN, id=2)], None),
        # Same instant: the id breaks the tie.
        ([row(3, IN, id=1), row(3, OUT, id=2)], None),
        ([row(3, OUT, id=1), row(3, IN, id=2)], at(3)),
    ],
)
def test_order_is_the_customers_clock_not_the_logging_order(touches, waiting):
    assert fold(touches).awaiting_reply_since == waiting
    assert fold(reversed(touches)).awaiting_reply_since == waiting


def test_unanswered_call_starts_the_retry_clock():
    assert fold([call(1, Outcome.NO_ANSWER)]).last_unanswered_call_at == at(1)
    assert fold([call(1, Outcome.BUSY), call(2, Outcome.VOICEMAIL)]).last_unanswered_call_at == (
        at(2)
    )


@pytest.mark.parametrize(
    ("later", "cleared"),
    [
        (call(2, Outcome.CONNECTED), True),
        (row(2, OUT, Channel.PHONE, "", meaningful=False), True),  # another attempt, any outcome
        (row(2, OUT, outcome=Outcome.SENT), True),  # a meaningful email
        (row(2, IN, Channel.PHONE, Outcome.CONNECTED), True),  # the customer called back
        (row(2, IN, meaningful=False), False),  # an auto-reply
        (row(2, OUT, outcome=Outcome.SENT, meaningful=False), False),  # a template mail
        (row(2, INTERNAL, Channel.NOTE, meaningful=False), False),
        (call(2, Outcome.NO_ANSWER, direction=IN), False),  # a missed inbound call
    ],
)
def test_retry_clock_is_settled_by_another_attempt_or_a_conversation(later, cleared):
    state = fold([call(1, Outcome.NO_ANSWER), later])
    assert state.last_unanswered_call_at == (None if cleared else at(1))


def test_inbound_unanswered_call_is_not_our_retry():
    assert fold([call(1, Outcome.NO_ANSWER, direction=IN)]).last_unanswered_call_at is None


def test_unanswered_non_phone_attempt_is_not_a_call_retry():
    no_show = row(1, OUT, Channel.MEETING, Outcome.NO_SHOW, meaningful=False)
    assert fold([no_show]).last_unanswered_call_at is None


def test_last_touch_and_last_meaningful_touch():
    touches = [
        row(0, IN, id=1),
        row(1, OUT, Channel.PHONE, Outcome.CONNECTED, id=2),
        call(2, Outcome.NO_ANSWER),
        row(3, IN, meaningful=False, id=4),  # auto-reply
        row(4, INTERNAL, Channel.NOTE, meaningful=False, id=5),
    ]
    state = fold(touches)
    assert state.last_touch_at == at(3)
    assert (state.last_meaningful_touch_at, state.last_meaningful_touch_id) == (at(1), 2)


def test_full_fold():
    touches = [
        row(0, IN, Channel.WEB_FORM, Outcome.SUBMITTED, id=1),
        call(1, Outcome.NO_ANSWER) | {"id": 2},
        call(2, Outcome.CONNECTED) | {"id": 3},
        row(3, IN, id=4),
        call(4, Outcome.VOICEMAIL) | {"id": 5},
    ]
    assert fold(touches) == TimelineState(
        first_outbound_at=at(1),
        first_response_at=at(2),
        first_response_touch_id=3,
        last_touch_at=at(4),
        last_meaningful_touch_at=at(3),
        last_meaningful_touch_id=4,
        awaiting_reply_since=at(3),
        last_unanswered_call_at=at(4),
    )


# End to end through record_touch


def _touch(target: Any, hours: float, **kwargs: Any) -> Touch:
    kwargs.setdefault("channel", Channel.EMAIL)
    kwargs.setdefault("outcome", "")
    result = record_touch(target, occurred_at=at(hours), now=NOW, **kwargs)
    return result.touch


def _state(obj: Any) -> TimelineState:
    opp = tracked(obj)
    return TimelineState(**{name: getattr(opp, name) for name in STATE_FIELDS})


def test_stored_state_through_record_touch(make_lead):
    lead = make_lead()
    form = _touch(lead, 0, channel=Channel.WEB_FORM, direction=IN, outcome=Outcome.SUBMITTED)
    assert _state(lead) == TimelineState(
        last_touch_at=at(0),
        last_meaningful_touch_at=at(0),
        last_meaningful_touch_id=form.pk,
        awaiting_reply_since=at(0),
    )
    _touch(lead, 1, channel=Channel.PHONE, direction=OUT, outcome=Outcome.NO_ANSWER)
    state = _state(lead)
    assert (state.first_outbound_at, state.first_response_at) == (at(1), None)
    assert (state.awaiting_reply_since, state.last_unanswered_call_at) == (at(0), at(1))
    assert state.last_touch_at == at(1)
    reply = _touch(lead, 2, channel=Channel.PHONE, direction=OUT, outcome=Outcome.CONNECTED)
    assert _state(lead) == TimelineState(
        first_outbound_at=at(1),
        first_response_at=at(2),
        first_response_touch_id=reply.pk,
        last_touch_at=at(2),
        last_meaningful_touch_at=at(2),
        last_meaningful_touch_id=reply.pk,
    )


def test_auto_reply_outbound_does_not_clear_the_wait_end_to_end(make_lead):
    lead = make_lead()
    _touch(lead, 0, direction=IN, outcome=Outcome.RECEIVED)
    _touch(
        lead,
        0.01,
        direction=OUT,
        outcome=Outcome.SENT,
        metadata={"headers": {"Auto-Submitted": "auto-replied"}},
    )
    state = _state(lead)
    assert state.awaiting_reply_since == at(0)
    assert state.first_response_at is None
    _touch(lead, 1, direction=OUT, outcome=Outcome.SENT)
    assert _state(lead).awaiting_reply_since is None


@pytest.mark.parametrize(
    ("reply_hours", "waiting_hours"),
    [(3, 5), (6, None)],
    ids=["reply-before-the-inbound", "reply-after-the-inbound"],
)
def test_late_logged_outbound_is_placed_by_occurred_at(make_lead, reply_hours, waiting_hours):
    lead = make_lead()
    _touch(lead, 0, direction=IN, outcome=Outcome.RECEIVED)
    _touch(lead, 5, direction=IN, outcome=Outcome.RECEIVED)
    # Logged last, at NOW, whatever the hour it happened.
    _touch(lead, reply_hours, channel=Channel.PHONE, direction=OUT, outcome=Outcome.CONNECTED)
    state = _state(lead)
    assert state.awaiting_reply_since == (None if waiting_hours is None else at(waiting_hours))
    assert state.first_response_at == at(reply_hours)
    assert state.last_touch_at == at(max(5, reply_hours))


def test_late_logged_touch_does_not_move_last_touch_backwards(make_lead):
    lead = make_lead()
    _touch(lead, 5, direction=IN, outcome=Outcome.RECEIVED)
    _touch(lead, 1, channel=Channel.PHONE, direction=OUT, outcome=Outcome.NO_ANSWER)
    state = _state(lead)
    assert state.last_touch_at == at(5)
    assert state.first_outbound_at == at(1)
    # The inbound at 5 is a meaningful touch after the attempt: the retry is settled.
    assert state.last_unanswered_call_at is None


def test_unanswered_call_cleared_by_a_later_call_end_to_end(make_lead):
    lead = make_lead()
    _touch(lead, 1, channel=Channel.PHONE, direction=OUT, outcome=Outcome.BUSY)
    assert _state(lead).last_unanswered_call_at == at(1)
    _touch(lead, 2, channel=Channel.PHONE, direction=OUT, outcome=Outcome.VOICEMAIL)
    assert _state(lead).last_unanswered_call_at == at(2)
    _touch(lead, 3, channel=Channel.PHONE, direction=OUT, outcome=Outcome.CONNECTED)
    assert _state(lead).last_unanswered_call_at is None


def test_internal_note_changes_no_stored_state(make_lead):
    lead = make_lead()
    _touch(lead, 0, direction=IN, outcome=Outcome.RECEIVED)
    before = _state(lead)
    _touch(lead, 1, channel=Channel.NOTE, direction=INTERNAL)
    _touch(lead, 2, channel=Channel.PHONE, direction=INTERNAL, outcome=Outcome.CONNECTED)
    assert _state(lead) == before
    assert Touch.objects.filter(opportunity=tracked(lead)).count() == 3


def test_stored_state_equals_a_fresh_fold(make_lead):
    lead = make_lead()
    for hours, direction, outcome in [
        (4, IN, Outcome.RECEIVED),
        (1, OUT, Outcome.NO_ANSWER),
        (0, IN, Outcome.SUBMITTED),
        (2, OUT, Outcome.CONNECTED),
        (6, OUT, Outcome.VOICEMAIL),
    ]:
        _touch(lead, hours, channel=Channel.PHONE, direction=direction, outcome=outcome)
    rows = Touch.objects.filter(opportunity=tracked(lead)).values(
        "id", "channel", "direction", "outcome", "occurred_at", "is_meaningful"
    )
    assert _state(lead) == fold(rows)
    assert _state(lead).awaiting_reply_since == at(4)
    assert _state(lead).last_unanswered_call_at == at(6)


@pytest.mark.parametrize(
    ("reason", "attempt"),
    [
        ("auto_reply", False),
        ("untargeted_template", False),
        ("no_conversation", True),
        ("not_delivered", True),
        ("customer_facing", True),
    ],
)
def test_automatic_outbound_is_no_contact_attempt(reason, attempt):
    at = NOW - timedelta(days=1)
    row = {
        "id": 1,
        "channel": "email",
        "direction": "outbound",
        "outcome": "sent",
        "occurred_at": at,
        "is_meaningful": reason == "customer_facing",
        "meaningful_reason": reason,
    }
    assert (fold([row]).first_outbound_at == at) is attempt
