"""Which touches are meaningful, and why: each rule directly and through record_touch."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import override_settings

from followup_visibility.choices import Channel, Direction, Outcome
from followup_visibility.engine.touch_rules import TouchDraft, Verdict, classify
from followup_visibility.ingest.touches import record_touch
from followup_visibility.models import Touch
from tests.conftest import tracked

EMAIL_IN = {"channel": Channel.EMAIL, "direction": Direction.INBOUND, "outcome": Outcome.RECEIVED}
EMAIL_OUT = {"channel": Channel.EMAIL, "direction": Direction.OUTBOUND, "outcome": Outcome.SENT}
CALL_OUT = {"channel": Channel.PHONE, "direction": Direction.OUTBOUND, "outcome": Outcome.CONNECTED}


def _with(base: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    return {**base, "metadata": metadata}


# (touch, meaningful, reason): one row per behaviour each default rule promises.
CASES = [
    pytest.param(
        {"channel": Channel.NOTE, "direction": Direction.INTERNAL, "outcome": ""},
        False,
        "internal_note",
        id="note",
    ),
    pytest.param(
        {**CALL_OUT, "direction": Direction.INTERNAL}, False, "internal_note", id="internal-call"
    ),
    pytest.param(
        {**EMAIL_OUT, "channel": Channel.NOTE}, False, "internal_note", id="note-channel-outbound"
    ),
    pytest.param(
        {"channel": Channel.SYSTEM, "direction": Direction.OUTBOUND, "outcome": ""},
        False,
        "stage_change",
        id="system-channel",
    ),
    pytest.param(
        _with(EMAIL_OUT, event="stage_change"), False, "stage_change", id="stage-change-event"
    ),
    pytest.param(
        _with(EMAIL_OUT, event="proposal_sent"), True, "customer_facing", id="other-event"
    ),
    pytest.param(
        _with(EMAIL_IN, headers={"Auto-Submitted": "auto-replied"}),
        False,
        "auto_reply",
        id="auto-submitted-auto-replied",
    ),
    pytest.param(
        _with(EMAIL_IN, headers={"auto-submitted": "Auto-Generated"}),
        False,
        "auto_reply",
        id="auto-submitted-auto-generated",
    ),
    pytest.param(
        _with(EMAIL_IN, headers={"Auto-Submitted": "no"}),
        True,
        "customer_facing",
        id="auto-submitted-no",
    ),
    pytest.param(
        _with(EMAIL_IN, headers={"AUTO-SUBMITTED": " No "}),
        True,
        "customer_facing",
        id="auto-submitted-no-any-case",
    ),
    pytest.param(
        _with(EMAIL_IN, headers={"X-Autoreply": "yes"}), False, "auto_reply", id="x-autoreply"
    ),
    pytest.param(
        _with(EMAIL_IN, headers={"X-Autorespond": "Out of office"}),
        False,
        "auto_reply",
        id="x-autorespond",
    ),
    pytest.param(
        _with(EMAIL_IN, headers={"Precedence": "bulk"}), False, "auto_reply", id="precedence-bulk"
    ),
    pytest.param(
        _with(EMAIL_IN, headers={"Precedence": "List"}), False, "auto_reply", id="precedence-list"
    ),
    pytest.param(
        _with(EMAIL_IN, headers={"Precedence": "first-class", "Subject": "Re: pricing"}),
        True,
        "customer_facing",
        id="precedence-first-class",
    ),
    pytest.param(_with(EMAIL_IN, auto_reply=True), False, "auto_reply", id="metadata-auto-reply"),
    pytest.param(
        _with(EMAIL_IN, auto_reply=False), True, "customer_facing", id="metadata-not-auto-reply"
    ),
    pytest.param(
        _with(EMAIL_IN, headers="Auto-Submitted: auto-replied"),
        True,
        "customer_facing",
        id="headers-not-a-mapping-ignored",
    ),
    pytest.param(
        _with(EMAIL_OUT, headers={"Auto-Submitted": "auto-replied"}),
        False,
        "auto_reply",
        id="outbound-auto-acknowledgement",
    ),
    pytest.param(
        _with(EMAIL_OUT, template=True), False, "untargeted_template", id="untargeted-template"
    ),
    pytest.param(
        _with(EMAIL_OUT, template=True, personalized=False),
        False,
        "untargeted_template",
        id="template-personalized-false",
    ),
    pytest.param(
        _with(EMAIL_OUT, template=True, personalized=True),
        True,
        "customer_facing",
        id="personalized-template",
    ),
    pytest.param({**EMAIL_OUT, "outcome": Outcome.BOUNCED}, False, "not_delivered", id="bounced"),
    pytest.param(
        {**CALL_OUT, "outcome": Outcome.NO_ANSWER}, False, "no_conversation", id="no-answer"
    ),
    pytest.param(
        {**CALL_OUT, "outcome": Outcome.VOICEMAIL}, False, "no_conversation", id="voicemail"
    ),
    pytest.param({**CALL_OUT, "outcome": Outcome.BUSY}, False, "no_conversation", id="busy"),
    pytest.param(
        {"channel": Channel.MEETING, "direction": Direction.OUTBOUND, "outcome": Outcome.NO_SHOW},
        False,
        "no_conversation",
        id="no-show",
    ),
    pytest.param(CALL_OUT, True, "customer_facing", id="connected-call"),
    pytest.param(EMAIL_IN, True, "customer_facing", id="inbound-email"),
    pytest.param(
        {"channel": Channel.MEETING, "direction": Direction.OUTBOUND, "outcome": Outcome.HELD},
        True,
        "customer_facing",
        id="meeting-held",
    ),
    pytest.param(
        {"channel": Channel.WEB_FORM, "direction": Direction.INBOUND, "outcome": ""},
        True,
        "customer_facing",
        id="web-form-unspecified-outcome",
    ),
    # The first rule with an opinion wins.
    pytest.param(
        _with({**EMAIL_OUT, "direction": Direction.INTERNAL}, headers={"Precedence": "bulk"}),
        False,
        "internal_note",
        id="internal-before-auto-reply",
    ),
    pytest.param(
        _with({**EMAIL_OUT, "outcome": Outcome.BOUNCED}, template=True),
        False,
        "untargeted_template",
        id="template-before-bounce",
    ),
]


def _draft(touch: dict[str, Any]) -> TouchDraft:
    return TouchDraft(
        channel=touch["channel"],
        direction=touch["direction"],
        outcome=touch["outcome"],
        metadata=touch.get("metadata", {}),
    )


@pytest.mark.parametrize(("touch", "meaningful", "reason"), CASES)
def test_classify(touch, meaningful, reason):
    assert classify(_draft(touch)) == Verdict(meaningful, reason)


@pytest.mark.parametrize(("touch", "meaningful", "reason"), CASES)
def test_record_touch_stores_the_verdict(make_lead, now, touch, meaningful, reason):
    lead = make_lead()
    result = record_touch(lead, occurred_at=now - timedelta(hours=1), now=now, **touch)
    stored = Touch.objects.get(pk=result.touch.pk)
    assert (stored.is_meaningful, stored.meaningful_reason) == (meaningful, reason)
    opp = tracked(lead)
    expected = now - timedelta(hours=1) if meaningful else None
    assert opp.last_meaningful_touch_at == expected
    assert opp.last_meaningful_touch_id == (stored.pk if meaningful else None)


def test_outbound_auto_acknowledgement_is_not_a_first_response(make_lead, now):
    lead = make_lead()
    asked = now - timedelta(hours=2)
    record_touch(lead, occurred_at=asked, now=now, **EMAIL_IN)
    ack = _with(EMAIL_OUT, headers={"Auto-Submitted": "auto-replied"})
    record_touch(lead, occurred_at=asked + timedelta(seconds=5), now=now, **ack)
    opp = tracked(lead)
    assert opp.first_response_at is None
    assert opp.first_response_touch_id is None
    assert opp.awaiting_reply_since == asked


# Host-defined rules


def meetings_only(draft: TouchDraft) -> Verdict:
    if draft.channel == Channel.MEETING:
        return Verdict(True, "meeting")
    return Verdict(False, "not_a_meeting")


def no_opinion(draft: TouchDraft) -> None:
    return None


def vip_summary(draft: TouchDraft) -> Verdict | None:
    if "VIP" in draft.summary and draft.source == "concierge":
        return Verdict(True, "vip")
    return None


def test_custom_rules_replace_the_defaults():
    held = {"channel": Channel.MEETING, "direction": Direction.OUTBOUND, "outcome": Outcome.HELD}
    rules = ["tests.test_rules.no_opinion", "tests.test_rules.meetings_only"]
    with override_settings(FOLLOWUP_VISIBILITY_TOUCH_RULES=rules):
        assert classify(_draft(CALL_OUT)) == Verdict(False, "not_a_meeting")
        assert classify(_draft(held)) == Verdict(True, "meeting")
    assert classify(_draft(CALL_OUT)) == Verdict(True, "customer_facing")


@pytest.mark.parametrize(
    "rules", [[], ["tests.test_rules.no_opinion"]], ids=["no-rules", "no-opinion"]
)
def test_without_an_objecting_rule_every_touch_is_customer_facing(rules):
    note = {"channel": Channel.NOTE, "direction": Direction.INTERNAL, "outcome": ""}
    with override_settings(FOLLOWUP_VISIBILITY_TOUCH_RULES=rules):
        assert classify(_draft(note)) == Verdict(True, "customer_facing")


def test_custom_rule_reads_source_and_summary():
    rules = ["tests.test_rules.vip_summary", "followup_visibility.engine.touch_rules.internal_note"]
    note = {"channel": Channel.NOTE, "direction": Direction.INTERNAL, "outcome": ""}
    draft = TouchDraft(**note, source="concierge", summary="VIP called the desk")
    with override_settings(FOLLOWUP_VISIBILITY_TOUCH_RULES=rules):
        assert classify(draft) == Verdict(True, "vip")
        assert classify(TouchDraft(**note, source="manual", summary="VIP")) == Verdict(
            False, "internal_note"
        )


def test_custom_rules_decide_what_record_touch_stores(make_lead, now):
    lead = make_lead()
    rules = ["tests.test_rules.meetings_only"]
    with override_settings(FOLLOWUP_VISIBILITY_TOUCH_RULES=rules):
        call = record_touch(lead, occurred_at=now - timedelta(hours=2), now=now, **CALL_OUT)
    stored = Touch.objects.get(pk=call.touch.pk)
    assert (stored.is_meaningful, stored.meaningful_reason) == (False, "not_a_meeting")
    opp = tracked(lead)
    assert opp.first_outbound_at == now - timedelta(hours=2)
    assert opp.first_response_at is None


def test_classify_imports_each_rule_once_for_many_touches(monkeypatch):
    from followup_visibility.engine import touch_rules

    imported: list[str] = []
    real = touch_rules.import_string

    def counting(path: str) -> Any:
        imported.append(path)
        return real(path)

    monkeypatch.setattr(touch_rules, "import_string", counting)
    touch_rules._rules.cache_clear()
    rules = ["tests.test_rules.no_opinion", "tests.test_rules.meetings_only"]
    with override_settings(FOLLOWUP_VISIBILITY_TOUCH_RULES=rules):
        for _ in range(50):
            classify(_draft(CALL_OUT))
    assert imported == rules
