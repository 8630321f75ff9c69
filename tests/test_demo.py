from datetime import timedelta
from io import StringIO

from django.core.management import call_command

from example_project.crm.models import Deal, Lead
from example_project.crm.seed import seed
from followup_visibility.choices import Status
from followup_visibility.models import DuplicateMatch, Handoff, Touch, TrackedOpportunity


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
    assert "admin / admin" in text and "maria / demo" in text
    assert "http://127.0.0.1:8000/admin/" in text

    again = StringIO()
    call_command("demo", "--no-serve", stdout=again)
    assert "already present" in again.getvalue()
    assert Lead.objects.count() == 15
