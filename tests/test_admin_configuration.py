"""The configuration admin: calendars, segments, teams, SLA policies (publish and preview)."""

from __future__ import annotations

from datetime import date, time, timedelta
from html.parser import HTMLParser
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from followup_visibility.choices import AlertSignal, ClosedDateKind, SegmentSource
from followup_visibility.config import policies
from followup_visibility.models import (
    Calendar,
    ClosedDate,
    Deadline,
    Segment,
    SegmentRule,
    SlaPolicy,
    SlaPolicyVersion,
    Team,
    WorkingWindow,
)
from tests.conftest import tracked

DEFAULT_DURATIONS = {
    "first_response": timedelta(hours=4),
    "never_contacted": timedelta(hours=8),
    "reply": timedelta(hours=4),
    "call_retry": timedelta(hours=2),
    "next_action_grace": timedelta(hours=1),
    "no_next_action": timedelta(hours=16),
    "stale": timedelta(hours=40),
    "owner_assignment": timedelta(hours=1),
    "handoff_acceptance": timedelta(hours=4),
}


class _FormReader(HTMLParser):
    """What a browser would submit from one form of a page (before the user changes it)."""

    def __init__(self, form_id: str) -> None:
        super().__init__()
        self.form_id, self.inside = form_id, False
        self.select: str | None = None
        self.textarea: str | None = None
        self.data: dict[str, list[str]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.inside = a.get("id") == self.form_id
        elif not self.inside:
            return
        elif tag == "input" and "name" in a:
            kind = a.get("type", "text")
            if kind in ("submit", "button", "file") or (
                kind in ("checkbox", "radio") and "checked" not in a
            ):
                return
            default = "on" if kind in ("checkbox", "radio") else ""
            self.data.setdefault(a["name"], []).append(a.get("value", default))
        elif tag == "select":
            self.select = a["name"]
        elif tag == "option" and self.select and "selected" in a:
            self.data.setdefault(self.select, []).append(a.get("value", ""))
        elif tag == "textarea":
            self.textarea = a["name"]
            self.data[self.textarea] = [""]

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.inside = False
        elif tag == "select":
            self.select = None
        elif tag == "textarea":
            self.textarea = None

    def handle_data(self, data: str) -> None:
        if self.textarea:
            self.data[self.textarea][0] += data


def form_data(client: Any, url: str, form_id: str) -> dict[str, Any]:
    """The form at ``url`` as the browser would post it unchanged."""
    reader = _FormReader(form_id)
    reader.feed(client.get(url).content.decode())
    assert reader.data, f"no form {form_id} at {url}"
    data: dict[str, Any] = {k: v[0] if len(v) == 1 else v for k, v in reader.data.items()}
    for name, value in data.items():
        if isinstance(value, str) and value.startswith("\n"):  # browsers drop it too
            data[name] = value[1:]
    return data


def add_rows(data: dict[str, Any], prefix: str, rows: list[dict[str, Any]]) -> None:
    first = int(data[f"{prefix}-TOTAL_FORMS"])
    for i, row in enumerate(rows, start=first):
        data.update({f"{prefix}-{i}-{k}": v for k, v in row.items()})
    data[f"{prefix}-TOTAL_FORMS"] = str(first + len(rows))


@pytest.fixture
def default_calendar(db: Any) -> Calendar:
    """The migration's company calendar, recreated if a transactional test flushed it."""
    calendar = Calendar.objects.filter(is_default=True).first()
    if calendar is None:
        calendar = Calendar.objects.create(
            name="Company hours", time_zone="America/New_York", is_default=True
        )
        WorkingWindow.objects.bulk_create(
            WorkingWindow(calendar=calendar, weekday=d, start=time(9), end=time(17))
            for d in range(5)
        )
    return calendar


@pytest.fixture
def default_policy(db: Any) -> SlaPolicy:
    policy = SlaPolicy.objects.filter(is_default=True).first()
    if policy is None:
        policy = policies.create_policy(
            "Company default", DEFAULT_DURATIONS, now=timezone.now() - timedelta(days=400)
        )
    return policy


@pytest.fixture
def calendar(db: Any) -> Calendar:
    calendar = Calendar.objects.create(name="Berlin office", time_zone="Europe/Berlin")
    WorkingWindow.objects.create(calendar=calendar, weekday=0, start=time(9), end=time(17))
    return calendar


@pytest.fixture
def staff(make_user: Any) -> Any:
    def make(*codenames: str) -> Any:
        user = make_user(is_staff=True)
        user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
        return user

    return make


def url(model: str, view: str, *args: Any) -> str:
    return reverse(f"admin:followup_visibility_{model}_{view}", args=args)


# Pages ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["calendar", "segment", "team", "slapolicy", "deadline"])
def test_configuration_pages_render(
    admin_client: Any, default_calendar: Any, default_policy: Any, make_lead: Any, model: str
) -> None:
    make_lead(created_at=timezone.now() - timedelta(days=3))
    segment = Segment.objects.create(code="pricing", name="Pricing request")
    SegmentRule.objects.create(segment=segment, hint_field="source", hint_value="pricing")
    Team.objects.create(key="emea", name="EMEA", calendar=default_calendar)
    assert admin_client.get(url(model, "changelist")).status_code == 200
    models = {
        "calendar": Calendar,
        "segment": Segment,
        "team": Team,
        "slapolicy": SlaPolicy,
        "deadline": Deadline,
    }
    first = models[model].objects.first()
    assert admin_client.get(url(model, "change", first.pk)).status_code == 200
    if model != "deadline":
        assert admin_client.get(url(model, "add")).status_code == 200


# Calendars ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            [
                {"weekday": "0", "start": "09:00", "end": "13:00"},
                {"weekday": "0", "start": "12:00", "end": "17:00"},
            ],
            "Monday: 09:00-13:00 and 12:00-17:00 overlap.",
        ),
        (
            [{"weekday": "2", "start": "17:00", "end": "09:00"}],
            "The window must end after it starts",
        ),
    ],
)
def test_bad_working_windows_are_rejected_and_nothing_is_saved(
    admin_client: Any, rows: Any, message: str
) -> None:
    data = form_data(admin_client, url("calendar", "add"), "calendar_form")
    data.update({"name": "Night shift", "time_zone": "Europe/Berlin"})
    add_rows(data, "windows", rows)
    response = admin_client.post(url("calendar", "add"), data)
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Calendar.objects.filter(name="Night shift").exists()
    assert not WorkingWindow.objects.filter(calendar__name="Night shift").exists()


def test_an_overlap_with_a_stored_window_leaves_the_calendar_unchanged(
    admin_client: Any, calendar: Calendar
) -> None:
    change = url("calendar", "change", calendar.pk)
    data = form_data(admin_client, change, "calendar_form")
    data["name"] = "Renamed"
    add_rows(data, "windows", [{"weekday": "0", "start": "16:00", "end": "18:00"}])
    response = admin_client.post(change, data)
    assert "overlap" in response.content.decode()
    calendar.refresh_from_db()
    assert calendar.name == "Berlin office"
    assert list(calendar.windows.values_list("start", "end")) == [(time(9), time(17))]


def test_overlapping_special_hours_are_rejected(admin_client: Any, calendar: Calendar) -> None:
    change = url("calendar", "change", calendar.pk)
    data = form_data(admin_client, change, "calendar_form")
    add_rows(
        data,
        "special_hours",
        [
            {"date": "2026-12-24", "start": "09:00", "end": "13:00"},
            {"date": "2026-12-24", "start": "12:00", "end": "14:00"},
        ],
    )
    assert "2026-12-24: 09:00-13:00 and 12:00-14:00 overlap." in (
        admin_client.post(change, data).content.decode()
    )
    assert not calendar.special_hours.exists()


def test_valid_rows_are_saved(admin_client: Any, calendar: Calendar) -> None:
    change = url("calendar", "change", calendar.pk)
    data = form_data(admin_client, change, "calendar_form")
    add_rows(data, "windows", [{"weekday": "1", "start": "09:00", "end": "12:00"}])
    add_rows(data, "windows", [{"weekday": "1", "start": "13:00", "end": "00:00"}])
    add_rows(data, "closed_dates", [{"date": "2026-12-31", "name": "Closed", "kind": "closure"}])
    assert admin_client.post(change, data).status_code == 302
    assert calendar.windows.filter(weekday=1).count() == 2
    assert calendar.closed_dates.get().date == date(2026, 12, 31)


def test_an_unknown_time_zone_is_a_field_error(admin_client: Any, calendar: Calendar) -> None:
    change = url("calendar", "change", calendar.pk)
    data = form_data(admin_client, change, "calendar_form")
    data["time_zone"] = "Europe/Atlantis"
    response = admin_client.post(change, data)
    assert "time_zone" in response.context["adminform"].form.errors
    calendar.refresh_from_db()
    assert calendar.time_zone == "Europe/Berlin"


def test_a_second_default_calendar_is_refused(
    admin_client: Any, default_calendar: Calendar, calendar: Calendar
) -> None:
    change = url("calendar", "change", calendar.pk)
    data = form_data(admin_client, change, "calendar_form")
    data["is_default"] = "on"
    response = admin_client.post(change, data)
    errors = response.context["adminform"].form.errors["is_default"]
    assert default_calendar.name in errors[0]
    assert Calendar.objects.filter(is_default=True).get() == default_calendar


def test_the_default_calendar_cannot_be_deleted(
    admin_client: Any, default_calendar: Calendar
) -> None:
    assert admin_client.post(url("calendar", "delete", default_calendar.pk)).status_code == 403
    assert Calendar.objects.filter(pk=default_calendar.pk).exists()


def test_seed_action_adds_this_and_the_next_two_years(
    admin_client: Any, calendar: Calendar
) -> None:
    calendar.holiday_country = "US"
    calendar.save()
    year = timezone.now().year
    response = admin_client.post(
        url("calendar", "changelist"),
        {"action": "seed_public_holidays", "_selected_action": [calendar.pk]},
        follow=True,
    )
    days = set(calendar.closed_dates.values_list("date", flat=True))
    assert {date(y, 1, 1) for y in (year, year + 1, year + 2)} <= days
    assert not any(day.year == year + 3 for day in days)
    assert set(calendar.closed_dates.values_list("kind", flat=True)) == {
        ClosedDateKind.PUBLIC_HOLIDAY
    }
    if 2026 in (year, year + 1, year + 2):
        assert "observed" in calendar.closed_dates.get(date=date(2026, 7, 3)).name
    assert f"{len(days)} public holidays added" in response.content.decode()
    # Seeding again adds nothing: the table, not the package, is the source of truth.
    admin_client.post(
        url("calendar", "changelist"),
        {"action": "seed_public_holidays", "_selected_action": [calendar.pk]},
    )
    assert calendar.closed_dates.count() == len(days)


def test_seed_action_reports_an_unknown_country(admin_client: Any, calendar: Calendar) -> None:
    calendar.holiday_country = "XX"
    calendar.save()
    response = admin_client.post(
        url("calendar", "changelist"),
        {"action": "seed_public_holidays", "_selected_action": [calendar.pk]},
        follow=True,
    )
    messages = [str(m) for m in response.context["messages"]]
    assert len(messages) == 1 and messages[0].startswith("Berlin office: ")
    assert "XX" in messages[0]
    assert not calendar.closed_dates.exists()


def test_seed_action_needs_change_permission(client: Any, staff: Any, calendar: Calendar) -> None:
    calendar.holiday_country = "US"
    calendar.save()
    client.force_login(staff("view_calendar"))
    changelist = url("calendar", "changelist")
    page = client.get(changelist)
    assert page.status_code == 200
    assert "seed_public_holidays" not in page.content.decode()
    client.post(changelist, {"action": "seed_public_holidays", "_selected_action": [calendar.pk]})
    assert not ClosedDate.objects.filter(calendar=calendar).exists()


# Segments and teams ---------------------------------------------------------------------------


def test_a_segment_rule_without_conditions_is_refused(admin_client: Any) -> None:
    data = form_data(admin_client, url("segment", "add"), "segment_form")
    data.update({"name": "Pricing request", "code": "pricing", "intent_weight": "2.50"})
    add_rows(data, "rules", [{"priority": "10", "active": "on"}])
    response = admin_client.post(url("segment", "add"), data)
    assert "A rule needs at least one condition." in response.content.decode()
    assert not Segment.objects.exists()


def test_a_team_cannot_become_its_own_ancestor(admin_client: Any) -> None:
    parent = Team.objects.create(key="sales", name="Sales")
    child = Team.objects.create(key="emea", name="EMEA", parent=parent)
    change = url("team", "change", parent.pk)
    data = form_data(admin_client, change, "team_form")
    data["parent"] = str(child.pk)
    response = admin_client.post(change, data)
    assert "A team cannot be its own ancestor." in response.content.decode()
    parent.refresh_from_db()
    assert parent.parent_id is None


# SLA policies ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("choice", "applies_to_open"), [("new", False), ("open", True)])
def test_saving_a_policy_publishes_the_next_version(
    admin_client: Any,
    admin_user: Any,
    default_policy: SlaPolicy,
    choice: str,
    applies_to_open: bool,
) -> None:
    before = default_policy.versions.count()
    change = url("slapolicy", "change", default_policy.pk)
    data = form_data(admin_client, change, "slapolicy_form")
    assert data["first_response"] == "4:00:00"  # prefilled from the newest version
    data.update(
        {
            "first_response": "2:30:00",
            "stale": "1 day, 0:00:00",
            "stage_limits": '{"proposal": 144000}',
            "apply_to": choice,
            "comment": "Faster first response",
        }
    )
    response = admin_client.post(change, data)
    assert response.status_code == 302
    version = default_policy.versions.order_by("-number").first()
    assert version.number == before + 1
    assert version.first_response == timedelta(hours=2, minutes=30)
    assert version.stale == timedelta(hours=24)
    assert version.never_contacted == timedelta(hours=8)  # unchanged values carried over
    assert version.stage_limits == {"proposal": 144000}
    assert version.applies_to_open is applies_to_open
    assert version.created_by == admin_user
    assert version.comment == "Faster first response"


def test_the_apply_to_choice_is_required(admin_client: Any, default_policy: SlaPolicy) -> None:
    before = default_policy.versions.count()
    change = url("slapolicy", "change", default_policy.pk)
    data = form_data(admin_client, change, "slapolicy_form")
    data["first_response"] = "2:00:00"
    response = admin_client.post(change, data)
    assert "apply_to" in response.context["adminform"].form.errors
    assert default_policy.versions.count() == before


def test_saving_without_changes_publishes_nothing(
    admin_client: Any, default_policy: SlaPolicy
) -> None:
    before = default_policy.versions.count()
    change = url("slapolicy", "change", default_policy.pk)
    data = form_data(admin_client, change, "slapolicy_form")
    data.update({"apply_to": "new", "name": "Company SLAs"})
    assert admin_client.post(change, data).status_code == 302
    default_policy.refresh_from_db()
    assert default_policy.name == "Company SLAs"
    assert default_policy.versions.count() == before


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("first_response", "0:00:00", "Must be positive."),
        ("first_response", "-1:00:00", "Must be positive."),
        ("next_action_grace", "-0:30:00", "Must be zero or more."),
        ("reply", "", "The company default must set every duration."),
        ("stage_limits", '{"proposal": -5}', "proposal: the limit must be a positive number"),
    ],
)
def test_invalid_values_are_field_errors_and_publish_nothing(
    admin_client: Any, default_policy: SlaPolicy, field: str, value: str, message: str
) -> None:
    before = SlaPolicyVersion.objects.count()
    change = url("slapolicy", "change", default_policy.pk)
    data = form_data(admin_client, change, "slapolicy_form")
    data.update({field: value, "apply_to": "open"})
    response = admin_client.post(change, data)
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert list(errors) == [field]
    assert message in errors[field][0]
    assert SlaPolicyVersion.objects.count() == before


def test_zero_grace_for_next_actions_is_allowed(
    admin_client: Any, default_policy: SlaPolicy
) -> None:
    change = url("slapolicy", "change", default_policy.pk)
    data = form_data(admin_client, change, "slapolicy_form")
    data.update({"next_action_grace": "0:00:00", "apply_to": "new"})
    assert admin_client.post(change, data).status_code == 302
    assert default_policy.versions.order_by("-number")[0].next_action_grace == timedelta(0)


def test_adding_a_segment_policy_creates_it_with_a_first_version(
    admin_client: Any, admin_user: Any, default_policy: SlaPolicy
) -> None:
    segment = Segment.objects.create(code="missed-call", name="Missed call")
    data = form_data(admin_client, url("slapolicy", "add"), "slapolicy_form")
    data.update({"name": "Missed calls", "segment": str(segment.pk), "first_response": "1:00:00"})
    data["apply_to"] = "open"
    assert admin_client.post(url("slapolicy", "add"), data).status_code == 302
    policy = SlaPolicy.objects.get(segment=segment)
    version = policy.versions.get()
    assert (policy.team, policy.is_default) == (None, False)
    assert version.first_response == timedelta(hours=1)
    assert version.never_contacted is None  # inherited from the default
    assert version.applies_to_open and version.created_by == admin_user
    # The scope is now taken: a second policy for it is a form error.
    data["name"] = "Missed calls again"
    response = admin_client.post(url("slapolicy", "add"), data)
    assert "Missed calls" in response.context["adminform"].form.errors["segment"][0]
    assert SlaPolicy.objects.filter(segment=segment).count() == 1


def test_preview_shows_overdue_counts_and_saves_nothing(
    admin_client: Any, default_calendar: Any, default_policy: SlaPolicy, make_lead: Any
) -> None:
    lead = make_lead(created_at=timezone.now() - timedelta(days=30))
    assert Deadline.objects.filter(opportunity=tracked(lead)).exists()
    versions, log_entries = SlaPolicyVersion.objects.count(), LogEntry.objects.count()
    change = url("slapolicy", "change", default_policy.pk)
    data = form_data(admin_client, change, "slapolicy_form")
    data.update({"first_response": "2000:00:00", "_preview": "Preview"})  # no apply_to needed
    response = admin_client.post(change, data)
    assert response.status_code == 200
    preview = response.context["preview"]
    first = next(r for r in preview["rows"] if r["signal"] == AlertSignal.NO_FIRST_RESPONSE.label)
    assert (first["current"], first["proposed"], first["change"]) == (1, 0, "-1")
    assert preview["examined"] >= 1 and preview["current"] >= 1
    page = response.content.decode()
    assert "What-if preview" in page and 'value="2000:00:00"' in page  # the form keeps the draft
    assert SlaPolicyVersion.objects.count() == versions
    assert LogEntry.objects.count() == log_entries


def test_preview_of_a_new_policy_creates_nothing(
    admin_client: Any, default_calendar: Any, default_policy: SlaPolicy
) -> None:
    segment = Segment.objects.create(code="pricing", name="Pricing request")
    data = form_data(admin_client, url("slapolicy", "add"), "slapolicy_form")
    data.update(
        {"name": "Pricing", "segment": str(segment.pk), "stale": "8:00:00", "_preview": "1"}
    )
    response = admin_client.post(url("slapolicy", "add"), data)
    assert response.context["preview"]["examined"] == 0
    assert not SlaPolicy.objects.filter(segment=segment).exists()


def test_preview_is_not_run_for_invalid_values(
    admin_client: Any, default_policy: SlaPolicy
) -> None:
    change = url("slapolicy", "change", default_policy.pk)
    data = form_data(admin_client, change, "slapolicy_form")
    data.update({"first_response": "0:00:00", "_preview": "Preview"})
    response = admin_client.post(change, data)
    assert "preview" not in response.context
    assert "first_response" in response.context["adminform"].form.errors


def test_viewers_see_the_versions_but_no_form_or_preview(
    client: Any, staff: Any, default_policy: SlaPolicy
) -> None:
    client.force_login(staff("view_slapolicy"))
    response = client.get(url("slapolicy", "change", default_policy.pk))
    page = response.content.decode()
    assert response.status_code == 200
    assert "Published versions (newest first)" in page
    assert "First response: 4:00:00" in page  # the version's durations, in business hours
    assert 'name="first_response"' not in page and 'name="_preview"' not in page


def test_the_default_policy_cannot_be_deleted_nor_any_version(
    admin_client: Any, default_policy: SlaPolicy
) -> None:
    assert admin_client.get(url("slapolicy", "delete", default_policy.pk)).status_code == 403
    admin_client.post(
        url("slapolicy", "changelist"),
        {"action": "delete_selected", "_selected_action": [default_policy.pk], "post": "yes"},
    )
    assert SlaPolicy.objects.filter(pk=default_policy.pk).exists()
    page = admin_client.get(url("slapolicy", "change", default_policy.pk)).content.decode()
    assert "versions-0-DELETE" not in page and 'name="retired"' not in page
    assert SlaPolicyVersion not in admin.site._registry


# Deadlines and opportunities ------------------------------------------------------------------


def test_the_deadline_admin_is_read_only(
    admin_client: Any, default_calendar: Any, default_policy: Any, make_lead: Any
) -> None:
    opp = tracked(make_lead(created_at=timezone.now() - timedelta(hours=2)))
    deadline = Deadline.objects.filter(opportunity=opp).first()
    assert deadline is not None
    due = deadline.due_at
    assert admin_client.get(url("deadline", "add")).status_code == 403
    assert admin_client.post(url("deadline", "delete", deadline.pk)).status_code == 403
    admin_client.post(url("deadline", "change", deadline.pk), {"sla": "1:00:00"})
    deadline.refresh_from_db()
    assert deadline.due_at == due
    page = admin_client.get(url("deadline", "changelist")).content.decode()
    assert "delete_selected" not in page


@pytest.mark.parametrize("earlier", [None, "rule"])
def test_changing_the_segment_of_an_opportunity_pins_it(
    admin_client: Any, default_calendar: Any, default_policy: Any, make_lead: Any, earlier: Any
) -> None:
    pricing = Segment.objects.create(code="pricing", name="Pricing request")
    brochure = Segment.objects.create(code="brochure", name="Brochure download")
    if earlier:
        SegmentRule.objects.create(segment=brochure, hint_field="source", hint_value="brochure")
    opp = tracked(make_lead(source="brochure", created_at=timezone.now() - timedelta(hours=2)))
    assert opp.segment == (brochure if earlier else None)
    policies.create_policy(
        "Pricing",
        {"first_response": timedelta(minutes=30)},
        now=timezone.now(),
        segment=pricing,
        apply_to_open=True,
    )
    change = url("trackedopportunity", "change", opp.pk)
    data = form_data(admin_client, change, "trackedopportunity_form")
    data["segment"] = str(pricing.pk)
    assert admin_client.post(change, data).status_code == 302
    opp.refresh_from_db()
    assert (opp.segment, opp.segment_source) == (pricing, SegmentSource.MANUAL)
    first = Deadline.objects.get(opportunity=opp, signal=AlertSignal.NO_FIRST_RESPONSE)
    assert first.sla == timedelta(minutes=30)  # recomputed with the pinned segment's policy


def test_clearing_a_pinned_segment_hands_it_back_to_the_rules(
    admin_client: Any, default_calendar: Any, default_policy: Any, make_lead: Any
) -> None:
    brochure = Segment.objects.create(code="brochure", name="Brochure download")
    pricing = Segment.objects.create(code="pricing", name="Pricing request")
    SegmentRule.objects.create(segment=brochure, hint_field="source", hint_value="brochure")
    opp = tracked(make_lead(source="brochure", created_at=timezone.now() - timedelta(hours=2)))
    change = url("trackedopportunity", "change", opp.pk)
    for segment, expected in [(pricing, SegmentSource.MANUAL), (None, SegmentSource.RULE)]:
        data = form_data(admin_client, change, "trackedopportunity_form")
        data["segment"] = str(segment.pk) if segment else ""
        assert admin_client.post(change, data).status_code == 302
        opp.refresh_from_db()
        assert opp.segment_source == expected
    assert opp.segment == brochure
