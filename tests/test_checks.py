"""Every ``followup_visibility`` system check, run the way a host meets it: ``manage.py check``."""

from __future__ import annotations

import re
from datetime import time, timedelta
from decimal import Decimal
from io import StringIO
from typing import Any

import pytest
from django.core.checks import run_checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import modify_settings, override_settings

from example_project.crm.adapters import LeadAdapter
from followup_visibility.adapters import OpportunityAdapter
from followup_visibility.api.base import IngestThrottle
from followup_visibility.engine import calendars
from followup_visibility.models import (
    Calendar,
    Deadline,
    EscalationLevel,
    EscalationPolicy,
    SlaPolicy,
    SlaPolicyVersion,
    WorkingWindow,
)
from tests.factories_sla import DURATIONS, install_defaults, make_calendar, make_team

LEAD_ADAPTER = "example_project.crm.adapters.LeadAdapter"


class BadAdapter(OpportunityAdapter):
    """Names fields ``crm.Lead`` does not have (E010); referenced as ``tests.test_checks``."""

    stage_field = "status"
    owner_field = "assignee"
    phone_fields = ("phone", "mobile")


class NoneFieldsAdapter(OpportunityAdapter):
    """Fields set to ``None`` are not looked up."""

    owner_field = None
    stage_field = None
    status_field = None


def run_check(*, tags: list[str] | None = None) -> str:
    """``manage.py check`` output; a ``SystemCheckError`` (errors found) is returned as text."""
    out, err = StringIO(), StringIO()
    options: dict[str, Any] = {"stdout": out, "stderr": err, "no_color": True}
    if tags:
        options["tags"] = tags
    try:
        call_command("check", **options)
    except SystemCheckError as exc:
        return str(exc)
    return out.getvalue() + err.getvalue()


def run_failing_check(*, tags: list[str] | None = None) -> str:
    out, err = StringIO(), StringIO()
    options: dict[str, Any] = {"stdout": out, "stderr": err, "no_color": True}
    if tags:
        options["tags"] = tags
    with pytest.raises(SystemCheckError) as exc:
        call_command("check", **options)
    return str(exc.value)


def messages(output: str, check_id: str) -> list[tuple[str, str]]:
    """``(message, hint)`` for each report of ``check_id`` in ``check`` output."""
    found = re.findall(
        rf"^\?: \({re.escape(check_id)}\) (.*)\n(?:\tHINT: (.*))?$", output, flags=re.MULTILINE
    )
    return [(msg, hint) for msg, hint in found]


def assert_reported(output: str, check_id: str, *fragments: str) -> list[tuple[str, str]]:
    """``check_id`` is reported, with a hint, by a message containing every fragment."""
    reports = messages(output, check_id)
    assert reports, f"{check_id} not reported in:\n{output}"
    matching = [(m, h) for m, h in reports if all(f in m for f in fragments)]
    assert matching, f"no {check_id} message contains {fragments!r}: {reports!r}"
    for _msg, hint in matching:
        assert hint.strip(), f"{check_id} has no hint"
    return matching


def our_ids(output: str) -> set[str]:
    return set(re.findall(r"\((followup_visibility\.[EW]\d{3})\)", output))


def test_example_settings_pass() -> None:
    output = run_check()
    assert "followup_visibility" not in output
    assert "no issues" in output


def test_only_our_checks_pass() -> None:
    assert "no issues" in run_check(tags=["followup_visibility"])


@pytest.mark.parametrize(
    "value",
    [
        ["crm.Lead", LEAD_ADAPTER],
        "crm.Lead",
        {"crm.Lead": OpportunityAdapter},
        {("crm", "Lead"): LEAD_ADAPTER},
    ],
    ids=["list", "str", "class-not-path", "tuple-key"],
)
def test_e001_tracked_models_wrong_shape(value: Any) -> None:
    with override_settings(FOLLOWUP_VISIBILITY_TRACKED_MODELS=value):
        output = run_failing_check()
    assert_reported(output, "followup_visibility.E001", "TRACKED_MODELS", repr(value))
    assert our_ids(output) == {"followup_visibility.E001"}


def test_w001_tracked_models_empty() -> None:
    with override_settings(FOLLOWUP_VISIBILITY_TRACKED_MODELS={}):
        output = run_check()  # a warning alone does not fail the command
    assert "SystemCheckError" not in output
    assert_reported(output, "followup_visibility.W001", "TRACKED_MODELS", "empty")
    assert "WARNINGS:" in output
    assert our_ids(output) == {"followup_visibility.W001"}


@pytest.mark.parametrize("label", ["crm.Nope", "nope.Lead", "Lead"])
def test_e002_unknown_model_label(label: str) -> None:
    with override_settings(FOLLOWUP_VISIBILITY_TRACKED_MODELS={label: LEAD_ADAPTER}):
        output = run_failing_check()
    assert_reported(output, "followup_visibility.E002", repr(label))
    assert our_ids(output) == {"followup_visibility.E002"}


@pytest.mark.parametrize(
    "path",
    [
        "example_project.crm.adapters.NoSuchAdapter",
        "no_such_package.adapters.LeadAdapter",
        "LeadAdapter",
    ],
)
def test_e003_adapter_not_importable(path: str) -> None:
    with override_settings(FOLLOWUP_VISIBILITY_TRACKED_MODELS={"crm.Lead": path}):
        output = run_failing_check()
    assert_reported(output, "followup_visibility.E003", repr(path), "crm.Lead")
    assert our_ids(output) == {"followup_visibility.E003"}


@pytest.mark.parametrize(
    "path",
    [
        "followup_visibility.conf.Settings",  # a class, but not an adapter
        "followup_visibility.conf.app_settings",  # an instance
        "followup_visibility.conf.PREFIX",  # a string
    ],
)
def test_e004_adapter_not_an_adapter(path: str) -> None:
    with override_settings(FOLLOWUP_VISIBILITY_TRACKED_MODELS={"crm.Lead": path}):
        output = run_failing_check()
    assert_reported(output, "followup_visibility.E004", repr(path), "OpportunityAdapter")
    assert our_ids(output) == {"followup_visibility.E004"}


def test_each_tracked_model_is_checked() -> None:
    tracked = {
        "crm.Lead": "example_project.crm.adapters.NoSuchAdapter",
        "crm.Nope": LEAD_ADAPTER,
        "crm.Deal": "followup_visibility.conf.Settings",
    }
    with override_settings(FOLLOWUP_VISIBILITY_TRACKED_MODELS=tracked):
        output = run_failing_check()
    assert our_ids(output) == {
        "followup_visibility.E002",
        "followup_visibility.E003",
        "followup_visibility.E004",
    }


@pytest.mark.parametrize(
    "app", ["simple_history", "django.contrib.auth", "django.contrib.contenttypes"]
)
def test_e005_required_app_missing(app: str) -> None:
    # Only our checks: Django's own auth checks crash without django.contrib.auth.
    with modify_settings(INSTALLED_APPS={"remove": [app]}):
        output = run_failing_check(tags=["followup_visibility"])
    assert_reported(output, "followup_visibility.E005", app, "INSTALLED_APPS")
    assert our_ids(output) == {"followup_visibility.E005"}


def test_e005_with_every_check() -> None:
    with modify_settings(INSTALLED_APPS={"remove": ["simple_history"]}):
        output = run_failing_check()
    assert_reported(output, "followup_visibility.E005", "simple_history")


@pytest.mark.parametrize("region", ["XX", "us", "", "USA", None, ["US"]])
def test_e006_bad_phone_region(region: Any) -> None:
    with override_settings(FOLLOWUP_VISIBILITY_PHONE_REGION=region):
        output = run_failing_check()
    assert_reported(output, "followup_visibility.E006", "PHONE_REGION", repr(region))
    assert our_ids(output) == {"followup_visibility.E006"}


@pytest.mark.parametrize("region", ["GB", "DE", "BR"])
def test_e006_good_phone_region(region: str) -> None:
    with override_settings(FOLLOWUP_VISIBILITY_PHONE_REGION=region):
        assert "no issues" in run_check()


@pytest.mark.parametrize(
    "path",
    [
        "followup_visibility.engine.touch_rules.no_such_rule",
        "no_such_package.rules.rule",
        "not_a_dotted_path",
    ],
)
def test_e007_touch_rule_not_importable(path: str) -> None:
    rules = ["followup_visibility.engine.touch_rules.internal_note", path]
    with override_settings(FOLLOWUP_VISIBILITY_TOUCH_RULES=rules):
        output = run_failing_check()
    assert_reported(output, "followup_visibility.E007", repr(path), "cannot be imported")
    assert len(messages(output, "followup_visibility.E007")) == 1


@pytest.mark.parametrize(
    "path",
    ["followup_visibility.engine.touch_rules.CUSTOMER_FACING", "followup_visibility.conf.PREFIX"],
)
def test_e007_touch_rule_not_callable(path: str) -> None:
    with override_settings(FOLLOWUP_VISIBILITY_TOUCH_RULES=[path]):
        output = run_failing_check()
    assert_reported(output, "followup_visibility.E007", repr(path), "not callable")
    assert our_ids(output) == {"followup_visibility.E007"}


def test_e007_touch_rule_not_a_path() -> None:
    def rule(draft: Any) -> None:
        return None

    with override_settings(FOLLOWUP_VISIBILITY_TOUCH_RULES=[rule]):
        output = run_failing_check()
    assert_reported(output, "followup_visibility.E007", repr(rule))


def test_e007_touch_rules_a_string() -> None:
    path = "followup_visibility.engine.touch_rules.internal_note"  # ("...") without the comma
    with override_settings(FOLLOWUP_VISIBILITY_TOUCH_RULES=path):
        output = run_failing_check()
    assert_reported(output, "followup_visibility.E007", "TOUCH_RULES", repr(path))
    assert len(messages(output, "followup_visibility.E007")) == 1


def test_e007_reports_every_bad_rule() -> None:
    rules = ["nope.a", "followup_visibility.conf.PREFIX", "nope.b"]
    with override_settings(FOLLOWUP_VISIBILITY_TOUCH_RULES=rules):
        output = run_failing_check()
    assert len(messages(output, "followup_visibility.E007")) == 3


@pytest.mark.parametrize(
    "skew", [timedelta(seconds=-1), 300, "5m", None], ids=["negative", "int", "str", "none"]
)
def test_e008_bad_max_clock_skew(skew: Any) -> None:
    with override_settings(FOLLOWUP_VISIBILITY_MAX_CLOCK_SKEW=skew):
        output = run_failing_check()
    assert_reported(output, "followup_visibility.E008", "MAX_CLOCK_SKEW", repr(skew))
    assert our_ids(output) == {"followup_visibility.E008"}


def test_e008_zero_skew_is_allowed() -> None:
    with override_settings(FOLLOWUP_VISIBILITY_MAX_CLOCK_SKEW=timedelta(0)):
        assert "no issues" in run_check()


@pytest.mark.parametrize("size", [0, -5, True, False, "500", 1.5, None])
def test_e009_bad_sync_chunk_size(size: Any) -> None:
    with override_settings(FOLLOWUP_VISIBILITY_SYNC_CHUNK_SIZE=size):
        output = run_failing_check()
    assert_reported(output, "followup_visibility.E009", "SYNC_CHUNK_SIZE", repr(size))
    assert our_ids(output) == {"followup_visibility.E009"}


def test_e009_one_is_allowed() -> None:
    with override_settings(FOLLOWUP_VISIBILITY_SYNC_CHUNK_SIZE=1):
        assert "no issues" in run_check()


def test_e010_adapter_field_missing() -> None:
    tracked = {"crm.Lead": "tests.test_checks.BadAdapter"}
    with override_settings(FOLLOWUP_VISIBILITY_TRACKED_MODELS=tracked):
        output = run_failing_check()
    assert_reported(output, "followup_visibility.E010", "BadAdapter.owner_field", "'assignee'")
    assert_reported(output, "followup_visibility.E010", "BadAdapter.phone_fields", "'mobile'")
    assert all("crm.Lead" in msg for msg, _hint in messages(output, "followup_visibility.E010"))
    # "phone" exists on crm.Lead: only the two bad names are reported.
    assert len(messages(output, "followup_visibility.E010")) == 2
    assert our_ids(output) == {"followup_visibility.E010"}


def test_e010_checks_the_model_the_adapter_is_registered_for() -> None:
    # LeadAdapter reads "disqualify_reason", which crm.Deal does not have.
    with override_settings(FOLLOWUP_VISIBILITY_TRACKED_MODELS={"crm.Deal": LEAD_ADAPTER}):
        output = run_failing_check()
    assert_reported(output, "followup_visibility.E010", "'disqualify_reason'", "crm.Deal")


def test_e010_fields_set_to_none_are_skipped() -> None:
    tracked = {"crm.Lead": "tests.test_checks.NoneFieldsAdapter"}
    with override_settings(FOLLOWUP_VISIBILITY_TRACKED_MODELS=tracked):
        assert "no issues" in run_check()


class TextNextActionAdapter(LeadAdapter):
    """Reads the next step from a text field (E023)."""

    next_action_field = "company"


class DateNextActionAdapter(OpportunityAdapter):
    """A host model whose next step is a ``DateField`` (``ClosedDate.date`` stands in)."""

    owner_field = stage_field = status_field = None
    arrived_at_field = "date"
    next_action_field = "date"


def test_e023_next_action_field_that_is_no_date() -> None:
    tracked = {"crm.Lead": "tests.test_checks.TextNextActionAdapter"}
    with override_settings(FOLLOWUP_VISIBILITY_TRACKED_MODELS=tracked):
        output = run_failing_check()
    ((_msg, hint),) = assert_reported(
        output, "followup_visibility.E023", "TextNextActionAdapter.next_action_field", "'company'"
    )
    assert "CharField" in _msg and "crm.Lead" in _msg
    assert "DateField" in hint
    assert our_ids(output) == {"followup_visibility.E023"}


@pytest.mark.parametrize(
    "tracked",
    [
        {"crm.Lead": LEAD_ADAPTER},  # next_step_at: a DateTimeField
        {"followup_visibility.ClosedDate": "tests.test_checks.DateNextActionAdapter"},
    ],
    ids=["datetime-field", "date-field"],
)
def test_e023_a_datetime_or_date_next_action_field_passes(tracked: dict[str, str]) -> None:
    with override_settings(FOLLOWUP_VISIBILITY_TRACKED_MODELS=tracked):
        assert "no issues" in run_check()


def test_e011_use_tz_false() -> None:
    with override_settings(USE_TZ=False):
        output = run_failing_check()
    assert_reported(output, "followup_visibility.E011", "USE_TZ", "False")
    assert our_ids(output) == {"followup_visibility.E011"}


def test_several_setting_errors_reported_together() -> None:
    with override_settings(
        USE_TZ=False,
        FOLLOWUP_VISIBILITY_PHONE_REGION="XX",
        FOLLOWUP_VISIBILITY_SYNC_CHUNK_SIZE=0,
        FOLLOWUP_VISIBILITY_TRACKED_MODELS={},
    ):
        output = run_failing_check()
    assert our_ids(output) == {
        "followup_visibility.E006",
        "followup_visibility.E009",
        "followup_visibility.E011",
        "followup_visibility.W001",
    }


class StringTupleAdapter(OpportunityAdapter):
    stage_field = None
    phone_fields = "phone"  # type: ignore[assignment]


def test_e010_bare_string_field_tuple_is_reported_once():
    with (
        override_settings(
            FOLLOWUP_VISIBILITY_TRACKED_MODELS={"crm.Lead": "tests.test_checks.StringTupleAdapter"}
        ),
        pytest.raises(SystemCheckError) as excinfo,
    ):
        call_command("check", no_color=True)
    text = str(excinfo.value)
    assert text.count("followup_visibility.E010") == 1
    assert "phone_fields must be a tuple" in text and "trailing comma" in text


@pytest.mark.parametrize("size", [0, -5, True, "2000", 1.5, None])
def test_e012_bad_recompute_chunk_size(size: Any) -> None:
    with override_settings(FOLLOWUP_VISIBILITY_RECOMPUTE_CHUNK_SIZE=size):
        output = run_failing_check()
    assert_reported(output, "followup_visibility.E012", "RECOMPUTE_CHUNK_SIZE", repr(size))
    assert our_ids(output) == {"followup_visibility.E012"}


def test_e012_one_is_allowed() -> None:
    with override_settings(FOLLOWUP_VISIBILITY_RECOMPUTE_CHUNK_SIZE=1):
        assert "no issues" in run_check()


# Database checks: calendars and policies are rows, checked with ``check --database default``


def run_database_check() -> str:
    out, err = StringIO(), StringIO()
    try:
        call_command("check", databases=["default"], stdout=out, stderr=err, no_color=True)
    except SystemCheckError as exc:
        return str(exc)
    return out.getvalue() + err.getvalue()


@pytest.fixture
def configured(db: Any) -> Any:
    yield install_defaults()
    calendars._cache.clear()


def test_database_checks_pass_with_company_defaults(configured: Any) -> None:
    output = run_database_check()
    assert our_ids(output) == set()
    assert "no issues" in output


def test_database_checks_only_run_when_asked(configured: Any) -> None:
    Calendar.objects.update(is_default=False)
    assert "no issues" in run_check()
    assert our_ids(run_database_check()) == {"followup_visibility.E013"}


def test_e013_no_default_calendar(configured: Any) -> None:
    Calendar.objects.update(is_default=False)
    output = run_database_check()
    assert_reported(output, "followup_visibility.E013", "default business calendar")
    assert our_ids(output) == {"followup_visibility.E013"}
    assert [m.id for m in run_checks(databases=["default"]) if m.id.startswith("followup")] == [
        "followup_visibility.E013"
    ]


def test_e014_no_default_policy(configured: Any) -> None:
    Deadline.objects.all().delete()
    SlaPolicyVersion.objects.all().delete()
    SlaPolicy.objects.all().delete()
    output = run_database_check()
    assert_reported(output, "followup_visibility.E014", "no company default SLA policy")
    assert our_ids(output) == {"followup_visibility.E014"}


def test_e014_default_policy_lacks_durations(configured: Any) -> None:
    # Written around publish_version (which refuses it), as a fixture or SQL could.
    SlaPolicyVersion.objects.create(
        policy=configured.policy,
        number=2,
        effective_from=configured.version.effective_from,
        **{**DURATIONS, "stale": None, "reply": None},
    )
    output = run_database_check()
    assert_reported(output, "followup_visibility.E014", "lacks durations", "reply", "stale")
    assert "first_response" not in messages(output, "followup_visibility.E014")[0][0]
    assert our_ids(output) == {"followup_visibility.E014"}


@pytest.mark.parametrize("problem", ["time zone", "overlap", "no windows", "end before start"])
def test_e015_unusable_calendar(configured: Any, problem: str) -> None:
    calendar = make_calendar("Night shift", "UTC", windows=())
    if problem == "time zone":
        make_calendar("Mars base", "Mars/Olympus_Mons")
        calendar.delete()
    elif problem == "overlap":
        WorkingWindow.objects.bulk_create(
            [
                WorkingWindow(calendar=calendar, weekday=0, start=time(9), end=time(13)),
                WorkingWindow(calendar=calendar, weekday=0, start=time(12), end=time(17)),
            ]
        )
    elif problem == "end before start":
        WorkingWindow.objects.bulk_create(
            [WorkingWindow(calendar=calendar, weekday=0, start=time(17), end=time(9))]
        )
    output = run_database_check()
    name = "Mars base" if problem == "time zone" else "Night shift"
    assert_reported(output, "followup_visibility.E015", repr(name), "unusable")
    assert len(messages(output, "followup_visibility.E015")) == 1
    assert our_ids(output) == {"followup_visibility.E015"}


# Alert settings (E016-E021) and escalation rows (E022, W002)


@pytest.mark.parametrize("size", [0, -1, True, "50000", None])
def test_e016_bad_sweep_chunk_size(size: Any) -> None:
    with override_settings(FOLLOWUP_VISIBILITY_SWEEP_CHUNK_SIZE=size):
        output = run_failing_check()
    assert_reported(output, "followup_visibility.E016", "SWEEP_CHUNK_SIZE", repr(size))
    assert our_ids(output) == {"followup_visibility.E016"}


@pytest.mark.parametrize(("name", "n"), [("SNOOZE_MAX", "E017"), ("NOTIFY_REPEAT", "E020")])
@pytest.mark.parametrize("value", [timedelta(0), timedelta(hours=-1), 3600, None])
def test_e017_e020_durations_must_be_positive(name: str, n: str, value: Any) -> None:
    with override_settings(**{f"FOLLOWUP_VISIBILITY_{name}": value}):
        output = run_failing_check()
    assert_reported(output, f"followup_visibility.{n}", name, repr(value))
    assert our_ids(output) == {f"followup_visibility.{n}"}


@pytest.mark.parametrize(
    "value", [(1.0, 0.5, 3.0), (0.25, 1.0), (0.25, 1.0, 1.0), (-1, 1, 2), "0.25,1,3", (0, "1", 2)]
)
def test_e018_bad_severity_thresholds(value: Any) -> None:
    with override_settings(FOLLOWUP_VISIBILITY_SEVERITY_THRESHOLDS=value):
        output = run_failing_check()
    assert_reported(output, "followup_visibility.E018", "SEVERITY_THRESHOLDS")
    assert our_ids(output) == {"followup_visibility.E018"}


def test_e018_list_of_numbers_is_allowed() -> None:
    with override_settings(FOLLOWUP_VISIBILITY_SEVERITY_THRESHOLDS=[0, 2, 5.5]):
        assert "no issues" in run_check()


@pytest.mark.parametrize("value", ["low", "HIGH", None, 3])
def test_e019_bad_notify_min_severity(value: Any) -> None:
    with override_settings(FOLLOWUP_VISIBILITY_NOTIFY_MIN_SEVERITY=value):
        output = run_failing_check()
    assert_reported(output, "followup_visibility.E019", "NOTIFY_MIN_SEVERITY", repr(value))
    assert our_ids(output) == {"followup_visibility.E019"}


@pytest.mark.parametrize("value", ["medium", "high", "critical"])
def test_e019_each_level_from_medium_is_allowed(value: str) -> None:
    with override_settings(FOLLOWUP_VISIBILITY_NOTIFY_MIN_SEVERITY=value):
        assert "no issues" in run_check()


@pytest.mark.parametrize("value", ["no", 0, None])
def test_e021_bad_notify_email(value: Any) -> None:
    with override_settings(FOLLOWUP_VISIBILITY_NOTIFY_EMAIL=value):
        output = run_failing_check()
    assert_reported(output, "followup_visibility.E021", "NOTIFY_EMAIL", repr(value))
    assert our_ids(output) == {"followup_visibility.E021"}


@pytest.mark.parametrize(
    "levels",
    [[], [timedelta(hours=4), timedelta(hours=2)], [timedelta(0)], [timedelta(hours=2)] * 2],
)
def test_e022_escalation_policy_levels(configured: Any, levels: list[timedelta]) -> None:
    # Written around the admin's validation, as a fixture or SQL could.
    policy = EscalationPolicy.objects.create(name="Broken", team=make_team("broken"))
    EscalationLevel.objects.bulk_create(
        EscalationLevel(policy=policy, number=n, after=after) for n, after in enumerate(levels, 1)
    )
    output = run_database_check()
    assert_reported(output, "followup_visibility.E022", "'Broken'")
    assert our_ids(output) == {"followup_visibility.E022"}


def test_w002_no_default_escalation_policy(configured: Any) -> None:
    EscalationPolicy.objects.filter(is_default=True).delete()
    messages_ = run_checks(databases=["default"])
    assert [m.id for m in messages_ if m.id.startswith("followup")] == ["followup_visibility.W002"]


TENANT_HOOK = "tests.tenant_host.models.user_tenants"
TENANT_HOST = {"tenant_host.CompanyLead": "tests.tenant_host.adapters.CompanyLeadAdapter"}


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("tests.tenant_host.models.no_such_hook", "cannot be imported"),
        ("tests.tenant_host.models.current_company", "is not callable"),
        (["tests.tenant_host.models.user_tenants"], "is not a dotted path"),
    ],
)
def test_e031_user_tenants_not_a_callable(path: Any, problem: str) -> None:
    with override_settings(
        FOLLOWUP_VISIBILITY_USER_TENANTS=path, FOLLOWUP_VISIBILITY_TRACKED_MODELS=TENANT_HOST
    ):
        output = run_failing_check()
    assert_reported(output, "followup_visibility.E031", "USER_TENANTS", problem)
    assert our_ids(output) == {"followup_visibility.E031"}


def test_e031_a_callable_hook_passes() -> None:
    with override_settings(
        FOLLOWUP_VISIBILITY_USER_TENANTS=TENANT_HOOK, FOLLOWUP_VISIBILITY_TRACKED_MODELS=TENANT_HOST
    ):
        assert "no issues" in run_check()


def test_w003_a_tracked_model_without_a_tenant_under_tenancy() -> None:
    tracked = {**TENANT_HOST, "crm.Lead": LEAD_ADAPTER}
    with override_settings(
        FOLLOWUP_VISIBILITY_USER_TENANTS=TENANT_HOOK, FOLLOWUP_VISIBILITY_TRACKED_MODELS=tracked
    ):
        output = run_check()
    assert_reported(output, "followup_visibility.W003", "LeadAdapter", "crm.Lead")
    assert our_ids(output) == {"followup_visibility.W003"}


class MisnamedTenantAdapter(OpportunityAdapter):
    """Names a tenant field ``crm.Lead`` does not have (E010)."""

    tenant_field = "organisation"


def test_e010_checks_the_tenant_field() -> None:
    tracked = {"crm.Lead": "tests.test_checks.MisnamedTenantAdapter"}
    with override_settings(FOLLOWUP_VISIBILITY_TRACKED_MODELS=tracked):
        output = run_failing_check()
    assert_reported(output, "followup_visibility.E010", "tenant_field", "'organisation'")


# Register and API settings (E032-E035)

WEIGHTS = {"intent": 0.35, "value": 0.35, "lateness": 0.2, "age": 0.1}
HALVES = {"intent": 1.0, "value": 10_000, "lateness": 1.0, "age": timedelta(days=5)}


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ([0.35, 0.35, 0.2, 0.1], "is not a mapping"),
        ({"intent": 1, "value": 1, "lateness": 1}, "lacks age"),
        ({**WEIGHTS, "recency": 1}, "has unknown keys 'recency'"),
        ({**WEIGHTS, "value": -0.1}, "value is -0.1, not a number >= 0"),
        ({**WEIGHTS, "age": "0.1"}, "age is '0.1', not a number >= 0"),
        ({**WEIGHTS, "intent": True}, "intent is True"),
        ({**WEIGHTS, "lateness": float("nan")}, "lateness is nan"),
        ({"intent": 0, "value": 0, "lateness": 0.0, "age": 0}, "are all 0"),
    ],
    ids=["list", "missing", "unknown", "negative", "string", "bool", "nan", "all-zero"],
)
def test_e032_bad_register_weights(value: Any, problem: str) -> None:
    with override_settings(FOLLOWUP_VISIBILITY_REGISTER_WEIGHTS=value):
        output = run_failing_check()
    assert_reported(output, "followup_visibility.E032", "REGISTER_WEIGHTS", problem)
    assert our_ids(output) == {"followup_visibility.E032"}


@pytest.mark.parametrize(
    "value",
    [
        {"intent": 1, "value": 0, "lateness": 0, "age": 0},  # one factor alone ranks
        {"intent": Decimal("2"), "value": 1, "lateness": 0.5, "age": 0},
    ],
)
def test_e032_zero_weights_are_allowed_unless_all_are(value: Any) -> None:
    with override_settings(FOLLOWUP_VISIBILITY_REGISTER_WEIGHTS=value):
        assert "no issues" in run_check()


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("intent=1", "is not a mapping"),
        ({k: v for k, v in HALVES.items() if k != "value"}, "lacks value"),
        ({**HALVES, "Age": timedelta(days=1)}, "has unknown keys 'Age'"),
        ({**HALVES, "value": 0}, "value is 0, not a number > 0"),
        ({**HALVES, "lateness": -1.0}, "lateness is -1.0, not a number > 0"),
        ({**HALVES, "age": 5}, "age is 5, not a timedelta > 0"),
        ({**HALVES, "age": timedelta(0)}, "not a timedelta > 0"),
    ],
    ids=["string", "missing", "unknown", "zero", "negative", "age-number", "age-zero"],
)
def test_e033_bad_register_half_points(value: Any, problem: str) -> None:
    with override_settings(FOLLOWUP_VISIBILITY_REGISTER_HALF_POINTS=value):
        output = run_failing_check()
    assert_reported(output, "followup_visibility.E033", "REGISTER_HALF_POINTS", problem)
    assert our_ids(output) == {"followup_visibility.E033"}


def test_e032_e033_reported_together_with_every_problem() -> None:
    with override_settings(
        FOLLOWUP_VISIBILITY_REGISTER_WEIGHTS={"intent": -1, "speed": 1},
        FOLLOWUP_VISIBILITY_REGISTER_HALF_POINTS={**HALVES, "age": 0, "intent": 0},
    ):
        output = run_failing_check()
    assert_reported(
        output, "followup_visibility.E032", "lacks value, lateness, age", "'speed'", "intent is -1"
    )
    assert_reported(output, "followup_visibility.E033", "intent is 0", "age is 0")
    assert our_ids(output) == {"followup_visibility.E032", "followup_visibility.E033"}


@pytest.mark.parametrize("size", [0, -5, True, "1000", 10.0])
def test_e034_bad_api_max_batch(size: Any) -> None:
    with override_settings(FOLLOWUP_VISIBILITY_API_MAX_BATCH=size):
        output = run_failing_check()
    assert_reported(output, "followup_visibility.E034", "API_MAX_BATCH", repr(size))
    assert our_ids(output) == {"followup_visibility.E034"}


@pytest.mark.parametrize("rate", ["600", "600/fortnight", "0/min", "ten/min", "6/0/m", 600, ""])
def test_e035_bad_api_ingest_rate(rate: Any) -> None:
    with override_settings(FOLLOWUP_VISIBILITY_API_INGEST_RATE=rate):
        output = run_failing_check()
    assert_reported(output, "followup_visibility.E035", "API_INGEST_RATE", repr(rate))
    assert our_ids(output) == {"followup_visibility.E035"}


@pytest.mark.parametrize("rate", [None, "600/min", "20/s", "100000/day", "5/hour", "1/m"])
def test_e035_none_or_a_drf_rate_passes(rate: Any) -> None:
    with override_settings(FOLLOWUP_VISIBILITY_API_INGEST_RATE=rate):
        assert "no issues" in run_check()
        # The throttle parses what the check lets through.
        throttle = IngestThrottle()
    if rate is not None:
        assert throttle.num_requests > 0 and throttle.duration > 0
