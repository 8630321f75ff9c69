"""Alert triage and the suppression, inhibition and escalation pages of the admin.

Alerts come from real deadlines through ``sweep.sweep``. The admin reads the clock with
``timezone.now()``, so every test runs with the clock frozen at ``NOW``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from example_project.crm.models import Lead
from followup_visibility.alerting import sweep
from followup_visibility.choices import AlertSignal, AlertStatus, NotificationChannel
from followup_visibility.config import suppressions
from followup_visibility.ingest.crm import sync_objects
from followup_visibility.models import (
    Alert,
    Escalation,
    EscalationLevel,
    EscalationPolicy,
    InhibitionRule,
    Notification,
    Suppression,
    SweepRun,
    Team,
    TrackedOpportunity,
)
from tests import factories_sla
from tests.conftest import tracked
from tests.test_admin_configuration import add_rows, form_data

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday
HOUR = timedelta(hours=1)
#: Five hours past the 4-hour first response (high), one past the 8-hour first contact (low).
NOW = T0 + 9 * HOUR
DURATIONS = {
    "first_response": 4 * HOUR,
    "never_contacted": 8 * HOUR,
    "reply": 2 * HOUR,
    "call_retry": 2 * HOUR,
    "next_action_grace": timedelta(0),
    "no_next_action": 100 * HOUR,
    "stale": 100 * HOUR,
    "owner_assignment": 100 * HOUR,
    "handoff_acceptance": 100 * HOUR,
}
TRIAGE = ("view_alert", "change_alert")
CHANGELIST = "admin:followup_visibility_alert_changelist"


@pytest.fixture(autouse=True)
def frozen() -> Iterator[None]:
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture(autouse=True)
def earlier_severity_scale(settings: Any) -> None:
    """The severity column and filter are tested on the scale this world was written on (high
    from one SLA late); the calibrated default is tests/test_severity.py's."""
    settings.FOLLOWUP_VISIBILITY_SEVERITY_THRESHOLDS = (0.25, 1.0, 3.0)


@pytest.fixture
def around_the_clock(db: Any) -> None:
    """A 24/7 UTC default calendar, so business time is elapsed time here."""
    factories_sla.around_the_clock(DURATIONS, since=T0 - 100 * HOUR)


@pytest.fixture
def staff(make_user: Callable[..., Any]) -> Callable[..., Any]:
    def make(*codenames: str, username: str | None = None) -> Any:
        user = make_user(username, is_staff=True)
        user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
        return user

    return make


@dataclass
class World:
    rep: Any
    other_rep: Any
    manager: Any
    team: Team
    mine: TrackedOpportunity
    theirs: TrackedOpportunity

    def alert(self, opp: TrackedOpportunity, signal: str) -> Alert:
        return Alert.objects.get(opportunity=opp, signal=signal)


@pytest.fixture
def world(around_the_clock: None, staff: Callable[..., Any]) -> World:
    """Two reps with one lead each; the first rep's team has a manager. Two alerts per lead."""
    rep, other_rep = staff(*TRIAGE, username="rep"), staff(*TRIAGE, username="other")
    manager = staff(*TRIAGE, username="manager")
    team = Team.objects.create(key="east", name="East", manager=manager)
    team.members.add(rep)
    leads = Lead.objects.bulk_create(
        [
            Lead(name="Acme pricing", owner=rep, created_at=T0),
            Lead(name="Globex brochure", owner=other_rep, created_at=T0),
        ]
    )
    sync_objects(leads, T0, confirm_owners=True)
    sweep.sweep(NOW)
    mine, theirs = (tracked(lead) for lead in leads)
    assert Alert.objects.filter(opportunity__in=[mine, theirs]).count() == 4
    return World(rep, other_rep, manager, team, mine, theirs)


def changelist(query: str = "") -> str:
    return reverse(CHANGELIST) + query


def act(client: Any, action: str, alerts: list[Alert], query: str = "", **data: Any) -> Any:
    """Post an action on ``alerts``; with ``data``, as the filled-in intermediate form."""
    payload = {"action": action, "_selected_action": [a.pk for a in alerts], **data}
    if data:
        payload["apply"] = "1"
    return client.post(changelist(query), payload)


def split(value: datetime) -> dict[str, str]:
    """A datetime as the admin's split date/time widget posts it (in the current time zone)."""
    local = timezone.localtime(value)
    return {"0": local.strftime("%Y-%m-%d"), "1": local.strftime("%H:%M:%S")}


def at(name: str, value: datetime) -> dict[str, str]:
    return {f"{name}_{part}": text for part, text in split(value).items()}


def shown(response: Any) -> set[int]:
    return {alert.pk for alert in response.context["cl"].result_list}


def message_texts(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]]


# Pages ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model",
    ["alert", "suppression", "inhibitionrule", "escalationpolicy", "escalation", "notification"]
    + ["sweeprun"],
)
def test_the_pages_render(admin_client: Any, world: World, model: str) -> None:
    alert = world.alert(world.mine, AlertSignal.NO_FIRST_RESPONSE)
    Escalation.objects.create(
        alert=alert, level=1, alert_raised_at=alert.raised_at, fired_at=NOW, outcome="no_manager"
    )
    Notification.objects.create(
        recipient=world.rep,
        alert=alert,
        kind="alert",
        channel=NotificationChannel.INBOX,
        dedupe_key="alert:3:0",
        subject="Acme pricing is overdue",
        created_at=NOW,
        deliver_after=NOW,
    )
    Suppression.objects.create(
        team=world.team, comment="Team offsite", starts_at=NOW - HOUR, created_at=NOW - HOUR
    )
    InhibitionRule.objects.get_or_create(source=AlertSignal.DUPLICATE, target=AlertSignal.STALE)
    EscalationPolicy.objects.get_or_create(is_default=True, defaults={"name": "Default"})
    listed = admin_client.get(reverse(f"admin:followup_visibility_{model}_changelist"))
    assert listed.status_code == 200
    obj = listed.context["cl"].result_list[0]
    change = reverse(f"admin:followup_visibility_{model}_change", args=[obj.pk])
    assert admin_client.get(change).status_code == 200
    add = admin_client.get(reverse(f"admin:followup_visibility_{model}_add")).status_code
    writable = {"suppression", "inhibitionrule", "escalationpolicy"}
    assert add == (200 if model in writable else 403)


# The list ---------------------------------------------------------------------------------------


def test_the_list_ranks_by_severity_and_filters_on_it(admin_client: Any, world: World) -> None:
    response = admin_client.get(changelist())
    assert response.status_code == 200
    page = response.content.decode()
    assert "High" in page and "Low" in page
    rows = list(response.context["cl"].result_list)
    assert [row.signal for row in rows[:2]] == [AlertSignal.NO_FIRST_RESPONSE] * 2  # worst first
    assert [row.severity for row in rows] == [3, 3, 1, 1]

    high = admin_client.get(changelist("?severity=3"))
    assert shown(high) == {
        world.alert(world.mine, AlertSignal.NO_FIRST_RESPONSE).pk,
        world.alert(world.theirs, AlertSignal.NO_FIRST_RESPONSE).pk,
    }
    low = admin_client.get(changelist("?severity=1"))
    assert {a.signal for a in low.context["cl"].result_list} == {AlertSignal.NEVER_CONTACTED}
    assert shown(admin_client.get(changelist("?severity=4"))) == set()
    # Sorting on the column orders by the computed severity, in the database.
    ascending = admin_client.get(changelist("?o=4")).context["cl"].result_list
    assert [row.severity for row in ascending] == [1, 1, 3, 3]


def test_the_other_filters_and_search(admin_client: Any, world: World) -> None:
    mine = set(Alert.objects.filter(opportunity=world.mine).values_list("pk", flat=True))
    team = admin_client.get(changelist(f"?opportunity__team__id__exact={world.team.pk}"))
    assert shown(team) == mine
    assert shown(admin_client.get(changelist("?q=Acme"))) == mine
    signal = admin_client.get(changelist(f"?signal__exact={AlertSignal.NEVER_CONTACTED}"))
    assert len(shown(signal)) == 2
    assert len(shown(admin_client.get(changelist("?escalation_level=0")))) == 4
    assert shown(admin_client.get(changelist("?escalation_level=1"))) == set()


def test_closed_episodes_leave_the_default_list(admin_client: Any, world: World) -> None:
    alert = world.alert(world.mine, AlertSignal.NEVER_CONTACTED)
    act(admin_client, "resolve", [alert], evidence="Called, left a message with reception")
    assert alert.pk not in shown(admin_client.get(changelist()))
    assert alert.pk in shown(admin_client.get(changelist("?status=resolved")))
    assert alert.pk in shown(admin_client.get(changelist("?status=all")))


# Scope ------------------------------------------------------------------------------------------


def test_a_rep_sees_only_their_own_alerts(client: Any, world: World) -> None:
    client.force_login(world.rep)
    response = client.get(changelist())
    assert shown(response) == set(
        Alert.objects.filter(opportunity=world.mine).values_list("pk", flat=True)
    )
    theirs = world.alert(world.theirs, AlertSignal.NO_FIRST_RESPONSE)
    mine = world.alert(world.mine, AlertSignal.NO_FIRST_RESPONSE)
    assert (
        client.get(reverse("admin:followup_visibility_alert_change", args=[mine.pk])).status_code
        == 200
    )
    for name, args in [
        ("change", [theirs.pk]),
        ("history", [theirs.pk]),
        ("simple_history", [theirs.pk, theirs.history.first().history_id]),
    ]:
        url = reverse(f"admin:followup_visibility_alert_{name}", args=args)
        assert client.get(url).status_code == 404, name


def test_a_manager_sees_the_team_alerts(client: Any, world: World) -> None:
    client.force_login(world.manager)
    mine = set(Alert.objects.filter(opportunity=world.mine).values_list("pk", flat=True))
    assert shown(client.get(changelist())) == mine


def test_actions_reach_only_visible_alerts(client: Any, world: World) -> None:
    client.force_login(world.rep)
    theirs = world.alert(world.theirs, AlertSignal.NO_FIRST_RESPONSE)
    act(client, "acknowledge", [theirs])
    theirs.refresh_from_db()
    assert theirs.status == AlertStatus.OPEN


# Actions ----------------------------------------------------------------------------------------


def latest_change(alert: Alert) -> Any:
    return alert.history.order_by("-history_date", "-history_id").first()


def test_acknowledge(client: Any, world: World) -> None:
    client.force_login(world.rep)
    alerts = list(Alert.objects.filter(opportunity=world.mine))
    response = act(client, "acknowledge", alerts)
    assert response.status_code == 302
    for alert in alerts:
        alert.refresh_from_db()
        assert alert.status == AlertStatus.ACKNOWLEDGED
        assert (alert.acknowledged_by, alert.acknowledged_at) == (world.rep, NOW)
        assert latest_change(alert).history_user == world.rep


def test_a_refused_alert_is_named_and_the_others_proceed(client: Any, world: World) -> None:
    client.force_login(world.rep)
    done = world.alert(world.mine, AlertSignal.NEVER_CONTACTED)
    act(client, "dismiss", [done], reason="Duplicate of a phone lead")
    other = world.alert(world.mine, AlertSignal.NO_FIRST_RESPONSE)
    response = act(client, "acknowledge", [done, other], query="?status=all")
    response = client.get(response.url)
    texts = message_texts(response)
    assert any(text.startswith("Never contacted: Acme pricing: ") for text in texts)
    assert any("this one is dismissed" in text for text in texts)
    assert "1 alert acknowledged." in texts
    other.refresh_from_db()
    done.refresh_from_db()
    assert (other.status, done.status) == (AlertStatus.ACKNOWLEDGED, AlertStatus.DISMISSED)


def test_dismiss_asks_for_a_reason_first(client: Any, world: World) -> None:
    client.force_login(world.rep)
    alert = world.alert(world.mine, AlertSignal.NO_FIRST_RESPONSE)
    page = act(client, "dismiss", [alert])
    assert page.status_code == 200
    assert 'name="reason"' in page.content.decode()
    assert "No first response: Acme pricing" in page.content.decode()

    refused = act(client, "dismiss", [alert], reason="  ")
    assert refused.status_code == 200
    assert "reason" in refused.context["form"].errors
    alert.refresh_from_db()
    assert alert.status == AlertStatus.OPEN
    assert alert.history.count() == 1  # only the raise

    act(client, "dismiss", [alert], reason="Customer bought through a partner")
    alert.refresh_from_db()
    assert alert.status == AlertStatus.DISMISSED
    assert alert.dismissed_reason == "Customer bought through a partner"
    change = latest_change(alert)
    assert change.history_user == world.rep
    assert change.history_change_reason == "Customer bought through a partner"


def test_resolve_by_hand_with_evidence(client: Any, world: World) -> None:
    client.force_login(world.rep)
    alert = world.alert(world.mine, AlertSignal.NO_FIRST_RESPONSE)
    assert "evidence" in act(client, "resolve", [alert], evidence="").context["form"].errors
    act(client, "resolve", [alert], evidence="Called from my mobile at 14:05")
    alert.refresh_from_db()
    assert alert.status == AlertStatus.RESOLVED
    assert alert.resolution_note == "Called from my mobile at 14:05"
    assert latest_change(alert).history_user == world.rep


def test_snooze_until_a_time_or_a_condition(client: Any, world: World) -> None:
    client.force_login(world.rep)
    first = world.alert(world.mine, AlertSignal.NO_FIRST_RESPONSE)
    second = world.alert(world.mine, AlertSignal.NEVER_CONTACTED)
    assert 'name="until_0"' in act(client, "snooze", [first]).content.decode()

    until = NOW + timedelta(days=2)
    act(
        client, "snooze", [first], condition="", reason="Back from trade fair", **at("until", until)
    )
    first.refresh_from_db()
    assert (first.status, first.snoozed_until, first.snooze_condition) == (
        AlertStatus.SNOOZED,
        until,
        "",
    )
    assert first.snooze_reason == "Back from trade fair"
    assert latest_change(first).history_user == world.rep

    act(client, "snooze", [second], condition="customer_replies", reason="Asked them to call")
    second.refresh_from_db()
    assert (second.status, second.snooze_condition) == (AlertStatus.SNOOZED, "customer_replies")


def test_bad_snooze_input_changes_none_of_the_alerts(client: Any, world: World) -> None:
    client.force_login(world.rep)
    alerts = list(Alert.objects.filter(opportunity=world.mine).order_by("pk"))
    response = act(
        client, "snooze", alerts, condition="", reason="later", **at("until", NOW - HOUR)
    )
    assert response.status_code == 200
    assert "until" in response.context["form"].errors  # the domain's error, on the field
    for alert in alerts:
        alert.refresh_from_db()
        assert alert.status == AlertStatus.OPEN and alert.history.count() == 1


def test_without_change_permission_there_are_no_actions(
    client: Any, world: World, staff: Callable[..., Any]
) -> None:
    viewer = staff("view_alert", "view_all_opportunities")
    client.force_login(viewer)
    page = client.get(changelist())
    assert page.status_code == 200 and len(shown(page)) == 4
    html = page.content.decode()
    for action in ("acknowledge", "snooze", "dismiss", "resolve", "suppress"):
        assert f'value="{action}"' not in html
    alert = world.alert(world.mine, AlertSignal.NO_FIRST_RESPONSE)
    act(client, "acknowledge", [alert])
    act(client, "dismiss", [alert], reason="not mine to judge")
    alert.refresh_from_db()
    assert alert.status == AlertStatus.OPEN


def test_the_change_page_is_a_read_only_record(admin_client: Any, world: World) -> None:
    alert = world.alert(world.mine, AlertSignal.NO_FIRST_RESPONSE)
    Escalation.objects.create(
        alert=alert,
        level=1,
        alert_raised_at=alert.raised_at,
        fired_at=NOW,
        outcome="notified",
        recipient=world.manager,
    )
    Notification.objects.create(
        recipient=world.manager,
        alert=alert,
        kind="escalation",
        channel=NotificationChannel.INBOX,
        dedupe_key="escalation:1",
        subject="Acme pricing waits for a first response",
        created_at=NOW,
        deliver_after=NOW,
    )
    url = reverse("admin:followup_visibility_alert_change", args=[alert.pk])
    page = admin_client.get(url).content.decode()
    assert "Acme pricing waits for a first response" in page  # the notification inline
    assert "Sent to the manager" in page  # the escalation inline
    assert "raised by sweep" in page  # the history
    assert 'name="_save"' not in page

    admin_client.post(url, {"status": "resolved"})
    history = reverse(
        "admin:followup_visibility_alert_simple_history",
        args=[alert.pk, alert.history.first().history_id],
    )
    assert admin_client.post(history, {}).status_code == 403  # no revert
    assert admin_client.get(reverse("admin:followup_visibility_alert_add")).status_code == 403
    delete = reverse("admin:followup_visibility_alert_delete", args=[alert.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    alert.refresh_from_db()
    assert alert.status == AlertStatus.OPEN


# Suppression ------------------------------------------------------------------------------------


def test_suppress_needs_the_add_suppression_permission(
    client: Any, world: World, staff: Callable[..., Any]
) -> None:
    alert = world.alert(world.mine, AlertSignal.NO_FIRST_RESPONSE)
    client.force_login(world.rep)  # may triage, may not write rules
    assert 'value="suppress"' not in client.get(changelist()).content.decode()
    act(client, "suppress", [alert], scope="signal", comment="Test lead")
    alert.refresh_from_db()
    assert alert.status == AlertStatus.OPEN and not Suppression.objects.exists()


@pytest.mark.parametrize(
    ("scope", "suppressed"),
    [
        ("signal", {AlertSignal.NO_FIRST_RESPONSE}),
        ("all", {AlertSignal.NO_FIRST_RESPONSE, AlertSignal.NEVER_CONTACTED}),
    ],
)
def test_suppress_writes_a_rule_and_holds_the_alerts(
    client: Any, world: World, staff: Callable[..., Any], scope: str, suppressed: set[str]
) -> None:
    lead = staff(*TRIAGE, "add_suppression", "view_all_opportunities")
    client.force_login(lead)
    alert = world.alert(world.mine, AlertSignal.NO_FIRST_RESPONSE)
    assert 'name="comment"' in act(client, "suppress", [alert]).content.decode()
    act(client, "suppress", [alert], scope=scope, comment="Internal test lead")
    rule = Suppression.objects.get()
    assert (rule.opportunity, rule.comment, rule.created_by) == (
        world.mine,
        "Internal test lead",
        lead,
    )
    assert rule.signal == ("" if scope == "all" else AlertSignal.NO_FIRST_RESPONSE)
    held = set(
        Alert.objects.filter(opportunity=world.mine, status=AlertStatus.SUPPRESSED).values_list(
            "signal", flat=True
        )
    )
    assert held == suppressed


def suppression_add(client: Any) -> tuple[str, dict[str, Any]]:
    url = reverse("admin:followup_visibility_suppression_add")
    return url, form_data(client, url, "suppression_form")


def test_a_suppression_ending_before_it_starts_is_refused(admin_client: Any, world: World) -> None:
    url, data = suppression_add(admin_client)
    data.update(
        {
            "comment": "Trade fair contacts",
            "older_than": "90 days, 0:00:00",
            **at("starts_at", NOW + HOUR),
            **at("ends_at", NOW),
        }
    )
    response = admin_client.post(url, data)
    assert response.status_code == 200
    assert "ends_at" in response.context["adminform"].form.errors
    assert not Suppression.objects.exists()


def test_adding_a_suppression_goes_through_the_domain(
    admin_client: Any, admin_user: Any, world: World
) -> None:
    url, data = suppression_add(admin_client)
    assert data["starts_at_0"]  # defaults to now
    data.update({"comment": "Their own staff testing the form", "owner": str(world.rep.pk)})
    assert admin_client.post(url, data).status_code == 302
    rule = Suppression.objects.get()
    assert (rule.owner, rule.created_by) == (world.rep, admin_user)
    assert set(Alert.objects.filter(opportunity=world.mine).values_list("status", flat=True)) == {
        AlertStatus.SUPPRESSED
    }
    assert Alert.objects.filter(opportunity=world.theirs, status=AlertStatus.OPEN).count() == 2

    change = reverse("admin:followup_visibility_suppression_change", args=[rule.pk])
    assert 'name="comment"' not in admin_client.get(change).content.decode()  # read-only
    delete = reverse("admin:followup_visibility_suppression_delete", args=[rule.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403  # started: end it
    with time_machine.travel(NOW + HOUR, tick=False):
        admin_client.post(
            reverse("admin:followup_visibility_suppression_changelist"),
            {"action": "end_now", "_selected_action": [rule.pk]},
        )
    rule.refresh_from_db()
    assert rule.ends_at == NOW + HOUR
    assert set(Alert.objects.filter(opportunity=world.mine).values_list("status", flat=True)) == {
        AlertStatus.OPEN
    }


def test_a_suppression_without_any_matcher_is_refused(admin_client: Any, world: World) -> None:
    url, data = suppression_add(admin_client)
    data["comment"] = "Everything, please"
    response = admin_client.post(url, data)
    assert response.status_code == 200 and response.context["adminform"].form.errors
    assert not Suppression.objects.exists()


SUPPRESSING = ("view_suppression", "add_suppression", "change_suppression")


def manager_client(client: Any, world: World) -> Any:
    world.manager.user_permissions.add(*Permission.objects.filter(codename__in=SUPPRESSING))
    client.force_login(world.manager)
    return client


@pytest.mark.parametrize(
    "reach",
    ["their opportunity", "their owner", "a team they do not manage", "everyone's signal"],
)
def test_a_manager_cannot_suppress_beyond_their_teams(
    client: Any, world: World, reach: str
) -> None:
    manager = manager_client(client, world)
    url, data = suppression_add(manager)
    other_team = Team.objects.create(key="west", name="West")
    data.update(
        {
            "comment": "Out of my hands",
            **{
                "their opportunity": {"opportunity": str(world.theirs.pk)},
                "their owner": {"owner": str(world.other_rep.pk)},
                "a team they do not manage": {"team": str(other_team.pk)},
                "everyone's signal": {"signal": AlertSignal.NO_FIRST_RESPONSE},
            }[reach],
        }
    )
    response = manager.post(url, data)
    assert response.status_code == 200 and response.context["adminform"].form.errors
    assert not Suppression.objects.exists()
    assert not Alert.objects.filter(status=AlertStatus.SUPPRESSED).exists()


def test_a_manager_suppresses_within_their_team_and_sees_only_those_rules(
    client: Any, world: World
) -> None:
    theirs = suppressions.create(
        comment="Globex on hold", by=world.other_rep, now=NOW, opportunity=world.theirs
    )
    manager = manager_client(client, world)
    url, data = suppression_add(manager)
    data.update(
        {"comment": "Team offsite", "team": str(world.team.pk), "signal": AlertSignal.STALE}
    )
    assert manager.post(url, data).status_code == 302
    mine = Suppression.objects.get(team=world.team)
    listed = manager.get(reverse("admin:followup_visibility_suppression_changelist"))
    assert list(listed.context["cl"].result_list) == [mine]
    change = reverse("admin:followup_visibility_suppression_change", args=[theirs.pk])
    assert manager.get(change).status_code == 404
    # Nor can an action end it.
    manager.post(
        reverse("admin:followup_visibility_suppression_changelist"),
        {"action": "end_now", "_selected_action": [theirs.pk]},
    )
    theirs.refresh_from_db()
    assert theirs.ends_at is None


def test_inhibition_rules_are_plain_records(admin_client: Any) -> None:
    url = reverse("admin:followup_visibility_inhibitionrule_add")
    data = form_data(admin_client, url, "inhibitionrule_form")
    data.update(
        {"source": AlertSignal.DUPLICATE, "target": AlertSignal.DUPLICATE, "comment": "self"}
    )
    assert admin_client.post(url, data).status_code == 200  # a signal cannot inhibit itself
    data["target"] = AlertSignal.STALE
    assert admin_client.post(url, data).status_code == 302
    assert InhibitionRule.objects.filter(
        source=AlertSignal.DUPLICATE, target=AlertSignal.STALE
    ).exists()


# Escalation -------------------------------------------------------------------------------------


def policy_add(client: Any, levels: list[str], **fields: str) -> Any:
    url = reverse("admin:followup_visibility_escalationpolicy_add")
    data = form_data(client, url, "escalationpolicy_form")
    data.update(fields)
    add_rows(
        data, "levels", [{"number": str(n), "after": after} for n, after in enumerate(levels, 1)]
    )
    return client.post(url, data)


@pytest.mark.parametrize(
    ("levels", "message"),
    [
        (["8:00:00", "4:00:00"], "must come later than level 1"),
        (["0:00:00"], "longer than zero"),
        ([], "at least one"),
    ],
)
def test_bad_escalation_levels_save_nothing(
    admin_client: Any, world: World, levels: list[str], message: str
) -> None:
    response = policy_add(admin_client, levels, name="East escalation", team=str(world.team.pk))
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not EscalationPolicy.objects.filter(name="East escalation").exists()


def test_an_escalation_policy_is_saved_with_its_levels(
    admin_client: Any, admin_user: Any, world: World
) -> None:
    response = policy_add(
        admin_client, ["2:00:00", "6:00:00"], name="East escalation", team=str(world.team.pk)
    )
    assert response.status_code == 302
    policy = EscalationPolicy.objects.get(name="East escalation")
    assert policy.team == world.team
    levels = EscalationLevel.objects.filter(policy=policy).order_by("number")
    assert [level.after for level in levels] == [2 * HOUR, 6 * HOUR]
    assert policy.history.first().history_user == admin_user

    change = reverse("admin:followup_visibility_escalationpolicy_change", args=[policy.pk])
    data = form_data(admin_client, change, "escalationpolicy_form")
    assert data["levels-0-after"] == "2:00:00"
    data["levels-1-after"] = "1:00:00"
    assert "must come later" in admin_client.post(change, data).content.decode()
    assert [level.after for level in policy.levels.order_by("number")] == [2 * HOUR, 6 * HOUR]
    data["levels-1-after"] = "12:00:00"
    assert admin_client.post(change, data).status_code == 302
    assert [level.after for level in policy.levels.order_by("number")] == [2 * HOUR, 12 * HOUR]


def test_a_policy_needs_a_team_or_must_be_the_default(admin_client: Any, world: World) -> None:
    response = policy_add(admin_client, ["4:00:00"], name="Nobody's")
    assert "team" in response.context["adminform"].form.errors
    assert not EscalationPolicy.objects.filter(name="Nobody's").exists()


def test_escalations_are_listed_within_scope(
    client: Any, world: World, staff: Callable[..., Any]
) -> None:
    theirs = world.alert(world.theirs, AlertSignal.NO_FIRST_RESPONSE)
    mine = world.alert(world.mine, AlertSignal.NO_FIRST_RESPONSE)
    for alert in (mine, theirs):
        Escalation.objects.create(
            alert=alert,
            level=1,
            alert_raised_at=alert.raised_at,
            fired_at=NOW,
            outcome="no_manager",
        )
    world.rep.user_permissions.add(Permission.objects.get(codename="view_escalation"))
    client.force_login(world.rep)
    response = client.get(reverse("admin:followup_visibility_escalation_changelist"))
    assert [e.alert_id for e in response.context["cl"].result_list] == [mine.pk]


def test_the_inbox_shows_only_ones_own_notifications(client: Any, world: World) -> None:
    def note(user: Any, opp: TrackedOpportunity, subject: str) -> Notification:
        return Notification.objects.create(
            recipient=user,
            alert=world.alert(opp, AlertSignal.NO_FIRST_RESPONSE),
            kind="alert",
            channel=NotificationChannel.INBOX,
            dedupe_key="alert:3:0",
            subject=subject,
            created_at=NOW,
            deliver_after=NOW,
        )

    own = note(world.rep, world.mine, "Acme pricing is overdue")
    other = note(world.other_rep, world.theirs, "Globex brochure is overdue")
    world.rep.user_permissions.add(Permission.objects.get(codename="view_notification"))
    client.force_login(world.rep)
    url = reverse("admin:followup_visibility_notification_changelist")
    response = client.get(url)
    assert [n.pk for n in response.context["cl"].result_list] == [own.pk]
    assert "Globex" not in response.content.decode()
    other_page = reverse("admin:followup_visibility_notification_change", args=[other.pk])
    assert client.get(other_page).status_code == 404

    client.post(url, {"action": "mark_read", "_selected_action": [own.pk, other.pk]})
    own.refresh_from_db()
    other.refresh_from_db()
    assert (own.read_at, other.read_at) == (NOW, None)


def test_sweep_runs_are_listed_read_only(admin_client: Any, world: World) -> None:
    run = SweepRun.objects.first()
    response = admin_client.get(reverse("admin:followup_visibility_sweeprun_changelist"))
    assert response.status_code == 200 and run in response.context["cl"].result_list
    change = reverse("admin:followup_visibility_sweeprun_change", args=[run.pk])
    assert admin_client.get(change).status_code == 200
    admin_client.post(change, {"raised": "0"})
    assert SweepRun.objects.get(pk=run.pk).raised == run.raised


# Stalled opportunities --------------------------------------------------------------------------


def test_mark_stalled_and_clear_the_stall(
    client: Any, world: World, staff: Callable[..., Any]
) -> None:
    user = staff("view_trackedopportunity", "change_trackedopportunity", "view_all_opportunities")
    client.force_login(user)
    url = reverse("admin:followup_visibility_trackedopportunity_changelist")
    opp = world.mine
    payload = {"action": "mark_stalled", "_selected_action": [opp.pk]}
    assert 'name="until_0"' in client.post(url, payload).content.decode()
    refused = client.post(url, {**payload, "apply": "1", "reason": "", **at("until", NOW + HOUR)})
    assert "reason" in refused.context["form"].errors

    until = NOW + timedelta(days=14)
    reason = "Budget round closes mid-March"
    client.post(url, {**payload, "apply": "1", "reason": reason, **at("until", until)})
    opp.refresh_from_db()
    assert (opp.stalled_until, opp.stalled_reason, opp.stalled_by) == (until, reason, user)
    assert opp.history.order_by("-history_date", "-history_id").first().history_user == user

    client.post(url, {"action": "clear_stall", "_selected_action": [opp.pk]})
    opp.refresh_from_db()
    assert opp.stalled_until is None and opp.stalled_reason == ""
