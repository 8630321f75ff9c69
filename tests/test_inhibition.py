"""Inhibition: while a source signal is due, the sweep does not raise its target."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from example_project.crm.models import Lead
from followup_visibility.alerting import sweep
from followup_visibility.choices import AlertSignal, AlertStatus
from followup_visibility.models import Alert, InhibitionRule
from tests.conftest import tracked
from tests.factories_sla import change_host
from tests.test_sweep import HOUR, T0, install_clock, new_leads


@pytest.fixture
def clock(db: Any) -> None:
    # An unowned lead is overdue for assignment after an hour; next actions have no grace.
    install_clock(owner_assignment=HOUR)


@pytest.fixture
def seeded(db: Any) -> InhibitionRule:
    """Migration 0006's rule (re-made when a transactional test flushed the database)."""
    rule, _created = InhibitionRule.objects.get_or_create(
        source=AlertSignal.NO_OWNER,
        target=AlertSignal.NEXT_ACTION_OVERDUE,
        defaults={"comment": "seeded"},
    )
    InhibitionRule.objects.filter(pk=rule.pk).update(is_active=True)
    return rule


def statuses(lead: Lead) -> dict[str, str]:
    return dict(Alert.objects.filter(opportunity=tracked(lead)).values_list("signal", "status"))


def test_no_owner_inhibits_next_action_overdue_until_someone_owns_it(
    clock: None, seeded: InhibitionRule, make_user: Callable[..., Any]
) -> None:
    [lead] = new_leads(next_step_at=T0 + 2 * HOUR)
    run = sweep.sweep(T0 + 3 * HOUR)  # no owner since 1h, next action overdue since 2h
    assert statuses(lead) == {AlertSignal.NO_OWNER: AlertStatus.OPEN}
    assert run.examined == 2
    assert sweep.sweep(T0 + 3 * HOUR + HOUR / 2, full=True).raised == 0
    assert sweep.consistency(T0 + 3 * HOUR)["due_without_alert"] == 0

    change_host(lead, T0 + 4 * HOUR, owner=make_user())
    assert statuses(lead) == {AlertSignal.NO_OWNER: AlertStatus.RESOLVED}
    # Nothing about the next action changed, yet a steady pass raises it now.
    after = sweep.sweep(T0 + 4 * HOUR + HOUR / 2)
    assert not after.full
    assert statuses(lead)[AlertSignal.NEXT_ACTION_OVERDUE] == AlertStatus.OPEN


def test_an_alert_raised_before_its_source_fired_is_left_alone(
    clock: None, seeded: InhibitionRule, make_user: Callable[..., Any]
) -> None:
    [lead] = new_leads(owner=make_user(), next_step_at=T0 + 2 * HOUR)
    sweep.sweep(T0 + 3 * HOUR)
    assert statuses(lead) == {AlertSignal.NEXT_ACTION_OVERDUE: AlertStatus.OPEN}
    change_host(lead, T0 + 3 * HOUR, owner=None)  # unowned: no owner due an hour later
    sweep.sweep(T0 + 4 * HOUR + HOUR / 2)
    found = statuses(lead)
    assert (found[AlertSignal.NEXT_ACTION_OVERDUE], found[AlertSignal.NO_OWNER]) == (
        AlertStatus.OPEN,
        AlertStatus.OPEN,
    )


def test_a_custom_rule_and_switching_it_off(clock: None, make_user: Callable[..., Any]) -> None:
    rule = InhibitionRule.objects.create(
        source=AlertSignal.NO_FIRST_RESPONSE,
        target=AlertSignal.NEVER_CONTACTED,
        comment="One alert for an untouched lead is enough",
    )
    [lead] = new_leads(owner=make_user())
    sweep.sweep(T0 + 9 * HOUR)  # first response due at 4h, first contact at 8h
    assert statuses(lead) == {AlertSignal.NO_FIRST_RESPONSE: AlertStatus.OPEN}

    rule.is_active = False
    rule.save()
    # Switching a rule off is seen by the next full pass.
    assert sweep.sweep(T0 + 10 * HOUR, full=True).raised == 1
    assert statuses(lead)[AlertSignal.NEVER_CONTACTED] == AlertStatus.OPEN


def test_a_source_not_yet_due_inhibits_nothing(seeded: InhibitionRule) -> None:
    install_clock(owner_assignment=10 * HOUR)
    [lead] = new_leads(next_step_at=T0 + 2 * HOUR)
    sweep.sweep(T0 + 3 * HOUR)  # no owner, but not overdue for assignment yet
    assert statuses(lead) == {AlertSignal.NEXT_ACTION_OVERDUE: AlertStatus.OPEN}
