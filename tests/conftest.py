"""Factories and fixtures. Time is a parameter: tests pass ``now`` explicitly."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from rest_framework.test import APIClient

from example_project.crm.models import Deal, Lead
from followup_visibility.models import TrackedOpportunity

NOW = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)
_seq = itertools.count(1)


@pytest.fixture
def now() -> datetime:
    return NOW


@pytest.fixture
def make_user(db: Any) -> Callable[..., Any]:
    def make(username: str | None = None, **kwargs: Any) -> Any:
        username = username or f"user{next(_seq)}"
        return get_user_model().objects.create_user(username=username, password="pw", **kwargs)

    return make


@pytest.fixture
def make_lead(db: Any) -> Callable[..., Lead]:
    def make(**kwargs: Any) -> Lead:
        n = next(_seq)
        kwargs.setdefault("name", f"Lead {n}")
        kwargs.setdefault("created_at", NOW - timedelta(hours=3))
        return Lead.objects.create(**kwargs)

    return make


@pytest.fixture
def make_deal(db: Any) -> Callable[..., Deal]:
    def make(**kwargs: Any) -> Deal:
        n = next(_seq)
        kwargs.setdefault("name", f"Deal {n}")
        kwargs.setdefault("created_at", NOW - timedelta(hours=2))
        return Deal.objects.create(**kwargs)

    return make


@pytest.fixture
def api() -> Callable[..., APIClient]:
    """An API client, signed in (session) as ``user`` when one is given."""

    def make(user: Any = None) -> APIClient:
        client = APIClient()
        if user is not None:
            client.force_login(user)
        return client

    return make


def tracked(obj: Any) -> TrackedOpportunity:
    """The tracked opportunity of a host object, fresh from the database."""
    return TrackedOpportunity.objects.for_object(obj).get()


postgres_only = pytest.mark.skipif("connection.vendor != 'postgresql'", reason="needs PostgreSQL")


def is_postgres() -> bool:
    return connection.vendor == "postgresql"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Transactional tests end with a flush, which empties the rows our data migrations made
    (the company's default calendar and policies): restore them from the serialized test
    database afterwards, so that a test running later on the same database (in any order, or
    in the same pytest-xdist worker) still finds them."""
    for item in items:
        marker = item.get_closest_marker("django_db")
        if marker is not None and marker.kwargs.get("transaction"):
            kwargs = {**marker.kwargs, "serialized_rollback": True}
            item.add_marker(pytest.mark.django_db(*marker.args, **kwargs), append=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """In CI (``FOLLOWUP_REQUIRE_SERVICES=1``) an integration test may not skip silently."""
    report = yield
    if (
        os.environ.get("FOLLOWUP_REQUIRE_SERVICES") == "1"
        and report.skipped
        and item.get_closest_marker("integration") is not None
    ):
        report.outcome = "failed"
        report.longrepr = (
            f"integration test skipped although services are required: {report.longrepr}"
        )
    return report
