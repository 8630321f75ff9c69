"""``opportunities/``: the scoped list and its filters, the detail (state, deadlines, active
alerts, register standing), the history, merges and next actions.

The world, built once per module: East (manager boss; rep owns Acme and Acme again, a
duplicate sharing its phone) and West (manager westy; other owns Globex); ops sees
everything. Alerts come from real deadlines through the sweep, on a 24/7 calendar.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from example_project.crm.models import Lead
from followup_visibility.alerting import sweep
from followup_visibility.choices import ACTIVE_ALERT_STATUSES, Channel, Direction, Status
from followup_visibility.engine.access import SEE_ALL_PERMISSION
from followup_visibility.ingest import stalls
from followup_visibility.ingest.crm import sync_objects
from followup_visibility.ingest.next_actions import schedule_next_action
from followup_visibility.ingest.touches import record_touch
from followup_visibility.models import (
    Alert,
    Deadline,
    Segment,
    SegmentRule,
    Team,
    Touch,
    TrackedOpportunity,
)
from tests import factories_sla
from tests.conftest import tracked
from tests.test_admin_alerts import DURATIONS, HOUR, NOW, T0

URL = "/api/followup/opportunities/"
MISSING = 987654321
CHANGE = "change_trackedopportunity"


@dataclass
class World:
    rep: Any
    other: Any
    manager: Any
    west_manager: Any
    ops: Any
    east: Team
    acme: int
    again: int
    globex: int


def grant(user: Any, *codenames: str) -> Any:
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="followup_visibility", codename__in=codenames
        )
    )
    return user


def build() -> World:
    factories_sla.around_the_clock(DURATIONS, since=T0 - 100 * HOUR)
    User = get_user_model()
    rep, other = (User.objects.create_user(name) for name in ("rep", "other"))
    manager, west_manager = (grant(User.objects.create_user(n), CHANGE) for n in ("boss", "westy"))
    ops = grant(User.objects.create_user("ops"), CHANGE, SEE_ALL_PERMISSION.partition(".")[2])
    east = Team.objects.create(key="east", name="East", manager=manager)
    east.members.add(rep)
    Team.objects.create(key="west", name="West", manager=west_manager)
    pricing = Segment.objects.create(code="pricing", name="Pricing request")
    SegmentRule.objects.create(segment=pricing, hint_field="source", hint_value="pricing")
    leads = Lead.objects.bulk_create(
        [
            Lead(name="Acme", owner=rep, team="east", phone="(212) 555-0142", created_at=T0),
            Lead(
                name="Acme again",
                owner=rep,
                team="east",
                phone="212.555.0142",
                source="pricing",
                created_at=T0 + HOUR,
            ),
            Lead(name="Globex", owner=other, team="west", created_at=T0),
        ]
    )
    sync_objects(leads, T0 + HOUR, confirm_owners=True)
    sweep.sweep(NOW)
    acme, again, globex = (tracked(lead).pk for lead in leads)
    return World(rep, other, manager, west_manager, ops, east, acme, again, globex)


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


def post(client: Any, url: str, body: Any) -> Any:
    return client.post(url, json.dumps(body), content_type="application/json")


def ids(response: Any) -> set[int]:
    assert response.status_code == 200, response.json()
    return {row["id"] for row in response.json()["results"]}


def at(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


# The list ------------------------------------------------------------------------------------


def test_the_list_is_scoped(world: World, api: Callable[..., Any]):
    assert ids(api(world.rep).get(URL)) == {world.acme, world.again}
    assert ids(api(world.manager).get(URL)) == {world.acme, world.again}
    assert ids(api(world.west_manager).get(URL)) == {world.globex}
    assert ids(api(world.ops).get(URL)) == {world.acme, world.again, world.globex}
    assert api().get(URL).status_code == 401


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"status": "open"}, {"acme", "again", "globex"}),
        ({"status": "won"}, set()),
        ({"owner": "rep"}, {"acme", "again"}),
        ({"team": "east"}, {"acme", "again"}),
        ({"segment": "pricing"}, {"again"}),
        ({"stage": "new"}, {"acme", "again", "globex"}),
        ({"stage": "working"}, set()),
    ],
)
def test_the_list_filters(
    world: World, api: Callable[..., Any], query: dict[str, str], expected: set[str]
):
    values = {"rep": world.rep.pk, "east": world.east.pk}
    query = {name: values.get(value, value) for name, value in query.items()}
    found = ids(api(world.ops).get(URL, query))
    assert found == {getattr(world, name) for name in expected}


@pytest.mark.parametrize(
    ("query", "field"), [({"status": "pending"}, "status"), ({"team": MISSING}, "team")]
)
def test_a_bad_filter_is_400(
    world: World, api: Callable[..., Any], query: dict[str, Any], field: str
):
    response = api(world.ops).get(URL, query)
    assert response.status_code == 400
    assert list(response.json()["fields"]) == [field]


def test_the_list_costs_the_same_queries_whatever_the_page_size(
    world: World, api: Callable[..., Any]
):
    leads = Lead.objects.bulk_create(
        Lead(name=f"Lead {i}", owner=world.rep, team="east", created_at=T0) for i in range(20)
    )
    sync_objects(leads, NOW)
    client = api(world.manager)

    def count(page_size: int) -> int:
        with CaptureQueriesContext(connection) as queries:
            response = client.get(URL, {"page_size": page_size})
        assert len(response.json()["results"]) == page_size
        return len(queries)

    assert count(1) == count(20)


# The detail ----------------------------------------------------------------------------------


def test_the_detail_shows_state_deadlines_alerts_and_standing(
    world: World, api: Callable[..., Any]
):
    response = api(world.rep).get(f"{URL}{world.acme}/")

    assert response.status_code == 200, response.json()
    body = response.json()
    opp = TrackedOpportunity.objects.get(pk=world.acme)
    assert body["id"] == world.acme
    assert body["title"] == "Acme"
    assert body["host"] == {"model": "crm.lead", "pk": opp.object_pk}
    assert body["owner"]["id"] == world.rep.pk
    assert body["owner_confirmed"] is True
    assert (body["stage"], body["status"]) == ("new", "open")
    assert body["team"]["name"] == "East"
    assert at(body["arrived_at"]) == T0
    assert body["next_action_due_at"] is None
    assert body["last_meaningful_touch_at"] is None
    deadlines = Deadline.objects.filter(opportunity=opp)
    assert {(d["signal"], at(d["due_at"])) for d in body["deadlines"]} == {
        (d.signal, d.due_at) for d in deadlines
    }
    assert body["deadlines"]
    alerts = Alert.objects.filter(opportunity=opp, status__in=ACTIVE_ALERT_STATUSES)
    assert alerts.exists()
    assert {a["id"] for a in body["alerts"]} == set(alerts.values_list("pk", flat=True))
    assert all(a["severity"] in {"low", "medium", "high", "critical"} for a in body["alerts"])
    assert body["standing"] == {
        "listed": True,
        "state": "listed",
        "detail": "Unfollowed: a signal holds an open alert.",
        "until": None,
    }


def test_the_detail_says_why_a_stalled_opportunity_is_not_listed(
    world: World, api: Callable[..., Any]
):
    opp = TrackedOpportunity.objects.get(pk=world.acme)
    stalls.set_stalled(opp, until=NOW + 48 * HOUR, reason="Budget round", by=world.manager, now=NOW)

    body = api(world.rep).get(f"{URL}{world.acme}/").json()

    assert (body["standing"]["listed"], body["standing"]["state"]) == (False, "stalled")
    assert at(body["standing"]["until"]) == at(body["stalled_until"]) == NOW + 48 * HOUR
    assert body["stalled_reason"] == "Budget round"


def test_the_detail_out_of_scope_is_404_like_a_missing_one(world: World, api: Callable[..., Any]):
    client = api(world.rep)
    hidden, missing = client.get(f"{URL}{world.globex}/"), client.get(f"{URL}{MISSING}/")
    assert hidden.status_code == missing.status_code == 404
    assert hidden.content == missing.content
    assert client.get(f"{URL}{world.globex}/history/").status_code == 404
    assert client.get(f"{URL}{world.globex}/timeline/").status_code == 404


# Next action and history -----------------------------------------------------------------------


def test_a_next_action_is_scheduled_and_recorded_in_the_history(
    world: World, api: Callable[..., Any]
):
    url = f"{URL}{world.acme}/"
    due = NOW + 24 * HOUR
    token = Token.objects.create(user=world.manager)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    response = post(client, url + "next-action/", {"due_at": due.isoformat(), "note": "Call back"})

    assert response.status_code == 200, response.json()
    assert at(response.json()["next_action_due_at"]) == due
    assert response.json()["next_action_note"] == "Call back"
    assert TrackedOpportunity.objects.get(pk=world.acme).next_action_due_at == due

    history = api(world.rep).get(url + "history/")
    assert history.status_code == 200
    newest, *older = history.json()["results"]
    assert older  # the record tracking it began with
    assert newest["type"] == "changed"
    assert newest["by"]["id"] == world.manager.pk
    changes = {c["field"]: c for c in newest["changes"]}
    assert changes["next_action_due_at"]["old"] is None
    assert at(changes["next_action_due_at"]["new"]) == due
    assert changes["next_action_note"]["new"] == "Call back"
    assert older[-1]["type"] == "created"
    assert older[-1]["changes"] == []


@pytest.mark.parametrize(
    ("who", "body", "code"),
    [
        ("rep", {"due_at": "2026-03-05T10:00:00+00:00"}, 403),  # no change permission
        ("west_manager", {"due_at": "2026-03-05T10:00:00+00:00"}, 404),  # another team's
        ("manager", {"due_at": "2026-03-01T10:00:00+00:00"}, 400),  # the past
        ("manager", {"due_at": "2026-03-05T10:00:00"}, 400),  # naive
        ("manager", {"due_at": "2026-03-05T10:00:00+00:00", "by": "me"}, 400),
        ("manager", {"due_at": "2026-03-05T10:00:00+00:00", "note": 42}, 400),  # not text
    ],
)
def test_a_refused_next_action_writes_nothing(
    world: World, api: Callable[..., Any], who: str, body: dict[str, Any], code: int
):
    before = TrackedOpportunity.history.filter(id=world.acme).count()
    response = post(api(getattr(world, who)), f"{URL}{world.acme}/next-action/", body)

    assert response.status_code == code, response.json()
    assert TrackedOpportunity.objects.get(pk=world.acme).next_action_due_at is None
    assert TrackedOpportunity.history.filter(id=world.acme).count() == before


def test_the_history_costs_the_same_queries_whatever_the_page_size(
    world: World, api: Callable[..., Any]
):
    opp = TrackedOpportunity.objects.get(pk=world.acme)
    for day in range(1, 7):
        schedule_next_action(opp, NOW + day * 24 * HOUR, now=NOW)
    client = api(world.rep)

    def count(page_size: int) -> int:
        with CaptureQueriesContext(connection) as queries:
            response = client.get(f"{URL}{world.acme}/history/", {"page_size": page_size})
        assert len(response.json()["results"]) == page_size
        return len(queries)

    assert count(1) == count(5)
    # Each record's changes are against the record before it, across pages too.
    first = client.get(f"{URL}{world.acme}/history/", {"page_size": 1}).json()
    second = client.get(first["next"]).json()["results"][0]
    assert at(second["changes"][0]["new"]) == NOW + 5 * 24 * HOUR
    assert at(second["changes"][0]["old"]) == NOW + 4 * 24 * HOUR


# Merges --------------------------------------------------------------------------------------


def test_a_merge_folds_the_duplicate_into_the_opportunity(world: World, api: Callable[..., Any]):
    duplicate = TrackedOpportunity.objects.get(pk=world.again)
    record_touch(
        duplicate,
        channel=Channel.EMAIL,
        direction=Direction.INBOUND,
        occurred_at=NOW - HOUR,
        now=NOW,
        source="mailbox",
        external_id="m1",
    )
    client = api(world.manager)
    url = f"{URL}{world.acme}/"

    response = post(client, url + "merge/", {"duplicate": world.again, "reason": "Same customer"})

    assert response.status_code == 200, response.json()
    assert response.json()["id"] == world.acme
    duplicate.refresh_from_db()
    assert (duplicate.status, duplicate.merged_into_id) == (Status.MERGED, world.acme)
    assert Touch.objects.get(external_id="m1").opportunity_id == world.acme
    timeline = client.get(url + "timeline/").json()["results"]
    assert [t["external_id"] for t in timeline] == ["m1"]
    merged = client.get(f"{URL}{world.again}/").json()
    assert merged["merged_into"] == world.acme
    assert merged["standing"]["state"] == "closed"
    record = client.get(f"{URL}{world.again}/history/").json()["results"][0]
    assert (record["by"]["id"], record["reason"]) == (world.manager.pk, "Same customer")
    assert {"status", "merged_into"} <= {c["field"] for c in record["changes"]}


@pytest.mark.parametrize(
    ("who", "survivor", "duplicate", "code"),
    [
        ("rep", "acme", "again", 403),  # no change permission
        ("west_manager", "acme", "again", 404),  # neither is theirs
        ("manager", "acme", "globex", 404),  # the duplicate is another team's
        ("manager", "globex", "again", 404),  # the survivor is
        ("manager", "acme", "missing", 404),
        ("manager", "acme", "acme", 400),  # into itself
        ("manager", "acme", None, 400),  # which?
        ("manager", "acme", "again as text", 400),  # an id is a number, not "13"
        ("manager", "acme", "again as a float", 400),
    ],
)
def test_a_refused_merge_writes_nothing(
    world: World,
    api: Callable[..., Any],
    who: str,
    survivor: str,
    duplicate: str | None,
    code: int,
):
    keys = {"acme": world.acme, "again": world.again, "globex": world.globex, "missing": MISSING}
    keys.update({"again as text": str(world.again), "again as a float": float(world.again)})
    body = {} if duplicate is None else {"duplicate": keys[duplicate]}
    before = {o.pk: (o.status, o.merged_into_id) for o in TrackedOpportunity.objects.all()}

    response = post(api(getattr(world, who)), f"{URL}{keys[survivor]}/merge/", body)

    assert response.status_code == code, response.json()
    assert {o.pk: (o.status, o.merged_into_id) for o in TrackedOpportunity.objects.all()} == before
