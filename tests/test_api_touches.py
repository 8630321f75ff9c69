"""``touches/``: posting one touch or a batch (idempotent, scoped, validated as a whole) and
reading an opportunity's merged timeline.

The world: rep and other (reps of two teams, each owning a lead with a phone and an email),
manager (of rep's team), ops (sees everything), clerk (signed in, without ``add_touch``).
The clock is frozen at ``NOW``: the API reads it once per request.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.cache import cache
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext, override_settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from example_project.crm.models import Lead
from followup_visibility.engine.access import SEE_ALL_PERMISSION
from followup_visibility.models import Team, Touch, TrackedOpportunity
from tests.conftest import NOW, tracked

URL = "/api/followup/touches/"
HOUR = timedelta(hours=1)
MISSING = 987654321


@pytest.fixture(autouse=True)
def fresh_throttle() -> Iterator[None]:
    cache.clear()  # the ingestion throttle counts in the cache
    yield
    cache.clear()


def grant(user: Any, *codenames: str) -> Any:
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="followup_visibility", codename__in=codenames
        )
    )
    return user


@dataclass
class World:
    rep: Any
    other: Any
    manager: Any
    ops: Any
    clerk: Any
    mine: Lead
    theirs: Lead

    def opp(self, lead: Lead) -> TrackedOpportunity:
        return tracked(lead)


def build() -> World:
    User = get_user_model()
    rep, other, manager = (
        grant(User.objects.create_user(name), "add_touch") for name in ("rep", "other", "boss")
    )
    ops = grant(User.objects.create_user("ops"), "add_touch", SEE_ALL_PERMISSION.partition(".")[2])
    clerk = User.objects.create_user("clerk")
    east = Team.objects.create(key="east", name="East", manager=manager)
    east.members.add(rep)
    Team.objects.create(key="west", name="West")
    mine, theirs = (
        Lead.objects.create(name=name, owner=owner, team=team, phone=phone, email=email)
        for name, owner, team, phone, email in (
            ("Acme", rep, "east", "(212) 555-0142", "ann@example.com"),
            ("Globex", other, "west", "(415) 555-0100", "bob@example.com"),
        )
    )
    return World(rep, other, manager, ops, clerk, mine, theirs)


@pytest.fixture(scope="module")
def world(django_db_setup: Any, django_db_blocker: Any) -> Iterator[World]:
    """Built once for the module, in a transaction rolled back at its end; each test runs in
    a savepoint of its own."""
    with django_db_blocker.unblock(), transaction.atomic():
        with time_machine.travel(NOW - 3 * HOUR, tick=False):
            built = build()
        yield built
        transaction.set_rollback(True)


@pytest.fixture(autouse=True)
def frozen(world: World, db: Any) -> Iterator[None]:
    with time_machine.travel(NOW, tick=False):
        yield


def payload(**fields: Any) -> dict[str, Any]:
    body = {
        "channel": "phone",
        "direction": "outbound",
        "outcome": "connected",
        "occurred_at": (NOW - HOUR).isoformat(),
        "source": "telephony",
        "external_id": "call-1",
        "summary": "Demo booked",
    }
    body.update(fields)
    return {name: value for name, value in body.items() if value is not None}


def post(client: APIClient, body: Any) -> Any:
    return client.post(URL, json.dumps(body), content_type="application/json")


# One touch -----------------------------------------------------------------------------------


def test_a_new_touch_is_201_with_its_timeline_fields(world: World, api: Callable[..., Any]):
    opp = world.opp(world.mine)
    response = post(api(world.rep), payload(opportunity=opp.pk, metadata={"line": 3}))

    assert response.status_code == 201, response.json()
    body = response.json()
    touch = Touch.objects.get()
    assert body["id"] == touch.pk
    assert body["opportunity"] == opp.pk
    assert (body["channel"], body["direction"], body["outcome"]) == (
        "phone",
        "outbound",
        "connected",
    )
    assert datetime.fromisoformat(body["occurred_at"]) == NOW - HOUR
    assert datetime.fromisoformat(body["recorded_at"]) == NOW
    assert body["logging_lag_seconds"] == 3600.0
    assert body["is_meaningful"] is True
    assert body["meaningful_reason"] == touch.meaningful_reason
    assert body["actor"]["id"] == world.rep.pk  # the caller, by default
    assert body["metadata"] == {"line": 3}
    assert (touch.source, touch.external_id, touch.actor_id) == (
        "telephony",
        "call-1",
        world.rep.pk,
    )
    assert world.opp(world.mine).last_meaningful_touch_id == touch.pk  # refreshed


def test_source_defaults_to_api(world: World, api: Callable[..., Any]):
    body = payload(opportunity=world.opp(world.mine).pk, source=None, external_id=None)
    assert post(api(world.rep), body).status_code == 201
    assert Touch.objects.get().source == "api"


def test_a_repeat_is_200_and_a_differing_repeat_409(world: World, api: Callable[..., Any]):
    client = api(world.rep)
    body = payload(opportunity=world.opp(world.mine).pk)
    first = post(client, body)
    again = post(client, body)
    changed = post(
        client, {**body, "summary": "Other", "occurred_at": (NOW - 2 * HOUR).isoformat()}
    )

    assert (first.status_code, again.status_code, changed.status_code) == (201, 200, 409)
    assert again.json()["id"] == first.json()["id"]
    error = changed.json()
    assert (error["status"], error["code"]) == (409, "conflict")
    assert "occurred_at, summary" in error["detail"]
    assert str(first.json()["id"]) in error["detail"]
    touch = Touch.objects.get()
    assert (touch.summary, touch.occurred_at) == ("Demo booked", NOW - HOUR)  # unchanged


def test_a_repeat_of_a_touch_outside_the_scope_shows_nothing_of_it(
    world: World, api: Callable[..., Any]
):
    stored = post(api(world.ops), payload(opportunity=world.opp(world.theirs).pk))
    assert stored.status_code == 201
    client = api(world.rep)
    mine = world.opp(world.mine).pk

    single = post(client, payload(opportunity=mine))  # the same source and external id
    batch = post(
        client,
        {"touches": [payload(opportunity=mine), payload(opportunity=mine, external_id="c2")]},
    )

    assert single.status_code == 409
    assert single.json()["detail"] == (
        "A touch with source 'telephony' and external id 'call-1' is stored on an opportunity "
        "outside your scope: it is not recorded again."
    )
    assert batch.status_code == 201
    assert batch.json()["results"][0] == {
        "index": 0,
        "status": "conflict",
        "id": None,
        "opportunity": None,
        "differs": ["opportunity"],
    }
    assert (batch.json()["created"], batch.json()["conflicts"]) == (1, 1)
    assert Touch.objects.filter(opportunity_id=mine).count() == 1


def test_token_authentication(world: World):
    token = Token.objects.create(user=world.rep)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert post(client, payload(opportunity=world.opp(world.mine).pk)).status_code == 201


# Refused: nothing written ----------------------------------------------------------------------


def test_anonymous_is_401(world: World, api: Callable[..., Any]):
    response = post(api(), payload(opportunity=world.opp(world.mine).pk))
    assert response.status_code == 401
    assert response.json()["status"] == 401
    assert not Touch.objects.exists()


def test_without_add_touch_is_403(world: World, api: Callable[..., Any]):
    response = post(api(world.clerk), payload(opportunity=world.opp(world.mine).pk))
    assert response.status_code == 403
    assert not Touch.objects.exists()


def test_an_opportunity_out_of_scope_fails_like_a_missing_one(
    world: World, api: Callable[..., Any]
):
    client = api(world.rep)
    theirs = world.opp(world.theirs).pk
    missing = post(client, payload(opportunity=MISSING))
    hidden = post(client, payload(opportunity=theirs))

    assert missing.status_code == hidden.status_code == 400
    assert hidden.content.decode() == missing.content.decode().replace(str(MISSING), str(theirs))
    assert list(hidden.json()["fields"]) == ["opportunity"]
    assert not Touch.objects.exists()
    # Their manager's scope does not reach the other team either; ops' does.
    assert post(api(world.manager), payload(opportunity=theirs)).status_code == 400
    assert post(api(world.ops), payload(opportunity=theirs)).status_code == 201


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"colour": "blue"}, "colour"),
        ({"occurred_at": "2026-03-10T14:00:00"}, "occurred_at"),
        ({"occurred_at": "yesterday"}, "occurred_at"),
        ({"recorded_at": "2026-03-10T14:30:00"}, "recorded_at"),
        ({"channel": "pigeon"}, "channel"),
        ({"outcome": "maybe"}, "outcome"),
        ({"metadata": ["not", "an", "object"]}, "metadata"),
        ({"opportunity": "first"}, "opportunity"),
        ({"occurred_at": (NOW + 2 * HOUR).isoformat()}, "occurred_at"),  # the future
        ({"object": {"model": "crm.lead", "pk": "1"}}, "object"),  # and an opportunity
    ],
)
def test_bad_input_is_400_naming_the_field(
    world: World, api: Callable[..., Any], change: dict[str, Any], field: str
):
    body = {**payload(opportunity=world.opp(world.mine).pk), **change}
    response = post(api(world.rep), body)

    assert response.status_code == 400, response.json()
    error = response.json()
    assert (error["status"], error["code"]) == (400, "invalid")
    assert list(error["fields"]) == [field]
    assert not Touch.objects.exists()


def test_json_values_of_another_type_are_refused(world: World, api: Callable[..., Any]):
    """An id as text or as a float, text as a number: 400 on the field, never converted (a
    number ``external_id`` would be stored as text, and match its repeats by accident)."""
    opp, rep = world.opp(world.mine).pk, world.rep.pk
    cases = [
        ({"opportunity": str(opp)}, "opportunity"),
        ({"opportunity": float(opp)}, "opportunity"),
        ({"actor": str(rep)}, "actor"),
        ({"summary": 42}, "summary"),
        ({"external_id": 123}, "external_id"),
        ({"source": 7}, "source"),
        ({"phone": 2125550142}, "phone"),
        ({"opportunity": None, "object": {"model": "crm.lead", "pk": world.mine.pk}}, "object.pk"),
    ]
    client = api(world.manager)
    for change, field in cases:
        body = {k: v for k, v in {**payload(opportunity=opp), **change}.items() if v is not None}
        response = post(client, body)
        assert response.status_code == 400, (change, response.json())
        assert list(response.json()["fields"]) == [field], change
        batch = post(client, {"touches": [payload(opportunity=opp, external_id="ok"), body]})
        assert list(batch.json()["fields"]) == [f"touches.1.{field}"], change
    assert not Touch.objects.exists()
    taken = post(client, payload(opportunity=opp, actor=rep, external_id="123"))
    assert taken.status_code == 201, taken.json()


def test_a_touch_without_a_target_is_400(world: World, api: Callable[..., Any]):
    response = post(api(world.rep), payload())
    assert response.status_code == 400
    assert list(response.json()["fields"]) == ["target"]


@pytest.mark.parametrize("raw", ["{not json", "[]", '"a string"'])
def test_a_body_that_is_not_one_object_is_400(world: World, api: Callable[..., Any], raw: str):
    response = api(world.rep).post(URL, raw, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["status"] == 400
    assert not Touch.objects.exists()


# Batches -------------------------------------------------------------------------------------


def test_a_batch_reports_each_item(world: World, api: Callable[..., Any]):
    client = api(world.ops)
    mine, theirs = world.opp(world.mine).pk, world.opp(world.theirs).pk
    items = [
        payload(opportunity=mine, external_id="c1"),
        payload(opportunity=theirs, external_id="c2", direction="inbound"),
        payload(opportunity=mine, external_id="c1"),  # a repeat within the batch
    ]
    first = post(client, {"touches": items})

    assert first.status_code == 201, first.json()
    body = first.json()
    assert (body["created"], body["repeats"], body["conflicts"]) == (2, 1, 0)
    results = body["results"]
    assert [r["index"] for r in results] == [0, 1, 2]
    assert [r["status"] for r in results] == ["created", "created", "repeat"]
    assert [r["opportunity"] for r in results] == [mine, theirs, mine]
    assert results[2]["id"] == results[0]["id"]
    assert Touch.objects.count() == 2

    items[1]["summary"] = "Changed"
    second = post(client, {"touches": items})
    assert second.status_code == 200  # nothing created
    assert [r["status"] for r in second.json()["results"]] == ["repeat", "conflict", "repeat"]
    assert second.json()["results"][1]["differs"] == ["summary"]
    assert Touch.objects.count() == 2


def test_a_batch_with_one_bad_item_writes_nothing(world: World, api: Callable[..., Any]):
    opp = world.opp(world.mine).pk
    items = [payload(opportunity=opp, external_id=f"c{i}") for i in range(5)]
    items[3]["occurred_at"] = "2026-03-10T14:00:00"  # naive
    items[1]["channel"] = "pigeon"
    before = Touch.objects.count()

    response = post(api(world.rep), {"touches": items})

    assert response.status_code == 400
    assert sorted(response.json()["fields"]) == ["touches.1.channel", "touches.3.occurred_at"]
    assert Touch.objects.count() == before == 0


def test_a_batch_with_one_item_out_of_scope_writes_nothing(world: World, api: Callable[..., Any]):
    items = [
        payload(opportunity=world.opp(world.mine).pk, external_id="c1"),
        payload(opportunity=world.opp(world.theirs).pk, external_id="c2"),
    ]
    response = post(api(world.rep), {"touches": items})

    assert response.status_code == 400
    assert list(response.json()["fields"]) == ["touches.1.opportunity"]
    assert not Touch.objects.exists()


def test_a_batch_failing_in_record_touches_names_the_item(world: World, api: Callable[..., Any]):
    items = [
        payload(phone="(212) 555-0142", external_id="c1"),
        payload(email="nobody@example.com", external_id="c2"),  # matches nothing
    ]
    response = post(api(world.ops), {"touches": items})

    assert response.status_code == 400
    assert list(response.json()["fields"]) == ["touches.1.email"]
    assert not Touch.objects.exists()


@override_settings(FOLLOWUP_VISIBILITY_API_MAX_BATCH=2)
def test_a_batch_over_the_limit_is_413_before_its_items_are_read(
    world: World, api: Callable[..., Any]
):
    response = post(api(world.rep), {"touches": [1, "not even a touch", None]})

    assert response.status_code == 413
    assert response.json()["code"] == "too_large"
    assert not Touch.objects.exists()


@override_settings(FOLLOWUP_VISIBILITY_API_INGEST_RATE="2/min")
def test_ingestion_is_throttled(world: World, api: Callable[..., Any]):
    client = api(world.rep)
    opp = world.opp(world.mine).pk
    codes = [
        post(client, payload(opportunity=opp, external_id=f"c{i}")).status_code for i in range(3)
    ]

    assert codes == [201, 201, 429]
    assert Touch.objects.count() == 2
    # Reading the timeline is not ingestion.
    assert client.get(URL, {"opportunity": opp}).status_code == 200


# Targets: host objects, contacts; actors ---------------------------------------------------------


def test_a_touch_on_a_host_object(world: World, api: Callable[..., Any], make_deal):
    deal = make_deal(owner=world.rep, team="east")  # a UUID key
    by_lead = post(api(world.rep), payload(object={"model": "crm.lead", "pk": str(world.mine.pk)}))
    by_deal = post(
        api(world.rep), payload(external_id="c2", object={"model": "crm.deal", "pk": str(deal.pk)})
    )

    assert (by_lead.status_code, by_deal.status_code) == (201, 201)
    assert by_lead.json()["opportunity"] == world.opp(world.mine).pk
    assert by_deal.json()["opportunity"] == tracked(deal).pk


@pytest.mark.parametrize(
    ("target", "field"),
    [
        ({"model": "crm.lead", "pk": "theirs"}, "object.pk"),  # out of scope
        ({"model": "crm.lead", "pk": str(MISSING)}, "object.pk"),
        ({"model": "crm.lead", "pk": "twelve"}, "object.pk"),
        ({"model": "crm.deal", "pk": "not-a-uuid"}, "object.pk"),
        ({"model": "auth.user", "pk": "1"}, "object.model"),
        ({"model": "nonsense", "pk": "1"}, "object.model"),
        ({"model": "crm.lead", "pk": "1", "extra": 1}, "object.extra"),
    ],
)
def test_a_host_object_that_cannot_be_used_is_400(
    world: World, api: Callable[..., Any], target: dict[str, Any], field: str
):
    if target["pk"] == "theirs":
        target = {**target, "pk": str(world.theirs.pk)}
    response = post(api(world.rep), payload(object=target))

    assert response.status_code == 400, response.json()
    assert list(response.json()["fields"]) == [field]
    assert not Touch.objects.exists()


def test_an_untracked_host_object_is_tracked_for_its_owner_or_one_who_sees_everything(
    world: World, api: Callable[..., Any]
):
    # bulk_create sends no signal: the lead is not tracked yet.
    (lead,) = Lead.objects.bulk_create([Lead(name="Silent", owner=world.other, created_at=NOW)])
    target = {"model": "crm.lead", "pk": str(lead.pk)}

    refused = post(api(world.rep), payload(object=target))
    assert refused.status_code == 400
    assert not TrackedOpportunity.objects.for_object(lead).exists()

    done = post(api(world.ops), payload(object=target))
    assert done.status_code == 201, done.json()
    assert done.json()["opportunity"] == tracked(lead).pk

    # The rep the host names as its owner may too.
    (own,) = Lead.objects.bulk_create([Lead(name="Quiet", owner=world.rep, created_at=NOW)])
    owned = post(
        api(world.rep),
        payload(external_id="c2", object={"model": "crm.lead", "pk": str(own.pk)}),
    )
    assert owned.status_code == 201, owned.json()
    assert owned.json()["opportunity"] == tracked(own).pk


def test_matching_by_phone_and_email_stays_in_scope(world: World, api: Callable[..., Any]):
    client = api(world.rep)
    by_phone = post(client, payload(phone="+1 212 555 0142", external_id="p"))
    by_email = post(client, payload(email="ANN@example.com", external_id="e", channel="email"))
    theirs = post(client, payload(phone="415-555-0100", external_id="t"))

    assert (by_phone.status_code, by_email.status_code) == (201, 201)
    assert (
        by_phone.json()["opportunity"] == by_email.json()["opportunity"] == world.opp(world.mine).pk
    )
    assert by_phone.json()["contact"] == "+1 212 555 0142"
    # Another team's customer: as if nothing matched (ops may).
    assert theirs.status_code == 400
    assert theirs.json()["fields"] == {
        "phone": ["No open opportunity matches this phone or email."]
    }
    assert Touch.objects.count() == 2
    done = post(api(world.ops), payload(phone="415-555-0100", external_id="t"))
    assert done.json()["opportunity"] == world.opp(world.theirs).pk


def test_the_actor_is_the_caller_or_someone_they_manage(world: World, api: Callable[..., Any]):
    opp = world.opp(world.mine).pk
    by_manager = post(api(world.manager), payload(opportunity=opp, actor=world.rep.pk))
    by_ops = post(api(world.ops), payload(opportunity=opp, external_id="c2", actor=world.other.pk))
    nobody = post(api(world.rep), {**payload(opportunity=opp, external_id="c3"), "actor": None})
    refused = post(
        api(world.rep), payload(opportunity=opp, external_id="c4", actor=world.manager.pk)
    )
    missing = post(api(world.rep), payload(opportunity=opp, external_id="c4", actor=MISSING))

    assert [r.status_code for r in (by_manager, by_ops, nobody)] == [201, 201, 201]
    assert by_manager.json()["actor"]["id"] == world.rep.pk
    assert by_ops.json()["actor"]["id"] == world.other.pk
    assert nobody.json()["actor"] is None
    assert refused.status_code == missing.status_code == 400
    assert list(refused.json()["fields"]) == ["actor"]
    assert not Touch.objects.filter(external_id="c4").exists()


# The timeline --------------------------------------------------------------------------------


def test_the_timeline_of_a_lead_and_its_deal(world: World, api: Callable[..., Any], make_deal):
    deal = make_deal(lead=world.mine, owner=world.rep, team="east")
    lead_opp, deal_opp = world.opp(world.mine), tracked(deal)
    client = api(world.rep)
    items = [
        payload(opportunity=deal_opp.pk, external_id="d1", occurred_at=(NOW - HOUR).isoformat()),
        payload(
            opportunity=lead_opp.pk,
            external_id="l1",
            direction="inbound",
            outcome="received",
            channel="email",
            occurred_at=(NOW - 3 * HOUR).isoformat(),
            recorded_at=(NOW - 2 * HOUR).isoformat(),
        ),
    ]
    assert post(client, {"touches": items}).status_code == 201

    for url, query in (
        (URL, {"opportunity": deal_opp.pk}),
        (URL, {"opportunity": lead_opp.pk}),
        (f"/api/followup/opportunities/{deal_opp.pk}/timeline/", {}),
    ):
        response = client.get(url, query)
        assert response.status_code == 200, response.json()
        touches = response.json()["results"]
        assert [t["external_id"] for t in touches] == ["l1", "d1"]  # oldest first
        assert [t["opportunity"] for t in touches] == [lead_opp.pk, deal_opp.pk]
        assert touches[0]["logging_lag_seconds"] == 3600.0
        assert {"is_meaningful", "meaningful_reason", "actor", "summary"} <= set(touches[0])

    paged = client.get(URL, {"opportunity": deal_opp.pk, "page_size": 1}).json()
    assert [t["external_id"] for t in paged["results"]] == ["l1"]
    after = client.get(paged["next"]).json()
    assert [t["external_id"] for t in after["results"]] == ["d1"]


def test_the_timeline_out_of_scope_is_404_like_a_missing_one(world: World, api: Callable[..., Any]):
    client = api(world.rep)
    hidden = client.get(URL, {"opportunity": world.opp(world.theirs).pk})
    missing = client.get(URL, {"opportunity": MISSING})

    assert hidden.status_code == missing.status_code == 404
    assert hidden.content == missing.content
    assert client.get(URL).status_code == 400  # which opportunity?
    assert api().get(URL, {"opportunity": world.opp(world.mine).pk}).status_code == 401


def test_the_timeline_costs_the_same_queries_whatever_the_page_size(
    world: World, api: Callable[..., Any]
):
    opp = world.opp(world.mine).pk
    items = [
        payload(opportunity=opp, external_id=f"c{i}", occurred_at=(NOW - i * HOUR).isoformat())
        for i in range(1, 25)
    ]
    client = api(world.rep)
    assert post(client, {"touches": items}).status_code == 201

    def count(page_size: int) -> int:
        with CaptureQueriesContext(connection) as queries:
            response = client.get(URL, {"opportunity": opp, "page_size": page_size})
        assert len(response.json()["results"]) == page_size
        return len(queries)

    assert count(1) == count(20)
