"""``register/``: filters, orderings, cursor pages, explanations, scope and cost.

On the register's hand-built world (tests/test_register.py), built once per module at ``NOW``
and rolled back at the end; the API reads the clock, so it is frozen at ``NOW``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any
from urllib import parse

import pytest
import time_machine
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from rest_framework import serializers
from rest_framework.test import APIClient

from followup_visibility.alerting import lifecycle, ranking
from followup_visibility.api.register import RowSerializer
from followup_visibility.engine import severity
from followup_visibility.models import Alert
from followup_visibility.register import rows as register
from tests.test_register import HOUR, LISTED, NOW, World, build

URL = reverse("followup_visibility_api:register-list")
SCHEMA = reverse("followup_visibility_api:schema")
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
    # Five hours old: the age in seconds (not the microseconds the SQL counts in).
    assert hot["factors"]["age"]["raw"] == 5 * 3600
    assert hot["factors"]["lateness"]["raw"] == 0.25
    for name, factor in hot["factors"].items():
        assert factor["share"] == hot["shares"][name]


def decimals(number: float) -> int:
    """How many decimals ``number`` is written with in the JSON."""
    text = repr(number)
    return len(text.split(".")[1]) if "." in text and "e" not in text else 0


def test_numbers_are_rounded_as_documented(api: Api, world: World) -> None:
    # Seven minutes on, the hot lead's lateness is 67/240 of its SLA: 0.2791666...
    moment = NOW + timedelta(minutes=7)
    with time_machine.travel(moment, tick=False):
        ranking.rescore(moment)  # as the beat entry would
        rows = get(api, world, {"explain": "1"}).json()["results"]
    assert len(rows) == len(LISTED)
    for row in rows:
        assert decimals(row["score"]) <= 2, row["score"]
        assert decimals(row["lateness"]) <= 3, row["lateness"]
        for share in row["shares"].values():
            assert decimals(share) <= 4, share
        for factor in row["factors"].values():
            for name in ("level", "weight", "share"):
                assert decimals(factor[name]) <= 4, (name, factor)
    (exact,) = register.rows(list(register.unfollowed(moment).filter(pk=world.opps["hot"])), moment)
    (hot,) = [row for row in rows if row["id"] == world.opps["hot"]]
    assert hot["lateness"] == round(exact.lateness, 3) == 0.279
    assert datetime.fromisoformat(hot["scored_at"]) == moment
    assert hot["score"] == round(exact.score, 2)
    assert hot["factors"]["age"]["raw"] == 5 * 3600 + 7 * 60
    assert hot["factors"]["lateness"]["raw"] == exact.lateness
    assert decimals(exact.score) > 2 and decimals(exact.factors["age"].share) > 4


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
        # Before the calendar's first day: nothing is that old, everything that young.
        ({"age_min_days": "3000000"}, set()),
        ({"age_max_days": "1e12"}, LISTED),
        # Late by 59 SLAs (old), 29 (nobody: an hour's owner assignment) and 65 (weekend).
        ({"lateness_min": "10"}, {"old", "nobody", "weekend"}),
        ({"team": "east", "reason": "no_owner"}, {"nobody"}),
        # With an offset, as every time in the API: UTC or another zone, the same moment.
        ({"arrived_after": "2026-03-02T09:00:00Z"}, {"hot"}),
        ({"arrived_after": "2026-03-02T10:00:00+01:00"}, {"hot"}),
        ({"arrived_before": "2026-03-01T09:00:00-00:00"}, {"old", "weekend"}),
        # A segment that names nothing selects nothing, as on alerts/: codes are not revealed.
        ({"segment": "warm"}, set()),
        ({"segment": "hot", "team": "west"}, set()),
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
        ({"team": "0"}, "team"),
        ({"owner": "1.5"}, "owner"),
        ({"owner": "-3"}, "owner"),
        # A time without an offset is refused, not read in some zone.
        ({"arrived_after": "2026-03-01T09:00:00"}, "arrived_after"),
        ({"arrived_before": "2026-03-01"}, "arrived_before"),
        ({"reason": "too_late"}, "reason"),
        ({"severity": "urgent"}, "severity"),
        ({"channel": "pigeon"}, "channel"),
        ({"value_min": "lots"}, "value_min"),
        ({"age_min_days": "-1"}, "age_min_days"),
        ({"age_max_days": "soon"}, "age_max_days"),
        ({"lateness_min": "-0.5"}, "lateness_min"),
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


@pytest.mark.parametrize("ordering", list(register.ORDERINGS))
def test_next_to_the_end_and_previous_back_while_the_clock_moves(
    api: Api, world: World, ordering: str
) -> None:
    """Two rows a page, the clock three hours later at each request: every page is ranked at
    the first page's moment, so the rows, their order and their numbers do not drift."""
    expected = world.names(register.unfollowed(NOW).order_by(*register.ORDERINGS[ordering]))
    client = api(world.user("ops"))
    clock = [NOW]

    def fetch(url: str, query: dict[str, Any] | None = None) -> Any:
        with time_machine.travel(clock[-1], tick=False):
            response = client.get(url, query)
        clock.append(clock[-1] + 3 * HOUR)
        assert response.status_code == 200, response.json()
        return response.json()

    forward = [fetch(URL, {"ordering": ordering, "page_size": 2})]
    while forward[-1]["next"] is not None:
        forward.append(fetch(forward[-1]["next"]))
    backward = [forward[-1]]
    while backward[-1]["previous"] is not None:
        backward.append(fetch(backward[-1]["previous"]))
    assert [world.name_of(r["id"]) for page in forward for r in page["results"]] == expected
    # The same pages, rows and numbers (score, lateness, age) on the way back, ending on the
    # first page.
    assert [page["results"] for page in reversed(backward)] == [p["results"] for p in forward]
    assert len(forward) == 4 and clock[-1] > NOW + 18 * HOUR


def test_rows_leaving_between_pages_are_neither_repeated_nor_a_dead_end(
    api: Api, world: World
) -> None:
    client = api(world.user("ops"))
    first = client.get(URL, {"page_size": 6}).json()
    shown = [world.name_of(r["id"]) for r in first["results"]]
    (last,) = LISTED - set(shown)
    # The one row after the first page leaves the register before the next page is read.
    for alert in Alert.objects.filter(opportunity_id=world.opps[last]):
        lifecycle.dismiss(alert, reason="Spam", by=world.user("ops"), now=NOW)
    empty = client.get(first["next"]).json()
    assert empty["results"] == [] and empty["next"] is None
    # Back from nothing: the last page, which is the first page's rows.
    back = client.get(empty["previous"]).json()
    assert [world.name_of(r["id"]) for r in back["results"]] == shown
    assert back["previous"] is None and back["next"] is None


def cursor_of(link: str) -> dict[str, list[str]]:
    (encoded,) = parse.parse_qs(parse.urlsplit(link).query)["cursor"]
    return parse.parse_qs(base64.b64decode(encoded).decode())


def with_cursor(link: str, tokens: dict[str, list[str]]) -> str:
    encoded = base64.b64encode(parse.urlencode(tokens, doseq=True).encode()).decode()
    return URL + "?" + parse.urlencode({"page_size": 2, "cursor": encoded})


def test_a_cursor_ranks_at_its_first_pages_moment_for_a_day(api: Api, world: World) -> None:
    client = api(world.user("ops"))
    first = client.get(URL, {"page_size": 2, "explain": "1"}).json()
    link = first["next"]
    expected = client.get(link).json()["results"]
    with time_machine.travel(NOW + 23 * HOUR, tick=False):
        later = client.get(link)
    assert later.status_code == 200 and later.json()["results"] == expected
    # The age filters count from that moment too: 5 hours old at NOW, 28 hours at NOW + 23h.
    query = {"age_max_days": "1", "ordering": "age", "page_size": 1}
    young = client.get(URL, query).json()
    with time_machine.travel(NOW + 23 * HOUR, tick=False):
        response = client.get(young["next"])
    assert names(world, response) == ["west"] and response.json()["next"] is not None
    # Past a day the cursor is refused: start again from the first page.
    with time_machine.travel(NOW + timedelta(days=1, seconds=1), tick=False):
        expired = client.get(link)
    assert expired.status_code == 400 and list(expired.json()["fields"]) == ["cursor"]
    # A moment the server has not reached yet is no cursor of ours.
    tokens = cursor_of(link)
    tokens["n"] = [(NOW + HOUR).isoformat()]
    future = client.get(with_cursor(link, tokens))
    assert future.status_code == 400 and list(future.json()["fields"]) == ["cursor"]


@pytest.mark.parametrize(
    "change",
    [
        {"p": ["abc", "1"]},  # text where the score is
        {"p": ["nan", "1"]},
        {"p": ["1.5"]},  # one field of two
        {"p": ["1.5", str(2**63)]},  # beyond a bigint
        {"n": ["2026-03-02T15:00:00"]},  # a naive moment
        {"n": []},  # no moment
        {"o": ["1"]},  # not one of our tokens
    ],
)
def test_a_forged_cursor_is_a_400(api: Api, world: World, change: dict[str, list[str]]) -> None:
    link = get(api, world, {"page_size": 2}).json()["next"]
    tokens = {**cursor_of(link), **change}
    response = api(world.user("ops")).get(with_cursor(link, tokens))
    assert response.status_code == 400, response.json()
    assert list(response.json()["fields"]) == ["cursor"]


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


def test_the_schema_types_each_parameter(api: Api, world: World) -> None:
    document = api(world.user("ops")).get(SCHEMA, {"format": "json"}).json()
    (path,) = [p for p in document["paths"] if p.endswith("/register/")]
    schemas = {p["name"]: p["schema"] for p in document["paths"][path]["get"]["parameters"]}
    for name in ("team", "owner"):
        assert schemas[name]["type"] == "integer" and schemas[name]["minimum"] == 1
    descriptions = {
        p["name"]: p.get("description") for p in document["paths"][path]["get"]["parameters"]
    }
    assert descriptions["team"] == "A team's id: it and the teams below it."
    assert "a day" in descriptions["cursor"]
    for name in ("age_min_days", "age_max_days", "lateness_min"):
        assert schemas[name] == {"type": "number", "minimum": 0}
    for name in ("arrived_after", "arrived_before"):
        assert schemas[name] == {"type": "string", "format": "date-time"}
    factor = document["components"]["schemas"]["Factor"]["properties"]["raw"]
    assert "age in seconds" in factor["description"]


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
    # A later page, in either direction, costs the same.
    second = client.get(URL, {"page_size": 1}).json()["next"]
    third = client.get(second).json()["next"]
    back = client.get(third).json()["previous"]
    for link, rows in ((second, 3), (back, 2)):
        cursor = parse.parse_qs(parse.urlsplit(link).query)["cursor"][0]
        assert cost(1, cursor=cursor) == cost(rows, cursor=cursor) == cost(1)


@pytest.mark.parametrize("explain", [False, True])
def test_rows_are_written_as_their_declared_fields_write_them(world: World, explain: bool) -> None:
    """The row serializer writes its rows out by hand for speed; DRF's walk over the declared
    fields (what the schema documents) must give the same JSON for every row."""
    page = list(register.unfollowed(NOW).select_related("owner", "team", "segment"))
    rows = register.rows(page, NOW)
    assert rows and any(row.alerts for row in rows) and any(r.opportunity.owner for r in rows)
    serializer = RowSerializer(context={"explain": explain})
    for row in rows:
        declared = dict(serializers.Serializer.to_representation(serializer, row))
        if not explain:
            declared.pop("factors")
        written = serializer.to_representation(row)
        assert list(written) == list(declared)
        assert json.loads(json.dumps(written)) == json.loads(json.dumps(declared))
