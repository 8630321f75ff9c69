"""The admin pages render with real data, and actions respect model permissions."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from followup_visibility.choices import Channel, Direction, Outcome, Status
from followup_visibility.ingest.touches import record_touch
from followup_visibility.models import DuplicateMatch, Handoff, Touch, TrackedOpportunity
from tests.conftest import tracked

MODELS = ["trackedopportunity", "touch", "handoff", "duplicatematch"]


@pytest.fixture
def pipeline(make_lead, make_deal, make_user, now):
    rep = make_user("rep")
    a = make_lead(owner=rep, phone="(212) 555-0142")
    b = make_lead(phone="212.555.0142")
    make_deal(lead=a, amount=1000)
    record_touch(
        a,
        channel=Channel.PHONE,
        direction=Direction.OUTBOUND,
        outcome=Outcome.CONNECTED,
        occurred_at=now - timedelta(hours=1),
        now=now,
        actor=rep,
    )
    return tracked(a), tracked(b)


@pytest.fixture
def staff(make_user):
    def make(*codenames):
        user = make_user(is_staff=True)
        user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
        return user

    return make


@pytest.mark.parametrize("model", MODELS)
def test_changelists_and_change_pages_render(admin_client, pipeline, model):
    response = admin_client.get(reverse(f"admin:followup_visibility_{model}_changelist"))
    assert response.status_code == 200
    obj = {
        "trackedopportunity": TrackedOpportunity,
        "touch": Touch,
        "handoff": Handoff,
        "duplicatematch": DuplicateMatch,
    }[model].objects.first()
    response = admin_client.get(reverse(f"admin:followup_visibility_{model}_change", args=[obj.pk]))
    assert response.status_code == 200


def test_opportunity_page_shows_its_timeline(admin_client, pipeline):
    a, _b = pipeline
    page = admin_client.get(
        reverse("admin:followup_visibility_trackedopportunity_change", args=[a.pk])
    ).content.decode()
    assert "customer_facing" in page  # the touch inline, with why it counted
    assert "+12125550142" in page  # the identity inline


def test_merge_action_merges_into_the_oldest(client, staff, pipeline):
    a, b = pipeline
    client.force_login(
        staff("view_trackedopportunity", "change_trackedopportunity", "view_all_opportunities")
    )
    response = client.post(
        reverse("admin:followup_visibility_trackedopportunity_changelist"),
        {"action": "merge_into_oldest", "_selected_action": [a.pk, b.pk]},
    )
    assert response.status_code == 302
    survivor, merged = sorted([a, b], key=lambda o: (o.arrived_at, o.pk))
    merged.refresh_from_db()
    assert merged.status == Status.MERGED and merged.merged_into_id == survivor.pk


def test_merge_action_needs_change_permission(client, staff, pipeline):
    a, b = pipeline
    client.force_login(staff("view_trackedopportunity"))
    url = reverse("admin:followup_visibility_trackedopportunity_changelist")
    assert "merge_into_oldest" not in client.get(url).content.decode()
    client.post(url, {"action": "merge_into_oldest", "_selected_action": [a.pk, b.pk]})
    assert not TrackedOpportunity.objects.filter(status=Status.MERGED).exists()


def test_merge_action_reports_refusals(admin_client, pipeline, make_lead):
    a, _b = pipeline
    closed = tracked(make_lead(status="lost", created_at=a.arrived_at - timedelta(days=1)))
    response = admin_client.post(
        reverse("admin:followup_visibility_trackedopportunity_changelist"),
        {"action": "merge_into_oldest", "_selected_action": [a.pk, closed.pk]},
        follow=True,
    )
    assert "not open" in response.content.decode()
    a.refresh_from_db()
    assert a.status == Status.OPEN


def test_touches_cannot_be_edited_in_the_admin(admin_client, pipeline):
    touch = Touch.objects.first()
    url = reverse("admin:followup_visibility_touch_change", args=[touch.pk])
    admin_client.post(url, {"summary": "rewritten"})
    touch.refresh_from_db()
    assert touch.summary == ""
