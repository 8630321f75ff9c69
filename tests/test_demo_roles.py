"""The demo's roles: each login sees in the admin exactly what the scope rule allows.

The demo is what evaluators open first, so its reps, managers and operations user must show
the rule: a rep their own, a manager their team subtree, operations everything. The seed runs
once for the module (in a transaction rolled back after it) and each test logs in as a role.
"""

from collections.abc import Iterator
from typing import Any

import pytest
import time_machine
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Q
from django.test import Client, RequestFactory
from django.urls import reverse
from rest_framework.test import APIClient

from example_project.crm.seed import LOGINS, seed
from followup_visibility.choices import ACTIVE_ALERT_STATUSES, AlertStatus, NotificationChannel
from followup_visibility.engine.access import SEE_ALL_PERMISSION
from followup_visibility.models import (
    Alert,
    Calendar,
    Deadline,
    DuplicateMatch,
    Escalation,
    Handoff,
    Notification,
    Suppression,
    Team,
    Touch,
    TrackedOpportunity,
)
from followup_visibility.register import rows as register
from tests.conftest import NOW

REPS = ("alex", "bea", "chen", "dana")


@pytest.fixture(scope="module")
def demo(django_db_setup: Any, django_db_blocker: Any) -> Iterator[None]:
    with django_db_blocker.unblock(), transaction.atomic():
        seed(NOW, leads=60, seed_value=7)
        yield
        transaction.set_rollback(True)


@pytest.fixture(autouse=True)
def seeded(demo: None, db: Any) -> Iterator[None]:
    # The admin reads the clock (severity, the actions' ``now``): the demo's present.
    with time_machine.travel(NOW, tick=False):
        yield


def user(username: str) -> Any:
    return get_user_model().objects.get(username=username)


def login(username: str) -> Client:
    client = Client()
    assert client.login(username=username, password=LOGINS[username])
    return client


def listed(client: Client, model: str, query: str = "") -> set[Any]:
    """Every row of the model's change list (all pages), as the admin filters it."""
    response = client.get(reverse(f"admin:followup_visibility_{model}_changelist") + query)
    assert response.status_code == 200
    return set(response.context["cl"].queryset.values_list("pk", flat=True))


def pks(queryset: Any) -> set[Any]:
    return set(queryset.values_list("pk", flat=True))


def team_scope(*keys: str) -> Q:
    """Opportunities of these teams or owned by their members: the manager rule, restated."""
    members = get_user_model().objects.filter(followup_teams__key__in=keys)
    return Q(team__key__in=keys) | Q(owner__in=members)


def test_only_operations_and_the_superuser_see_everything():
    users = get_user_model().objects.filter(username__in=LOGINS)
    assert {u.username for u in users} == set(LOGINS)
    assert {u.username for u in users if u.has_perm(SEE_ALL_PERMISSION)} == {"admin", "ops"}
    assert not user("alex").has_perm(SEE_ALL_PERMISSION)
    assert user("admin").is_superuser
    assert [u.username for u in users if u.is_superuser] == ["admin"]


@pytest.mark.parametrize("username", REPS)
def test_a_rep_sees_their_own_opportunities_alerts_and_inbox(username):
    rep, client = user(username), login(username)
    own = TrackedOpportunity.objects.filter(owner=rep)
    own_alerts = Alert.objects.filter(opportunity__owner=rep)
    assert own.exists() and own_alerts.exists()

    assert listed(client, "trackedopportunity") == pks(own)
    assert listed(client, "alert", "?status=all") == pks(own_alerts)
    active = own_alerts.filter(status__in=ACTIVE_ALERT_STATUSES)
    assert listed(client, "alert") == pks(active)
    inbox = Notification.objects.filter(recipient=rep, channel=NotificationChannel.INBOX)
    assert listed(client, "notification") == pks(inbox)
    assert listed(client, "deadline") == pks(Deadline.objects.filter(opportunity__owner=rep))
    assert listed(client, "touch") == pks(Touch.objects.filter(opportunity__owner=rep))


@pytest.mark.parametrize(
    ("action", "form", "done"),
    [
        ("acknowledge", {}, AlertStatus.ACKNOWLEDGED),
        ("dismiss", {"apply": "1", "reason": "Spoke at the fair"}, AlertStatus.DISMISSED),
    ],
)
def test_a_rep_cannot_see_or_triage_another_reps_alert(action, form, done):
    client = login("alex")
    open_ = Alert.objects.filter(status=AlertStatus.OPEN).order_by("pk")
    theirs = open_.filter(opportunity__owner__username="bea").first()
    mine = open_.filter(opportunity__owner__username="alex").first()
    assert theirs is not None and mine is not None

    page = reverse("admin:followup_visibility_alert_change", args=[theirs.pk])
    assert client.get(page).status_code == 404
    fields = ("status", "changed_by", "acknowledged_at", "dismissed_at")
    before = Alert.objects.filter(pk=theirs.pk).values(*fields).get()
    versions = theirs.history.count()
    client.post(
        reverse("admin:followup_visibility_alert_changelist"),
        {"action": action, "_selected_action": [theirs.pk, mine.pk], **form},
    )
    assert Alert.objects.filter(pk=theirs.pk).values(*fields).get() == before
    assert theirs.history.count() == versions
    mine.refresh_from_db()
    assert mine.status == done  # the action itself works for a rep


@pytest.mark.parametrize(
    ("username", "keys", "hidden"),
    [("maria", ["us-east"], "emea"), ("nina", ["emea"], "us-east")],
)
def test_a_team_manager_sees_their_team_and_not_the_other(username, keys, hidden):
    client = login(username)
    scope = TrackedOpportunity.objects.filter(team_scope(*keys))
    assert scope.exists()

    assert listed(client, "trackedopportunity") == pks(scope)
    assert listed(client, "alert", "?status=all") == pks(
        Alert.objects.filter(opportunity__in=scope)
    )
    other = TrackedOpportunity.objects.filter(team__key=hidden)
    assert other.exists() and not listed(client, "trackedopportunity") & pks(other)
    assert not user(username).has_perm(SEE_ALL_PERMISSION)


def test_the_head_of_sales_sees_every_team_below_hers():
    client = login("olivia")
    sales = Team.objects.get(key="sales")
    below = list(Team.objects.filter(parent=sales).values_list("key", flat=True))
    assert sorted(below) == ["emea", "us-east"]
    scope = TrackedOpportunity.objects.filter(team_scope("sales", *below))

    assert listed(client, "trackedopportunity") == pks(scope)
    assert listed(client, "alert", "?status=all") == pks(
        Alert.objects.filter(opportunity__in=scope)
    )
    assert not user("olivia").has_perm(SEE_ALL_PERMISSION)


def test_operations_sees_everything():
    client = login("ops")
    assert listed(client, "trackedopportunity") == pks(TrackedOpportunity.objects.all())
    assert listed(client, "alert", "?status=all") == pks(Alert.objects.all())
    assert listed(client, "notification") == pks(Notification.objects.all())


@pytest.mark.parametrize(
    ("username", "scope"),
    [
        ("alex", Q(owner__username="alex")),
        ("maria", "us-east"),
        ("olivia", "sales"),
        ("ops", Q()),
    ],
)
def test_each_role_fetches_its_own_queue_through_the_api(username, scope):
    # The queue the demo's curl fetches: the register, within the same scope as the admin.
    if isinstance(scope, str):
        keys = [scope, *Team.objects.filter(parent__key=scope).values_list("key", flat=True)]
        scope = team_scope(*keys)
    client = APIClient()
    client.force_authenticate(user(username))
    response = client.get(reverse("followup_visibility_api:register-list"), {"page_size": 200})
    assert response.status_code == 200
    assert response.json()["next"] is None
    everyone = register.unfollowed(NOW)
    expected = pks(everyone.filter(scope))
    assert expected and {row["id"] for row in response.json()["results"]} == expected
    if username in ("alex", "maria"):
        assert pks(everyone) - expected  # others' rows exist, and are left out


@pytest.mark.parametrize(
    ("username", "page", "status"),
    [
        ("alex", "team", 403),  # configuration is for managers and operations
        ("alex", "sweeprun", 403),
        ("maria", "team", 200),
        ("maria", "calendar", 200),
        ("maria", "escalationpolicy", 200),
        ("maria", "slapolicy", 200),
        ("maria", "sweeprun", 403),
        ("ops", "sweeprun", 200),
        ("ops", "inhibitionrule", 200),
    ],
)
def test_each_role_reaches_its_pages(username, page, status):
    url = reverse(f"admin:followup_visibility_{page}_changelist")
    assert login(username).get(url).status_code == status


@pytest.mark.parametrize(
    ("username", "teams", "calendars"),
    [
        ("alex", set(), set()),
        ("maria", {"us-east"}, {"New York office"}),
        ("nina", {"emea"}, {"London office"}),
        ("olivia", {"sales", "us-east", "emea"}, {"New York office", "London office"}),
        ("ops", "all", "all"),
    ],
)
def test_managers_change_only_their_teams_configuration(username, teams, calendars):
    request = RequestFactory().get("/")
    request.user = user(username)
    team_admin, calendar_admin = admin.site._registry[Team], admin.site._registry[Calendar]

    changeable = {t.key for t in Team.objects.all() if team_admin.has_change_permission(request, t)}
    assert changeable == (
        set(Team.objects.values_list("key", flat=True)) if teams == "all" else teams
    )
    changeable = {
        c.name for c in Calendar.objects.all() if calendar_admin.has_change_permission(request, c)
    }
    everything = set(Calendar.objects.values_list("name", flat=True))
    assert changeable == (everything if calendars == "all" else calendars)


def _out_of_scope(model: str) -> Any:
    """A row of ``model`` alex may not see: bea's, or one of a rule of hers."""
    theirs = {"opportunity__owner__username": "bea"}
    rows = {
        "trackedopportunity": TrackedOpportunity.objects.filter(owner__username="bea"),
        "alert": Alert.objects.filter(**theirs),
        "touch": Touch.objects.filter(**theirs),
        "handoff": Handoff.objects.filter(**theirs),
        "deadline": Deadline.objects.filter(**theirs),
        "duplicatematch": DuplicateMatch.objects.exclude(opportunity__owner__username="alex"),
        "escalation": Escalation.objects.filter(alert__opportunity__owner__username="bea"),
        "notification": Notification.objects.exclude(recipient__username="alex"),
        # The demo's one rule covers a whole segment: only operations sees it.
        "suppression": Suppression.objects.filter(opportunity=None, owner=None, team=None),
    }
    row = rows[model].order_by("pk").first()
    assert row is not None, model
    return row


@pytest.mark.parametrize(
    "model",
    [
        "trackedopportunity",
        "alert",
        "touch",
        "handoff",
        "deadline",
        "duplicatematch",
        "escalation",
        "notification",
        "suppression",
    ],
)
@pytest.mark.parametrize("page", ["change", "history"])
def test_a_row_out_of_scope_answers_as_a_missing_one(model, page):
    client = login("alex")
    row = _out_of_scope(model)
    missing = type(row).objects.order_by("-pk").values_list("pk", flat=True)[0] + 1000

    def get(pk: Any) -> tuple[int, str]:
        response = client.get(reverse(f"admin:followup_visibility_{model}_{page}", args=[pk]))
        return response.status_code, response.get("Location", "")

    status, location = get(row.pk)
    assert (status, location) == get(missing)
    assert status in (302, 404)  # 404, or Django's "does not exist" redirect to the index
    if status == 302:
        assert location == reverse("admin:index")
