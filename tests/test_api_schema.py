"""schemathesis against the API's own OpenAPI schema, in process (WSGI), on PostgreSQL.

Every operation of the schema gets a few generated requests, valid and invalid, on the world
of tests/api_world.py; path ids (and the team, opportunity and segment a query names) are
drawn mostly from real rows, so that requests reach objects rather than 404s. No answer may be
a 5xx or differ from what the schema documents: status code, content type, headers, body.
A stateful run then follows the links schemathesis infers from the schema (a rule created,
then read and ended; an alert listed, then acknowledged, snoozed or resolved).

Each request runs in a savepoint rolled back after it (each stateful scenario in one), so
every one meets the same world. The schema is generated at collection (the operations become
test ids) by the generator ``schema/`` uses; ``test_the_schema_tested_is_the_one_served``
fetches ``schema/`` through the WSGI application and checks they are the same document.

Checks left out, and why:
- ``positive_data_acceptance``: the schema cannot tell a good request from one the API
  rightly refuses (a next action dated in the past, a rule inhibiting its own signal, since
  after until, an opaque cursor that is not one of ours, an id of nothing); the matrix and
  each endpoint's tests pin those answers.
- ``negative_data_rejection`` on writes: DRF coerces JSON types (``0`` for ``false``, ``5``
  for ``"5"``), so a schema-violating body may be accepted; queries are held to it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
import time_machine
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections, connection, transaction
from django.db.models import Model
from hypothesis import HealthCheck, settings
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from followup_visibility.api import reference
from followup_visibility.models import (
    Alert,
    InhibitionRule,
    Notification,
    SlaPolicy,
    Suppression,
    TrackedOpportunity,
)
from tests import api_world
from tests.api_world import NOW, ApiWorld

if connection.vendor != "postgresql":
    pytest.skip("schemathesis runs on PostgreSQL only (as CI does)", allow_module_level=True)

pytestmark = pytest.mark.django_db  # each test in a savepoint of the world's transaction

#: Few examples per operation, and only the fuzzing phases: the file must stay fast.
SETTINGS = settings(
    max_examples=8,
    deadline=None,
    derandomize=True,  # the same requests on every run: a failure in CI is reproducible
    database=None,
    suppress_health_check=list(HealthCheck),
)
STATEFUL = settings(SETTINGS, max_examples=10, stateful_step_count=4)
#: Who calls: the superuser reaches every row and may do everything; the inbox is alex's.
ROLE = "superuser"
ROLE_BY_PATH = {"/notifications/": "alex"}
#: The rows a path's ``{id}`` names.
RESOURCES: dict[str, type[Model]] = {
    "/alerts/": Alert,
    "/opportunities/": TrackedOpportunity,
    "/suppressions/": Suppression,
    "/inhibition-rules/": InhibitionRule,
    "/sla-policies/": SlaPolicy,
    "/notifications/": Notification,
}
#: Query parameters that name a row, pointed at one of the world's when the drawn value has a
#: plausible type (an ill-typed value stays: it must be refused).
NAMED: dict[str, tuple[type, ...]] = {"team": (int, str), "opportunity": (int,), "segment": (str,)}
WRITES_EXCLUDED = [positive_data_acceptance, negative_data_rejection]
READS_EXCLUDED = [positive_data_acceptance]
#: Failures found and left to the endpoint's owner, by operation: a text of the failure and
#: why. The operation xfails on exactly that failure; fixing it makes the entry unneeded.
KNOWN: dict[tuple[str, str], tuple[str, str]] = {}
#: Per path prefix (or query parameter), keys of the world's rows; filled with the world.
KEYS: dict[str, list[Any]] = {}


def generated() -> dict[str, Any]:
    """The document ``schema/`` serves, generated in process (no database needed)."""
    return reference.generate(None, api_world.prefix())  # type: ignore[arg-type]


#: Kept apart: schemathesis adds the links it infers to the document it was given.
GENERATED = generated()
schema = schemathesis.openapi.from_dict(copy.deepcopy(GENERATED))
schema.app = WSGIHandler()
schema.config.phases.coverage.enabled = False  # doubles the time; fuzzing finds the same


@schema.hook
def map_path_parameters(context: Any, parameters: Any) -> Any:
    """Mostly real rows; the rest keeps the drawn id (a 404, or a 400 for a malformed one)."""
    start = next((s for s in RESOURCES if context.operation.path.startswith(s)), None)
    drawn = parameters.get("id") if isinstance(parameters, dict) else None
    if start is None or not isinstance(drawn, int):
        return parameters
    pool = KEYS[start]
    index = drawn % (len(pool) + 1)
    return {**parameters, "id": pool[index]} if index < len(pool) else parameters


@schema.hook
def map_query(context: Any, query: Any) -> Any:
    """Rows the world has; no made-up ``cursor`` (the API's cursors are opaque tokens it
    made itself: any other is a 400, pinned in tests/test_api_matrix.py)."""
    if not isinstance(query, dict):
        return query
    mapped = {
        name: KEYS[name][0]
        if isinstance(value, NAMED.get(name, ())) and not isinstance(value, bool)
        else value
        for name, value in query.items()
    }
    if isinstance(mapped.get("cursor"), str):
        del mapped["cursor"]
    return mapped


@schema.hook
def filter_query(context: Any, query: Any) -> bool:
    """No empty values: django-filter reads ``?team=`` as no filter at all, by design."""
    return not isinstance(query, dict) or "" not in query.values()


@pytest.fixture(scope="module")
def world(django_db_setup: Any, django_db_blocker: Any) -> Iterator[ApiWorld]:
    yield from api_world.module_world(django_db_blocker)


@pytest.fixture(scope="module")
def app() -> Iterator[WSGIHandler]:
    """The WSGI application, keeping the test's connection (and its transaction) open
    between requests the way Django's test client does."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield schema.app
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture(autouse=True)
def keys(world: ApiWorld, app: WSGIHandler) -> None:
    for start, model in RESOURCES.items():
        KEYS[start] = list(model._default_manager.order_by("pk").values_list("pk", flat=True))
    KEYS["team"] = [world.emea]
    KEYS["opportunity"] = [world.rows["trackedopportunity"]["a"]]
    KEYS["segment"] = ["pricing"]


def role_of(path: str) -> str:
    return next((role for start, role in ROLE_BY_PATH.items() if path.startswith(start)), ROLE)


def validate(case: Any, response: Any, credentials: dict[str, str], **kwargs: Any) -> None:
    excluded = READS_EXCLUDED if case.method == "GET" else WRITES_EXCLUDED
    try:
        case.validate_response(response, headers=credentials, excluded_checks=excluded, **kwargs)
    except FailureGroup as failures:
        known = KNOWN.get((case.method, case.operation.path))
        if known and known[0] in str(failures):
            pytest.xfail(known[1])
        raise


def test_the_schema_tested_is_the_one_served(world: ApiWorld, app: WSGIHandler) -> None:
    served = schemathesis.openapi.from_wsgi(
        api_world.prefix() + "/schema/?format=json", app, headers=api_world.headers(world, ROLE)
    )
    assert served.raw_schema == GENERATED


@schema.parametrize()
@SETTINGS
def test_every_operation_answers_as_its_schema_says(case: Any, world: ApiWorld) -> None:
    credentials = api_world.headers(world, role_of(case.operation.path))
    with time_machine.travel(NOW, tick=False), transaction.atomic():
        response = case.call(headers=credentials)
        try:
            validate(case, response, credentials)
        finally:
            transaction.set_rollback(True)


def test_chains_of_operations_answer_as_the_schema_says(world: ApiWorld) -> None:
    machine = schema.as_state_machine()
    assert schema.statistic.transitions.total > 0, "no links to follow"

    class Chains(machine):  # type: ignore[misc, valid-type]
        def setup(self) -> None:
            self.savepoint = transaction.atomic()
            self.savepoint.__enter__()

        def teardown(self) -> None:
            transaction.set_rollback(True)
            self.savepoint.__exit__(None, None, None)

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": api_world.headers(world, role_of(case.operation.path))}

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            kwargs.pop("additional_checks", None)
            recorder = getattr(self, "recorder", None)
            validate(case, response, kwargs["headers"], transport_kwargs=kwargs, recorder=recorder)

    with time_machine.travel(NOW, tick=False):
        Chains.run(settings=STATEFUL)
