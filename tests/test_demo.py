import re
from datetime import UTC, datetime
from io import StringIO

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from example_project.crm.models import Lead
from example_project.crm.seed import LOGINS, seed
from followup_visibility.engine import access
from followup_visibility.models import TrackedOpportunity
from followup_visibility.register import rows as register


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


def test_seeded_on_a_monday_before_working_hours_shows_the_same(db):
    monday_early = datetime(2026, 3, 9, 7, 0, tzinfo=UTC)
    seed(monday_early, leads=80, seed_value=7)
    shows_alerts_of_every_signal_escalated_and_triaged(monday_early)


def shows_alerts_of_every_signal_escalated_and_triaged(now):
    from followup_visibility.alerting import sweep
    from followup_visibility.choices import AlertSignal, AlertStatus, EscalationOutcome
    from followup_visibility.models import Alert, Escalation, Notification, Suppression

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
