"""``notifications/``: the caller's inbox, and marking its messages read.

alex and bea are reps of EMEA and APAC whose alerts the sweep raised and the notification pass
told them about; maria lacks ``view_notification``; ops sees everything, yet their inbox is
their own. The world is built once per module, rolled back at the end; the clock is ``NOW``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from example_project.crm.models import Lead
from followup_visibility.alerting import notifications, sweep
from followup_visibility.choices import NotificationChannel
from followup_visibility.ingest.crm import sync_objects
from followup_visibility.models import Notification, Team
from tests.test_admin_alerts import HOUR, NOW, T0
from tests.test_admin_matrix import (
    around_the_clock,
    company_defaults,
    every_permission_of_the_app,
    grant,
)

URL = "/api/followup/notifications/"
MARK = URL + "mark-read/"
MISSING = 987654321


@dataclass
class World:
    users: dict[str, int] = field(default_factory=dict)

    def user(self, name: str) -> Any:
        return get_user_model().objects.get(pk=self.users[name])


def build() -> World:
    User = get_user_model()
    users = {name: User.objects.create_user(name, password="pw") for name in ("alex", "bea")}
    for rep in users.values():
        grant(rep, ("view_notification",))
    users["maria"] = User.objects.create_user("maria", password="pw")
    users["ops"] = User.objects.create_user("ops", password="pw")
    grant(users["ops"], every_permission_of_the_app())
    company_defaults(T0 - 100 * HOUR)
    for key, rep in (("emea", users["alex"]), ("apac", users["bea"])):
        team = Team.objects.create(
            key=key, name=key.upper(), manager=users["maria"], calendar=around_the_clock(key)
        )
        team.members.add(rep)
    leads = Lead.objects.bulk_create(
        [Lead(name=f"Acme {n}", owner=users["alex"], created_at=T0) for n in range(4)]
        + [Lead(name="Globex", owner=users["bea"], created_at=T0)]
    )
    sync_objects(leads, T0, confirm_owners=True)
    sweep.sweep(NOW)
    notifications.notify_alerts(NOW)
    return World(users={name: user.pk for name, user in users.items()})


@pytest.fixture(scope="module")
def world(django_db_setup: Any, django_db_blocker: Any) -> Iterator[World]:
    with django_db_blocker.unblock(), transaction.atomic():
        with time_machine.travel(NOW, tick=False):
            built = build()
        yield built
        transaction.set_rollback(True)


@pytest.fixture(autouse=True)
def frozen(world: World, db: Any) -> Iterator[None]:
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def as_(world: World, api: Callable[..., APIClient]) -> Callable[[str | None], APIClient]:
    return lambda name: api(world.user(name) if name else None)


def inbox_of(world: World, name: str) -> list[int]:
    """The keys of a user's inbox messages, oldest first."""
    mine = Notification.objects.filter(
        recipient_id=world.users[name], channel=NotificationChannel.INBOX
    )
    return list(mine.order_by("pk").values_list("pk", flat=True))


def unread(world: World, name: str) -> set[int]:
    return set(
        Notification.objects.filter(pk__in=inbox_of(world, name), read_at__isnull=True).values_list(
            "pk", flat=True
        )
    )


def read_state() -> list[tuple[int, Any]]:
    return list(Notification.objects.order_by("pk").values_list("pk", "read_at"))


def test_the_world_has_inbox_and_email_messages(world: World) -> None:
    assert len(inbox_of(world, "alex")) >= 4 and inbox_of(world, "bea")
    assert Notification.objects.exclude(channel=NotificationChannel.INBOX).exists()


def test_the_inbox_is_the_callers_own_whatever_they_may_see(world: World, as_: Any) -> None:
    for name in ("alex", "bea", "ops"):
        response = as_(name).get(URL)
        assert response.status_code == 200
        assert [row["id"] for row in response.json()["results"]] == inbox_of(world, name)[::-1]
    assert inbox_of(world, "ops") == []  # see-all lifts the scope, not the inbox
    assert as_(None).get(URL).status_code == 401


def test_a_message_reads_with_its_alert_and_opportunity(world: World, as_: Any) -> None:
    note = Notification.objects.select_related("alert").get(pk=inbox_of(world, "alex")[0])
    body = as_("alex").get(URL + f"{note.pk}/").json()
    assert (body["subject"], body["body"], body["kind"]) == (note.subject, note.body, "alert")
    assert (body["alert"], body["opportunity"]) == (note.alert_id, note.alert.opportunity_id)
    assert datetime.fromisoformat(body["created_at"]) == note.created_at
    assert body["read_at"] is None


def test_another_users_message_answers_like_a_missing_one(world: World, as_: Any) -> None:
    client = as_("alex")
    theirs = client.get(URL + f"{inbox_of(world, 'bea')[0]}/")
    missing = client.get(URL + f"{MISSING}/")
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json() == missing.json()
    # The see-all permission does not open other inboxes either.
    assert as_("ops").get(URL + f"{inbox_of(world, 'bea')[0]}/").status_code == 404


def test_unread_filters_the_inbox(world: World, as_: Any) -> None:
    first, *rest = inbox_of(world, "alex")
    notifications.mark_read([first], world.user("alex"), NOW)
    client = as_("alex")
    unread_ids = {row["id"] for row in client.get(URL + "?unread=true").json()["results"]}
    read_ids = [row["id"] for row in client.get(URL + "?unread=false").json()["results"]]
    assert (unread_ids, read_ids) == (set(rest), [first])
    assert client.get(URL + "?unread=perhaps").status_code == 400


def test_mark_read_marks_only_the_callers_messages_and_reports_the_rest(
    world: World, as_: Any
) -> None:
    mine = inbox_of(world, "alex")
    theirs = inbox_of(world, "bea")[0]
    client = as_("alex")
    asked = [mine[0], mine[1], theirs, MISSING, mine[0]]
    response = client.post(MARK, {"ids": asked}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json() == {"marked": 2, "already_read": [], "not_found": [theirs, MISSING]}
    assert unread(world, "alex") == set(mine[2:])
    assert theirs in unread(world, "bea")
    marked = Notification.objects.get(pk=mine[0])
    assert marked.read_at == NOW

    again = client.post(MARK, {"ids": [mine[0], mine[2]]}, format="json").json()
    assert again == {"marked": 1, "already_read": [mine[0]], "not_found": []}


def test_mark_all_read_leaves_other_inboxes_alone(world: World, as_: Any) -> None:
    others = unread(world, "bea")
    response = as_("alex").post(MARK, {"all": True}, format="json")
    assert response.json() == {
        "marked": len(inbox_of(world, "alex")),
        "already_read": [],
        "not_found": [],
    }
    assert unread(world, "alex") == set()
    assert unread(world, "bea") == others


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "non_field_errors"),
        ({"ids": [1], "all": True}, "non_field_errors"),
        ({"all": False}, "non_field_errors"),
        ({"ids": ["first"]}, "ids.0"),
        ({"ids": 5}, "ids"),
        ({"all": "please"}, "all"),
        ({"all": 1}, "all"),
        ({"ids": ["7"]}, "ids.0"),
        ({"ids": [1], "colour": "red"}, "colour"),
    ],
)
def test_bad_input_is_a_field_error_and_marks_nothing(
    world: World, as_: Any, payload: dict[str, Any], field: str
) -> None:
    before = read_state()
    response = as_("alex").post(MARK, payload, format="json")
    assert response.status_code == 400
    assert field in response.json()["fields"], response.json()
    assert read_state() == before


@override_settings(FOLLOWUP_VISIBILITY_API_MAX_BATCH=3)
def test_too_many_ids_is_413_and_marks_nothing(world: World, as_: Any) -> None:
    before = read_state()
    asked = inbox_of(world, "alex")
    response = as_("alex").post(MARK, {"ids": asked}, format="json")
    assert response.status_code == 413
    assert response.json() == {
        "status": 413,
        "code": "too_large",
        "detail": f"{len(asked)} ids: at most 3 in one request.",
    }
    assert read_state() == before


def test_marking_read_needs_the_view_permission_as_in_the_admin(world: World, as_: Any) -> None:
    before = read_state()
    refused = as_("maria").post(MARK, {"all": True}, format="json")
    assert refused.status_code == 403
    assert as_(None).post(MARK, {"all": True}, format="json").status_code == 401
    assert read_state() == before


def test_queries_are_constant_in_the_page_size_and_the_number_of_ids(
    world: World, as_: Any
) -> None:
    client = as_("alex")

    def count(call: Callable[[], Any]) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert call().status_code == 200
        return len(captured)

    assert count(lambda: client.get(URL + "?page_size=1")) == count(
        lambda: client.get(URL + "?page_size=20")
    )
    first, second, *rest = inbox_of(world, "alex")
    assert count(lambda: client.post(MARK, {"ids": [first]}, format="json")) == count(
        lambda: client.post(MARK, {"ids": [second, *rest]}, format="json")
    )
