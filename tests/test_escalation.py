"""Escalation: levels fire in business time, re-check the breach, climb the team tree as it is."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from example_project.crm.models import Lead
from followup_visibility.alerting import escalation, lifecycle, sweep
from followup_visibility.choices import (
    AlertSignal,
    EscalationOutcome,
    NotificationChannel,
    NotificationKind,
)
from followup_visibility.config import escalation_policies, suppressions
from followup_visibility.engine import escalation_levels
from followup_visibility.ingest.crm import sync_objects
from followup_visibility.models import (
    Alert,
    Calendar,
    ClosedDate,
    Deadline,
    Escalation,
    EscalationLevel,
    EscalationPolicy,
    Notification,
    Team,
)
from tests.conftest import postgres_only
from tests.factories_sla import (
    change_host,
    install_defaults,
    lead_at,
    make_team,
    ny,
    opportunity,
)

HOUR = timedelta(hours=1)
SECOND = timedelta(seconds=1)
LONG = 200 * HOUR
#: Only the first response is due soon: one alert per lead, the one these tests escalate.
DURATIONS: dict[str, timedelta | None] = {
    "first_response": HOUR,
    "never_contacted": LONG,
    "reply": LONG,
    "call_retry": LONG,
    "next_action_grace": LONG,
    "no_next_action": LONG,
    "stale": LONG,
    "owner_assignment": LONG,
    "handoff_acceptance": LONG,
}
#: Monday 2 March 2026, 16:00 in New York (calendar 9-17): first response due at 17:00.
ARRIVAL = ny(3, 2, 16)
DUE = ny(3, 2, 17)
#: Level 1 after 1 business hour past due: Tuesday 10:00 (17 wall hours later), level 2
#: after 3: Tuesday 12:00.
LEVEL_1 = ny(3, 3, 10)
LEVEL_2 = ny(3, 3, 12)


@dataclass
class Org:
    vp: Any
    boss: Any
    rep: Any
    company: Team
    sales: Team
    policy: EscalationPolicy


def _org(make_user: Callable[..., Any]) -> Org:
    install_defaults(durations=DURATIONS)
    vp, boss = make_user("vp", first_name="Vera"), make_user("boss", email="boss@example.com")
    rep = make_user("rep", email="rep@example.com")
    company = make_team("company")
    sales = make_team("sales", parent=company, members=[rep])
    Team.objects.filter(pk=company.pk).update(manager=vp)
    Team.objects.filter(pk=sales.pk).update(manager=boss)
    EscalationPolicy.objects.all().delete()
    policy = escalation_policies.create_policy(
        "Company default", [HOUR, 3 * HOUR], is_default=True, now=ARRIVAL
    )
    return Org(vp, boss, rep, company, sales, policy)


@pytest.fixture
def org(db: Any, make_user: Callable[..., Any]) -> Org:
    return _org(make_user)


def raised(org: Org, *, team: str = "sales", owner: Any = None) -> Alert:
    """A lead owned by the rep, its first-response alert raised by the sweep at its due time."""
    lead = lead_at(ARRIVAL, owner=owner or org.rep, team=team)
    sweep.sweep(DUE, full=True)
    return Alert.objects.get(opportunity=opportunity(lead), signal=AlertSignal.NO_FIRST_RESPONSE)


def fresh(alert: Alert) -> Alert:
    return Alert.objects.get(pk=alert.pk)


def test_a_level_fires_at_its_business_time_threshold_and_not_a_second_before(org: Org) -> None:
    alert = raised(org)
    assert alert.escalation_planned is False

    # Overnight: 17 wall hours past due, but not one business hour.
    assert escalation.escalate(LEVEL_1 - SECOND) == {
        "planned": 1,
        "notified": 0,
        "no_manager": 0,
        "cleared": 0,
    }
    alert = fresh(alert)
    assert alert.escalate_at == LEVEL_1 and alert.escalation_level == 0

    (step,) = escalation.fire(LEVEL_1)
    assert (step.level, step.outcome, step.recipient, step.team) == (
        1,
        EscalationOutcome.NOTIFIED,
        org.boss,
        org.sales,
    )
    assert step.policy_id == org.policy.pk and step.fired_at == LEVEL_1
    alert = fresh(alert)
    assert alert.escalation_level == 1 and alert.escalate_at == LEVEL_2
    latest = alert.history.first()
    assert latest.history_change_reason == "escalated to level 1: boss"
    assert latest.history_date == LEVEL_1

    notes = Notification.objects.filter(recipient=org.boss)
    assert {(n.channel, n.kind, n.dedupe_key) for n in notes} == {
        (NotificationChannel.INBOX, NotificationKind.ESCALATION, f"escalation:1:{step.pk}"),
        (NotificationChannel.EMAIL, NotificationKind.ESCALATION, f"escalation:1:{step.pk}"),
    }
    assert all(n.escalation == step and n.deliver_after == LEVEL_1 for n in notes)
    assert "level 1" in notes[0].subject


def test_levels_count_from_a_late_raise_not_from_the_old_due_time(org: Org) -> None:
    # The first sweep over an old backlog, or one catching up after an outage, raises long
    # after the due time: the owner still gets the policy's time before a manager hears.
    lead = lead_at(ARRIVAL, owner=org.rep, team="sales")
    late = LEVEL_2 + 2 * HOUR  # Tuesday 14:00: past both levels, counted from the due time
    sweep.sweep(late, full=True)
    alert = Alert.objects.get(opportunity=opportunity(lead), signal=AlertSignal.NO_FIRST_RESPONSE)
    assert (alert.due_at, alert.raised_at) == (DUE, late)
    assert escalation.escalate(late + HOUR - SECOND)["notified"] == 0
    assert fresh(alert).escalate_at == late + HOUR
    (step,) = escalation.fire(late + HOUR)
    assert (step.level, step.recipient) == (1, org.boss)
    assert fresh(alert).escalate_at == late + 3 * HOUR  # level 2: 3 business hours from 14:00


def test_moving_or_deleting_a_policy_replans_the_alerts_it_governed(org: Org) -> None:
    alert = raised(org)
    escalation.plan(DUE)
    assert fresh(alert).escalate_at == LEVEL_1  # the company default: 1 business hour
    elsewhere = make_team("support")
    policy = escalation_policies.create_policy("Support", [2 * HOUR], team=elsewhere, now=DUE)
    assert fresh(alert).escalate_at == LEVEL_1  # not sales' policy: nothing to re-plan

    policy.team = org.sales  # as the admin's change form saves it
    policy.save()
    escalation.plan(DUE)
    assert fresh(alert).escalate_at == ny(3, 3, 11)  # 2 business hours

    policy.delete()
    escalation.plan(DUE)
    assert fresh(alert).escalate_at == LEVEL_1


def test_a_holiday_added_to_the_calendar_replans_escalations(
    org: Org, django_capture_on_commit_callbacks: Any
) -> None:
    alert = raised(org)
    escalation.plan(DUE)
    assert fresh(alert).escalate_at == LEVEL_1  # Tuesday 10:00
    calendar = Calendar.objects.get(is_default=True)
    with django_capture_on_commit_callbacks(execute=True):
        ClosedDate.objects.create(calendar=calendar, date=LEVEL_1.date(), name="Closure")
    escalation.plan(DUE)
    assert fresh(alert).escalate_at == ny(3, 4, 10)  # the next business hour is Wednesday's


def test_moving_a_team_in_the_tree_replans_its_alerts(org: Org) -> None:
    alert = raised(org)
    escalation.plan(DUE)
    region = make_team("region")
    escalation_policies.create_policy("Region", [2 * HOUR], team=region, now=DUE)
    assert fresh(alert).escalate_at == LEVEL_1
    org.sales.parent = region  # sales now inherits the region's policy
    org.sales.save()
    escalation.plan(DUE)
    assert fresh(alert).escalate_at == ny(3, 3, 11)


def test_level_two_goes_one_team_up(org: Org) -> None:
    alert = raised(org)
    escalation.escalate(LEVEL_1)
    assert escalation.escalate(LEVEL_2 - SECOND)["notified"] == 0
    (step,) = escalation.fire(LEVEL_2)
    assert (step.level, step.recipient, step.team) == (2, org.vp, org.company)
    alert = fresh(alert)
    assert alert.escalation_level == 2 and alert.escalate_at is None  # no level left
    assert alert.history.first().history_change_reason == "escalated to level 2: Vera"
    assert escalation.fire(LEVEL_2 + 100 * HOUR) == []


def test_a_late_pass_fires_every_level_that_fell_due(org: Org) -> None:
    raised(org)
    summary = escalation.escalate(LEVEL_2 + HOUR)
    assert summary["notified"] == 2
    assert list(Escalation.objects.values_list("level", "recipient")) == [
        (1, org.boss.pk),
        (2, org.vp.pk),
    ]


def test_acknowledging_stops_escalation(org: Org) -> None:
    alert = raised(org)
    escalation.escalate(DUE)
    lifecycle.acknowledge(alert, by=org.rep, now=LEVEL_1 - HOUR)
    assert escalation.escalate(LEVEL_2 + HOUR) == {
        "planned": 0,
        "notified": 0,
        "no_manager": 0,
        "cleared": 0,
    }
    assert not Escalation.objects.exists() and not Notification.objects.exists()


#: Thursday 5 March, 09:00 in New York: where the alerts put aside below come back open.
BACK = ny(3, 5, 9)


def test_a_woken_snooze_counts_its_levels_from_waking(org: Org) -> None:
    alert = raised(org)
    lifecycle.snooze(alert, reason="customer travelling", by=org.rep, now=DUE, until=BACK)
    # Both levels fall due while it sleeps, and nothing fires: only open alerts escalate.
    assert escalation.escalate(LEVEL_2 + HOUR)["notified"] == 0
    assert lifecycle.wake_snoozed(BACK) == 1
    # Woken three days past due, it does not page both managers at once: its levels count
    # from waking, one and three business hours.
    assert escalation.escalate(BACK)["notified"] == 0
    assert fresh(alert).escalate_at == ny(3, 5, 10)
    assert escalation.fire(ny(3, 5, 10) - SECOND) == []
    (step,) = escalation.fire(ny(3, 5, 10))
    assert (step.level, step.recipient) == (1, org.boss)
    assert fresh(alert).escalate_at == ny(3, 5, 12)


def test_a_released_suppression_counts_levels_from_the_release(org: Org) -> None:
    alert = raised(org)
    suppressions.create(
        comment="customer on holiday",
        by=org.boss,
        now=DUE,
        opportunity=alert.opportunity,
        ends_at=BACK,
    )
    assert fresh(alert).status == "suppressed"
    assert escalation.escalate(LEVEL_2 + HOUR)["notified"] == 0
    sweep.sweep(BACK)
    alert = fresh(alert)
    assert alert.status == "open" and alert.escalation_from == BACK
    assert escalation.escalate(BACK)["notified"] == 0
    assert fresh(alert).escalate_at == ny(3, 5, 10)


@pytest.mark.parametrize("aside", ["snooze", "suppression"])
def test_an_acknowledged_alert_put_aside_comes_back_acknowledged(org: Org, aside: str) -> None:
    alert = raised(org)
    lifecycle.acknowledge(alert, by=org.rep, now=DUE + HOUR)
    if aside == "snooze":
        lifecycle.snooze(
            alert, reason="customer travelling", by=org.rep, now=DUE + HOUR, until=BACK
        )
        assert lifecycle.wake_snoozed(BACK) == 1
    else:
        rule = suppressions.create(
            comment="trade fair", by=org.boss, now=DUE + HOUR, opportunity=alert.opportunity
        )
        assert fresh(alert).status == "suppressed"
        suppressions.end(rule, by=org.boss, now=BACK)
    alert = fresh(alert)
    # Someone still owns it: no manager is paged for it.
    assert (alert.status, alert.acknowledged_by) == ("acknowledged", org.rep)
    assert escalation.escalate(BACK + 100 * HOUR)["notified"] == 0
    assert not Escalation.objects.exists()


def test_a_reopened_episode_forgets_the_earlier_acknowledgement(org: Org) -> None:
    alert = raised(org)
    lifecycle.acknowledge(alert, by=org.rep, now=DUE + HOUR)
    Alert.objects.filter(pk=alert.pk).update(status="resolved", resolution="auto")
    sweep.sweep(LEVEL_1, full=True)  # due again: a new raise nobody has acknowledged
    alert = fresh(alert)
    assert (alert.status, alert.acknowledged_at, alert.acknowledged_by) == ("open", None, None)


def test_a_reopened_episode_counts_its_levels_afresh(org: Org) -> None:
    alert = raised(org)
    Alert.objects.filter(pk=alert.pk).update(escalation_from=BACK)
    # The episode is resolved automatically, then falls due again: a fresh start.
    Alert.objects.filter(pk=alert.pk).update(status="resolved", resolution="auto")
    sweep.sweep(DUE + SECOND, full=True)
    alert = fresh(alert)
    assert alert.status == "open" and alert.escalation_from is None
    escalation.plan(DUE + SECOND)
    assert fresh(alert).escalate_at == LEVEL_1


def test_the_breach_is_rechecked_at_fire_time(org: Org) -> None:
    alert = raised(org)
    escalation.plan(DUE)
    # Between planning and firing the deadline moved on to a new episode (a recompute whose
    # alert resolution has not run yet): the breach escalated no longer holds.
    Deadline.objects.filter(
        opportunity_id=alert.opportunity_id, signal=AlertSignal.NO_FIRST_RESPONSE
    ).update(event_at=ARRIVAL + HOUR)
    (step,) = escalation.fire(LEVEL_1)
    assert (step.level, step.outcome, step.recipient) == (1, EscalationOutcome.CLEARED, None)
    alert = fresh(alert)
    assert alert.escalation_level == 0 and alert.escalate_at is None
    assert not Notification.objects.exists()
    assert escalation.fire(LEVEL_2 + HOUR) == []


def test_a_deadline_gone_or_not_yet_due_also_clears(org: Org) -> None:
    first, second = raised(org), raised(org)
    escalation.plan(DUE)
    Deadline.objects.filter(opportunity_id=first.opportunity_id).delete()
    Deadline.objects.filter(opportunity_id=second.opportunity_id).update(due_at=LEVEL_1 + HOUR)
    steps = escalation.fire(LEVEL_1)
    assert {s.outcome for s in steps} == {EscalationOutcome.CLEARED}
    assert len(steps) == 2


def test_the_manager_is_resolved_when_the_level_fires(
    org: Org, make_user: Callable[..., Any]
) -> None:
    alert = raised(org)
    escalation.plan(DUE)
    new_boss = make_user("new_boss")
    Team.objects.filter(pk=org.sales.pk).update(manager=new_boss)
    (step,) = escalation.fire(LEVEL_1)
    assert step.recipient == new_boss
    assert Notification.objects.filter(recipient=new_boss, alert=alert).count() == 2
    assert not Notification.objects.filter(recipient=org.boss).exists()


def test_teams_without_a_manager_and_the_owner_are_skipped(org: Org) -> None:
    # The rep's team has no manager; the team above is managed by the owner themselves.
    Team.objects.filter(pk=org.sales.pk).update(manager=None)
    Team.objects.filter(pk=org.company.pk).update(manager=org.rep)
    top = make_team("board")
    Team.objects.filter(pk=org.company.pk).update(parent=top)
    Team.objects.filter(pk=top.pk).update(manager=org.vp)
    raised(org)
    escalation.plan(DUE)
    (step,) = escalation.fire(LEVEL_1)
    assert (step.recipient, step.team) == (org.vp, top)


def test_no_manager_is_recorded_and_the_level_still_advances(org: Org) -> None:
    make_team("loners")  # a team of its own: no manager, nobody above
    alert = raised(org, team="loners")
    escalation.escalate(LEVEL_1)
    steps = list(Escalation.objects.filter(alert=alert).values_list("level", "outcome"))
    assert steps == [(1, EscalationOutcome.NO_MANAGER)]
    assert fresh(alert).escalation_level == 1
    escalation.escalate(LEVEL_2)
    assert Escalation.objects.filter(alert=alert, outcome=EscalationOutcome.NO_MANAGER).count() == 2
    assert not Notification.objects.exists()
    assert "no manager" in fresh(alert).history.first().history_change_reason


def test_a_retried_pass_records_nothing_twice(org: Org) -> None:
    alert = raised(org)
    assert escalation.escalate(LEVEL_1)["notified"] == 1
    assert escalation.fire(LEVEL_1) == []
    assert Escalation.objects.count() == 1
    # A pass retried after its alert update was lost (the step is on record, the alert is not
    # advanced): the step is neither recorded nor notified again.
    Alert.objects.filter(pk=alert.pk).update(escalation_level=0, escalate_at=LEVEL_1)
    assert escalation.fire(LEVEL_1 + SECOND) == []
    assert Escalation.objects.count() == 1
    assert Notification.objects.count() == 2
    assert fresh(alert).escalation_level == 1


def test_planning_reads_only_unplanned_alerts(org: Org) -> None:
    raised(org)
    assert escalation.plan(DUE) == 1
    assert escalation.plan(DUE + SECOND) == 0
    raised(org)
    assert escalation.plan(DUE + 2 * SECOND) == 1


def test_new_levels_replan_the_open_alerts_they_govern(org: Org) -> None:
    alert = raised(org)
    escalation.plan(DUE)
    assert fresh(alert).escalate_at == LEVEL_1
    escalation_policies.set_levels(org.policy, [2 * HOUR, 5 * HOUR], now=DUE + HOUR)
    assert escalation.plan(DUE + HOUR) == 1
    assert fresh(alert).escalate_at == ny(3, 3, 11)
    assert org.policy.history.first().history_change_reason == "levels: 2:00:00, 5:00:00"


def test_a_team_policy_governs_its_subtree(org: Org) -> None:
    east = make_team("east", parent=org.sales)
    policies = escalation_levels.Policies.load()
    assert escalation_levels.policy_for(east.pk, policies) == escalation_levels.policy_for(
        None, policies
    )
    team_policy = escalation_policies.create_policy("Sales", [HOUR / 2], team=org.sales, now=DUE)
    policies = escalation_levels.Policies.load()
    assert escalation_levels.policy_for(east.pk, policies).pk == team_policy.pk
    assert escalation_levels.policy_for(org.sales.pk, policies).pk == team_policy.pk
    assert escalation_levels.policy_for(org.company.pk, policies).pk == org.policy.pk
    assert escalation_levels.policy_for(None, policies).pk == org.policy.pk
    # Creating it re-planned the sales team's alerts: half an hour past due.
    alert = raised(org)
    escalation.plan(DUE)
    assert fresh(alert).escalate_at == ny(3, 3, 9, 30)


@pytest.mark.parametrize(
    ("levels", "message"),
    [
        ([], "at least one"),
        ([HOUR, timedelta(0)], "Level 2: must be longer than zero"),
        ([-HOUR], "Level 1: must be longer than zero"),
        ([4 * HOUR, 2 * HOUR], "Level 2 (2:00:00) must come later than level 1 (4:00:00)"),
        ([HOUR, HOUR], "must come later"),
        ([timedelta(days=367)], "at most 366 days"),
        (["4h"], "a duration is required"),
    ],
)
def test_bad_levels_are_refused_and_nothing_changes(
    org: Org, levels: list[Any], message: str
) -> None:
    with pytest.raises(ValidationError) as err:
        escalation_levels.validate_levels(levels)
    assert any(message in m for m in err.value.message_dict["levels"])

    before = list(EscalationLevel.objects.values_list("policy", "number", "after"))
    with pytest.raises(ValidationError):
        escalation_policies.set_levels(org.policy, levels, now=DUE)
    with pytest.raises(ValidationError) as err:
        escalation_policies.create_policy("Sales", levels, team=org.sales, now=DUE)
    assert "levels" in err.value.message_dict
    assert list(EscalationLevel.objects.values_list("policy", "number", "after")) == before
    assert EscalationPolicy.objects.count() == 1


def test_a_policy_is_for_a_team_or_the_default(org: Org) -> None:
    with pytest.raises(ValidationError) as err:
        escalation_policies.create_policy("Second default", [HOUR], is_default=True, now=DUE)
    assert "is_default" in err.value.message_dict
    with pytest.raises(ValidationError) as err:
        escalation_policies.create_policy("Nobody's", [HOUR], now=DUE)
    assert "team" in err.value.message_dict
    with pytest.raises(ValidationError) as err:
        escalation_policies.create_policy(" ", [HOUR], team=org.sales, is_default=True, now=DUE)
    assert set(err.value.message_dict) == {"name", "team", "is_default"}
    escalation_policies.create_policy("Sales", [HOUR], team=org.sales, now=DUE)
    with pytest.raises(ValidationError) as err:
        escalation_policies.create_policy("Sales again", [HOUR], team=org.sales, now=DUE)
    assert "team" in err.value.message_dict
    assert EscalationPolicy.objects.count() == 2


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_overlapping_fire_passes_record_each_level_once(make_user: Callable[..., Any]) -> None:
    org = _org(make_user)
    leads = Lead.objects.bulk_create(
        [Lead(name=f"L{i}", owner=org.rep, team="sales", created_at=ARRIVAL) for i in range(30)]
    )
    sync_objects(leads, ARRIVAL)
    sweep.sweep(DUE, full=True)
    assert escalation.plan(DUE) == 30
    barrier = threading.Barrier(4)
    results: list[int] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait()
            results.append(len(escalation.fire(LEVEL_2, batch=7)))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sum(results) == 60  # two levels for 30 alerts, each recorded by one pass only
    assert Escalation.objects.count() == 60
    assert set(Alert.objects.values_list("escalation_level", flat=True)) == {2}
    # Two notifications (inbox, email) per step, none twice.
    assert Notification.objects.count() == 120


def test_moving_to_another_team_plans_escalation_under_its_policy(org: Org) -> None:
    alert = raised(org)
    escalation.plan(DUE)
    assert fresh(alert).escalate_at == LEVEL_1
    east = make_team("east")
    escalation_policies.create_policy("East", [HOUR / 2], team=east, now=DUE)
    lead = Lead.objects.get(pk=alert.opportunity.object_pk)
    change_host(lead, DUE + SECOND, team="east")
    moved = fresh(alert)
    assert moved.opportunity.team_id == east.pk
    assert (moved.escalation_planned, moved.escalate_at) == (False, None)
    escalation.plan(DUE + SECOND)
    # Half a business hour past due (Monday 17:00) under the east team's policy: Tuesday
    # 09:30, not the default's 10:00.
    assert fresh(alert).escalate_at == ny(3, 3, 9, 30) < LEVEL_1


def _reopen(alert: Alert, at: Any) -> Alert:
    """Resolve the episode automatically, then have a full pass find it due again."""
    Alert.objects.filter(pk=alert.pk).update(status="resolved", resolution="auto", resolved_at=at)
    sweep.sweep(at + SECOND, full=True)
    alert = fresh(alert)
    assert (alert.status, alert.escalation_level) == ("open", 0)
    return alert


def test_a_reopened_episode_escalates_and_notifies_again(org: Org) -> None:
    alert = raised(org)
    assert escalation.escalate(LEVEL_1)["notified"] == 1
    alert = _reopen(alert, LEVEL_1 + HOUR)
    # A new breach of the same episode: the manager hears of it again, on the record (before,
    # the step of the first raise held level 1, and the alert climbed on to level 2 silently).
    assert escalation.plan(LEVEL_1 + HOUR) == 1
    # Its levels count from the new raise (11:00:01), not from the old due time.
    assert escalation.fire(LEVEL_1 + 2 * HOUR) == []
    (step,) = escalation.fire(LEVEL_1 + 2 * HOUR + SECOND)
    assert (step.level, step.outcome, step.recipient) == (1, EscalationOutcome.NOTIFIED, org.boss)
    assert step.alert_raised_at == alert.raised_at == LEVEL_1 + HOUR + SECOND
    assert Escalation.objects.filter(alert=alert, level=1).count() == 2
    assert Notification.objects.filter(recipient=org.boss, alert=alert).count() == 4
    assert fresh(alert).escalation_level == 1


def test_a_cleared_step_does_not_block_the_level_later(org: Org) -> None:
    alert = raised(org)
    escalation.plan(DUE)
    deadline = Deadline.objects.filter(
        opportunity_id=alert.opportunity_id, signal=AlertSignal.NO_FIRST_RESPONSE
    )
    deadline.update(due_at=LEVEL_1 + HOUR)  # not due at fire time: the step is cleared
    (cleared,) = escalation.fire(LEVEL_1)
    assert cleared.outcome == EscalationOutcome.CLEARED
    # Due again (the deadline moved back) and planned again, as a wake or a team move does.
    deadline.update(due_at=DUE)
    Alert.objects.filter(pk=alert.pk).update(escalation_planned=False)
    escalation.plan(LEVEL_1 + SECOND)
    (step,) = escalation.fire(LEVEL_1 + SECOND)
    assert (step.level, step.outcome, step.recipient) == (1, EscalationOutcome.NOTIFIED, org.boss)
    assert Notification.objects.filter(recipient=org.boss, alert=alert).count() == 2
