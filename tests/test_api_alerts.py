"""``alerts/``: the queue (scope, filters, ordering, pages), the actions and bulk actions.

The world: EMEA-style teams East (manager maria, rep alex) with North below it (rep nils)
and West (manager olga, rep bea); one lead each for alex, bea and nils, and an unowned lead
filed under East. A 24/7 calendar, so business time is elapsed time. At ``NOW`` every lead
has a high ``no_first_response`` and a low ``never_contacted`` alert; the unowned one also
a critical ``no_owner``. Every request runs with the clock frozen at ``NOW``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from example_project.crm.models import Lead
from followup_visibility.adapters import OpportunityAdapter
from followup_visibility.alerting import lifecycle, sweep
from followup_visibility.api import reference
from followup_visibility.choices import AlertSignal, AlertStatus
from followup_visibility.engine.access import SEE_ALL_PERMISSION
from followup_visibility.ingest import ownership, segments
from followup_visibility.ingest.crm import sync_objects
from followup_visibility.models import (
    Alert,
    Deadline,
    Handoff,
    Segment,
    Suppression,
    Team,
    TrackedOpportunity,
)
from tests import factories_sla
from tests.conftest import tracked

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday
HOUR = timedelta(hours=1)
NOW = T0 + 9 * HOUR
DURATIONS = {
    "first_response": 4 * HOUR,  # 5 h late on a 4 h SLA: high
    "never_contacted": 8 * HOUR,  # 1 h late on 8 h: low
    "reply": 2 * HOUR,
    "call_retry": 2 * HOUR,
    "next_action_grace": timedelta(0),
    "no_next_action": 100 * HOUR,
    "stale": 100 * HOUR,
    "owner_assignment": 2 * HOUR,  # 7 h late on 2 h: critical
    "handoff_acceptance": 100 * HOUR,
}
NFR, NC, NO_OWNER = (
    AlertSignal.NO_FIRST_RESPONSE,
    AlertSignal.NEVER_CONTACTED,
    AlertSignal.NO_OWNER,
)
TRIAGE = ("view_alert", "change_alert")
MANAGING = (*TRIAGE, "change_trackedopportunity", "add_suppression")
MISSING = 987654321


@dataclass
class World:
    users: dict[str, Any]
    leads: dict[str, Lead]
    east: Team
    north: Team
    west: Team

    def opp(self, name: str) -> TrackedOpportunity:
        return tracked(self.leads[name])

    def alert(self, name: str, signal: str) -> Alert:
        return Alert.objects.get(opportunity=self.opp(name), signal=signal)


def grant(user: Any, *codenames: str) -> Any:
    found = Permission.objects.filter(
        content_type__app_label="followup_visibility", codename__in=codenames
    )
    assert found.count() == len(codenames)
    user.user_permissions.set(found)
    return user


def build() -> World:
    factories_sla.around_the_clock(DURATIONS, since=T0 - 100 * HOUR)
    User = get_user_model()
    users = {
        name: User.objects.create_user(name, password="pw", first_name=name.title())
        for name in ("alex", "bea", "nils", "maria", "olga", "ops")
    }
    grant(users["alex"], *TRIAGE)
    grant(users["bea"], *TRIAGE)
    grant(users["maria"], *MANAGING)
    grant(users["olga"], *MANAGING)
    grant(users["ops"], *MANAGING, SEE_ALL_PERMISSION.split(".")[1])
    east = Team.objects.create(key="east", name="East", manager=users["maria"])
    north = Team.objects.create(key="north", name="North", parent=east)
    west = Team.objects.create(key="west", name="West", manager=users["olga"])
    east.members.add(users["alex"])
    north.members.add(users["nils"])
    west.members.add(users["bea"])
    leads = dict(
        zip(
            "abcu",
            Lead.objects.bulk_create(
                [
                    Lead(name="Acme", owner=users["alex"], team="east", created_at=T0),
                    Lead(name="Bolt", owner=users["bea"], team="west", created_at=T0),
                    Lead(name="Core", owner=users["nils"], team="north", created_at=T0),
                    Lead(name="Unowned", team="east", created_at=T0),
                ]
            ),
            strict=True,
        )
    )
    sync_objects(list(leads.values()), T0, confirm_owners=True)
    vip = Segment.objects.create(code="vip", name="VIP")
    segments.set_segment(tracked(leads["a"]), vip, T0)
    sweep.sweep(NOW)
    return World(users, leads, east, north, west)


@pytest.fixture(scope="module")
def world(django_db_setup: Any, django_db_blocker: Any) -> Iterator[World]:
    """Built once, in a transaction rolled back at the end; each test runs in a savepoint.

    Severity thresholds of its own, so that calibrating the defaults moves nothing here.
    """
    thresholds = override_settings(FOLLOWUP_VISIBILITY_SEVERITY_THRESHOLDS=(0.25, 1.0, 3.0))
    with thresholds, django_db_blocker.unblock(), transaction.atomic():
        with time_machine.travel(NOW, tick=False):
            built = build()
        yield built
        transaction.set_rollback(True)


@pytest.fixture(autouse=True)
def frozen(world: World, db: Any) -> Iterator[None]:
    with time_machine.travel(NOW, tick=False):
        yield


def url(pk: Any = None, action: str = "") -> str:
    if pk is None:
        return reverse("followup_visibility_api:alert-list")
    if action:
        return reverse(f"followup_visibility_api:alert-{action}", args=[pk])
    return reverse("followup_visibility_api:alert-detail", args=[pk])


BULK = "/api/followup/alerts/bulk/"


def state() -> tuple[Any, ...]:
    """Everything an action could write."""
    return (
        list(Alert.objects.order_by("pk").values_list()),
        Alert.history.count(),
        list(Suppression.objects.values_list("pk", flat=True)),
        list(Handoff.objects.order_by("pk").values_list()),
        list(TrackedOpportunity.objects.order_by("pk").values_list("owner_id", flat=True)),
        list(Lead.objects.order_by("pk").values_list("owner_id", flat=True)),
    )


def ids(response: Any) -> list[int]:
    assert response.status_code == 200, response.json()
    return [row["id"] for row in response.json()["results"]]


def refused_fields(response: Any) -> set[str]:
    body = response.json()
    assert (response.status_code, body["code"]) == (400, "invalid"), body
    return set(body["fields"])


# Reading --------------------------------------------------------------------------------------


def test_anonymous_is_401(world: World, api: Callable[..., Any]) -> None:
    before, client = state(), api()
    alert = world.alert("a", NFR)
    assert client.get(url()).status_code == 401
    assert client.get(url(alert.pk)).status_code == 401
    assert client.post(url(alert.pk, "acknowledge"), {}, format="json").status_code == 401
    body = {"action": "acknowledge", "ids": [alert.pk]}
    assert client.post(BULK, body, format="json").status_code == 401
    assert state() == before


def test_the_queue_is_scoped_and_ranked(world: World, api: Callable[..., Any]) -> None:
    """Most severe first (critical, high, low), then the earliest due, then the key."""
    everything = api(world.users["ops"]).get(url()).json()["results"]
    keys = [(row["severity"], row["due_at"], row["id"]) for row in everything]
    rank = {"critical": 0, "high": 1, "medium": 2, "low": 3}
    assert keys == sorted(keys, key=lambda k: (rank[k[0]], datetime.fromisoformat(k[1]), k[2]))
    assert [row["severity"] for row in everything] == ["critical"] + ["high"] * 4 + ["low"] * 4
    assert (everything[0]["signal"], everything[0]["reason"]) == (NO_OWNER, "no_owner")

    def seen(user: str) -> set[int]:
        rows = api(world.users[user]).get(url()).json()["results"]
        return {row["opportunity"]["id"] for row in rows}

    opp = {name: world.opp(name).pk for name in "abcu"}
    assert seen("alex") == {opp["a"]}
    assert seen("maria") == {opp["a"], opp["c"], opp["u"]}  # North is below East
    assert seen("olga") == {opp["b"]}


def test_detail_shows_every_field(world: World, api: Callable[..., Any]) -> None:
    alert, alex = world.alert("a", NFR), world.users["alex"]
    lifecycle.acknowledge(alert, by=alex, now=NOW)
    body = api(alex).get(url(alert.pk)).json()
    times = {
        name: datetime.fromisoformat(body.pop(name))
        for name in ("due_at", "raised_at", "episode_at", "acknowledged_at")
    }
    assert times == {
        "due_at": T0 + 4 * HOUR,
        "raised_at": NOW,
        "episode_at": T0,
        "acknowledged_at": NOW,
    }
    assert body == {
        "id": alert.pk,
        "opportunity": {"id": world.opp("a").pk, "title": "Acme"},
        "signal": NFR,
        "reason": "no_first_touch",
        "status": "acknowledged",
        "severity": "high",
        "sla_seconds": 4 * 3600,
        "escalation_level": 0,
        "acknowledged_by": {"id": alex.pk, "username": "alex", "name": "Alex"},
        "snoozed_at": None,
        "snoozed_until": None,
        "snooze_condition": None,
        "snooze_reason": "",
        "dismissed_at": None,
        "dismissed_reason": "",
        "resolved_at": None,
        "resolution": None,
        "resolution_note": "",
        "owner": {"id": alex.pk, "username": "alex", "name": "Alex"},
        "team": {"id": world.east.pk, "name": "East"},
        "segment": {"code": "vip", "name": "VIP"},
    }


#: Every action, with a body it would accept.
ACTIONS = {
    "acknowledge": {},
    "dismiss": {"reason": "spam"},
    "resolve": {"evidence": "called"},
    "snooze": {"for": "PT1H", "reason": "later"},
    "suppress": {"comment": "quiet"},
    "reassign": {"owner": None},  # the caller, filled in
}


@pytest.mark.parametrize(("user", "lead"), [("alex", "b"), ("maria", "b")])
def test_out_of_scope_is_404_like_a_missing_id(
    world: World, api: Callable[..., Any], user: str, lead: str
) -> None:
    """A rep on another rep's alert, a manager on another team's: 404 as for a missing id,
    on the page and on every action the caller holds the permission for; nothing written."""
    client, caller = api(world.users[user]), world.users[user]
    alert, before = world.alert(lead, NFR), state()
    missing = client.get(url(MISSING))
    assert missing.status_code == 404
    assert client.get(url(alert.pk)).json() == missing.json()
    for action, body in ACTIONS.items():
        if not caller.has_perms(f"followup_visibility.{p}" for p in PERMISSIONS[action]):
            continue  # 403 before any lookup (test_without_the_permission_it_is_403)
        body = {**body, "owner": caller.pk} if action == "reassign" else body
        response = client.post(url(alert.pk, action), body, format="json")
        assert (action, response.json()) == (action, missing.json())
    assert state() == before


def test_filters(world: World, api: Callable[..., Any]) -> None:
    client = api(world.users["ops"])
    opp = {name: world.opp(name).pk for name in "abcu"}

    def opps(query: str) -> list[int]:
        response = client.get(url() + query)
        assert response.status_code == 200, response.json()
        return sorted({row["opportunity"]["id"] for row in response.json()["results"]})

    def signals(query: str) -> list[str]:
        return sorted(row["signal"] for row in client.get(url() + query).json()["results"])

    assert signals(f"?signal={NO_OWNER}&signal={NC}") == sorted([NO_OWNER] + [NC] * 4)
    assert signals("?severity=critical&severity=high") == sorted([NO_OWNER] + [NFR] * 4)
    assert signals("?severity=low") == [NC] * 4
    assert signals("?severity=medium") == []
    assert opps(f"?team={world.east.pk}") == sorted([opp["a"], opp["c"], opp["u"]])
    assert opps(f"?team={world.north.pk}") == [opp["c"]]
    assert opps(f"?owner={world.users['bea'].pk}&segment=vip") == []
    assert opps(f"?owner={world.users['alex'].pk}&segment=vip") == [opp["a"]]
    assert signals("?due_before=2026-03-02T15:00:00Z") == sorted([NO_OWNER] + [NFR] * 4)
    assert signals("?due_after=2026-03-02T10:00:00-05:00") == [NC] * 4  # 15:00 UTC
    assert signals("?raised_after=2026-03-02T19:00:00Z&raised_before=2026-03-02T19:00:01Z") == (
        sorted([NO_OWNER] + [NFR] * 4 + [NC] * 4)
    )
    assert signals("?raised_before=2026-03-02T19:00:00Z") == []
    bad = {
        "severity": "urgent",
        "signal": "nope",
        "status": "closed",
        "team": "abc",
        "owner": "1.5",
        "due_after": "2026-03-02T15:00:00",  # naive
        "raised_before": "yesterday",
        "raised_after": "",
    }
    query = "?" + "&".join(f"{name}={value}" for name, value in bad.items())
    assert refused_fields(client.get(url() + query)) == set(bad)
    assert refused_fields(client.get(url() + "?team=0&owner=99999999999999999999")) == {
        "team",
        "owner",
    }
    # A key or code that names nothing selects nothing.
    assert signals(f"?team={MISSING}") == signals(f"?owner={MISSING}") == []
    assert signals("?segment=nope") == []
    assert refused_fields(client.get(url() + "?cursor=bm9wZQ")) == {"cursor"}


def test_status_defaults_to_the_active_ones(world: World, api: Callable[..., Any]) -> None:
    client, alex = api(world.users["alex"]), world.users["alex"]
    done, waiting = world.alert("a", NFR), world.alert("a", NC)
    lifecycle.resolve(done, evidence="called back", by=alex, now=NOW)
    lifecycle.snooze(waiting, reason="later", until=NOW + HOUR, by=alex, now=NOW)
    assert ids(client.get(url())) == [waiting.pk]
    assert ids(client.get(url() + "?status=resolved")) == [done.pk]
    both = ids(client.get(url() + "?status=resolved&status=snoozed"))
    assert sorted(both) == sorted([done.pk, waiting.pk])
    # A closed alert still has its page.
    assert client.get(url(done.pk)).json()["status"] == "resolved"


def test_pages_walk_the_ranking_both_ways_in_constant_queries(
    world: World, api: Callable[..., Any]
) -> None:
    client = api(world.users["ops"])
    everything = ids(client.get(url()))
    walked, link, previous = [], url() + "?page_size=2", None
    while link:
        body = client.get(link).json()
        walked += [row["id"] for row in body["results"]]
        link, previous = body["next"], body["previous"] or previous
    assert walked == everything
    back = client.get(previous).json()  # from the last page, the one before it
    assert [row["id"] for row in back["results"]] == everything[-3:-1]
    assert [row["id"] for row in client.get(back["previous"]).json()["results"]] == (
        everything[-5:-3]
    )

    def queries(size: int) -> int:
        with CaptureQueriesContext(connection) as captured:
            response = client.get(url() + f"?page_size={size}&team={world.east.pk}")
        assert len(response.json()["results"]) == min(size, 7)
        return len(captured)

    assert queries(1) == queries(20)


def test_later_pages_keep_the_first_pages_moment(world: World, api: Callable[..., Any]) -> None:
    client = api(world.users["ops"])
    first = [(row["id"], row["severity"]) for row in client.get(url()).json()["results"]]
    walked, link = [], url() + "?page_size=2"
    with time_machine.travel(NOW, tick=False) as clock:
        while link:
            body = client.get(link).json()
            walked += [(row["id"], row["severity"]) for row in body["results"]]
            link = body["next"]
            clock.shift(timedelta(hours=6))
        # By now the severities have moved: pages ranked at each request's moment would differ.
        fresh = [(row["id"], row["severity"]) for row in client.get(url()).json()["results"]]
    assert fresh != first
    assert walked == first
    # A cursor lasts a day.
    cursor = client.get(url() + "?page_size=2").json()["next"]
    with time_machine.travel(NOW + timedelta(days=2), tick=False):
        expired = client.get(cursor)
    assert expired.status_code == 400 and "cursor" in expired.json()["fields"]


# What every endpoint shares ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    """The OpenAPI document (generated once: it takes about a second)."""
    return reference.generate(None, url().removesuffix("/alerts/"))  # type: ignore[arg-type]


def test_every_operation_refuses_an_unknown_query_parameter(
    world: World, api: Callable[..., Any], document: dict[str, Any]
) -> None:
    """``?serverity=high`` is a 400 naming it on every operation, before anything is read or
    written (a typo must not widen a list silently); each parameter the schema documents for
    the operation, and ``format``, is accepted (whatever its value then makes of it)."""
    client, before = api(get_user_model().objects.create_superuser("root")), state()
    prefix = url().removesuffix("/alerts/")
    checked = 0
    for path, item in document["paths"].items():
        target = prefix + re.sub(r"\{[^}]+\}", str(world.opp("a").pk), path)
        for method, operation in item.items():
            documented = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
            query = "".join(f"{name}=x&" for name in sorted(documented))
            response = client.generic(method.upper(), f"{target}?{query}format=json&serverity=high")
            assert response.status_code == 400, (method, path, response.content)
            # Alone: each documented one (given "x") was accepted, as its check comes first.
            assert response.json()["fields"] == {"serverity": ["Unknown parameter."]}, path
            checked += 1
    assert checked >= 30
    assert state() == before
    # The register reads ``ordering`` and ``explain`` besides its filters and pages.
    listed = client.get(prefix + "/register/?ordering=value&explain=1&page_size=5&format=json")
    assert listed.status_code == 200, listed.json()
    paged = client.get(url(), {"cursor": "x", "page_size": "1", "severity": "high"})
    assert list(paged.json()["fields"]) == ["cursor"]  # read, and refused as a bad cursor


def test_options_on_an_unknown_path_is_the_json_404(world: World, api: Callable[..., Any]) -> None:
    client = api(world.users["alex"])
    prefix = url().removesuffix("/alerts/")
    for method in ("OPTIONS", "GET", "POST", "TRACE"):
        for path in ("/nope/", "/alerts/0.5/"):
            response = client.generic(method, prefix + path)
            assert (method, response.status_code) == (method, 404)
            assert response.json() == {"status": 404, "code": "not_found", "detail": "Not found."}
    assert api().options(prefix + "/nope/").status_code == 401
    assert client.options(url()).status_code == 200  # a known path keeps its metadata


# Actions ---------------------------------------------------------------------------------------

#: The permissions each action asks for, besides being signed in and active.
PERMISSIONS = {
    "acknowledge": ("change_alert",),
    "dismiss": ("change_alert",),
    "resolve": ("change_alert",),
    "snooze": ("change_alert",),
    "suppress": ("change_alert", "add_suppression"),
    "reassign": ("change_alert", "change_trackedopportunity"),
}


def test_acknowledge_dismiss_resolve(world: World, api: Callable[..., Any]) -> None:
    client, alex = api(world.users["alex"]), world.users["alex"]
    first, second = world.alert("a", NFR), world.alert("a", NC)
    response = client.post(url(first.pk, "acknowledge"), format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["status"], body["acknowledged_by"]["username"]) == ("acknowledged", "alex")
    first.refresh_from_db()
    assert (first.status, first.acknowledged_at, first.changed_by) == (
        AlertStatus.ACKNOWLEDGED,
        NOW,
        alex,
    )
    response = client.post(url(first.pk, "resolve"), {"evidence": "called"}, format="json")
    assert (response.json()["resolution"], response.json()["resolution_note"]) == (
        "manual",
        "called",
    )
    response = client.post(url(second.pk, "dismiss"), {"reason": "spam"}, format="json")
    assert (response.status_code, response.json()["dismissed_reason"]) == (200, "spam")
    assert Alert.objects.get(pk=first.pk).status == AlertStatus.RESOLVED
    assert Alert.objects.get(pk=second.pk).status == AlertStatus.DISMISSED


def test_snooze(world: World, api: Callable[..., Any]) -> None:
    """Until a time, for a duration (ISO 8601 or DRF's form), until a condition (at most
    SNOOZE_MAX), until a condition within a duration."""
    client = api(world.users["maria"])
    cases = [
        ("a", {"until": "2026-03-03T09:00:00+01:00"}, datetime(2026, 3, 3, 8, tzinfo=UTC), ""),
        ("c", {"for": "PT4H"}, NOW + 4 * HOUR, ""),
        ("u", {"for": "1 02:00:00"}, NOW + timedelta(days=1, hours=2), ""),
        ("a", {"condition": "customer_replies"}, NOW + timedelta(days=30), "customer_replies"),
        ("c", {"condition": "stage_changes", "for": "P2D"}, NOW + 2 * 24 * HOUR, "stage_changes"),
    ]
    for (lead, body, until, condition), signal in zip(cases, [NFR] * 3 + [NC] * 2, strict=True):
        alert = world.alert(lead, signal)
        response = client.post(
            url(alert.pk, "snooze"), {**body, "reason": "on holiday"}, format="json"
        )
        assert response.status_code == 200, (body, response.json())
        assert response.json()["snooze_condition"] == (condition or None)
        alert.refresh_from_db()
        assert (alert.status, alert.snoozed_until, alert.snooze_condition) == (
            AlertStatus.SNOOZED,
            until,
            condition,
        ), body
        assert alert.snooze_reason == "on holiday"


def test_input_refusals_are_400_and_write_nothing(world: World, api: Callable[..., Any]) -> None:
    client, alert, before = api(world.users["maria"]), world.alert("a", NFR), state()
    cases = [
        ("snooze", {"for": "PT4H"}, "reason"),
        ("snooze", {"for": "PT4H", "reason": "  "}, "reason"),
        ("snooze", {"until": "2026-03-03T09:00:00", "reason": "x"}, "until"),  # naive
        ("snooze", {"until": "2026-03-02T18:00:00Z", "reason": "x"}, "until"),  # past
        ("snooze", {"for": "PT4H", "until": "2026-03-03T09:00:00Z", "reason": "x"}, "for"),
        ("snooze", {"for": "P90D", "reason": "x"}, "for"),  # longer than SNOOZE_MAX
        ("snooze", {"for": "-PT1H", "reason": "x"}, "for"),
        ("snooze", {"for": "soon", "reason": "x"}, "for"),
        ("snooze", {"reason": "x"}, "until"),
        ("snooze", {"condition": "customer_calls", "reason": "x"}, "condition"),
        ("snooze", {"for": "PT4H", "reason": "x", "note": "y"}, "note"),
        ("dismiss", {}, "reason"),
        ("dismiss", {"reason": ""}, "reason"),
        ("resolve", {"evidence": " "}, "evidence"),
        ("resolve", {"evidence": "x", "reason": "y"}, "reason"),
        ("acknowledge", {"reason": "y"}, "reason"),
        ("suppress", {}, "comment"),
        ("suppress", {"comment": "x", "ends_at": "2026-03-05T10:00:00"}, "ends_at"),
        ("suppress", {"comment": "x", "ends_at": "2026-03-01T10:00:00Z"}, "ends_at"),
        ("suppress", {"comment": "x", "scope": "team"}, "scope"),
        ("reassign", {}, "owner"),
        ("reassign", {"owner": "alex"}, "owner"),
    ]
    for action, body, field in cases:
        response = client.post(url(alert.pk, action), body, format="json")
        assert field in refused_fields(response), (action, body, response.json())
    assert refused_fields(client.post(url(alert.pk, "dismiss"), [], format="json"))
    assert state() == before


def test_json_values_of_another_type_are_refused(world: World, api: Callable[..., Any]) -> None:
    """An id as text, a duration as a number, text as a number: 400 on the field, never
    converted (docs/api.md: bodies are read as their JSON types)."""
    client, alert, before = api(world.users["maria"]), world.alert("u", NO_OWNER), state()
    maria = world.users["maria"].pk
    cases = [
        ("reassign", {"owner": str(maria)}, "owner"),
        ("reassign", {"owner": float(maria)}, "owner"),
        ("snooze", {"for": 14400, "reason": "x"}, "for"),
        ("snooze", {"for": "PT4H", "reason": 42}, "reason"),
        ("dismiss", {"reason": 42}, "reason"),
        ("resolve", {"evidence": 4.5}, "evidence"),
        ("suppress", {"comment": 42}, "comment"),
    ]
    for action, body, field in cases:
        response = client.post(url(alert.pk, action), body, format="json")
        assert refused_fields(response) == {field}, (action, body, response.json())
    bulk = [
        ({"action": "acknowledge", "ids": [str(alert.pk)]}, "ids.0"),
        ({"action": "acknowledge", "ids": [float(alert.pk)]}, "ids.0"),
        ({"action": "acknowledge", "filter": {"team": str(world.east.pk)}}, "filter.team"),
        ({"action": "acknowledge", "filter": {"segment": 7}}, "filter.segment"),
        ({"action": "reassign", "owner": str(maria), "ids": [alert.pk]}, "owner"),
        ({"action": "snooze", "for": 14400, "reason": "x", "ids": [alert.pk]}, "for"),
    ]
    for body, field in bulk:
        response = client.post(BULK, body, format="json")
        assert refused_fields(response) == {field}, (body, response.json())
    assert state() == before
    # The same values with their JSON types are taken.
    done = client.post(url(alert.pk, "reassign"), {"owner": maria}, format="json")
    assert done.status_code == 200, done.json()


def test_a_time_outside_the_years_names_them(world: World, api: Callable[..., Any]) -> None:
    client, alert, before = api(world.users["maria"]), world.alert("a", NFR), state()
    message = ["Give a time between the years 1900 and 9998."]
    body = {"until": "9999-03-03T09:00:00Z", "reason": "x"}
    response = client.post(url(alert.pk, "snooze"), body, format="json")
    assert refused_fields(response) == {"until"}
    assert response.json()["fields"]["until"] == message
    response = client.get(url(), {"due_before": "1899-12-31T00:00:00Z"})
    assert response.json()["fields"] == {"due_before": message}
    assert state() == before


def test_a_closed_alert_is_a_409_and_writes_nothing(world: World, api: Callable[..., Any]) -> None:
    alert, alex = world.alert("a", NFR), world.users["alex"]
    lifecycle.resolve(alert, evidence="done", by=alex, now=NOW)
    client, before = api(alex), state()
    for action in ("acknowledge", "snooze", "dismiss", "resolve"):
        response = client.post(url(alert.pk, action), ACTIONS[action], format="json")
        assert response.status_code == 409, action
        assert response.json() == {
            "status": 409,
            "code": "conflict",
            "detail": response.json()["detail"],
        }
        assert "resolved" in response.json()["detail"]
    assert state() == before


@pytest.mark.parametrize(
    ("user", "actions"),
    [
        ("nils", ["acknowledge", "dismiss"]),  # his own alert, but no change_alert
        ("alex", ["reassign", "suppress"]),  # no change_trackedopportunity, no add_suppression
    ],
)
def test_without_the_permission_it_is_403(
    world: World, api: Callable[..., Any], user: str, actions: list[str]
) -> None:
    caller = world.users[user]
    client, alert, before = api(caller), world.alert("c" if user == "nils" else "a", NFR), state()
    for action in actions:
        body = {**ACTIONS[action], "owner": caller.pk} if action == "reassign" else ACTIONS[action]
        response = client.post(url(alert.pk, action), body, format="json")
        assert (action, response.status_code) == (action, 403)
        bulk = client.post(BULK, {"action": action, "ids": [alert.pk], **body}, format="json")
        assert (action, bulk.status_code) == (action, 403)
    assert state() == before


def test_suppress(world: World, api: Callable[..., Any]) -> None:
    client = api(world.users["maria"])
    response = client.post(
        url(world.alert("a", NFR).pk, "suppress"),
        {"comment": "customer asked for quiet", "ends_at": "2026-03-09T10:00:00Z"},
        format="json",
    )
    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "suppressed"
    rule = Suppression.objects.get()
    assert (rule.opportunity_id, rule.signal, rule.created_by, rule.ends_at) == (
        world.opp("a").pk,
        NFR,
        world.users["maria"],
        datetime(2026, 3, 9, 10, tzinfo=UTC),
    )
    assert world.alert("a", NC).status == AlertStatus.OPEN  # another signal
    response = client.post(
        url(world.alert("c", NFR).pk, "suppress"),
        {"comment": "quiet", "scope": "all"},
        format="json",
    )
    assert response.status_code == 200, response.json()
    assert Suppression.objects.get(opportunity=world.opp("c")).signal == ""
    assert world.alert("c", NC).status == AlertStatus.SUPPRESSED


# Reassign ---------------------------------------------------------------------------------------


def test_reassign_writes_the_crm_and_syncs(world: World, api: Callable[..., Any]) -> None:
    """The manager gives the unowned lead to alex: the lead's owner changes in the CRM, the
    sync opens a pending handoff to alex, and the refresh resolves the no-owner alert (the
    ownership clock now waits for alex to accept)."""
    alex = world.users["alex"]
    no_owner, first_response = world.alert("u", NO_OWNER), world.alert("u", NFR)
    response = api(world.users["maria"]).post(
        url(no_owner.pk, "reassign"), {"owner": alex.pk}, format="json"
    )
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["status"], body["resolution"], body["owner"]["username"]) == (
        "resolved",
        "auto",
        "alex",
    )
    assert Lead.objects.get(pk=world.leads["u"].pk).owner == alex
    opp = world.opp("u")
    assert (opp.owner, opp.owner_confirmed_at) == (alex, None)
    handoff = Handoff.objects.get(opportunity=opp)
    assert (handoff.from_owner_id, handoff.to_owner, handoff.handed_at) == (None, alex, NOW)
    assert handoff.is_pending
    unconfirmed = Deadline.objects.get(opportunity=opp, signal=AlertSignal.OWNER_UNCONFIRMED)
    assert unconfirmed.due_at == NOW + DURATIONS["handoff_acceptance"]
    assert not Alert.objects.filter(opportunity=opp, signal=AlertSignal.OWNER_UNCONFIRMED)
    # The first response is still owed, now by alex: it stays open and is his to see.
    assert Alert.objects.get(pk=first_response.pk).status == AlertStatus.OPEN
    assert first_response.pk in ids(api(alex).get(url()))


def test_reassign_refuses_who_the_caller_may_not_hand_work_to(
    world: World, api: Callable[..., Any]
) -> None:
    """Another team's rep or manager, an unknown id, an inactive member: one message."""
    client, alert = api(world.users["maria"]), world.alert("u", NO_OWNER)
    get_user_model().objects.filter(pk=world.users["nils"].pk).update(is_active=False)
    before = state()
    message = [
        "Choose an active user you may hand work to: yourself or someone in a team you manage."
    ]
    for target in (world.users["bea"].pk, world.users["olga"].pk, MISSING, world.users["nils"].pk):
        response = client.post(url(alert.pk, "reassign"), {"owner": target}, format="json")
        assert response.status_code == 400
        assert response.json()["fields"] == {"owner": message}
    assert state() == before


def test_reassign_of_a_closed_opportunity_is_409(world: World, api: Callable[..., Any]) -> None:
    Lead.objects.filter(pk=world.leads["a"].pk).update(status="lost")
    sync_objects([Lead.objects.get(pk=world.leads["a"].pk)], NOW)
    alert, before = world.alert("a", NFR), state()
    assert alert.status == AlertStatus.RESOLVED  # the close resolved it; its page stays
    response = api(world.users["maria"]).post(
        url(alert.pk, "reassign"), {"owner": world.users["maria"].pk}, format="json"
    )
    assert response.status_code == 409
    assert (
        response.json()["detail"] == "Only an open opportunity can be reassigned; this one is lost."
    )
    assert state() == before
    with pytest.raises(ValidationError) as refused:
        ownership.reassign(world.opp("a"), to=world.users["maria"], by=world.users["ops"], now=NOW)
    assert refused.value.code == "not_open"


def test_set_owner_without_an_owner_field_refuses(world: World) -> None:
    class NoOwner(OpportunityAdapter):
        owner_field = None

    with pytest.raises(ValidationError) as refused:
        NoOwner(Lead).set_owner(world.leads["a"], world.users["bea"])
    assert "owner" in refused.value.message_dict
    assert Lead.objects.get(pk=world.leads["a"].pk).owner == world.users["alex"]


# Bulk -------------------------------------------------------------------------------------------


def test_bulk_reports_each_item(world: World, api: Callable[..., Any]) -> None:
    """Done, refused (already resolved) and not found (bea's, and a missing id) side by side;
    the refusal undoes nothing."""
    mine, closed, theirs = world.alert("a", NFR), world.alert("a", NC), world.alert("b", NFR)
    lifecycle.resolve(closed, evidence="done", by=world.users["alex"], now=NOW)
    before_theirs = Alert.objects.filter(pk=theirs.pk).values_list().get()
    response = api(world.users["alex"]).post(
        BULK,
        {"action": "dismiss", "reason": "spam", "ids": [mine.pk, closed.pk, theirs.pk, MISSING]},
        format="json",
    )
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["action"], body["done"], body["refused"], body["not_found"]) == (
        "dismiss",
        1,
        1,
        2,
    )
    assert body["results"] == [
        {"id": mine.pk, "result": "done", "detail": ""},
        {"id": closed.pk, "result": "refused", "detail": "This alert is already resolved."},
        {"id": theirs.pk, "result": "not_found", "detail": "Not found."},
        {"id": MISSING, "result": "not_found", "detail": "Not found."},
    ]
    assert Alert.objects.get(pk=mine.pk).status == AlertStatus.DISMISSED
    assert Alert.objects.filter(pk=theirs.pk).values_list().get() == before_theirs


def test_bulk_by_filter(world: World, api: Callable[..., Any]) -> None:
    response = api(world.users["maria"]).post(
        BULK,
        {
            "action": "snooze",
            "for": "PT2H",
            "condition": "customer_replies",
            "reason": "waiting",
            "filter": {"severity": ["high"], "team": world.east.pk},
        },
        format="json",
    )
    assert response.status_code == 200, response.json()
    expected = sorted(world.alert(name, NFR).pk for name in "acu")
    assert [r["id"] for r in response.json()["results"]] == expected
    assert {r["result"] for r in response.json()["results"]} == {"done"}
    snoozed = Alert.objects.filter(status=AlertStatus.SNOOZED)
    assert sorted(snoozed.values_list("pk", flat=True)) == expected
    assert {a.snoozed_until for a in snoozed} == {NOW + 2 * HOUR}


def test_bulk_suppress_and_reassign_act_per_opportunity(
    world: World, api: Callable[..., Any]
) -> None:
    client = api(world.users["maria"])
    both = [world.alert("a", NFR).pk, world.alert("a", NC).pk]
    body = {"action": "suppress", "comment": "quiet", "scope": "all", "ids": both}
    response = client.post(BULK, body, format="json")
    assert [r["result"] for r in response.json()["results"]] == ["done", "done"]
    assert Suppression.objects.count() == 1
    unowned = [world.alert("u", NO_OWNER).pk, world.alert("u", NFR).pk]
    body = {"action": "reassign", "owner": world.users["nils"].pk, "ids": unowned}
    response = client.post(BULK, body, format="json")
    assert [r["result"] for r in response.json()["results"]] == ["done", "done"]
    assert Handoff.objects.filter(opportunity=world.opp("u")).count() == 1
    assert world.opp("u").owner == world.users["nils"]


def test_bulk_input_refusals_write_nothing(world: World, api: Callable[..., Any]) -> None:
    client, before = api(world.users["ops"]), state()
    two = [world.alert("a", NFR).pk, world.alert("a", NC).pk]
    cases = [
        ({"action": "dismiss", "ids": two}, "reason"),
        ({"action": "snooze", "reason": "x", "for": "PT1H", "ids": []}, "ids"),
        ({"action": "snooze", "reason": "x", "for": "PT1H"}, "non_field_errors"),
        ({"action": "snooze", "reason": "x", "for": "P90D", "ids": two}, "for"),  # the domain's
        ({"action": "acknowledge", "ids": two, "filter": {}}, "non_field_errors"),
        ({"action": "acknowledge", "filter": {"severity": "high"}}, "filter.severity"),
        ({"action": "acknowledge", "filter": {"colour": ["red"]}}, "filter.colour"),
        ({"action": "acknowledge", "filter": {"team": 0}}, "filter.team"),
        ({"action": "purge", "ids": two}, "action"),
        ({"ids": two}, "action"),
        ({"action": "acknowledge", "ids": two, "reason": "x"}, "reason"),
        ({"action": "reassign", "owner": MISSING, "ids": two}, "owner"),
        (
            {"action": "suppress", "comment": "x", "ends_at": "2026-03-01T10:00:00Z", "ids": two},
            "ends_at",
        ),
    ]
    for body, field in cases:
        response = client.post(BULK, body, format="json")
        assert field in refused_fields(response), (body, response.json())
    assert state() == before


def test_bulk_over_the_limit_is_413(world: World, api: Callable[..., Any], settings: Any) -> None:
    settings.FOLLOWUP_VISIBILITY_API_MAX_BATCH = 2
    client, before = api(world.users["ops"]), state()
    three = [world.alert(name, NFR).pk for name in "abc"]
    for body, detail in [
        ({"action": "acknowledge", "ids": three}, "3 ids: at most 2 in one request."),
        (
            {"action": "acknowledge", "filter": {"signal": [NFR]}},  # four match
            "The filter matches more than 2 alerts: at most 2 in one request.",
        ),
    ]:
        response = client.post(BULK, body, format="json")
        assert response.status_code == 413
        assert response.json() == {"status": 413, "code": "too_large", "detail": detail}
        assert state() == before
    response = client.post(BULK, {"action": "acknowledge", "ids": three[:2]}, format="json")
    assert [r["result"] for r in response.json()["results"]] == ["done", "done"]


def test_alerts_are_written_as_their_declared_fields_write_them(world: World) -> None:
    """The alert serializer writes alerts out by hand for speed; DRF's walk over the declared
    fields (what the schema documents) must give the same JSON, for alerts in every status."""
    from rest_framework import serializers

    from followup_visibility.api.alerts.serializers import AlertSerializer
    from followup_visibility.api.alerts.views import RELATED
    from followup_visibility.engine import severity

    alex = world.users["alex"]
    first, second, third, *_ = Alert.objects.order_by("pk")
    lifecycle.acknowledge(first, by=alex, now=NOW)
    lifecycle.snooze(second, reason="later", until=NOW + HOUR, by=alex, now=NOW)
    lifecycle.resolve(third, evidence="called back", by=alex, now=NOW)
    alerts = list(severity.annotate(Alert.objects.select_related(*RELATED), NOW))
    assert len({a.status for a in alerts}) >= 4
    assert any(a.acknowledged_by for a in alerts) and any(a.opportunity.segment for a in alerts)
    serializer = AlertSerializer()
    for alert in alerts:
        declared = dict(serializers.Serializer.to_representation(serializer, alert))
        written = serializer.to_representation(alert)
        assert list(written) == list(declared)
        assert json.loads(json.dumps(written)) == json.loads(json.dumps(declared)), alert
