"""``metrics/overdue/``, ``metrics/first-response/`` and ``metrics/logging-lag/`` over HTTP.

The world and its hand-counted numbers are tests/test_metrics.py's; here: the responses'
shape, the scope, the parameters, the errors and the query counts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from rest_framework.test import APIClient

from followup_visibility.alerting import sweep
from tests.test_metrics import DAYS, LATER, NOW, THRESHOLDS, WEEK, World, leads, module_world, ny

ENDPOINTS = ("overdue", "first-response", "logging-lag")


@pytest.fixture(scope="module")
def world(django_db_setup: Any, django_db_blocker: Any) -> Iterator[World]:
    yield from module_world(django_db_blocker)


@pytest.fixture(autouse=True)
def thresholds(world: World, db: Any, settings: Any) -> None:
    settings.FOLLOWUP_VISIBILITY_SEVERITY_THRESHOLDS = THRESHOLDS


def url(name: str) -> str:
    return reverse(f"followup_visibility_api:metrics-{name}")


def get(client: APIClient, name: str, now: datetime, **params: Any) -> Any:
    with time_machine.travel(now, tick=False):
        return client.get(url(name), {k: str(v) for k, v in params.items()})


def iso(at: datetime) -> str:
    return at.isoformat()


def test_the_urls() -> None:
    assert url("overdue").endswith("/metrics/overdue/")
    assert url("first-response").endswith("/metrics/first-response/")
    assert url("logging-lag").endswith("/metrics/logging-lag/")


def test_overdue(api: Callable[..., APIClient], world: World) -> None:
    w = world
    response = get(api(w.ops), "overdue", NOW)
    assert response.status_code == 200, response.content
    body = response.json()
    assert datetime.fromisoformat(body["now"]) == NOW
    assert (body["since"], body["until"]) == (None, None)
    assert (body["opportunities"], body["actions"]) == (6, 7)
    assert body["by_severity"][0] == {
        "severity": "critical",
        "label": "Critical",
        "opportunities": 3,
        "actions": 3,
    }
    reasons = {g["reason"]: (g["opportunities"], g["actions"]) for g in body["by_reason"]}
    assert reasons["no_first_touch"] == (5, 5) and reasons["awaiting_reply"] == (1, 1)
    assert [g["segment"] for g in body["by_segment"]] == ["brochure", "pricing", None]
    assert {g["team"]: g["label"] for g in body["by_team"]} == {
        w.teams["east"].pk: "East",
        w.teams["west"].pk: "West",
    }
    assert body["by_owner"][-1] == {
        "owner": None,
        "label": "No owner",
        "opportunities": 1,
        "actions": 2,
    }

    mine = get(api(w.alex), "overdue", NOW).json()
    assert (mine["opportunities"], mine["actions"]) == (2, 2)
    assert [g["owner"] for g in mine["by_owner"]] == [w.alex.pk]
    teams = get(api(w.maria), "overdue", NOW).json()
    assert [(g["team"], g["opportunities"]) for g in teams["by_team"]] == [(w.teams["east"].pk, 5)]
    west = get(api(w.ops), "overdue", NOW, team=w.teams["west"].pk).json()
    assert (west["opportunities"], west["actions"]) == (1, 1)
    # A team outside the scope, or none at all, counts nothing (and tells nothing).
    for team in (w.teams["west"].pk, 999999):
        assert get(api(w.maria), "overdue", NOW, team=team).json()["opportunities"] == 0
    # Fell due from 14:30 New York time (given with its offset): A, B and D's two.
    recent = get(api(w.ops), "overdue", NOW, since="2026-03-11T14:30:00-04:00").json()
    assert (recent["opportunities"], recent["actions"]) == (3, 4)
    assert datetime.fromisoformat(recent["since"]) == ny(11, 14, 30)


def test_first_response(api: Callable[..., APIClient], world: World) -> None:
    response = get(
        api(world.ops), "first-response", LATER, since=iso(WEEK.since), until=iso(WEEK.until)
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["total"] == {
        "segment": None,
        "label": "All segments",
        "met": 3,
        "missed": 3,
        "pending": 1,
        "rate": 0.5,
    }
    assert [
        (s["segment"], s["met"], s["missed"], s["pending"], s["rate"]) for s in body["by_segment"]
    ] == [
        ("brochure", 1, 2, 0, pytest.approx(1 / 3)),
        ("pricing", 1, 1, 1, 0.5),
        (None, 1, 0, 0, 1.0),
    ]
    # By default the seven days up to now: O2 arrived on Monday morning, pending too.
    default = get(api(world.ops), "first-response", LATER).json()
    assert [datetime.fromisoformat(default[k]) for k in ("since", "until")] == [
        LATER - timedelta(days=7),
        LATER,
    ]
    assert default["total"]["pending"] == 2
    mine = get(
        api(world.alex), "first-response", LATER, since=iso(WEEK.since), until=iso(WEEK.until)
    ).json()
    assert (mine["total"]["met"], mine["total"]["missed"], mine["total"]["pending"]) == (1, 2, 0)


def test_logging_lag(api: Callable[..., APIClient], world: World) -> None:
    w = world
    response = get(api(w.ops), "logging-lag", LATER, since=iso(DAYS.since), until=iso(DAYS.until))
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["overall"] == {
        "label": "All touches",
        "count": 9,
        "p50_seconds": pytest.approx(30 * 60),
        "p90_seconds": pytest.approx(384 * 60),
        "p95_seconds": pytest.approx(912 * 60),
    }
    assert [(c["channel"], c["count"]) for c in body["by_channel"]] == [("phone", 5), ("email", 4)]
    assert [(a["actor"], a["label"], a["count"]) for a in body["by_actor"]] == [
        (w.alex.pk, "Alex Adams", 5),
        (w.bea.pk, "bea", 3),
        (None, "No actor", 1),
    ]
    nothing = get(
        api(w.nina), "logging-lag", LATER, since=iso(DAYS.since), until=iso(DAYS.until)
    ).json()
    assert (nothing["overall"], nothing["by_channel"], nothing["by_actor"]) == (None, [], [])


@pytest.mark.parametrize(
    ("name", "params", "field"),
    [
        ("overdue", {"since": "2026-03-11T14:30:00"}, "since"),  # naive
        ("first-response", {"until": "2026-03-30T00:00:00"}, "until"),  # naive
        ("logging-lag", {"since": "2026-03-13T00:00Z", "until": "2026-03-12T00:00Z"}, "until"),
        ("overdue", {"since": "2026-03-11T00:00Z", "until": "2026-03-11T00:00Z"}, "until"),
        ("first-response", {"since": "2026-04-01T00:00Z"}, "since"),  # after now, the default end
        ("logging-lag", {"since": "last week"}, "since"),
        ("overdue", {"team": "east"}, "team"),
        ("logging-lag", {"sinse": "2026-03-12T00:00Z"}, "sinse"),
    ],
)
def test_bad_parameters_are_400(
    api: Callable[..., APIClient], world: World, name: str, params: dict[str, str], field: str
) -> None:
    response = get(api(world.ops), name, LATER, **params)
    assert response.status_code == 400, response.content
    body = response.json()
    assert (body["status"], body["code"]) == (400, "invalid")
    assert list(body["fields"]) == [field]
    if field == "sinse":
        assert body["fields"] == {"sinse": ["Unknown parameter."]}  # as on every endpoint


@pytest.mark.parametrize("name", ENDPOINTS)
def test_anonymous_is_401(api: Callable[..., APIClient], world: World, name: str) -> None:
    response = get(api(), name, LATER)
    assert response.status_code == 401
    assert response.json()["status"] == 401


def test_an_inactive_user_is_refused(api: Callable[..., APIClient], world: World) -> None:
    client = api(world.alex)
    world.alex.is_active = False
    world.alex.save(update_fields=["is_active"])
    assert get(client, "overdue", NOW).status_code in {401, 403}


def count(client: APIClient, name: str, now: datetime, **params: Any) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = get(client, name, now, **params)
    assert response.status_code == 200, response.content
    return len(queries.captured_queries)


def test_query_counts_do_not_grow_with_the_data(
    api: Callable[..., APIClient], world: World
) -> None:
    client = api(world.ops)
    for name in ENDPOINTS:
        get(client, name, LATER)  # the calendars' and policies' caches, once per process
    small = {
        "overdue": count(client, "overdue", NOW),
        "first-response": count(client, "first-response", LATER, since=iso(WEEK.since)),
        "logging-lag": count(client, "logging-lag", LATER, since=iso(DAYS.since)),
    }
    # More of everything: four more rows owned by two more people, a month of arrivals and
    # every touch of the world.
    more = leads(
        ny(11, 9),
        *(
            (f"X{i}", ny(11, 9), owner, "west", "pricing")
            for i, owner in enumerate([world.chen, world.nina, world.maria, world.nina])
        ),
    )
    sweep.sweep(NOW, full=True)
    for name in ENDPOINTS:
        get(client, name, LATER)  # the new rows may have moved the caches' token: warm again
    overdue = get(client, "overdue", NOW).json()
    assert overdue["opportunities"] >= 10 and len(overdue["by_owner"]) >= 6
    large = {
        "overdue": count(client, "overdue", NOW),
        "first-response": count(client, "first-response", LATER, since=iso(ny(1, 0))),
        "logging-lag": count(client, "logging-lag", LATER, since=iso(ny(1, 0))),
    }
    assert large == small
    # A read's transaction (a savepoint and its release here, inside the test's transaction,
    # and PostgreSQL's JIT switched off), four to authenticate (session, user, the see-all
    # permission's two), then the metric's: seven grouped queries (with the owners' names);
    # the period's arrivals and five of the policies and calendars; three grouped queries of
    # touches and the actors' names.
    read = 3 if connection.vendor == "postgresql" else 2
    assert small == {
        "overdue": read + 4 + 7,
        "first-response": read + 4 + 6,
        "logging-lag": read + 4 + 4,
    }
    assert len(more) == 4
