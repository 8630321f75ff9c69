"""The API's permission matrix: every operation, for every role.

Roles (tests/api_world.py): anonymous; alex, a rep of EMEA; maria, his manager; olga, the
manager of APAC; a viewer with view permissions only (no team, no write permission); ops, with
see-all and every permission of the app; and a superuser.

The rules, for each operation of the OpenAPI schema (and the two pages outside it):
- anonymous: 401, nothing written;
- signed in without the model permission the operation needs: 403, nothing written, whatever
  the row;
- an object outside the caller's scope, named in the path or in the body: exactly the answer a
  missing id gets (404 for a path; the same field error for a body), nothing written;
- a row in scope: the operation's answer (and a write, for a write); lists show only rows
  in scope.

``OPERATIONS`` describes each operation; an operation the schema has and the table does not
(or the other way round) fails ``test_every_operation_is_in_the_matrix``, so a new endpoint is
part of the matrix before it can pass. The world is built once per module in a transaction
rolled back at the end; each test runs in its own savepoint, with the clock frozen at ``NOW``.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import pytest
import time_machine
from django.db.models import Model, QuerySet
from django.urls import URLPattern, URLResolver, resolve

from followup_visibility.api import urls as api_urls
from followup_visibility.choices import ACTIVE_ALERT_STATUSES, NotificationChannel
from followup_visibility.models import (
    Alert,
    InhibitionRule,
    Notification,
    SlaPolicy,
    Suppression,
    Touch,
    TrackedOpportunity,
)
from tests import api_world
from tests.api_world import HOUR, MISSING, NOW, ROLES, SEE_ALL, VISIBLE, ApiWorld


@pytest.fixture(scope="module")
def world(django_db_setup: Any, django_db_blocker: Any) -> Iterator[ApiWorld]:
    yield from api_world.module_world(django_db_blocker)


@pytest.fixture(autouse=True)
def frozen(world: ApiWorld, db: Any) -> Iterator[None]:
    with time_machine.travel(NOW, tick=False):
        yield


# Who gets which row ----------------------------------------------------------------------------

#: The row of each kind that each role sees (None: none), and one it does not (None: it sees
#: them all). Opportunities and what hangs on them: alex and maria EMEA's (a), olga APAC's (b).
#: The inbox is one's own, for everyone (the whole log is the admin's, not the API's).
OWN_SIDE = {"alex": "a", "maria": "a", "olga": "b", "viewer": None, "ops": "a", "superuser": "a"}
OTHER_SIDE = {"alex": "b", "maria": "b", "olga": "a", "viewer": "a"}
OWN_INBOX = {"alex": "alex", "maria": "maria", "olga": "olga"}
OTHER_INBOX = {"alex": "bea", "maria": "alex", "olga": "bea", "viewer": "alex", "ops": "alex"}
OTHER_INBOX["superuser"] = "bea"
#: Configuration is visible to whoever may view it; a team's row is changed by its managers.
CONFIG_SIDE = {"olga": "b"}
UNADMINISTERED = {"alex": "a", "maria": "b", "olga": "a", "viewer": "a"}


def mine(world: ApiWorld, kind: str, role: str) -> Any:
    rows = world.rows[TARGETS[kind]]
    if kind == "notification":
        name = OWN_INBOX.get(role)
        return rows[name] if name else None
    if kind == "inhibitionrule":
        return rows["company"]
    if kind == "slapolicy":
        return rows[CONFIG_SIDE.get(role, "a")]
    side = OWN_SIDE.get(role)
    return rows[side] if side else None


def hidden(world: ApiWorld, kind: str, role: str) -> Any:
    rows = world.rows[TARGETS[kind]]
    if kind == "notification":
        name = OTHER_INBOX.get(role)
        return rows[name] if name else None
    if kind in CONFIGURATION:
        return None
    side = OTHER_SIDE.get(role)
    return rows[side] if side else None


def unadministered(world: ApiWorld, kind: str, role: str) -> Any:
    """A configuration row the role sees but may not change (None: it changes them all)."""
    side = UNADMINISTERED.get(role)
    return world.rows[TARGETS[kind]][side] if side else None


#: A kind of target and the key of its rows in ``world.rows``.
TARGETS = {
    "opportunity": "trackedopportunity",
    "alert": "alert",
    "suppression": "suppression",
    "notification": "notification",
    "slapolicy": "slapolicy",
    "inhibitionrule": "inhibitionrule",
}
CONFIGURATION = ("slapolicy", "inhibitionrule")


# The table -------------------------------------------------------------------------------------

#: A query or a body, from the world, the caller's role and the key of the row it names.
Build = Callable[[ApiWorld, str, Any], dict[str, Any]]
Rule = Callable[[Any], bool]


def perms(*codenames: str) -> Rule:
    """Holding every one of these permissions of the app."""
    return lambda user: bool(user.has_perms([f"followup_visibility.{c}" for c in codenames]))


def either(*codenames: str) -> Rule:
    """Holding one of these permissions of the app (the admin's read-only page: view or change)."""
    return lambda user: any(user.has_perm(f"followup_visibility.{c}") for c in codenames)


def anyone(user: Any) -> bool:
    return True


@dataclass(frozen=True)
class Op:
    """How to call one operation and what it must answer.

    ``target``: the kind of row the request names (in the path, the ``query`` or the
    ``body``, which are built from the row's key). ``needs``: whom the permission check lets
    through (403 for the others). ``administered``: the row must also be configuration the
    role changes (403 otherwise). ``done``: the answer on a row in scope, with a write if
    ``writes``. ``listed``: for a list, the keys it must show to the role; ``check``: what
    else the answer must (not) show the role.
    """

    needs: Rule = anyone
    target: str | None = None
    query: Build | None = None
    body: Build | None = None
    done: int = 200
    writes: bool = False
    administered: bool = False
    listed: Callable[[ApiWorld, str], set[int]] | None = None
    check: Callable[[ApiWorld, str, Any], None] | None = None


def sides(world: ApiWorld, kind: str, role: str, among: str = "abcd") -> set[int]:
    """The keys of the rows of ``kind`` on the opportunities the role sees."""
    rows = world.rows[TARGETS[kind]]
    return {rows[side] for side in VISIBLE[role] if side in among and side in rows}


def unfollowed(world: ApiWorld, role: str) -> set[int]:
    # The world stalls a and b for 30 days (make_pipeline): they leave the register.
    return sides(world, "opportunity", role, among="cd")


def active_alerts(world: ApiWorld, role: str) -> set[int]:
    return set(
        Alert.objects.filter(
            opportunity__in=sides(world, "opportunity", role), status__in=ACTIVE_ALERT_STATUSES
        ).values_list("pk", flat=True)
    )


def own_inbox(world: ApiWorld, role: str) -> set[int]:
    return set(
        Notification.objects.filter(
            recipient_id=world.users[role], channel=NotificationChannel.INBOX
        ).values_list("pk", flat=True)
    )


def every(model: type[Model]) -> Callable[[ApiWorld, str], set[int]]:
    return lambda world, role: set(model._default_manager.values_list("pk", flat=True))


def just(body: dict[str, Any]) -> Build:
    return lambda world, role, pk: body


def touch(world: ApiWorld, role: str, pk: Any) -> dict[str, Any]:
    return {
        "opportunity": pk,
        "channel": "phone",
        "direction": "outbound",
        "outcome": "connected",
        "occurred_at": (NOW - HOUR).isoformat(),
        "summary": "Demo booked",
    }


def duplicate_of(world: ApiWorld, role: str, pk: Any) -> dict[str, Any]:
    """Merge d (alex's, filed under APAC: seen by alex, maria, olga and see-all) into ``pk``."""
    return {"duplicate": world.rows["trackedopportunity"]["d"], "reason": "Same customer"}


ALERT_ACTIONS = {
    "acknowledge": (("change_alert",), None),
    "snooze": (("change_alert",), {"for": "PT4H", "reason": "Back from the fair"}),
    "dismiss": (("change_alert",), {"reason": "Bought via a partner"}),
    "resolve": (("change_alert",), {"evidence": "Called at 14:05"}),
    "suppress": (("change_alert", "add_suppression"), {"comment": "Internal test lead"}),
}


def seen(world: ApiWorld, role: str) -> QuerySet[TrackedOpportunity]:
    return TrackedOpportunity.objects.filter(pk__in=sides(world, "opportunity", role))


def overdue_in_scope(world: ApiWorld, role: str, data: Any) -> None:
    owners = set(seen(world, role).values_list("owner_id", flat=True))
    assert {row["owner"] for row in data["by_owner"]} <= owners
    assert data["opportunities"] <= seen(world, role).count()
    if role in SEE_ALL:
        assert data["opportunities"] > 0, "counts that count nothing prove nothing"


def demand_in_scope(world: ApiWorld, role: str, data: Any) -> None:
    total = data["total"]
    assert total["met"] + total["missed"] + total["pending"] == seen(world, role).count()


def lag_in_scope(world: ApiWorld, role: str, data: Any) -> None:
    touches = Touch.objects.filter(opportunity__in=seen(world, role)).count()
    assert (data["overall"] or {"count": 0})["count"] == touches


SEE_RULES = either("view_inhibitionrule", "change_inhibitionrule")
SEE_POLICIES = either("view_slapolicy", "change_slapolicy")
COMPANY = "view_all_opportunities"  # company-wide configuration: the see-all permission
CHANGE_OPPORTUNITY = perms("change_trackedopportunity")

OPERATIONS: dict[tuple[str, str], Op] = {
    ("GET", "/register/"): Op(listed=unfollowed),
    # Alerts
    ("GET", "/alerts/"): Op(listed=active_alerts),
    ("GET", "/alerts/{id}/"): Op(target="alert"),
    **{
        ("POST", f"/alerts/{{id}}/{name}/"): Op(
            needs=perms(*codenames),
            target="alert",
            body=None if body is None else just(body),
            writes=True,
        )
        for name, (codenames, body) in ALERT_ACTIONS.items()
    },
    ("POST", "/alerts/{id}/reassign/"): Op(
        needs=perms("change_alert", "change_trackedopportunity"),
        target="alert",
        # Oneself: the one owner every role may name (anonymous is refused before).
        body=lambda world, role, pk: {"owner": world.users.get(role, MISSING)},
        writes=True,
    ),
    ("POST", "/alerts/bulk/"): Op(
        needs=perms("change_alert"),
        target="alert",
        body=lambda world, role, pk: {"action": "acknowledge", "ids": [pk]},
        writes=True,
    ),
    # Touches
    ("GET", "/touches/"): Op(target="opportunity", query=lambda w, r, pk: {"opportunity": pk}),
    ("POST", "/touches/"): Op(
        needs=perms("add_touch"), target="opportunity", body=touch, done=201, writes=True
    ),
    # Opportunities
    ("GET", "/opportunities/"): Op(listed=lambda w, role: sides(w, "opportunity", role)),
    ("GET", "/opportunities/{id}/"): Op(target="opportunity"),
    ("GET", "/opportunities/{id}/history/"): Op(target="opportunity"),
    ("GET", "/opportunities/{id}/timeline/"): Op(target="opportunity"),
    ("POST", "/opportunities/{id}/merge/"): Op(
        needs=CHANGE_OPPORTUNITY, target="opportunity", body=duplicate_of, writes=True
    ),
    ("POST", "/opportunities/{id}/next-action/"): Op(
        needs=CHANGE_OPPORTUNITY,
        target="opportunity",
        body=just({"due_at": (NOW + 48 * HOUR).isoformat(), "note": "Send the quote"}),
        writes=True,
    ),
    # Suppressions
    ("GET", "/suppressions/"): Op(listed=lambda w, role: sides(w, "suppression", role)),
    ("GET", "/suppressions/{id}/"): Op(target="suppression"),
    ("POST", "/suppressions/"): Op(
        needs=perms("add_suppression"),
        target="opportunity",
        body=lambda world, role, pk: {"opportunity": pk, "comment": "Quiet please"},
        done=201,
        writes=True,
    ),
    ("POST", "/suppressions/{id}/end/"): Op(
        needs=perms("change_suppression"), target="suppression", writes=True
    ),
    # Inhibition rules: company-wide
    ("GET", "/inhibition-rules/"): Op(needs=SEE_RULES, listed=every(InhibitionRule)),
    ("GET", "/inhibition-rules/{id}/"): Op(needs=SEE_RULES, target="inhibitionrule"),
    ("POST", "/inhibition-rules/"): Op(
        needs=perms("add_inhibitionrule", COMPANY),
        body=just({"source": "never_contacted", "target": "stale"}),
        done=201,
        writes=True,
    ),
    ("PATCH", "/inhibition-rules/{id}/"): Op(
        needs=perms("change_inhibitionrule", COMPANY),
        target="inhibitionrule",
        body=just({"comment": "Taken over"}),
        writes=True,
    ),
    ("DELETE", "/inhibition-rules/{id}/"): Op(
        needs=perms("delete_inhibitionrule", COMPANY),
        target="inhibitionrule",
        done=204,
        writes=True,
    ),
    # SLA policies: a team's are changed (and previewed) by its managers
    ("GET", "/sla-policies/"): Op(needs=SEE_POLICIES, listed=every(SlaPolicy)),
    ("GET", "/sla-policies/{id}/"): Op(needs=SEE_POLICIES, target="slapolicy"),
    ("GET", "/sla-policies/{id}/versions/"): Op(needs=SEE_POLICIES, target="slapolicy"),
    ("POST", "/sla-policies/{id}/what-if/"): Op(
        needs=perms("change_slapolicy"),
        target="slapolicy",
        body=just({"first_response": "PT2H"}),
        administered=True,
    ),
    # Metrics: counts over the caller's scope
    ("GET", "/metrics/overdue/"): Op(check=lambda w, role, data: overdue_in_scope(w, role, data)),
    ("GET", "/metrics/first-response/"): Op(
        check=lambda w, role, data: demand_in_scope(w, role, data)
    ),
    ("GET", "/metrics/logging-lag/"): Op(check=lambda w, role, data: lag_in_scope(w, role, data)),
    # Notifications: one's own inbox
    ("GET", "/notifications/"): Op(listed=own_inbox),
    ("GET", "/notifications/{id}/"): Op(target="notification"),
    ("POST", "/notifications/mark-read/"): Op(
        needs=perms("view_notification"),
        target="notification",
        body=lambda world, role, pk: {"ids": [pk]},
        writes=True,
    ),
}

#: Routes outside the schema: (a request, the answer to any signed-in user).
UNDOCUMENTED = {
    "schema": ("GET", "/schema/", 200),
    "reference": ("GET", "/reference/", 200),
    # Any other path (here a malformed id): the API's 404, in its error shape.
    "missing": ("POST", "/alerts/0.5/acknowledge/", 404),
}


# Helpers ---------------------------------------------------------------------------------------

PARAMETER = re.compile(r"\{[^}]+\}")


@dataclass
class Caller:
    """One role calling one operation, on whichever row."""

    world: ApiWorld
    role: str
    key: tuple[str, str]

    def __post_init__(self) -> None:
        self.client = api_world.client(self.world, self.role)
        self.op = OPERATIONS[self.key]

    def __call__(self, pk: Any) -> Any:
        method, path = self.key
        url = api_world.prefix() + PARAMETER.sub(str(pk), path)
        if self.op.query is not None:
            url += "?" + urlencode(self.op.query(self.world, self.role, pk))
        if self.op.body is None:
            return self.client.generic(method, url)
        body = json.dumps(self.op.body(self.world, self.role, pk))
        return self.client.generic(method, url, body, content_type="application/json")


def assert_like_missing(call: Caller, pk: Any) -> None:
    """The row out of scope gets the answer a missing id gets (with its own id in it)."""
    missing, response = call(MISSING), call(pk)
    assert response.status_code == missing.status_code, response.content
    assert response.status_code in {200, 400, 404}, response.content
    assert response.content.decode() == missing.content.decode().replace(str(MISSING), str(pk))


def cell_params() -> list[Any]:
    return [
        pytest.param(key, role, id=f"{key[0]} {key[1]} {role}")
        for key in OPERATIONS
        for role in ROLES
    ]


# Completeness ----------------------------------------------------------------------------------


def test_the_world_is_what_the_matrix_assumes(world: ApiWorld) -> None:
    before = api_world.writes()
    Suppression.objects.filter(pk=world.rows["suppression"]["a"]).update(comment="Probe")
    assert api_world.writes() == before + 1  # the probe the matrix trusts sees a write
    assert world.opportunities_seen_by("alex") == {
        world.rows["trackedopportunity"][side] for side in "ad"
    }


def test_every_operation_is_in_the_matrix(world: ApiWorld) -> None:
    described = api_world.operations(api_world.openapi(world))
    assert sorted(described - set(OPERATIONS)) == [], "describe these operations in OPERATIONS"
    assert sorted(set(OPERATIONS) - described) == [], "these operations are gone from the API"


def patterns(entries: list[Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    for entry in entries:
        if isinstance(entry, URLResolver):
            yield from patterns(entry.url_patterns, prefix + str(entry.pattern))
        else:
            assert isinstance(entry, URLPattern)
            yield prefix + str(entry.pattern), entry.name or ""


def test_every_route_is_in_the_matrix(world: ApiWorld) -> None:
    prefix = api_world.prefix()
    reached = {resolve(prefix + PARAMETER.sub("1", path)).url_name for _m, path in OPERATIONS}
    reached |= set(UNDOCUMENTED)
    routed = {name for _pattern, name in patterns(api_urls.urlpatterns)}
    assert routed == reached


# The cells -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "role"), cell_params())
def test_each_operation_answers_each_role_by_scope_and_permission(
    world: ApiWorld, key: tuple[str, str], role: str
) -> None:
    call = Caller(world, role, key)
    op = call.op
    kind = op.target
    own = mine(world, kind, "superuser" if role == "anonymous" else role) if kind else None
    before = api_world.writes()
    if role == "anonymous":
        assert call(own).status_code == 401
        assert api_world.writes() == before
        return
    if not op.needs(world.user(role)):
        # Refused whatever the row: the role's own, or one it may not see.
        pk = own if own is not None else hidden(world, kind, role) if kind else None
        response = call(MISSING if pk is None else pk)
        assert response.status_code == 403, response.content
        assert api_world.writes() == before
        return
    if kind is not None:
        other = hidden(world, kind, role)
        if other is not None:
            assert_like_missing(call, other)
        elif "{" in key[1]:
            assert call(MISSING).status_code == 404
        if op.administered and (theirs := unadministered(world, kind, role)) is not None:
            assert call(theirs).status_code == 403
        assert api_world.writes() == before
        if own is None:
            return
    response = call(own)
    assert response.status_code == op.done, response.content
    assert (api_world.writes() > before) == op.writes
    if op.listed is not None:
        assert {row["id"] for row in response.json()["results"]} == op.listed(world, role)
    if op.check is not None:
        op.check(world, role, response.json())


@pytest.mark.parametrize("name", sorted(UNDOCUMENTED))
@pytest.mark.parametrize("role", ["anonymous", "viewer"])
def test_the_routes_outside_the_schema_need_only_a_signed_in_user(
    world: ApiWorld, name: str, role: str
) -> None:
    """The schema, its reference page and the 404 of any other path: the same for everyone
    signed in (generating the schema takes a second, so the least privileged user stands for
    the others)."""
    method, path, status = UNDOCUMENTED[name]
    before = api_world.writes()
    response = api_world.client(world, role).generic(method, api_world.prefix() + path)
    assert response.status_code == (401 if role == "anonymous" else status)
    if name == "missing":
        assert response.json()["status"] == response.status_code  # the API's error shape
    assert api_world.writes() == before


# What every query shares ------------------------------------------------------------------------


def queries(world: ApiWorld) -> Iterator[tuple[str, dict[str, Any], Any]]:
    """Each GET operation of the schema as the superuser calls it on a row of theirs: the
    URL, the query parameters it documents, and a client."""
    document = api_world.openapi(world)
    client = api_world.client(world, "superuser")
    for path, item in document["paths"].items():
        if "get" not in item:
            continue
        op = OPERATIONS["GET", path]
        pk = mine(world, op.target, "superuser") if op.target else None
        url = api_world.prefix() + PARAMETER.sub(str(pk), path)
        base = op.query(world, "superuser", pk) if op.query else {}
        parameters = {p["name"]: p for p in item["get"].get("parameters", []) if p["in"] == "query"}
        yield url, {"base": base, **parameters}, client


#: A cursor whose position is text where the ordering wants a number or a time.
FORGED_CURSOR = base64.b64encode(b"p=abc").decode()


def test_a_bad_page_or_cursor_is_a_400_on_every_list(world: ApiWorld) -> None:
    paged = 0
    for url, parameters, client in queries(world):
        if "cursor" not in parameters:
            continue
        paged += 1
        base = parameters["base"]
        for name, value in [("cursor", FORGED_CURSOR), ("cursor", "x"), ("page_size", "0")] + [
            ("page_size", "-1"),
            ("page_size", "ten"),
        ]:
            response = client.get(url, {**base, name: value})
            assert response.status_code == 400, (url, name, value, response.content)
            assert list(response.json()["fields"]) == [name], (url, response.content)
        for size in ("1", "5000"):  # more than 200 gives 200
            assert client.get(url, {**base, "page_size": size}).status_code == 200, url
    assert paged >= 10


def test_times_in_queries_are_read_as_utc_and_bounded(world: ApiWorld) -> None:
    """PostgreSQL refuses offsets past 15:59 (a server error if one reached it); years outside
    1900-9998 are refused before (a local offset in seconds, an overflow)."""
    timed = 0
    for url, parameters, client in queries(world):
        for name, parameter in parameters.items():
            if parameter == parameters["base"] or parameter["schema"].get("format") != "date-time":
                continue
            timed += 1
            base = parameters["base"]
            far = client.get(url, {**base, name: "2026-03-01T23:00:00+21:45"})
            assert far.status_code == 200, (url, name, far.content)
            old = client.get(url, {**base, name: "0078-03-12T00:26:03Z"})
            assert old.status_code == 400, (url, name, old.content)
            assert list(old.json()["fields"]) == [name]
    assert timed >= 4
