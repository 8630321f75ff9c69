"""Snooze until a time or a condition; the sweep wakes it, recompute still resolves it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.core.exceptions import ValidationError

from example_project.crm.models import Lead
from followup_visibility.alerting import lifecycle, sweep
from followup_visibility.choices import AlertSignal, AlertStatus, Resolution, SnoozeCondition
from followup_visibility.ingest.touches import record_touch
from followup_visibility.models import Alert, Touch
from tests.factories_sla import change_host
from tests.test_sweep import HOUR, T0, install_clock, new_leads

SECOND = timedelta(seconds=1)
RAISED = T0 + 5 * HOUR  # no first response (due at 4h) is open from here


@pytest.fixture
def user(make_user: Callable[..., Any]) -> Any:
    return make_user()


@pytest.fixture
def lead(db: Any, user: Any) -> Lead:
    install_clock()
    return new_leads(owner=user)[0]


@pytest.fixture
def alert(lead: Lead) -> Alert:
    sweep.sweep(RAISED)
    return Alert.objects.get(signal=AlertSignal.NO_FIRST_RESPONSE)


def inbound(lead: Lead, at: datetime, **extra: Any) -> None:
    record_touch(
        lead,
        channel="email",
        direction="inbound",
        outcome="received",
        occurred_at=at,
        now=at,
        **extra,
    )


def latest_reason(alert: Alert) -> str:
    return str(alert.history.order_by("-history_date", "-history_id").first().history_change_reason)


def test_a_snooze_until_a_time_returns_at_the_time_and_not_a_second_before(
    alert: Alert, user: Any
) -> None:
    # Escalation was planned before the snooze; waking plans it again from scratch.
    Alert.objects.filter(pk=alert.pk).update(escalation_planned=True, escalate_at=T0 + 9 * HOUR)
    until = T0 + 8 * HOUR
    snoozed = lifecycle.snooze(
        alert, reason="Customer at a trade fair", by=user, now=RAISED, until=until
    )
    assert snoozed.status == AlertStatus.SNOOZED
    snoozed.refresh_from_db()
    assert (snoozed.snoozed_at, snoozed.snoozed_until, snoozed.snooze_condition) == (
        RAISED,
        until,
        SnoozeCondition.TIME,
    )
    assert (snoozed.snooze_reason, snoozed.snooze_stage, snoozed.changed_by) == (
        "Customer at a trade fair",
        "new",
        user,
    )
    assert latest_reason(snoozed) == "snoozed: Customer at a trade fair"

    sweep.sweep(until - SECOND)
    snoozed.refresh_from_db()
    assert snoozed.status == AlertStatus.SNOOZED

    run = sweep.sweep(until)
    assert run.woken == 1
    # The same episode comes back; no new alert is raised for it.
    woken = Alert.objects.get(signal=AlertSignal.NO_FIRST_RESPONSE)
    assert woken.pk == alert.pk and woken.episode_at == alert.episode_at
    assert woken.status == AlertStatus.OPEN
    assert (woken.snoozed_at, woken.snoozed_until, woken.snooze_reason) == (None, None, "")
    assert (woken.escalation_planned, woken.escalate_at) == (False, None)
    last = woken.history.order_by("-history_id").first()
    assert (last.history_change_reason, last.history_date, last.status) == (
        "woke: time passed",
        until,
        AlertStatus.OPEN,
    )


def test_until_the_customer_replies(alert: Alert, lead: Lead, user: Any) -> None:
    inbound(lead, RAISED - HOUR / 2)  # before the snooze: not the reply it waits for
    lifecycle.snooze(
        alert,
        reason="Sent the quote, waiting",
        by=user,
        now=RAISED,
        condition=SnoozeCondition.CUSTOMER_REPLIES,
    )
    alert.refresh_from_db()
    assert alert.snoozed_until == RAISED + timedelta(days=30)  # SNOOZE_MAX by default

    # An out-of-office answer is no reply.
    inbound(
        lead,
        RAISED + HOUR,
        metadata={"headers": {"Auto-Submitted": "auto-replied"}},
    )
    alert.refresh_from_db()
    assert alert.status == AlertStatus.SNOOZED
    assert lifecycle.wake_snoozed(RAISED + HOUR) == 0

    # The reply wakes the alert as it is recorded, not at the next sweep.
    inbound(lead, RAISED + 2 * HOUR)
    alert.refresh_from_db()
    assert alert.status == AlertStatus.OPEN
    assert latest_reason(alert) == "woke: customer replied"
    assert lifecycle.wake_snoozed(RAISED + 3 * HOUR) == 0  # nothing left to wake
    assert sweep.sweep(RAISED + 3 * HOUR).woken == 0


def test_until_the_stage_changes(alert: Alert, lead: Lead, user: Any) -> None:
    lifecycle.snooze(
        alert,
        reason="Qualifying first",
        by=user,
        now=RAISED,
        condition=SnoozeCondition.STAGE_CHANGES,
    )
    assert lifecycle.wake_snoozed(RAISED + HOUR) == 0
    change_host(lead, RAISED + HOUR, status=Lead.Status.WORKING)
    # The stage is no condition of this signal, so the change does not resolve the alert:
    # it wakes it, as the change is synced.
    alert.refresh_from_db()
    assert alert.status == AlertStatus.OPEN
    assert latest_reason(alert) == "woke: stage changed"
    assert sweep.sweep(RAISED + 2 * HOUR).woken == 0


def test_a_met_condition_the_news_did_not_deliver_wakes_at_the_full_pass(
    alert: Alert, lead: Lead, user: Any
) -> None:
    lifecycle.snooze(
        alert,
        reason="Sent the quote, waiting",
        by=user,
        now=RAISED,
        condition=SnoozeCondition.CUSTOMER_REPLIES,
    )
    # A reply written straight to the table (a restore, a bulk import) recomputes nothing.
    Touch.objects.create(
        opportunity=alert.opportunity,
        channel="email",
        direction="inbound",
        outcome="received",
        occurred_at=RAISED + HOUR,
        recorded_at=RAISED + HOUR,
        logging_lag=timedelta(0),
        is_meaningful=True,
        meaningful_reason="reply",
    )
    steady = sweep.sweep(RAISED + 2 * HOUR)
    alert.refresh_from_db()
    # A steady pass wakes only snoozes whose time came ...
    assert (steady.full, steady.woken, alert.status) == (False, 0, AlertStatus.SNOOZED)
    # ... the full pass checks every condition.
    full = sweep.sweep(RAISED + 3 * HOUR, full=True)
    alert.refresh_from_db()
    assert (full.woken, alert.status) == (1, AlertStatus.OPEN)
    assert latest_reason(alert) == "woke: customer replied"


@pytest.mark.parametrize(
    "condition", [SnoozeCondition.CUSTOMER_REPLIES, SnoozeCondition.STAGE_CHANGES]
)
def test_a_condition_snooze_ends_at_its_limit(
    alert: Alert, user: Any, settings: Any, condition: str
) -> None:
    settings.FOLLOWUP_VISIBILITY_SNOOZE_MAX = timedelta(days=2)
    lifecycle.snooze(alert, reason="Later", by=user, now=RAISED, condition=condition)
    limit = RAISED + timedelta(days=2)
    alert.refresh_from_db()
    assert alert.snoozed_until == limit
    assert lifecycle.wake_snoozed(limit - SECOND) == 0
    assert lifecycle.wake_snoozed(limit) == 1
    alert.refresh_from_db()
    assert alert.status == AlertStatus.OPEN
    assert latest_reason(alert) == "woke: time passed"


def test_a_condition_snooze_may_end_earlier_than_the_limit(alert: Alert, user: Any) -> None:
    lifecycle.snooze(
        alert,
        reason="Call after lunch at the latest",
        by=user,
        now=RAISED,
        until=RAISED + 2 * HOUR,
        condition=SnoozeCondition.CUSTOMER_REPLIES,
    )
    assert lifecycle.wake_snoozed(RAISED + 2 * HOUR) == 1


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"reason": " ", "until": RAISED + HOUR}, "reason"),
        ({"reason": "x"}, "until"),  # a time snooze needs its time
        ({"reason": "x", "until": RAISED}, "until"),
        ({"reason": "x", "until": RAISED - HOUR}, "until"),
        ({"reason": "x", "until": RAISED + timedelta(days=30, seconds=1)}, "until"),
        ({"reason": "x", "until": datetime(2026, 3, 3, 12)}, "until"),  # noqa: DTZ001 - naive on purpose
        (
            {
                "reason": "x",
                "condition": SnoozeCondition.CUSTOMER_REPLIES,
                "until": RAISED + timedelta(days=31),
            },
            "until",
        ),
        ({"reason": "x", "until": RAISED + HOUR, "condition": "forever"}, "condition"),
    ],
)
def test_bad_snooze_input_changes_nothing(
    alert: Alert, user: Any, kwargs: dict[str, Any], field: str
) -> None:
    before = alert.history.count()
    with pytest.raises(ValidationError) as err:
        lifecycle.snooze(alert, by=user, now=RAISED, **kwargs)
    assert field in err.value.message_dict
    alert.refresh_from_db()
    assert (alert.status, alert.snoozed_at, alert.snooze_reason) == (AlertStatus.OPEN, None, "")
    assert alert.history.count() == before


def test_only_open_or_acknowledged_alerts_can_be_snoozed(alert: Alert, user: Any) -> None:
    lifecycle.acknowledge(alert, by=user, now=RAISED)
    lifecycle.snooze(alert, reason="On it next week", by=user, now=RAISED, until=RAISED + HOUR)
    with pytest.raises(ValidationError) as err:  # already snoozed
        lifecycle.snooze(alert, reason="Again", by=user, now=RAISED, until=RAISED + 2 * HOUR)
    assert err.value.code == "not_snoozable"

    lifecycle.resolve(alert, evidence="Called from my mobile", by=user, now=RAISED)
    history = alert.history.count()
    with pytest.raises(ValidationError) as err:
        lifecycle.snooze(alert, reason="Later", by=user, now=RAISED, until=RAISED + HOUR)
    assert err.value.code == "not_snoozable"
    assert "resolved" in err.value.messages[0]
    alert.refresh_from_db()
    assert (alert.status, alert.snoozed_until) == (AlertStatus.RESOLVED, RAISED + HOUR)
    assert alert.history.count() == history


def test_a_dismissed_alert_cannot_be_snoozed(alert: Alert, user: Any) -> None:
    lifecycle.dismiss(alert, reason="Spam", by=user, now=RAISED)
    with pytest.raises(ValidationError):
        lifecycle.snooze(alert, reason="Later", by=user, now=RAISED, until=RAISED + HOUR)
    alert.refresh_from_db()
    assert alert.status == AlertStatus.DISMISSED


def test_acknowledging_a_snoozed_alert_ends_the_snooze(alert: Alert, user: Any) -> None:
    lifecycle.snooze(alert, reason="Later", by=user, now=RAISED, until=RAISED + HOUR)
    lifecycle.acknowledge(alert, by=user, now=RAISED + HOUR / 2)
    alert.refresh_from_db()
    assert (alert.status, alert.snoozed_until, alert.snooze_reason) == (
        AlertStatus.ACKNOWLEDGED,
        None,
        "",
    )
    assert lifecycle.wake_snoozed(RAISED + HOUR) == 0


def test_a_snoozed_alert_is_still_resolved_when_its_condition_clears(lead: Lead, user: Any) -> None:
    inbound(lead, T0 + HOUR)
    sweep.sweep(T0 + 4 * HOUR)  # the customer has waited past the 2h reply time
    waiting = Alert.objects.get(signal=AlertSignal.CUSTOMER_WAITING)
    lifecycle.snooze(
        waiting, reason="Answer after the call", by=user, now=T0 + 4 * HOUR, until=T0 + 10 * HOUR
    )
    reply = record_touch(
        lead,
        channel="email",
        direction="outbound",
        outcome="sent",
        occurred_at=T0 + 5 * HOUR,
        now=T0 + 5 * HOUR,
    ).touch
    waiting.refresh_from_db()
    assert (waiting.status, waiting.resolution, waiting.resolved_touch) == (
        AlertStatus.RESOLVED,
        Resolution.AUTO,
        reply,
    )
    assert lifecycle.wake_snoozed(T0 + 10 * HOUR) == 0  # resolved alerts stay resolved
