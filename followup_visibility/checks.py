"""System checks for every setting a host can get wrong (ids ``followup_visibility.E0xx``)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import timedelta
from decimal import Decimal
from typing import Any

import phonenumbers
from django.apps import apps
from django.conf import settings
from django.core import checks
from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.db import DatabaseError, models
from django.utils.module_loading import import_string

from followup_visibility.adapters import OpportunityAdapter
from followup_visibility.conf import PREFIX, app_settings
from followup_visibility.engine import calendars, priority
from followup_visibility.models import Calendar, EscalationPolicy, SlaPolicy
from followup_visibility.models.policy import DURATION_FIELDS
from followup_visibility.registry import admin_site_problems

REQUIRED_APPS = ("django.contrib.auth", "django.contrib.contenttypes", "simple_history")

# Adapter attributes that name host model fields.
_FIELD_ATTRIBUTES = (
    "owner_field",
    "stage_field",
    "status_field",
    "close_reason_field",
    "arrived_at_field",
    "value_field",
    "team_field",
    "next_action_field",
    "predecessor_field",
    "segment_field",
    "tenant_field",
)
_FIELD_TUPLE_ATTRIBUTES = ("phone_fields", "email_fields", "segment_hint_fields")


def register() -> None:
    checks.register(check_settings, "followup_visibility")
    checks.register(check_tracked_models, "followup_visibility")
    checks.register(check_admin_sites, "followup_visibility", checks.Tags.admin)
    checks.register(check_configuration_rows, "followup_visibility", checks.Tags.database)


def _error(check_id: str, msg: str, hint: str) -> checks.Error:
    return checks.Error(msg, hint=hint, id=check_id)


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    for app in REQUIRED_APPS:
        if not apps.is_installed(app):
            errors.append(
                _error(
                    "followup_visibility.E005",
                    f"{app} is not in INSTALLED_APPS.",
                    f"Add {app!r} to INSTALLED_APPS.",
                )
            )
    if not settings.USE_TZ:
        errors.append(
            _error(
                "followup_visibility.E011",
                "USE_TZ is False.",
                "SLA clocks need aware datetimes: set USE_TZ = True.",
            )
        )
    region = app_settings.PHONE_REGION
    if not isinstance(region, str) or region not in phonenumbers.SUPPORTED_REGIONS:
        errors.append(
            _error(
                "followup_visibility.E006",
                f"{PREFIX}PHONE_REGION {region!r} is not a known region.",
                "Use an ISO 3166-1 alpha-2 code such as 'US' or 'GB'.",
            )
        )
    skew = app_settings.MAX_CLOCK_SKEW
    if not isinstance(skew, timedelta) or skew < timedelta(0):
        errors.append(
            _error(
                "followup_visibility.E008",
                f"{PREFIX}MAX_CLOCK_SKEW must be a timedelta >= 0, not {skew!r}.",
                "e.g. timedelta(minutes=5)",
            )
        )
    for check_id, name, example in (
        ("followup_visibility.E009", "SYNC_CHUNK_SIZE", 500),
        ("followup_visibility.E012", "RECOMPUTE_CHUNK_SIZE", 2000),
        ("followup_visibility.E016", "SWEEP_CHUNK_SIZE", 50000),
        ("followup_visibility.E034", "API_MAX_BATCH", 1000),
    ):
        size = getattr(app_settings, name)
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            errors.append(
                _error(
                    check_id,
                    f"{PREFIX}{name} must be a positive integer, not {size!r}.",
                    f"e.g. {example}",
                )
            )
    errors += _check_alert_settings()
    errors += _check_user_tenants()
    errors += _check_register_settings()
    errors += _check_ingest_rate()
    # Typed as what a host may write, not what it should.
    rules: Sequence[object] = app_settings.TOUCH_RULES
    if isinstance(rules, str):
        # ("a.b.c") without the trailing comma: one error, not one per character.
        errors.append(
            _error(
                "followup_visibility.E007",
                f"{PREFIX}TOUCH_RULES must be a list of dotted paths, not {rules!r}.",
                "Wrap the path in a list, or end a one-item tuple with a comma.",
            )
        )
        rules = ()
    for path in rules:
        if not isinstance(path, str):
            errors.append(
                _error(
                    "followup_visibility.E007",
                    f"Touch rule {path!r} is not a dotted path.",
                    "Name it as a string.",
                )
            )
            continue
        try:
            rule = import_string(path)
        except ImportError as exc:
            errors.append(
                _error(
                    "followup_visibility.E007",
                    f"Touch rule {path!r} cannot be imported: {exc}.",
                    "Fix the dotted path.",
                )
            )
            continue
        if not callable(rule):
            errors.append(
                _error(
                    "followup_visibility.E007",
                    f"Touch rule {path!r} is not callable.",
                    "Name a function.",
                )
            )
    return errors


def _positive_duration(value: object) -> bool:
    return isinstance(value, timedelta) and value > timedelta(0)


def _check_alert_settings() -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    for check_id, name, example in (
        ("followup_visibility.E017", "SNOOZE_MAX", "timedelta(days=30)"),
        ("followup_visibility.E020", "NOTIFY_REPEAT", "timedelta(hours=24)"),
    ):
        value = getattr(app_settings, name)
        if not _positive_duration(value):
            errors.append(
                _error(
                    check_id,
                    f"{PREFIX}{name} must be a timedelta > 0, not {value!r}.",
                    f"e.g. {example}",
                )
            )
    thresholds: object = app_settings.SEVERITY_THRESHOLDS
    numbers = (
        list(thresholds)
        if isinstance(thresholds, list | tuple)
        and all(isinstance(t, int | float) and not isinstance(t, bool) for t in thresholds)
        else []
    )
    if len(numbers) != 3 or numbers[0] < 0 or not numbers[0] < numbers[1] < numbers[2]:
        errors.append(
            _error(
                "followup_visibility.E018",
                f"{PREFIX}SEVERITY_THRESHOLDS must be three increasing numbers >= 0 "
                f"(medium, high, critical), not {thresholds!r}.",
                "e.g. (1.0, 24.0, 576.0) (the default): medium from one SLA late, high from "
                "24, critical from 576.",
            )
        )
    minimum = app_settings.NOTIFY_MIN_SEVERITY
    if minimum not in ("medium", "high", "critical"):
        errors.append(
            _error(
                "followup_visibility.E019",
                f"{PREFIX}NOTIFY_MIN_SEVERITY must be 'medium', 'high' or 'critical', "
                f"not {minimum!r}.",
                "Owners are notified of alerts from this severity up; 'medium' (the default) "
                "is late by a whole SLA with the default thresholds.",
            )
        )
    email: object = app_settings.NOTIFY_EMAIL
    if not isinstance(email, bool):
        errors.append(
            _error(
                "followup_visibility.E021",
                f"{PREFIX}NOTIFY_EMAIL must be True or False, not {email!r}.",
                "Set it to False to keep notifications in the in-app inbox only.",
            )
        )
    return errors


def _is_number(value: object) -> bool:
    return (
        isinstance(value, int | float | Decimal)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _factor_problems(value: object, *, half_points: bool) -> list[str]:
    """What is wrong with a mapping of the register's four factors (empty: nothing)."""
    if not isinstance(value, Mapping):
        return ["is not a mapping"]
    problems = []
    missing = [name for name in priority.FACTORS if name not in value]
    unknown = sorted(repr(key) for key in value if key not in priority.FACTORS)
    if missing:
        problems.append(f"lacks {', '.join(missing)}")
    if unknown:
        problems.append(f"has unknown keys {', '.join(unknown)}")
    for name in priority.FACTORS:
        if name not in value:
            continue
        given = value[name]
        if half_points and name == "age":
            if not _positive_duration(given):
                problems.append(f"age is {given!r}, not a timedelta > 0")
        elif half_points and not (_is_number(given) and given > 0):
            problems.append(f"{name} is {given!r}, not a number > 0")
        elif not half_points and not (_is_number(given) and given >= 0):
            problems.append(f"{name} is {given!r}, not a number >= 0")
    if not half_points and not problems and not any(value[n] for n in priority.FACTORS):
        problems.append("are all 0")
    return problems


def _check_register_settings() -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    weights: object = app_settings.REGISTER_WEIGHTS
    problems = _factor_problems(weights, half_points=False)
    if problems:
        errors.append(
            _error(
                "followup_visibility.E032",
                f"{PREFIX}REGISTER_WEIGHTS {'; '.join(problems)}: {weights!r}.",
                "A dict of the priority factors' weights, numbers >= 0 and not all 0 (only "
                "their ratios matter), e.g. {'intent': 0.35, 'value': 0.35, 'lateness': 0.2, "
                "'age': 0.1}.",
            )
        )
    halves: object = app_settings.REGISTER_HALF_POINTS
    problems = _factor_problems(halves, half_points=True)
    if problems:
        errors.append(
            _error(
                "followup_visibility.E033",
                f"{PREFIX}REGISTER_HALF_POINTS {'; '.join(problems)}: {halves!r}.",
                "A dict of where each factor reaches half its weight: numbers > 0 for intent, "
                "value and lateness, a timedelta > 0 for age, e.g. {'intent': 1.0, "
                "'value': 10000, 'lateness': 1.0, 'age': timedelta(days=5)}.",
            )
        )
    return errors


#: A DRF throttle rate: requests per second, minute, hour or day ("600/min", "10/s").
_RATE = re.compile(r"[1-9][0-9]*/[smhd][a-z]*")


def _check_ingest_rate() -> list[checks.CheckMessage]:
    rate: object = app_settings.API_INGEST_RATE
    if rate is None or (isinstance(rate, str) and _RATE.fullmatch(rate)):
        return []
    return [
        _error(
            "followup_visibility.E035",
            f"{PREFIX}API_INGEST_RATE must be None or a rate such as '600/min', not {rate!r}.",
            "A positive number of requests, '/', and s, min, hour or day (DRF's throttle "
            "rates); None lets touch ingestion through without a limit.",
        )
    ]


def _check_user_tenants() -> list[checks.CheckMessage]:
    path: object = app_settings.USER_TENANTS
    if path is None:
        return []
    problem = ""
    if not isinstance(path, str) or not path:
        problem = "is not a dotted path"
    else:
        try:
            hook = import_string(path)
        except ImportError as exc:
            problem = f"cannot be imported: {exc}"
        else:
            if not callable(hook):
                problem = "is not callable"
    if not problem:
        return []
    return [
        _error(
            "followup_visibility.E031",
            f"{PREFIX}USER_TENANTS {path!r} {problem}.",
            "Name a function (user) -> the user's tenant keys, or None for every tenant; "
            "or leave the setting unset when the host keeps one company.",
        )
    ]


def check_admin_sites(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Every entry of ``ADMIN_SITES`` names an admin site (an entry that does not is left
    out when the model admins are registered, so the app's pages are missing from it)."""
    return [
        _error(
            "followup_visibility.E030",
            f"{PREFIX}ADMIN_SITES: {path!r}: {problem}.",
            'A list of dotted paths to AdminSite instances, e.g. ["crm.admin.crm_site"]; '
            "[] registers nothing (then call followup_visibility.admin.register(site)).",
        )
        for path, problem in admin_site_problems()
    ]


def check_tracked_models(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    tracked = app_settings.TRACKED_MODELS
    name = f"{PREFIX}TRACKED_MODELS"
    if not isinstance(tracked, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in tracked.items()
    ):
        return [
            _error(
                "followup_visibility.E001",
                f"{name} must map model labels to adapter paths, not {tracked!r}.",
                '{"crm.Lead": "crm.adapters.LeadAdapter"}',
            )
        ]
    if not tracked:
        return [
            checks.Warning(
                f"{name} is empty: nothing is tracked.",
                hint="Register your Lead/Deal models with an adapter each.",
                id="followup_visibility.W001",
            )
        ]
    errors: list[checks.CheckMessage] = []
    for label, adapter_path in tracked.items():
        try:
            model = apps.get_model(label)
        except (LookupError, ValueError):
            errors.append(
                _error(
                    "followup_visibility.E002",
                    f"{name}: {label!r} is not an installed model.",
                    "Use 'app_label.Model'.",
                )
            )
            continue
        try:
            adapter_class = import_string(adapter_path)
        except ImportError as exc:
            errors.append(
                _error(
                    "followup_visibility.E003",
                    f"{name}: adapter {adapter_path!r} for {label} cannot be imported: {exc}.",
                    "Give the dotted path of an OpportunityAdapter subclass.",
                )
            )
            continue
        if not (isinstance(adapter_class, type) and issubclass(adapter_class, OpportunityAdapter)):
            errors.append(
                _error(
                    "followup_visibility.E004",
                    f"{name}: {adapter_path!r} is not an OpportunityAdapter subclass.",
                    "Subclass followup_visibility.adapters.OpportunityAdapter.",
                )
            )
            continue
        errors += _check_adapter_fields(model, adapter_class)
        errors += _check_next_action_field(model, adapter_class)
        errors += _check_adapter_tenant(model, adapter_class)
    return errors


def _check_adapter_tenant(model: Any, adapter_class: type[OpportunityAdapter]) -> list[Any]:
    """With tenancy on, a model whose adapter reports no tenant is visible to no one whose
    tenants are limited (its opportunities' tenant is empty)."""
    if not app_settings.USER_TENANTS:
        return []
    if adapter_class.tenant_field is not None or (
        adapter_class.get_tenant is not OpportunityAdapter.get_tenant
    ):
        return []
    return [
        checks.Warning(
            f"{PREFIX}USER_TENANTS is set but {adapter_class.__qualname__} reports no tenant "
            f"for {model._meta.label}.",
            hint="Set tenant_field (or override get_tenant). Until then its opportunities are "
            "seen only by users whose tenants include '' or who see every tenant.",
            id="followup_visibility.W003",
        )
    ]


def _check_next_action_field(model: Any, adapter_class: type[OpportunityAdapter]) -> list[Any]:
    """The host's next step must be a date or a datetime (a missing field is E010's)."""
    name = adapter_class.next_action_field
    try:
        field = model._meta.get_field(name) if name is not None else None
    except FieldDoesNotExist:
        return []
    # A DateTimeField is a DateField too: both are read as they should be.
    if field is None or isinstance(field, models.DateField):
        return []
    return [
        _error(
            "followup_visibility.E023",
            f"{adapter_class.__qualname__}.next_action_field names {name!r}, a "
            f"{type(field).__name__} of {model._meta.label}: neither a DateTimeField nor a "
            "DateField.",
            "Name the DateTimeField or DateField holding the next step's due date, or set "
            "next_action_field to None and override get_next_action_due_at to return an aware "
            "datetime or a date.",
        )
    ]


def _check_adapter_fields(model: Any, adapter_class: type[OpportunityAdapter]) -> list[Any]:
    names: list[tuple[str, Any]] = [(a, getattr(adapter_class, a)) for a in _FIELD_ATTRIBUTES]
    errors = []
    for attribute in _FIELD_TUPLE_ATTRIBUTES:
        value = getattr(adapter_class, attribute)
        if isinstance(value, str):
            # ("phone") without a comma is a string, not a tuple: say so once.
            errors.append(
                _error(
                    "followup_visibility.E010",
                    f"{adapter_class.__qualname__}.{attribute} must be a tuple of field names, "
                    f"not the string {value!r}.",
                    f"Write ({value!r},) with a trailing comma.",
                )
            )
            continue
        names += [(attribute, name) for name in value]
    for attribute, field_name in names:
        if field_name is None:
            continue
        try:
            model._meta.get_field(field_name)
        except FieldDoesNotExist:
            errors.append(
                _error(
                    "followup_visibility.E010",
                    f"{adapter_class.__qualname__}.{attribute} names {field_name!r}, "
                    f"which {model._meta.label} does not have.",
                    "Name an existing field, or set the attribute to None (and override the "
                    "matching get_* method if the value comes from elsewhere).",
                )
            )
    return errors


def check_configuration_rows(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """Calendars and SLA policies are rows; run with ``check --database default`` (and migrate)."""
    if not databases:
        return []
    try:
        return _check_rows()
    except DatabaseError:
        # Not migrated yet, or only partly (a host upgrading from an older migration has
        # some of the tables these read): migrate runs these checks again afterwards.
        return []


def _check_rows() -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    default_calendar = Calendar.objects.filter(is_default=True).first()
    default_policy = SlaPolicy.objects.filter(is_default=True).first()
    stored = list(Calendar.objects.all())
    if default_calendar is None:
        errors.append(
            _error(
                "followup_visibility.E013",
                "There is no company default business calendar.",
                "Mark one calendar as the company default in the admin; opportunities of "
                "teams without a calendar get no deadlines until then.",
            )
        )
    if default_policy is None:
        errors.append(
            _error(
                "followup_visibility.E014",
                "There is no company default SLA policy.",
                "Create the company default policy in the admin: every signal needs a duration "
                "that more specific policies can fall back to.",
            )
        )
    else:
        latest = default_policy.versions.order_by("-number").first()
        missing = [
            name
            for name in DURATION_FIELDS.values()
            if latest is None or getattr(latest, name) is None
        ]
        if missing:
            errors.append(
                _error(
                    "followup_visibility.E014",
                    f"The company default SLA policy lacks durations: {', '.join(missing)}.",
                    "Publish a new version of the company default that sets every duration.",
                )
            )
    errors += _check_escalation_rows()
    for calendar in stored:
        try:
            calendars.load([calendar.pk])
        except (ValidationError, ValueError, KeyError) as exc:
            errors.append(
                _error(
                    "followup_visibility.E015",
                    f"Business calendar {calendar.name!r} is unusable: {exc}",
                    "Fix its time zone or working windows in the admin.",
                )
            )
    return errors


def _check_escalation_rows() -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    policies = list(EscalationPolicy.objects.prefetch_related("levels"))
    if not any(policy.is_default for policy in policies):
        errors.append(
            checks.Warning(
                "There is no company default escalation policy.",
                hint="Alerts of teams without their own policy never escalate. Create the "
                "default in the admin if that is not what you want.",
                id="followup_visibility.W002",
            )
        )
    for policy in policies:
        after = [level.after for level in sorted(policy.levels.all(), key=lambda lv: lv.number)]
        if (
            not after
            or after[0] <= timedelta(0)
            or any(a >= b for a, b in zip(after, after[1:], strict=False))
        ):
            errors.append(
                _error(
                    "followup_visibility.E022",
                    f"Escalation policy {policy.name!r} has no levels or levels whose "
                    "thresholds do not increase.",
                    "Give it at least one level, each later than the one before, in the admin.",
                )
            )
    return errors
