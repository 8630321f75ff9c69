from datetime import timedelta

from followup_visibility.choices import Channel, Direction, Outcome
from followup_visibility.touches import record_touch
from tests.conftest import tracked


def test_lead_touch_first_response(make_lead, make_user, now):
    rep = make_user()
    lead = make_lead(owner=rep, phone="(212) 555-0142", email="Ann@Example.com")
    opp = tracked(lead)
    assert opp.owner_id == rep.pk
    inbound = record_touch(
        lead,
        channel=Channel.WEB_FORM,
        direction=Direction.INBOUND,
        outcome=Outcome.SUBMITTED,
        occurred_at=now - timedelta(hours=2),
        now=now,
    )
    assert inbound.created
    out = record_touch(
        lead,
        channel=Channel.PHONE,
        direction=Direction.OUTBOUND,
        outcome=Outcome.CONNECTED,
        occurred_at=now - timedelta(hours=1),
        now=now,
        actor=rep,
    )
    opp = tracked(lead)
    assert opp.first_response_at == now - timedelta(hours=1)
    assert opp.first_response_touch_id == out.touch.pk
    assert opp.awaiting_reply_since is None
    assert opp.owner_confirmed_at == now
