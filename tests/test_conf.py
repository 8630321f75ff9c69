"""``app_settings``: a default for every setting, and overrides read at access time."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import override_settings
from django.utils.module_loading import import_string

from followup_visibility.conf import (
    DEFAULT_REGISTER_HALF_POINTS,
    DEFAULT_REGISTER_WEIGHTS,
    DEFAULT_TOUCH_RULES,
    PREFIX,
    Settings,
    app_settings,
)

# name: (default, an override)
CASES: dict[str, tuple[Any, Any]] = {
    "TRACKED_MODELS": ({}, {"crm.Deal": "example_project.crm.adapters.DealAdapter"}),
    "PHONE_REGION": ("US", "GB"),
    "MAX_CLOCK_SKEW": (timedelta(minutes=5), timedelta(seconds=30)),
    "TOUCH_RULES": (DEFAULT_TOUCH_RULES, ["followup_visibility.engine.touch_rules.internal_note"]),
    "SYNC_CHUNK_SIZE": (500, 25),
    "ACCEPT_HANDOFF_ON_TOUCH": (True, False),
    "RECOMPUTE_CHUNK_SIZE": (2000, 100),
    "SWEEP_CHUNK_SIZE": (50000, 1000),
    "SNOOZE_MAX": (timedelta(days=30), timedelta(days=7)),
    "SEVERITY_THRESHOLDS": ((1.0, 24.0, 576.0), (0.25, 1.0, 3.0)),
    "NOTIFY_MIN_SEVERITY": ("medium", "critical"),
    "NOTIFY_REPEAT": (timedelta(hours=24), timedelta(hours=4)),
    "NOTIFY_EMAIL": (True, False),
    "USER_TENANTS": (None, "tests.tenant_host.models.user_tenants"),
    "ADMIN_SITES": (("django.contrib.admin.site",), ["tests.host_admin_urls.crm_site"]),
    "REGISTER_WEIGHTS": (
        DEFAULT_REGISTER_WEIGHTS,
        {"intent": 1, "value": 1, "lateness": 1, "age": 1},
    ),
    "REGISTER_HALF_POINTS": (
        DEFAULT_REGISTER_HALF_POINTS,
        {"intent": 2, "value": 50_000, "lateness": 2, "age": timedelta(days=10)},
    ),
    "API_MAX_BATCH": (1000, 50),
    "API_INGEST_RATE": ("600/min", None),
}


def test_cases_cover_every_setting() -> None:
    properties = {name for name, value in vars(Settings).items() if isinstance(value, property)}
    assert properties == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_default_when_unset(settings: Any, name: str) -> None:
    if hasattr(settings, PREFIX + name):  # the example project sets some of them
        delattr(settings, PREFIX + name)
    assert getattr(app_settings, name) == CASES[name][0]


@pytest.mark.parametrize("name", sorted(CASES))
def test_override_read_at_access_time(name: str) -> None:
    before = getattr(app_settings, name)
    override = CASES[name][1]
    assert before != override
    with override_settings(**{PREFIX + name: override}):
        assert getattr(app_settings, name) == override
    assert getattr(app_settings, name) == before


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_new_settings_object_sees_the_same(name: str) -> None:
    with override_settings(**{PREFIX + name: CASES[name][1]}):
        assert getattr(Settings(), name) == getattr(app_settings, name) == CASES[name][1]


def test_example_project_values() -> None:
    # The test settings track the two-company host (tests.tenant_host) as well.
    example = {
        "crm.Lead": "example_project.crm.adapters.LeadAdapter",
        "crm.Deal": "example_project.crm.adapters.DealAdapter",
    }
    assert app_settings.TRACKED_MODELS.items() >= example.items()
    assert app_settings.PHONE_REGION == "US"


@pytest.mark.parametrize("path", DEFAULT_TOUCH_RULES)
def test_default_touch_rules_import(path: str) -> None:
    assert callable(import_string(path))


def test_defaults_are_not_written_into_the_host(settings: Any) -> None:
    for name in CASES:
        if hasattr(settings, PREFIX + name):
            delattr(settings, PREFIX + name)
    for name in CASES:
        getattr(app_settings, name)
    assert not [name for name in CASES if hasattr(settings, PREFIX + name)]
