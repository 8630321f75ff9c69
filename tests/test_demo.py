import re
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from example_project.crm.models import Deal, Lead
from example_project.crm.seed import LOGINS, seed
from followup_visibility.choices import Status
from followup_visibility.engine import access
from followup_visibility.models import DuplicateMatch, Handoff, Touch, TrackedOpportunity
from followup_visibility.register import rows as register
from tests.conftest import NOW


def test_seed_builds_a_realistic_pipeline(db, now):
    summary = seed(now, leads=80, seed_value=7)

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


def test_demo_command_seeds_once_and_prints_logins(db):
    out = StringIO()
    call_command("demo", "--no-serve", "--leads", "15", stdout=out)
    text = out.getvalue()
    assert "Seeded 15 leads" in text
    assert "http://127.0.0.1:8000/admin/" in text
    # Every login with its role and what it sees, counted through the scope rule.
    for username, role in [
        ("admin", "superuser: sees all"),
        ("ops", "operations (followup_visibility.view_all_opportunities): sees all"),
        ("olivia", "manager of Sales: sees EMEA, Sales, US East:"),
        ("maria", "manager of US East: sees US East:"),
        ("nina", "manager of EMEA: sees EMEA:"),
        ("alex", "rep in US East: sees own"),
        ("chen", "rep in EMEA: sees own"),
    ]:
        user = get_user_model().objects.get(username=username)
        count = access.opportunities_for(user).count()
        password = "admin" if username == "admin" else "demo"
        assert re.search(
            rf"^  {username} / {password} +{re.escape(role)} {count} opportunities, \d+ alerts",
            text,
            re.M,
        ), username
    assert "act on their own" not in text

    # An API token per login, printed, and one curl that fetches a rep's queue.
    tokens = dict(Token.objects.values_list("user__username", "key"))
    assert set(tokens) == set(LOGINS)
    for username, key in tokens.items():
        assert re.search(rf"^  {username} +{key}$", text, re.M), username
    curl = re.search(
        r'^  curl -H "Authorization: (Token \w+)" http://127\.0\.0\.1:8000(/\S+)$', text, re.M
    )
    assert curl is not None and curl[1] == f"Token {tokens['alex']}"
    assert "http://127.0.0.1:8000/api/followup/schema/" in text
    assert "http://127.0.0.1:8000/api/followup/reference/" in text
    response = APIClient().get(curl[2], HTTP_AUTHORIZATION=curl[1])
    assert response.status_code == 200
    listed = {row["id"]: row["owner"]["username"] for row in response.json()["results"]}
    everyone = register.unfollowed(timezone.now()).values_list("pk", "owner__username")
    assert listed and set(listed.values()) == {"alex"}
    assert set(listed) == {pk for pk, owner in everyone if owner == "alex"}
    assert {owner for _pk, owner in everyone} - {"alex"}  # others' rows exist, and are left out

    again = StringIO()
    call_command("demo", "--no-serve", stdout=again)
    assert "already present" in again.getvalue()
    assert Lead.objects.count() == 15
    # The tokens survive a second run: what a user copied keeps working.
    assert dict(Token.objects.values_list("user__username", "key")) == tokens
    assert f"Token {tokens['alex']}" in again.getvalue()


def test_seed_configures_segments_teams_and_versioned_policies(db, now):
    from followup_visibility.choices import AlertSignal, ClosedDateKind
    from followup_visibility.models import Deadline, SlaPolicy, Team

    seed(now, leads=80, seed_value=7)

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


@pytest.mark.parametrize(
    "now",
    [NOW, datetime(2026, 3, 9, 7, 0, tzinfo=UTC)],  # and a Monday before anyone's working hours
    ids=["tuesday afternoon", "monday early"],
)
def test_seed_shows_alerts_of_every_signal_escalated_and_triaged(db, now):
    from followup_visibility.alerting import sweep
    from followup_visibility.choices import AlertSignal, AlertStatus, EscalationOutcome
    from followup_visibility.models import Alert, Escalation, Notification, Suppression

    seed(now, leads=80, seed_value=7)

    assert set(Alert.objects.values_list("signal", flat=True)) == set(AlertSignal.values)
    statuses = set(Alert.objects.values_list("status", flat=True))
    assert {
        AlertStatus.OPEN,
        AlertStatus.ACKNOWLEDGED,
        AlertStatus.SNOOZED,
        AlertStatus.DISMISSED,
        AlertStatus.SUPPRESSED,
    } <= statuses
    # Level 1 reaches the teams' manager, level 2 the head of sales one team up.
    notified = Escalation.objects.filter(outcome=EscalationOutcome.NOTIFIED)
    level_1 = set(notified.filter(level=1).values_list("recipient__username", flat=True))
    assert level_1 == {"maria", "nina"}
    assert set(notified.filter(level=2).values_list("recipient__username", flat=True)) == {"olivia"}
    assert Notification.objects.filter(recipient__username="maria").exists()
    assert Suppression.objects.filter(segment__code="brochure").exists()
    assert TrackedOpportunity.objects.exclude(stalled_reason="").exists()
    # The seeded passes left nothing behind: the consistency monitor agrees.
    figures = sweep.consistency(now)
    assert (figures["due_without_alert"], figures["alerts_without_deadline"]) == (0, 0), figures
