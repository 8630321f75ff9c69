"""The demo's seeded world at ``NOW``, seeded once for the module: tests that only read it."""

from datetime import timedelta

import pytest
from django.db import transaction

from example_project.crm.models import Deal, Lead
from example_project.crm.seed import seed
from followup_visibility.choices import Status
from followup_visibility.models import DuplicateMatch, Handoff, Touch, TrackedOpportunity
from tests.conftest import NOW
from tests.test_demo import shows_alerts_of_every_signal_escalated_and_triaged


@pytest.fixture(scope="module")
def seeded(django_db_setup, django_db_blocker):
    """The demo seeded once at ``NOW`` for the tests that only read it (seeding takes seconds),
    in a transaction rolled back after the module; each test runs in its own savepoint."""
    with django_db_blocker.unblock(), transaction.atomic():
        yield seed(NOW, leads=80, seed_value=7)
        transaction.set_rollback(True)


def test_seed_builds_a_realistic_pipeline(seeded, db):
    summary, now = seeded, NOW

    assert summary.leads == Lead.objects.count() == 80
    assert summary.deals == Deal.objects.count() > 0
    assert summary.touches == Touch.objects.count()
    # Every host row is tracked, deals continue their lead's chain.
    assert TrackedOpportunity.objects.count() == 80 + summary.deals
    deal_opps = TrackedOpportunity.objects.exclude(predecessor=None)
    assert deal_opps.count() == summary.deals
    # The demo must show the problems the app exists for.
    open_ = TrackedOpportunity.objects.open()
    assert open_.unowned().exists()
    assert open_.filter(awaiting_reply_since__isnull=False).exists()
    assert open_.filter(last_unanswered_call_at__isnull=False).exists()
    assert Touch.objects.filter(meaningful_reason="auto_reply").exists()
    assert Touch.objects.filter(logging_lag__gte=timedelta(days=1)).exists()
    assert Handoff.objects.filter(accepted_at__isnull=True, superseded_at__isnull=True).exists()
    assert Handoff.objects.filter(accepted_via="touch").exists()
    assert DuplicateMatch.objects.filter(cleared_at__isnull=True).exists()
    assert TrackedOpportunity.objects.filter(status=Status.CONVERTED).count() == summary.deals
    # Nothing happens after "now".
    assert not Touch.objects.filter(occurred_at__gt=now).exists()


def test_seed_configures_segments_teams_and_versioned_policies(seeded, db):
    from followup_visibility.choices import AlertSignal, ClosedDateKind
    from followup_visibility.models import Deadline, SlaPolicy, Team

    zones = {t.key: t.calendar.time_zone for t in Team.objects.exclude(calendar=None)}
    assert zones == {"us-east": "America/New_York", "emea": "Europe/London"}
    managers = {t.key: t.manager.username for t in Team.objects.exclude(calendar=None)}
    assert managers == {"us-east": "maria", "emea": "nina"}
    for team in Team.objects.exclude(calendar=None):
        assert team.calendar.closed_dates.filter(kind=ClosedDateKind.PUBLIC_HOLIDAY).exists()
        assert team.parent is not None and team.parent.manager.username == "olivia"
    # Each lead goes to a rep of its own team, so a manager's subtree is their reps' work.
    for opp in TrackedOpportunity.objects.exclude(owner=None).select_related("team", "owner"):
        assert opp.owner.followup_teams.filter(pk=opp.team_id).exists(), opp
    first_response = Deadline.objects.filter(signal=AlertSignal.NO_FIRST_RESPONSE)
    missed = first_response.filter(opportunity__segment__code="missed-call")
    assert missed.exists() and {d.sla for d in missed} == {timedelta(hours=1)}
    # The brochure policy was tightened a week ago for new leads only.
    brochure = SlaPolicy.objects.get(segment__code="brochure", team=None)
    v1, v2 = brochure.versions.order_by("number")
    assert not v2.applies_to_open
    assert first_response.filter(opportunity__segment__code="brochure").exists()
    for deadline in first_response.filter(opportunity__segment__code="brochure"):
        arrived = deadline.opportunity.arrived_at
        expected = v2 if arrived >= v2.effective_from else v1
        assert deadline.policy_version == expected
        assert deadline.sla == expected.first_response
    # Deadlines follow the team's own calendar.
    for deadline in Deadline.objects.select_related("opportunity__team")[:50]:
        team = deadline.opportunity.team
        if team is not None:
            assert deadline.calendar_id == team.calendar_id


def test_seed_shows_alerts_of_every_signal_escalated_and_triaged(seeded, db):
    shows_alerts_of_every_signal_escalated_and_triaged(NOW)
