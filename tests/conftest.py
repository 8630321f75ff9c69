"""Factories and fixtures. Time is a parameter: tests pass ``now`` explicitly."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from importlib import import_module
from typing import Any

import pytest
from django.apps import apps as django_apps
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from pytest_django.plugin import blocking_manager_key
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


#: The data migrations whose rows a flush empties: the company's default calendar and SLA
#: policy, the default escalation policy and inhibition rule.
MIGRATION_ROWS = (
    ("0003_company_defaults", "create_defaults"),
    ("0006_default_escalation_policy", "create"),
)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    """A transactional test ends with a flush, which empties the data migrations' rows: put
    them back for the tests that run after it on this database. Run alone, pytest-django
    orders transactional tests last; under pytest-xdist a worker takes whole files, in any
    order, so a test reading the company's defaults may come after a flush."""
    result = yield
    marker = item.get_closest_marker("django_db")
    # After the last test the session's teardown has already dropped the test database.
    if nextitem is not None and marker is not None and marker.kwargs.get("transaction"):
        with item.config.stash[blocking_manager_key].unblock():
            ContentType.objects.clear_cache()
            for name, function in MIGRATION_ROWS:
                migration = import_module(f"followup_visibility.migrations.{name}")
                getattr(migration, function)(django_apps, None)
    return result


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
