"""What-if: how many open opportunities a policy change would make overdue now; saves nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError

from followup_visibility.choices import AlertSignal, Channel, Direction, Outcome
from followup_visibility.config.preview import what_if
from followup_visibility.engine import calendars
from followup_visibility.ingest.touches import record_touch
from followup_visibility.models import Deadline, SegmentRule, SlaPolicy, SlaPolicyVersion
from tests.factories_sla import (
    DURATIONS,
    install_defaults,
    lead_at,
    make_policy,
    make_segment,
    make_team,
    ny,
)

S = AlertSignal
H = timedelta(hours=1)
NOW = ny(3, 10, 11)  # Tuesday 11:00 New York


@pytest.fixture(autouse=True)
def defaults(db):
    yield install_defaults()
    calendars._cache.clear()


@pytest.fixture
def brochure():
    """Brochure requests answered within 24 business hours; a pricing segment beside them."""
    segments = {code: make_segment(code) for code in ("brochure", "pricing")}
    for code, segment in segments.items():
        SegmentRule.objects.create(segment=segment, hint_field="source", hint_value=code)
    make_policy(segment=segments["brochure"], first_response=24 * H)
    # Business hours elapsed by NOW: 9h, 5h, 25h, 18h; one of them already answered.
    for arrived in (ny(3, 9, 10), ny(3, 9, 14), ny(3, 5, 10), ny(3, 6, 9)):
        lead_at(arrived, source="brochure")
    answered = lead_at(ny(3, 5, 9), source="brochure")
    record_touch(
        answered,
        channel=Channel.EMAIL,
        direction=Direction.OUTBOUND,
        outcome=Outcome.SENT,
        occurred_at=ny(3, 5, 10),
        now=ny(3, 5, 10),
    )
    lead_at(ny(3, 2, 9), source="pricing")  # overdue on everything, and out of scope
    return segments


def stored():
    return (
        list(Deadline.objects.order_by("pk").values()),
        list(SlaPolicyVersion.objects.order_by("pk").values()),
        SlaPolicy.objects.count(),
    )


def test_shortening_a_segment_counts_the_newly_overdue(brochure):
    before = stored()
    segment = brochure["brochure"]
    result = what_if({"first_response": 8 * H}, now=NOW, policy=segment.sla_policies.get(team=None))
    assert result.examined == 5  # the brochure segment only
    key = (S.NO_FIRST_RESPONSE, segment.pk)
    assert (result.current[key], result.proposed[key]) == (1, 3)
    # Nothing else moves.
    others = (set(result.current) | set(result.proposed)) - {key}
    assert others
    assert all(result.current[k] == result.proposed[k] for k in others)
    top = result.rows()[0]
    assert (top["signal"], top["segment"], top["current"], top["proposed"], top["change"]) == (
        S.NO_FIRST_RESPONSE,
        "Brochure",
        1,
        3,
        2,
    )
    assert stored() == before


def test_lengthening_makes_fewer_overdue(brochure):
    segment = brochure["brochure"]
    result = what_if(
        {"first_response": 40 * H}, now=NOW, policy=segment.sla_policies.get(team=None)
    )
    key = (S.NO_FIRST_RESPONSE, segment.pk)
    assert (result.current[key], result.proposed[key]) == (1, 0)


def test_retiring_a_segment_policy_falls_back_to_the_default(brochure):
    segment = brochure["brochure"]
    result = what_if({}, now=NOW, policy=segment.sla_policies.get(team=None), retired=True)
    key = (S.NO_FIRST_RESPONSE, segment.pk)
    # The default's one hour: every unanswered one is overdue.
    assert (result.current[key], result.proposed[key]) == (1, 4)


def test_new_policy_for_a_segment_without_one(brochure):
    before = stored()
    pricing = brochure["pricing"]
    result = what_if({"first_response": 1000 * H}, now=NOW, segment=pricing)
    assert result.examined == 1
    key = (S.NO_FIRST_RESPONSE, pricing.pk)
    assert (result.current[key], result.proposed[key]) == (1, 0)
    assert result.current_opportunities == result.proposed_opportunities == 1
    assert stored() == before


def test_default_policy_change_examines_every_open_opportunity(brochure, defaults):
    before = stored()
    result = what_if({**DURATIONS, "owner_assignment": 1000 * H}, now=NOW, policy=defaults.policy)
    assert result.examined == 6
    by_signal = {
        signal: (
            sum(c for (s, _seg), c in result.current.items() if s == signal),
            sum(c for (s, _seg), c in result.proposed.items() if s == signal),
        )
        for signal in (S.NO_OWNER, S.NO_FIRST_RESPONSE)
    }
    assert by_signal[S.NO_OWNER] == (6, 0)
    assert by_signal[S.NO_FIRST_RESPONSE][0] == by_signal[S.NO_FIRST_RESPONSE][1]
    assert stored() == before


def test_team_scope_only_examines_that_team(brochure):
    team = make_team("east")
    lead_at(ny(3, 9, 10), team="east")  # no segment: the default's hour applies now
    result = what_if({"first_response": 1000 * H}, now=NOW, team=team)
    assert result.examined == 1
    assert (
        result.current[(S.NO_FIRST_RESPONSE, None)],
        result.proposed[(S.NO_FIRST_RESPONSE, None)],
    ) == (1, 0)
    assert result.rows()[0]["segment"] == ""


def test_invalid_draft_is_refused(brochure):
    with pytest.raises(ValidationError) as exc:
        what_if({"first_response": -H}, now=NOW, segment=brochure["pricing"])
    assert set(exc.value.message_dict) == {"first_response"}
