"""Alert events: ``alerts_raised``, ``alert_status_changed`` and ``alerts_escalated`` announce
every transition once, in batches of ids, after commit, and never for a rollback.

The company calendar is open around the clock (``company`` from ``test_signals``), so business
time is elapsed time. A lead owned by the rep from T0 has its first response due at T0 + 1h and
its first contact at T0 + 2h; a lead without owner has its owner assignment due at T0 + 90min.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import transaction
from django.dispatch import Signal

from example_project.crm.models import Lead
from followup_visibility.alerting import escalation, events, lifecycle, sql, sweep
from followup_visibility.choices import (
    AlertSignal,
    AlertStatus,
    AlertTransition,
    Channel,
    Direction,
    Outcome,
)
from followup_visibility.config import escalation_policies, suppressions
from followup_visibility.ingest import stalls
from followup_visibility.ingest.touches import record_touch
from followup_visibility.models import Alert, EscalationLevel, EscalationPolicy, Team
from followup_visibility.signals import alert_status_changed, alerts_escalated, alerts_raised
from tests.factories_sla import change_host, make_team, opportunity
from tests.test_signals import (
    HOUR,
    MINUTE,
    SECOND,
    T0,
    alerts_of,
    call,
    company,  # noqa: F401 - the 24/7 company calendar, used by every test here
    new_lead,
)

FIRST_RESPONSE_DUE = T0 + HOUR
SIGNALS: dict[str, Signal] = {
    "raised": alerts_raised,
    "changed": alert_status_changed,
    "escalated": alerts_escalated,
}


@dataclass
class Sent:
    """One receiver call: which signal, its sender and its keyword arguments."""

    name: str
    sender: Any
    kwargs: dict[str, Any]


class Received(list[Sent]):
    def of(self, name: str) -> list[dict[str, Any]]:
        return [s.kwargs for s in self if s.name == name]

    def changes(self, transition: str) -> list[dict[str, Any]]:
        return [k for k in self.of("changed") if k["transition"] == transition]


@pytest.fixture
def received() -> Iterator[Received]:
    """Every call of the three alert signals, in order."""
    calls = Received()
    receivers = []
    for name, signal in SIGNALS.items():

        def receiver(sender: Any, signal: Signal, _name: str = name, **kwargs: Any) -> None:
            calls.append(Sent(_name, sender, kwargs))

        signal.connect(receiver, weak=False)
        receivers.append((signal, receiver))
    yield calls
    for signal, receiver in receivers:
        signal.disconnect(receiver)


@pytest.fixture
def rep(make_user: Callable[..., Any]) -> Any:
    return make_user("rep")


@pytest.fixture
def boss(make_user: Callable[..., Any]) -> Any:
    return make_user("boss")


def first_response(lead: Lead) -> Alert:
    (alert,) = alerts_of(lead, AlertSignal.NO_FIRST_RESPONSE)
    return alert


@pytest.fixture
def lead(rep: Any) -> Lead:
    return new_lead(rep)


@pytest.fixture
def alert(lead: Lead) -> Alert:
    """An open first-response alert, raised before the test (no receiver connected yet)."""
    sweep.sweep(FIRST_RESPONSE_DUE)
    return first_response(lead)


def assert_well_formed(received: Received) -> None:
    """What every batch promises: sender ``Alert``, ids ascending, unique and never empty."""
    for sent in received:
        assert sent.sender is Alert
        ids = sent.kwargs["alert_ids"]
        assert ids and ids == sorted(set(ids)), sent


def ids_in(calls: list[dict[str, Any]]) -> list[int]:
    return sorted(pk for kwargs in calls for pk in kwargs["alert_ids"])


# The sweep raising ------------------------------------------------------------------------


def test_a_chunked_full_sweep_sends_one_batch_per_chunk_that_raised(
    received: Received,
    rep: Any,
    settings: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    # Six opportunities in consecutive keys; the middle two arrived later and are not due yet,
    # so of three chunks of two keys the middle one raises nothing.
    leads = [new_lead(rep, at=T0 + (90 * MINUTE if i in (2, 3) else 0 * MINUTE)) for i in range(6)]
    now = T0 + 2 * HOUR  # first response and first contact overdue on four leads
    settings.FOLLOWUP_VISIBILITY_SWEEP_CHUNK_SIZE = 2
    work = sweep.ranges(now)
    assert len(work) == 3

    with django_capture_on_commit_callbacks(execute=True):
        run = sweep.sweep(now, full=True)
    raised = sorted(Alert.objects.values_list("pk", flat=True))
    assert (run.chunks, run.raised, len(raised)) == (3, 8, 8)
    assert {a.opportunity_id for a in Alert.objects.all()} == {
        opportunity(lead).pk for i, lead in enumerate(leads) if i not in (2, 3)
    }

    batches = received.of("raised")
    assert len(batches) == 2  # the two chunks that raised; never one per alert
    assert ids_in(batches) == raised  # each raised alert exactly once
    assert all(kwargs["now"] == now for kwargs in batches)
    # Each batch holds the alerts of one chunk.
    opp_of = dict(Alert.objects.values_list("pk", "opportunity_id"))
    for kwargs in batches:
        (chunk,) = {
            (first, last)
            for pk in kwargs["alert_ids"]
            for first, last in work
            if first <= opp_of[pk] <= last
        }
        assert chunk != work[1]
    assert received.of("changed") == received.of("escalated") == []
    assert_well_formed(received)

    # Passes that raise nothing, steady or full, send nothing.
    received.clear()
    with django_capture_on_commit_callbacks(execute=True):
        steady = sweep.sweep(now + MINUTE)
        full = sweep.sweep(now + 2 * MINUTE, full=True)
    assert steady.raised == full.raised == 0 and not steady.full
    assert received == []


def test_a_steady_sweep_sends_its_raise_as_one_batch(
    received: Received, rep: Any, django_capture_on_commit_callbacks: Any
) -> None:
    leads = [new_lead(rep) for _ in range(3)]
    sweep.sweep(T0 + 30 * MINUTE)  # the first pass is full; nothing is due yet

    with django_capture_on_commit_callbacks(execute=True):
        run = sweep.sweep(FIRST_RESPONSE_DUE)
    assert not run.full and run.raised == 3
    (batch,) = received.of("raised")
    assert batch == {
        "alert_ids": sorted(first_response(lead).pk for lead in leads),
        "now": FIRST_RESPONSE_DUE,
    }
    assert len(received) == 1


# Manual transitions -----------------------------------------------------------------------


def _acknowledge(alert: Alert, by: Any, now: datetime) -> str:
    lifecycle.acknowledge(alert, by=by, now=now)
    return "acknowledged"


def _snooze(alert: Alert, by: Any, now: datetime) -> str:
    lifecycle.snooze(alert, reason="At a trade fair", by=by, now=now, until=now + HOUR)
    return "snoozed: At a trade fair"


def _dismiss(alert: Alert, by: Any, now: datetime) -> str:
    lifecycle.dismiss(alert, reason="Test lead", by=by, now=now)
    return "Test lead"


def _resolve(alert: Alert, by: Any, now: datetime) -> str:
    lifecycle.resolve(alert, evidence="Called from my mobile", by=by, now=now)
    return "Called from my mobile"


MANUAL: list[tuple[Callable[[Alert, Any, datetime], str], str]] = [
    (_acknowledge, AlertTransition.ACKNOWLEDGED),
    (_snooze, AlertTransition.SNOOZED),
    (_dismiss, AlertTransition.DISMISSED),
    (_resolve, AlertTransition.RESOLVED),
]


@pytest.mark.parametrize(
    ("act", "transition"), MANUAL, ids=[transition for _act, transition in MANUAL]
)
def test_each_manual_transition_sends_one_change(
    act: Callable[[Alert, Any, datetime], str],
    transition: str,
    alert: Alert,
    received: Received,
    boss: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    now = FIRST_RESPONSE_DUE + MINUTE
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        reason = act(alert, boss, now)
    assert len(callbacks) == 1
    assert [(s.name, s.kwargs) for s in received] == [
        (
            "changed",
            {
                "alert_ids": [alert.pk],
                "transition": transition,
                "now": now,
                "by": boss,
                "reason": reason,
            },
        )
    ]
    assert reason
    assert type(received[0].kwargs["transition"]) is str  # the plain value, not the enum
    assert_well_formed(received)


def test_a_refused_transition_sends_nothing(
    alert: Alert, received: Received, boss: Any, django_capture_on_commit_callbacks: Any
) -> None:
    now = FIRST_RESPONSE_DUE + MINUTE
    lifecycle.dismiss(alert, reason="Test lead", by=boss, now=now)
    received.clear()  # nothing ran it: no callback was captured
    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(ValidationError, match="dismissed"),
    ):
        lifecycle.acknowledge(alert, by=boss, now=now + MINUTE)
    assert callbacks == [] and received == []


# Automatic resolution ---------------------------------------------------------------------


def test_a_touch_that_clears_an_alert_sends_resolved_naming_the_touch(
    lead: Lead,
    alert: Alert,
    received: Received,
    rep: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    at = FIRST_RESPONSE_DUE + MINUTE
    with django_capture_on_commit_callbacks(execute=True):
        record_touch(
            lead,
            channel=Channel.PHONE,
            direction="outbound",
            outcome="connected",
            occurred_at=at,
            now=at,
            actor=rep,
        )
    alert.refresh_from_db()
    assert alert.status == AlertStatus.RESOLVED
    assert received.of("changed") == [
        {
            "alert_ids": [alert.pk],
            "transition": AlertTransition.RESOLVED,
            "now": at,
            "by": None,
            "reason": "touch: Phone",
        }
    ]
    assert received.of("raised") == received.of("escalated") == []


def test_a_crm_change_that_clears_an_alert_sends_resolved(
    received: Received, rep: Any, django_capture_on_commit_callbacks: Any
) -> None:
    lead = new_lead()  # no owner: owner assignment due at T0 + 90min
    sweep.sweep(T0 + 90 * MINUTE)
    (no_owner,) = alerts_of(lead, AlertSignal.NO_OWNER)
    at = T0 + 2 * HOUR
    with django_capture_on_commit_callbacks(execute=True):
        change_host(lead, at, owner=rep)
    no_owner.refresh_from_db()
    assert no_owner.status == AlertStatus.RESOLVED
    resolved = received.changes(AlertTransition.RESOLVED)
    assert ids_in(resolved) == [no_owner.pk]
    (kwargs,) = resolved
    assert (kwargs["reason"], kwargs["now"], kwargs["by"]) == ("changed in the CRM", at, None)
    assert_well_formed(received)


def test_alerts_cleared_for_different_reasons_are_sent_apart(
    received: Received, rep: Any, django_capture_on_commit_callbacks: Any
) -> None:
    """One touch resolving alerts for two reasons announces one batch per reason."""
    lead = new_lead(rep, confirmed=False)  # ownership unconfirmed: due at T0 + 4h
    sweep.sweep(T0 + 4 * HOUR)
    raised = {a.signal: a.pk for a in Alert.objects.all()}
    assert set(raised) == {
        AlertSignal.NO_FIRST_RESPONSE,
        AlertSignal.NEVER_CONTACTED,
        AlertSignal.OWNER_UNCONFIRMED,
    }
    at = T0 + 4 * HOUR + MINUTE
    with django_capture_on_commit_callbacks(execute=True):
        call(lead, at, actor=rep)  # contact, and the owner accepting by working it
    resolved = received.changes(AlertTransition.RESOLVED)
    assert sorted((k["reason"], k["alert_ids"]) for k in resolved) == [
        ("handoff accepted", [raised[AlertSignal.OWNER_UNCONFIRMED]]),
        (
            "touch: Phone",
            sorted([raised[AlertSignal.NO_FIRST_RESPONSE], raised[AlertSignal.NEVER_CONTACTED]]),
        ),
    ]
    assert all((k["now"], k["by"]) == (at, None) for k in resolved)
    assert len(received) == 2
    assert_well_formed(received)


# Waking, suppression, reopening -----------------------------------------------------------


def test_the_sweep_wakes_a_snooze_whose_time_came(
    alert: Alert, received: Received, rep: Any, django_capture_on_commit_callbacks: Any
) -> None:
    until = FIRST_RESPONSE_DUE + HOUR
    lifecycle.snooze(alert, reason="Call back later", by=rep, now=FIRST_RESPONSE_DUE, until=until)
    received.clear()
    with django_capture_on_commit_callbacks(execute=True):
        sweep.sweep(until - SECOND)
    assert received.changes(AlertTransition.WOKEN) == []

    with django_capture_on_commit_callbacks(execute=True):
        sweep.sweep(until)
    alert.refresh_from_db()
    assert alert.status == AlertStatus.OPEN
    (woken,) = received.changes(AlertTransition.WOKEN)
    assert (woken["alert_ids"], woken["now"], woken["by"]) == ([alert.pk], until, None)
    assert_well_formed(received)


def test_a_suppression_holds_and_its_end_releases_with_ids_and_user(
    received: Received, rep: Any, boss: Any, django_capture_on_commit_callbacks: Any
) -> None:
    lead, other = new_lead(rep), new_lead(rep)
    now = T0 + 2 * HOUR
    sweep.sweep(now)  # first response and first contact on both
    mine = [a.pk for a in Alert.objects.filter(opportunity=opportunity(lead)).order_by("pk")]
    assert len(mine) == 2 and Alert.objects.filter(opportunity=opportunity(other)).count() == 2

    with django_capture_on_commit_callbacks(execute=True):
        rule = suppressions.create(
            comment="Holiday backlog", by=boss, now=now + MINUTE, opportunity=opportunity(lead)
        )
    assert [(s.name, s.kwargs["transition"]) for s in received] == [("changed", "held")]
    held = received[0].kwargs
    assert (held["alert_ids"], held["now"], held["by"]) == (mine, now + MINUTE, boss)

    # A pass while the rule holds them sends nothing more.
    received.clear()
    with django_capture_on_commit_callbacks(execute=True):
        sweep.sweep(now + 2 * MINUTE)
        sweep.sweep(now + 3 * MINUTE, full=True)
    assert received == []

    with django_capture_on_commit_callbacks(execute=True):
        suppressions.end(rule, by=boss, now=now + 4 * MINUTE)
    assert [(s.name, s.kwargs["transition"]) for s in received] == [("changed", "released")]
    released = received[0].kwargs
    assert (released["alert_ids"], released["now"], released["by"]) == (
        mine,
        now + 4 * MINUTE,
        boss,
    )
    assert set(Alert.objects.filter(pk__in=mine).values_list("status", flat=True)) == {"open"}
    assert_well_formed(received)


def test_a_rule_on_its_own_clock_is_held_and_released_by_the_sweep_as_the_system(
    received: Received, rep: Any, boss: Any, django_capture_on_commit_callbacks: Any
) -> None:
    lead = new_lead(rep)
    now = T0 + 2 * HOUR
    sweep.sweep(now)
    mine = sorted(Alert.objects.filter(opportunity=opportunity(lead)).values_list("pk", flat=True))
    starts, ends = now + HOUR, now + 2 * HOUR
    with django_capture_on_commit_callbacks(execute=True):
        suppressions.create(
            comment="Later",
            by=boss,
            now=now,
            opportunity=opportunity(lead),
            starts_at=starts,
            ends_at=ends,
        )
    assert received == []  # not started: nothing held yet
    with django_capture_on_commit_callbacks(execute=True):
        sweep.sweep(starts)
    assert [(s.name, s.kwargs["transition"]) for s in received] == [("changed", "held")]
    held = received[0].kwargs
    assert (held["alert_ids"], held["now"], held["by"]) == (mine, starts, None)

    received.clear()
    with django_capture_on_commit_callbacks(execute=True):
        sweep.sweep(ends)  # a steady pass releases what the rule held when it ends
    assert [(s.name, s.kwargs["transition"]) for s in received] == [("changed", "released")]
    released = received[0].kwargs
    assert (released["alert_ids"], released["now"], released["by"]) == (mine, ends, None)
    assert_well_formed(received)


def test_an_episode_due_again_after_its_stall_is_sent_as_reopened(
    received: Received, rep: Any, boss: Any, django_capture_on_commit_callbacks: Any
) -> None:
    lead = new_lead(rep)
    call(lead, T0 + HOUR, actor=rep)
    stale_due, until = T0 + 17 * HOUR, T0 + 48 * HOUR
    sweep.sweep(stale_due)
    (stale,) = alerts_of(lead, AlertSignal.STALE)

    with django_capture_on_commit_callbacks(execute=True):
        stalls.set_stalled(
            opportunity(lead), until=until, reason="Budget in April", by=boss, now=stale_due + HOUR
        )
    resolved = received.changes(AlertTransition.RESOLVED)
    assert stale.pk in ids_in(resolved)
    assert {k["reason"] for k in resolved} == {"stalled: Budget in April"}
    deferred = ids_in(resolved)

    received.clear()
    with django_capture_on_commit_callbacks(execute=True):
        sweep.sweep(until)
    (reopened,) = received.changes(AlertTransition.REOPENED)
    # The same alerts come back (one per episode): announced as reopened, not raised.
    assert reopened["alert_ids"] == deferred
    assert (reopened["now"], reopened["by"]) == (until, None)
    assert reopened["reason"] == sql.REOPENED_REASON
    assert not set(ids_in(received.of("raised"))) & set(deferred)
    assert set(Alert.objects.filter(pk__in=deferred).values_list("status", flat=True)) == {"open"}
    assert_well_formed(received)


@pytest.mark.parametrize(
    "transition",
    [AlertTransition.WOKEN, AlertTransition.HELD, AlertTransition.RELEASED],
)
def test_set_based_transitions_name_their_reason(
    transition: str,
    alert: Alert,
    lead: Lead,
    received: Received,
    rep: Any,
    boss: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    until = FIRST_RESPONSE_DUE + HOUR
    lifecycle.snooze(alert, reason="Call back later", by=rep, now=FIRST_RESPONSE_DUE, until=until)
    with django_capture_on_commit_callbacks(execute=True):
        sweep.sweep(until)
        rule = suppressions.create(
            comment="Holiday backlog", by=boss, now=until + MINUTE, opportunity=opportunity(lead)
        )
        suppressions.end(rule, by=boss, now=until + 2 * MINUTE)
    (kwargs,) = received.changes(transition)
    # The rule names the opportunity: all its active alerts go aside and come back with it.
    assert alert.pk in kwargs["alert_ids"]
    assert set(kwargs["alert_ids"]) <= set(
        Alert.objects.filter(opportunity=opportunity(lead)).values_list("pk", flat=True)
    )
    expected: dict[str, str] = {
        AlertTransition.WOKEN: "woke: time passed",
        AlertTransition.HELD: "suppressed: Holiday backlog",
        AlertTransition.RELEASED: "released: suppression ended",
    }
    assert kwargs["reason"] == expected[transition]


# Escalation -------------------------------------------------------------------------------


def test_escalation_sends_the_steps_it_recorded_and_their_alerts(
    received: Received,
    rep: Any,
    boss: Any,
    make_user: Callable[..., Any],
    django_capture_on_commit_callbacks: Any,
) -> None:
    sales = make_team("sales", members=[rep])
    Team.objects.filter(pk=sales.pk).update(manager=boss)
    EscalationPolicy.objects.all().delete()
    default = escalation_policies.create_policy(
        "Company default", [HOUR, 2 * HOUR], is_default=True, now=T0
    )
    escalation_policies.create_policy("Sales", [HOUR, 2 * HOUR], team=sales, now=T0)
    # A third alert, acknowledged, keeps alert keys apart from escalation keys.
    quiet = new_lead(rep, team="sales")
    managed, unmanaged = new_lead(rep, team="sales"), new_lead(make_user("loner"))
    sweep.sweep(FIRST_RESPONSE_DUE)
    lifecycle.acknowledge(first_response(quiet), by=rep, now=FIRST_RESPONSE_DUE)
    alerts = [first_response(managed), first_response(unmanaged)]
    escalation.plan(FIRST_RESPONSE_DUE)
    level_1 = FIRST_RESPONSE_DUE + HOUR
    assert {a.escalate_at for a in Alert.objects.filter(pk__in=[a.pk for a in alerts])} == {level_1}

    with django_capture_on_commit_callbacks(execute=True):
        assert escalation.fire(level_1 - SECOND) == []
    assert received == []

    with django_capture_on_commit_callbacks(execute=True):
        steps = escalation.fire(level_1)
    assert {s.alert_id for s in steps} == {a.pk for a in alerts}
    assert len({s.outcome for s in steps}) == 2  # notified and no manager: both recorded
    assert [(s.name, s.kwargs) for s in received] == [
        (
            "escalated",
            {
                "alert_ids": sorted(a.pk for a in alerts),
                "escalation_ids": sorted(s.pk for s in steps),
                "now": level_1,
            },
        )
    ]
    assert all(s.pk is not None for s in steps)

    # A second pass at the same time records nothing and sends nothing.
    received.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert escalation.fire(level_1) == []
    assert received == []

    # The default policy loses its second level after both were planned for it (written
    # directly, as a change racing the plan would): the unmanaged alert is claimed at level 2
    # but records no step, so only the managed one is announced.
    level_2 = FIRST_RESPONSE_DUE + 2 * HOUR
    assert {a.escalate_at for a in Alert.objects.filter(pk__in=[a.pk for a in alerts])} == {level_2}
    EscalationLevel.objects.filter(policy=default, number=2).delete()
    with django_capture_on_commit_callbacks(execute=True):
        (step,) = escalation.fire(level_2)
    assert (step.alert_id, step.level) == (alerts[0].pk, 2)
    assert received.of("escalated") == [
        {"alert_ids": [alerts[0].pk], "escalation_ids": [step.pk], "now": level_2}
    ]
    assert step.pk != alerts[0].pk
    assert_well_formed(received)


# Commit and rollback ----------------------------------------------------------------------


def test_nothing_is_sent_when_the_transaction_rolls_back(
    alert: Alert, received: Received, rep: Any, django_capture_on_commit_callbacks: Any
) -> None:
    now = FIRST_RESPONSE_DUE + MINUTE
    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        lifecycle.acknowledge(alert, by=rep, now=now)
        sweep.sweep(T0 + 3 * HOUR)  # would raise first contact
        raise RuntimeError("rolled back")
    assert callbacks == [] and received == []
    alert.refresh_from_db()
    assert alert.status == AlertStatus.OPEN


def test_nothing_is_sent_before_commit(
    alert: Alert, received: Received, rep: Any, django_capture_on_commit_callbacks: Any
) -> None:
    now = FIRST_RESPONSE_DUE + MINUTE
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        lifecycle.acknowledge(alert, by=rep, now=now)
        run = sweep.sweep(T0 + 3 * HOUR)
    assert run.raised == 1
    # The events; on PostgreSQL also the sweep's check after its raise (``sweep.recheck``).
    assert len([c for c in callbacks if c.__module__ != sweep.__name__]) == 2
    assert received == []  # not yet: the transaction has not committed

    for callback in callbacks:
        callback()
    assert [s.name for s in received] == ["changed", "raised"]
    assert received[0].kwargs["transition"] == AlertTransition.ACKNOWLEDGED
    assert received[1].kwargs["alert_ids"] == list(
        Alert.objects.filter(signal=AlertSignal.NEVER_CONTACTED).values_list("pk", flat=True)
    )


def test_a_receiver_that_raises_does_not_stop_the_others(
    alert: Alert, rep: Any, django_capture_on_commit_callbacks: Any
) -> None:
    calls: list[str] = []

    def broken(sender: Any, **kwargs: Any) -> None:
        raise ValueError("broken receiver")

    def recorder(sender: Any, **kwargs: Any) -> None:
        calls.append(kwargs["transition"])

    # Connected first, so it runs before the other.
    alert_status_changed.connect(broken, weak=False)
    alert_status_changed.connect(recorder, weak=False)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            lifecycle.acknowledge(alert, by=rep, now=FIRST_RESPONSE_DUE + MINUTE)
    finally:
        alert_status_changed.disconnect(broken)
        alert_status_changed.disconnect(recorder)
    assert calls == [AlertTransition.ACKNOWLEDGED]


# Without receivers ------------------------------------------------------------------------


def test_without_receivers_nothing_is_queued_and_the_sweep_asks_for_no_ids(
    rep: Any, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> None:
    assert not events.wanted()
    for transition in AlertTransition.values:
        assert not events.wanted(transition)
    asked: list[bool] = []
    real = sql.raise_alerts

    def spy(*args: Any, ids: bool = False, **kwargs: Any) -> sql.Raised:
        asked.append(ids)
        return real(*args, ids=ids, **kwargs)

    monkeypatch.setattr(sql, "raise_alerts", spy)
    lead = new_lead(rep)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        first = sweep.sweep(FIRST_RESPONSE_DUE, full=True)
        lifecycle.acknowledge(first_response(lead), by=rep, now=FIRST_RESPONSE_DUE)
        steady = sweep.sweep(T0 + 2 * HOUR)
    assert (first.raised, steady.raised) == (1, 1)
    assert asked and not any(asked)
    # No event queued: only the sweep's own checks after its raises and chunks.
    assert [c for c in callbacks if c.__module__ != sweep.__name__] == []
    assert first_response(lead).status == AlertStatus.ACKNOWLEDGED


def test_with_a_receiver_the_sweep_asks_for_ids(
    received: Received, rep: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert events.wanted() and events.wanted(AlertTransition.REOPENED)
    asked: list[bool] = []
    real = sql.raise_alerts

    def spy(*args: Any, ids: bool = False, **kwargs: Any) -> sql.Raised:
        asked.append(ids)
        return real(*args, ids=ids, **kwargs)

    monkeypatch.setattr(sql, "raise_alerts", spy)
    new_lead(rep)
    sweep.sweep(FIRST_RESPONSE_DUE, full=True)
    assert asked and all(asked)


def test_a_batch_resolving_many_alerts_for_one_reason_sends_one_change(
    rep: Any, received: Received, django_capture_on_commit_callbacks: Any
) -> None:
    from followup_visibility.ingest.touches import record_touches

    leads = [new_lead(rep) for _ in range(12)]
    sweep.sweep(T0 + HOUR)
    open_ = set(Alert.objects.filter(status=AlertStatus.OPEN).values_list("pk", flat=True))
    at = T0 + HOUR + MINUTE
    with django_capture_on_commit_callbacks(execute=True):
        record_touches(
            [
                {
                    "target": opportunity(lead),
                    "channel": Channel.PHONE,
                    "direction": Direction.OUTBOUND,
                    "outcome": Outcome.CONNECTED,
                    "occurred_at": at,
                }
                for lead in leads
            ],
            now=at,
        )
    (resolved,) = received.changes(AlertTransition.RESOLVED)
    assert resolved["reason"] == "touch: Phone"
    assert set(resolved["alert_ids"]) == open_
