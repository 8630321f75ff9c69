"""Policy changes and their retroactivity; chunked recomputes; outdated calendar tasks."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import override_settings

from example_project.crm.models import Lead
from followup_visibility.alerting import outbox
from followup_visibility.choices import AlertSignal, Channel, Direction, Outcome
from followup_visibility.config import recompute
from followup_visibility.config.policies import publish_version
from followup_visibility.config.recompute import Scope, plan, recompute_all, recompute_range
from followup_visibility.engine import calendars
from followup_visibility.ingest.touches import record_touch
from followup_visibility.models import ClosedDate, Deadline, SegmentRule, TrackedOpportunity
from tests.factories_sla import (
    DURATIONS,
    deadlines_of,
    due,
    install_defaults,
    lead_at,
    make_policy,
    make_segment,
    ny,
    opportunity,
    snapshot,
)

S = AlertSignal
H = timedelta(hours=1)


@pytest.fixture(autouse=True)
def defaults(db):
    yield install_defaults()
    calendars._cache.clear()


def faster_first_response():
    return {**DURATIONS, "first_response": 3 * H}


# Retroactivity: the publisher's choice


def test_new_only_keeps_open_deadlines_and_versions(defaults, django_capture_on_commit_callbacks):
    old = lead_at(ny(3, 9, 9))
    before = snapshot(old)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        v2 = publish_version(
            defaults.policy, faster_first_response(), now=ny(3, 10, 10), apply_to_open=False
        )
    assert callbacks == []  # nothing to recompute
    assert snapshot(old) == before
    # Later recomputes of the open one keep the version it had.
    assert recompute_all(Scope(), ny(3, 10, 11)).totals.written == 0
    record_touch(
        old,
        channel=Channel.EMAIL,
        direction=Direction.INBOUND,
        outcome=Outcome.RECEIVED,
        occurred_at=ny(3, 10, 11),
        now=ny(3, 10, 11),
    )
    rows = deadlines_of(old)
    assert rows[S.NO_FIRST_RESPONSE].due_at == ny(3, 9, 10)
    assert {d.policy_version_id for d in rows.values()} == {defaults.version.pk}
    # Opportunities arriving from its effective time on get it.
    new = lead_at(ny(3, 10, 10))
    assert due(new)[S.NO_FIRST_RESPONSE] == ny(3, 10, 13)
    assert {d.policy_version_id for d in deadlines_of(new).values()} == {v2.pk}
    just_before = lead_at(ny(3, 10, 9, 59))
    assert {d.policy_version_id for d in deadlines_of(just_before).values()} == {
        defaults.version.pk
    }


def test_apply_to_open_recomputes_open_ones_after_commit(
    defaults, django_capture_on_commit_callbacks
):
    open_lead = lead_at(ny(3, 9, 9))
    lost = lead_at(ny(3, 9, 9), status=Lead.Status.LOST)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        v2 = publish_version(
            defaults.policy, faster_first_response(), now=ny(3, 10, 10), apply_to_open=True
        )
    assert len(callbacks) == 1
    # Nothing moves before the commit...
    assert due(open_lead)[S.NO_FIRST_RESPONSE] == ny(3, 9, 10)
    callbacks[0]()  # ...and everything after it (Celery runs eagerly in tests).
    rows = deadlines_of(open_lead)
    assert rows[S.NO_FIRST_RESPONSE].due_at == ny(3, 9, 12)
    assert {d.policy_version_id for d in rows.values()} == {v2.pk}
    assert due(lost) == {}


def test_apply_to_open_for_a_segment_only_touches_that_segment(
    defaults, django_capture_on_commit_callbacks
):
    pricing, brochure = make_segment("pricing"), make_segment("brochure")
    for segment in (pricing, brochure):
        SegmentRule.objects.create(segment=segment, hint_field="source", hint_value=segment.code)
        make_policy(segment=segment, first_response=2 * H)
    in_pricing = lead_at(ny(3, 9, 9), source="pricing")
    in_brochure = lead_at(ny(3, 9, 9), source="brochure")
    brochure_before = snapshot(in_brochure)
    assert plan(Scope(segment_ids=[pricing.pk])) == [(opportunity(in_pricing).pk,) * 2]
    with django_capture_on_commit_callbacks(execute=True):
        publish_version(
            pricing.sla_policies.get(),
            {"first_response": 4 * H},
            now=ny(3, 10, 10),
            apply_to_open=True,
        )
    assert due(in_pricing)[S.NO_FIRST_RESPONSE] == ny(3, 9, 13)
    assert snapshot(in_brochure) == brochure_before


# Chunking


@pytest.fixture
def many():
    """Seven open leads and two closed ones, interleaved in key order."""
    leads = []
    for n in range(9):
        status = Lead.Status.LOST if n in (2, 6) else Lead.Status.NEW
        leads.append(lead_at(ny(3, 9, 9) + n * timedelta(minutes=5), status=status))
    return [opportunity(lead) for lead in leads]


def covered(ranges, scope=None):
    scope = scope or Scope()
    return [
        pk
        for first, last in ranges
        for pk in scope.queryset().filter(pk__gte=first, pk__lte=last).values_list("pk", flat=True)
    ]


@pytest.mark.parametrize(("size", "chunks"), [(1, 7), (2, 4), (3, 3), (7, 1), (100, 1)])
def test_plan_covers_every_open_opportunity_exactly_once(many, size, chunks):
    open_ids = sorted(o.pk for o in many if o.is_open)
    with override_settings(FOLLOWUP_VISIBILITY_RECOMPUTE_CHUNK_SIZE=size):
        ranges = plan(Scope())
    assert len(ranges) == chunks
    ids = covered(ranges)
    assert sorted(ids) == open_ids
    assert len(ids) == len(set(ids))
    assert all(first <= last for first, last in ranges)


def test_plan_of_nothing_is_empty(many):
    assert plan(Scope(team_ids=[])) == []


@override_settings(FOLLOWUP_VISIBILITY_RECOMPUTE_CHUNK_SIZE=2)
def test_a_plan_in_the_outbox_becomes_one_range_message_per_chunk(many):
    outbox.drain()  # what setting up the fixtures planned (on the wall clock)
    Deadline.objects.all().delete()
    recompute.schedule(Scope(reason="test"), now=ny(3, 10, 10))
    # Planned again before it is drained: the pending plan absorbs the repeat.
    recompute.schedule(Scope(reason="again"), now=ny(3, 10, 10))
    assert outbox.pending([recompute.PLAN]).count() == 1
    assert outbox.drain(clock=lambda: ny(3, 10, 10), kinds=[recompute.PLAN]).done == 1
    ranges = [(m.payload["first"], m.payload["last"]) for m in outbox.pending([recompute.RANGE])]
    assert len(ranges) == 4
    assert sorted(covered(ranges)) == sorted(o.pk for o in many if o.is_open)
    assert Deadline.objects.count() == 0  # nothing happens before the ranges are drained
    assert outbox.drain(clock=lambda: ny(3, 10, 10)).done == 4
    # Every open one got its deadlines back; the closed ones none.
    with_deadlines = set(Deadline.objects.values_list("opportunity_id", flat=True))
    assert with_deadlines == {o.pk for o in many if o.is_open}
    assert not outbox.pending().exists()


def test_recompute_all_in_chunks_matches_one_pass(many):
    Deadline.objects.all().delete()
    result = recompute_all(Scope(), ny(3, 10, 10), chunk_size=2)
    assert result.opportunities == 7
    assert result.totals.written == 7 * 4
    stored = set(Deadline.objects.values_list("opportunity_id", "signal", "due_at"))
    again = recompute_all(Scope(), ny(3, 10, 11), chunk_size=100)
    assert (again.totals.written, again.totals.unchanged) == (0, 7 * 4)
    assert set(Deadline.objects.values_list("opportunity_id", "signal", "due_at")) == stored


def test_reassign_scope_reruns_assignment(many):
    segment = make_segment("brochure")
    SegmentRule.objects.create(segment=segment, hint_field="source", hint_value="web_form")
    result = recompute_all(Scope(reassign=True), ny(3, 10, 10), chunk_size=3)
    assert result.totals.routed == 7
    assert set(TrackedOpportunity.objects.open().values_list("segment", flat=True)) == {segment.pk}
    # Closed ones are left as they were.
    assert set(
        TrackedOpportunity.objects.exclude(status="open").values_list("segment", flat=True)
    ) == {None}


# Calendar tasks carry the calendar version they were planned for


def test_calendar_task_for_an_outdated_version_is_skipped(defaults):
    lead = lead_at(ny(3, 9, 16, 30))
    before = snapshot(lead)
    planned_for = defaults.calendar.version
    ClosedDate.objects.create(calendar=defaults.calendar, date=ny(3, 10, 0).date())
    defaults.calendar.refresh_from_db()
    assert defaults.calendar.version == planned_for + 1
    pk = opportunity(lead).pk

    outdated = Scope(calendar=(defaults.calendar.pk, planned_for))
    assert outdated.is_outdated()
    recompute.drain_plan(outdated.as_kwargs(), ny(3, 9, 17))
    assert not outbox.pending([recompute.RANGE]).exists()
    result = recompute_range(pk, pk, outdated, ny(3, 9, 17))
    assert result.skipped and result.opportunities == 0
    assert snapshot(lead) == before

    current = Scope(calendar=(defaults.calendar.pk, defaults.calendar.version))
    result = recompute_range(pk, pk, current, ny(3, 9, 17))
    assert not result.skipped
    assert due(lead)[S.NO_FIRST_RESPONSE] == ny(3, 11, 9, 30)  # Tuesday is now closed


def test_scope_round_trips_through_task_kwargs():
    scope = Scope(team_ids=[3], segment_ids=[4, 5], reassign=True, calendar=(7, 9), reason="x")
    assert recompute.scope_from_kwargs(**scope.as_kwargs()) == Scope(
        team_ids=[3], segment_ids=[4, 5], reassign=True, calendar=(7, 9), reason="x"
    )


def test_a_recompute_reports_the_alerts_it_resolved(defaults):
    from followup_visibility.alerting import sweep
    from followup_visibility.choices import AlertStatus
    from followup_visibility.models import Alert

    lead = lead_at(ny(3, 9, 9))
    sweep.sweep(ny(3, 12, 9), full=True)
    alert = Alert.objects.get(opportunity=opportunity(lead), signal=S.NO_FIRST_RESPONSE)
    # A far longer first response: the deadline moves past the clock and the alert resolves.
    slower = {**DURATIONS, "first_response": 100 * H}
    publish_version(defaults.policy, slower, now=ny(3, 12, 10), apply_to_open=True)
    result = recompute_all(Scope(), ny(3, 12, 10), chunk_size=1)
    assert result.totals.resolved >= 1
    alert.refresh_from_db()
    assert alert.status == AlertStatus.RESOLVED
