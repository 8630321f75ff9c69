"""The world the API's permission matrix and its schemathesis run share.

It is the admin matrix's world (tests/test_admin_matrix.py: EMEA with alex and his manager
maria, EMEA North below it, APAC with bea and her manager olga, a viewer with view permissions
only, ops with see-all and every permission, a superuser; four opportunities with alerts,
touches, handoffs, suppressions, escalations and notifications), so that the admin and the API
are held to one set of rules on the same rows. Each role also gets an API token.

Build it once per module, in a transaction rolled back at the end (``module_world``), with the
clock frozen at ``NOW``; each test then runs in its own savepoint.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import time_machine
from django.db import connection, transaction
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from followup_visibility.api import schema as api_schema
from tests.test_admin_alerts import HOUR, NOW, T0
from tests.test_admin_matrix import (
    MISSING,
    TITLES,
    VISIBLE,
    World,
    make_configuration,
    make_pipeline,
    make_users,
)

__all__ = ["HOUR", "MISSING", "NOW", "T0", "TITLES", "VISIBLE"]

#: Who calls the API: no one, a rep, his manager, the other team's manager, a user with view
#: permissions but no scope and no write permission, see-all operations, a superuser.
ROLES = ("anonymous", "alex", "maria", "olga", "viewer", "ops", "superuser")
SEE_ALL = frozenset({"ops", "superuser"})


@dataclass
class ApiWorld(World):
    """The admin matrix's world, with a token per signed-in role."""

    tokens: dict[str, str] = field(default_factory=dict)

    def opportunities_seen_by(self, role: str) -> set[int]:
        """The keys of the world's opportunities the role may see."""
        if role == "anonymous":
            return set()
        return {self.rows["trackedopportunity"][side] for side in VISIBLE[role]}


def build() -> ApiWorld:
    world = ApiWorld()
    users = make_users(world)
    make_configuration(world, users)
    make_pipeline(world, users)
    for role in ROLES[1:]:
        world.tokens[role] = Token.objects.create(user=users[role]).key
    return world


def module_world(django_db_blocker: Any) -> Iterator[ApiWorld]:
    """Body of a module-scoped fixture: the world, built once and rolled back at the end."""
    with django_db_blocker.unblock(), transaction.atomic():
        with time_machine.travel(NOW, tick=False):
            built = build()
        yield built
        transaction.set_rollback(True)


def client(world: ApiWorld, role: str) -> APIClient:
    """An API client with the role's token (none for anonymous)."""
    made = APIClient()
    if role != "anonymous":
        made.credentials(HTTP_AUTHORIZATION=f"Token {world.tokens[role]}")
    return made


def headers(world: ApiWorld, role: str) -> dict[str, str]:
    """The role's credentials as HTTP headers (for schemathesis)."""
    return {} if role == "anonymous" else {"Authorization": f"Token {world.tokens[role]}"}


def prefix() -> str:
    """Where the host (the example project) mounts the API, e.g. ``/api/followup``."""
    return reverse("followup_visibility_api:schema").removesuffix("/schema/")


def openapi(world: ApiWorld) -> dict[str, Any]:
    """The OpenAPI document as the API serves it."""
    response = client(world, "superuser").get(prefix() + "/schema/", {"format": "json"})
    assert response.status_code == 200, response.content[:500]
    document: dict[str, Any] = response.json()
    assert document["info"]["title"] == api_schema.SETTINGS["TITLE"]
    return document


def operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    """``(METHOD, path)`` of every operation the document describes."""
    return {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in {"get", "put", "post", "patch", "delete", "head", "options", "trace"}
    }


def writes() -> int:
    """Rows inserted, updated or deleted so far, in every table (rolled back or not).

    One cheap query, so that every request of the matrix can be checked to write nothing:
    the transaction's counters on PostgreSQL, the connection's on SQLite.
    """
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) "
                "FROM pg_stat_xact_user_tables"
            )
        else:
            cursor.execute("SELECT total_changes()")
        return int(cursor.fetchone()[0])
