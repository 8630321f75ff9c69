"""``register/``: filters, orderings, cursor pages, explanations, scope and cost.

On the register's hand-built world (tests/test_register.py), built once per module at ``NOW``
and rolled back at the end; the API reads the clock, so it is frozen at ``NOW``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import time_machine
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from rest_framework.test import APIClient

from followup_visibility.engine import severity
from followup_visibility.models import Alert
from followup_visibility.register import rows as register
from tests.test_register import LISTED, NOW, World, build

URL = reverse("followup_visibility_api:register-list")
Api = Callable[..., APIClient]


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


def get(api: Api, world: World, query: dict[str, Any] | str = "", who: str = "ops") -> Any:
    client = api(world.user(who))
    if isinstance(query, str):
        return client.get(URL + query)
    return client.get(URL, query)


def names(world: World, response: Any) -> list[str]:
    assert response.status_code == 200, response.json()
    return [world.name_of(row["id"]) for row in response.json()["results"]]


def every_page(api: Api, world: World, query: dict[str, Any], who: str = "ops") -> list[str]:
    """Follow the ``next`` links from the first page; the names in the order served."""
    client = api(world.user(who))
    response = client.get(URL, query)
    seen: list[str] = []
    while True:
        seen += names(world, response)
        following = response.json()["next"]
        if following is None:
            return seen
        response = client.get(following)


# The list ------------------------------------------------------------------------------------


def test_anonymous_is_refused_with_401(api: Api, world: World) -> None:
    response = api().get(URL)
    assert response.status_code == 401
    assert response.json()["status"] == 401 and response.json()["code"] == "not_authenticated"


def test_the_register_ranked_by_priority(api: Api, world: World) -> None:
    response = get(api, world)
    served = names(world, response)
    assert set(served) == LISTED
    assert served == world.names(register.unfollowed(NOW))
    assert served.index("hot") < served.index("old")
    rows = response.json()["results"]
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    hot = rows[served.index("hot")]
    assert hot["reasons"] == ["no_first_touch"]
    assert hot["value"] == "50000.00" and hot["intent"] == 3.0
    assert hot["segment"] == {"code": "hot", "name": "Pricing request"}
    assert hot["team"]["name"] == "East" and hot["owner"]["username"] == "a"
    assert hot["severity"] == "low" and hot["age_business_hours"] == 5.0
    assert [a["signal"] for a in hot["alerts"]] == ["no_first_response"]
    assert sum(hot["shares"].values()) == pytest.approx(1, abs=1e-3)
    assert "factors" not in hot
    weekend = rows[served.index("weekend")]
    assert weekend["age_business_hours"] == 2.0 and weekend["owner"] is None


def test_explain_gives_each_factor(api: Api, world: World) -> None:
    rows = get(api, world, {"explain": "1"}).json()["results"]
    hot = next(r for r in rows if world.name_of(r["id"]) == "hot")
    assert set(hot["factors"]) == {"intent", "value", "lateness", "age"}
    intent = hot["factors"]["intent"]
    assert intent["raw"] == 3.0 and intent["level"] == 0.75
    assert intent["weight"] == pytest.approx(0.35)
    assert hot["factors"]["value"]["raw"] == 50_000
    for name, factor in hot["factors"].items():
        assert factor["share"] == pytest.approx(hot["shares"][name], abs=1e-4)


# Filters -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        # A team and the teams below it.
        ({"team": "east"}, {"hot", "old", "acknowledged", "nobody", "north"}),
        ({"team": "north"}, {"north"}),
        ({"unowned": "true"}, {"nobody", "weekend"}),
        ({"segment": "hot"}, {"hot"}),
        ({"segment": "cold"}, {"old"}),
        ({"reason": "no_owner"}, {"nobody", "weekend"}),
        ({"reason": ["awaiting_reply", "no_owner"]}, {"north", "nobody", "weekend"}),
        ({"reason": "overdue_next_action"}, {"north"}),
        ({"channel": "email"}, {"north"}),
        ({"channel": ["phone", "sms"]}, set()),
        ({"value_min": "1000"}, {"hot"}),
        ({"value_max": "1000"}, {"west"}),
        ({"value_min": "100", "value_max": "50000"}, {"hot", "west"}),
        # Arrived at least 5 days ago (240h), at most one day ago (5h and 10h).
        ({"age_min_days": "5"}, {"old"}),
        ({"age_max_days": "1"}, {"hot", "north", "west"}),
        ({"age_min_days": "1", "age_max_days": "2"}, {"nobody", "acknowledged"}),
        # Late by 59 SLAs (old), 29 (nobody: an hour's owner assignment) and 65 (weekend).
        ({"lateness_min": "10"}, {"old", "nobody", "weekend"}),
        ({"team": "east", "reason": "no_owner"}, {"nobody"}),
    ],
)
def test_filters(api: Api, world: World, query: dict[str, Any], expected: set[str]) -> None:
    query = {**query, "team": world.teams[query["team"]]} if "team" in query else query
    assert set(names(world, get(api, world, query))) == expected


def test_owner_filter(api: Api, world: World) -> None:
    mine = {"owner": world.users["a"]}
    assert set(names(world, get(api, world, mine))) == {"hot", "old", "acknowledged"}


def test_severity_filter_matches_each_rows_severity(api: Api, world: World) -> None:
    rows = get(api, world).json()["results"]
    by_level: dict[str, set[str]] = {}
    for row in rows:
        by_level.setdefault(row["severity"], set()).add(world.name_of(row["id"]))
        # The row's severity is its worst alert's, as the engine grades it.
        alerts = Alert.objects.filter(pk__in=[a["id"] for a in row["alerts"]])
        worst = max(severity.of_alert(alert, NOW) or 0 for alert in alerts)
        assert row["severity"] == severity.Severity(worst).name.lower()
    assert len(by_level) >= 2
    for level, expected in by_level.items():
        assert set(names(world, get(api, world, {"severity": level}))) == expected
    both = sorted(by_level)[:2]
    assert set(names(world, get(api, world, {"severity": both}))) == set().union(
        *(by_level[level] for level in both)
    )


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"team": "east"}, "team"),
        ({"team": "1.5"}, "team"),
        ({"segment": "warm"}, "segment"),
        ({"reason": "too_late"}, "reason"),
        ({"severity": "urgent"}, "severity"),
        ({"channel": "pigeon"}, "channel"),
        ({"value_min": "lots"}, "value_min"),
        ({"age_min_days": "-1"}, "age_min_days"),
        ({"ordering": "-priority"}, "ordering"),
        ({"ordering": "name"}, "ordering"),
    ],
)
def test_invalid_filters_and_orderings_answer_400(
    api: Api, world: World, query: dict[str, Any], field: str
) -> None:
    response = get(api, world, query)
    assert response.status_code == 400
    body = response.json()
    assert body["status"] == 400 and body["code"] == "invalid"
    assert field in body["fields"]


# Orderings and pages -------------------------------------------------------------------------


@pytest.mark.parametrize("ordering", list(register.ORDERINGS))
def test_each_ordering_is_served_as_the_domain_orders_it(
    api: Api, world: World, ordering: str
) -> None:
    expected = world.names(register.unfollowed(NOW).order_by(*register.ORDERINGS[ordering]))
    assert names(world, get(api, world, {"ordering": ordering})) == expected
    # Three rows a page: the same rows in the same order, none twice, none left out (the value
    # ordering has ties: every lead is worth 0).
    paged = every_page(api, world, {"ordering": ordering, "page_size": 3})
    assert paged == expected


def test_orderings_by_what_they_name(api: Api, world: World) -> None:
    assert names(world, get(api, world, {"ordering": "value"}))[:2] == ["hot", "west"]
    assert names(world, get(api, world, {"ordering": "age"}))[0] == "old"
    assert names(world, get(api, world, {"ordering": "intent"}))[0] == "hot"
    assert names(world, get(api, world, {"ordering": "lateness"}))[0] == "weekend"


def test_pages_follow_a_filter(api: Api, world: World) -> None:
    query = {"team": world.teams["east"], "page_size": 2}
    paged = every_page(api, world, query)
    assert len(paged) == len(set(paged)) == 5
    assert set(paged) == {"hot", "old", "acknowledged", "nobody", "north"}


# Scope ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "expected"),
    [
        ("a", {"hot", "old", "acknowledged"}),
        ("n", {"north"}),
        ("m", {"hot", "old", "acknowledged", "nobody", "north"}),
        ("w", {"west"}),
        ("ops", LISTED),
    ],
)
def test_each_user_gets_their_scope(api: Api, world: World, who: str, expected: set[str]) -> None:
    assert set(names(world, get(api, world, who=who))) == expected
    # A filter never reaches past the scope.
    west = {"team": world.teams["west"]}
    assert set(names(world, get(api, world, west, who=who))) == expected & {"west"}


def test_an_inactive_user_is_refused(api: Api, world: World) -> None:
    user = world.user("ops")
    client = api(user)
    user.is_active = False
    user.save(update_fields=["is_active"])
    assert client.get(URL).status_code in (401, 403)


# Cost ----------------------------------------------------------------------------------------


def test_queries_do_not_grow_with_the_page_size(api: Api, world: World) -> None:
    client = api(world.user("m"))
    client.get(URL)  # the session and the caches, once

    def cost(size: int, **query: Any) -> int:
        with CaptureQueriesContext(connection) as queries:
            response = client.get(URL, {"page_size": size, "explain": "1", **query})
        assert len(response.json()["results"]) == size
        return len(queries)

    assert cost(1) == cost(5)
    assert cost(1, ordering="unfollowed_since") == cost(5, ordering="unfollowed_since")
