"""The sweep turns due deadlines into alerts once; changes resolve them; episodes are kept."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import connection, transaction

from example_project.crm.models import Lead
from followup_visibility.alerting import lifecycle, sweep
from followup_visibility.choices import AlertSignal, AlertStatus, Resolution
from followup_visibility.config import suppressions
from followup_visibility.ingest.crm import sync_objects
from followup_visibility.ingest.touches import record_touch
from followup_visibility.models import (
    Alert,
    Deadline,
    SweepRun,
    TrackedOpportunity,
)
from tests import factories_sla
from tests.conftest import postgres_only, tracked

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday
HOUR = timedelta(hours=1)
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


def install_clock(**durations: timedelta) -> None:
    """A 24/7 UTC default calendar, so business time is elapsed time here."""
    factories_sla.around_the_clock({**DURATIONS, **durations}, since=T0 - 100 * HOUR)


def new_leads(n: int = 1, *, at: datetime = T0, **fields: Any) -> list[Lead]:
    """Leads that arrived at ``at``, tracked then (owners confirmed)."""
    leads = Lead.objects.bulk_create(
        [Lead(name=f"Lead {i}", created_at=at, **fields) for i in range(n)]
    )
    sync_objects(leads, at, confirm_owners=True)
    return leads


@pytest.fixture
def around_the_clock(db: Any) -> None:
    install_clock()


@pytest.fixture
def lead(around_the_clock: None, make_user: Callable[..., Any]) -> Lead:
    return new_leads(owner=make_user())[0]


def active(lead: Lead, signal: str) -> Alert | None:
    return Alert.objects.active().filter(opportunity=tracked(lead), signal=signal).first()


def test_an_alert_is_raised_at_its_deadline_and_not_a_second_before(lead: Lead) -> None:
    due = T0 + 4 * HOUR
    sweep.sweep(due - timedelta(seconds=1))
    assert active(lead, AlertSignal.NO_FIRST_RESPONSE) is None

    run = sweep.sweep(due)
    alert = active(lead, AlertSignal.NO_FIRST_RESPONSE)
    assert alert is not None and alert.status == AlertStatus.OPEN
    assert (alert.due_at, alert.episode_at, alert.raised_at) == (due, T0, due)
    assert alert.sla == 4 * HOUR
    assert run.raised == 1 and run.lag == timedelta(0)
    # The raise is in the alert's history, though the sweep inserts in bulk.
    assert alert.history.filter(history_type="+").count() == 1


def test_repeated_and_overlapping_passes_raise_nothing_twice(lead: Lead) -> None:
    now = T0 + 9 * HOUR  # first response and first contact both overdue
    first = sweep.sweep(now)
    again = sweep.sweep(now + timedelta(minutes=1))
    full = sweep.sweep(now + timedelta(minutes=2), full=True)
    assert first.raised == 2
    assert again.raised == full.raised == 0
    assert full.examined >= 2
    assert Alert.objects.count() == 2


def test_a_steady_pass_sees_deadlines_written_after_the_last_pass(lead: Lead) -> None:
    sweep.sweep(T0 + HOUR)
    # A call from an hour ago is logged late: its retry deadline fell due before this pass.
    record_touch(
        lead,
        channel="phone",
        direction="outbound",
        outcome="no_answer",
        occurred_at=T0 + 2 * HOUR,
        now=T0 + 6 * HOUR,
    )
    run = sweep.sweep(T0 + 6 * HOUR)
    assert run.full is False
    assert active(lead, AlertSignal.CALL_RETRY_DUE) is not None
    assert run.lag == 2 * HOUR  # due at 4h, raised at 6h


def test_a_meaningful_touch_resolves_the_alert_and_names_itself(lead: Lead) -> None:
    sweep.sweep(T0 + 5 * HOUR)
    alert = active(lead, AlertSignal.NO_FIRST_RESPONSE)
    assert alert is not None
    # An auto-acknowledgement is no response: the alert stays.
    record_touch(
        lead,
        channel="email",
        direction="outbound",
        outcome="sent",
        occurred_at=T0 + 5 * HOUR,
        now=T0 + 5 * HOUR,
        metadata={"headers": {"Auto-Submitted": "auto-replied"}},
    )
    assert active(lead, AlertSignal.NO_FIRST_RESPONSE) == alert
    call = record_touch(
        lead,
        channel="phone",
        direction="outbound",
        outcome="connected",
        occurred_at=T0 + 6 * HOUR,
        now=T0 + 6 * HOUR,
    ).touch
    alert.refresh_from_db()
    assert alert.status == AlertStatus.RESOLVED and alert.resolution == Resolution.AUTO
    assert alert.resolved_touch == call and alert.resolved_at == T0 + 6 * HOUR
    assert "Phone" in alert.resolution_note


def test_dismissing_closes_the_episode_only(lead: Lead, make_user: Callable[..., Any]) -> None:
    manager = make_user()
    inbound = {"channel": "email", "direction": "inbound", "outcome": "received"}
    record_touch(lead, occurred_at=T0 + HOUR, now=T0 + HOUR, **inbound)
    sweep.sweep(T0 + 4 * HOUR)
    alert = active(lead, AlertSignal.CUSTOMER_WAITING)
    assert alert is not None

    with pytest.raises(ValidationError) as err:
        lifecycle.dismiss(alert, reason=" ", by=manager, now=T0 + 4 * HOUR)
    assert "reason" in err.value.message_dict
    lifecycle.dismiss(alert, reason="Customer said no rush", by=manager, now=T0 + 4 * HOUR)
    sweep.sweep(T0 + 5 * HOUR, full=True)
    assert active(lead, AlertSignal.CUSTOMER_WAITING) is None

    # We answer, the customer writes again: a new episode alerts again.
    record_touch(
        lead,
        channel="email",
        direction="outbound",
        outcome="sent",
        occurred_at=T0 + 6 * HOUR,
        now=T0 + 6 * HOUR,
    )
    record_touch(lead, occurred_at=T0 + 7 * HOUR, now=T0 + 7 * HOUR, **inbound)
    sweep.sweep(T0 + 10 * HOUR)
    again = active(lead, AlertSignal.CUSTOMER_WAITING)
    assert again is not None and again.pk != alert.pk
    assert again.episode_at == T0 + 7 * HOUR


def test_lifecycle_refuses_what_makes_no_sense(lead: Lead, make_user: Callable[..., Any]) -> None:
    user = make_user()
    sweep.sweep(T0 + 5 * HOUR)
    alert = active(lead, AlertSignal.NO_FIRST_RESPONSE)
    assert alert is not None
    lifecycle.acknowledge(alert, by=user, now=T0 + 5 * HOUR)
    with pytest.raises(ValidationError):
        lifecycle.acknowledge(alert, by=user, now=T0 + 5 * HOUR)
    with pytest.raises(ValidationError) as err:
        lifecycle.resolve(alert, evidence="", by=user, now=T0 + 5 * HOUR)
    assert "evidence" in err.value.message_dict
    resolved = lifecycle.resolve(
        alert, evidence="Called from my mobile", by=user, now=T0 + 6 * HOUR
    )
    assert resolved.resolution == Resolution.MANUAL
    with pytest.raises(ValidationError):
        lifecycle.dismiss(resolved, reason="late", by=user, now=T0 + 6 * HOUR)
    alert.refresh_from_db()
    assert alert.status == AlertStatus.RESOLVED
    assert alert.history.first().history_user == user  # newest first


def test_closing_the_opportunity_resolves_its_alerts(lead: Lead) -> None:
    sweep.sweep(T0 + 9 * HOUR)
    assert Alert.objects.filter(status="open").count() == 2
    Lead.objects.filter(pk=lead.pk).update(status=Lead.Status.DISQUALIFIED)
    lead.refresh_from_db()
    sync_objects([lead], T0 + 10 * HOUR)
    assert not Alert.objects.filter(status="open").exists()
    assert set(Alert.objects.values_list("resolution_note", flat=True)) == {"changed in the CRM"}


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_concurrent_sweeps_raise_each_alert_once(
    around_the_clock: None, make_user: Callable[..., Any]
) -> None:
    owner = make_user()
    leads = Lead.objects.bulk_create(
        [Lead(name=f"L{i}", owner=owner, created_at=T0) for i in range(40)]
    )
    sync_objects(leads, T0, confirm_owners=True)
    now = T0 + 9 * HOUR
    errors: list[BaseException] = []

    def run(full: bool) -> None:
        try:
            sweep.sweep(now, full=full)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i % 2 == 0,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert Alert.objects.count() == 80  # first response + first contact, 40 leads
    assert sum(SweepRun.objects.values_list("raised", flat=True)) == 80


def keys(**filters: Any) -> set[tuple[Any, ...]]:
    return set(
        Alert.objects.filter(**filters).values_list(
            "opportunity_id", "signal", "episode_at", "due_at"
        )
    )


def test_a_chunked_full_pass_raises_what_one_pass_raises(
    around_the_clock: None, make_user: Callable[..., Any], settings: Any
) -> None:
    new_leads(5, owner=make_user())
    ids = sorted(TrackedOpportunity.objects.values_list("pk", flat=True))
    now = T0 + 9 * HOUR  # first response (due 4h) and first contact (8h) overdue on each
    settings.FOLLOWUP_VISIBILITY_SWEEP_CHUNK_SIZE = 2

    started = sweep.start(now, full=True)
    assert started is not None
    run, work = started
    assert work == [(ids[0], ids[1]), (ids[2], ids[3]), (ids[4], ids[4])]
    assert (run.chunks, run.chunks_done, run.finished_at) == (3, 0, None)
    for number, (first, last) in enumerate(work, 1):
        assert sweep.run_chunk(run.pk, first, last, now) == (4 if number < 3 else 2,) * 2
        run.refresh_from_db()
        assert run.chunks_done == number
        # Only the chunk that completes the run finishes it.
        assert run.finished_at == (now if number == 3 else None)
    assert (run.examined, run.raised, run.lag) == (10, 10, 5 * HOUR)
    chunked = keys()
    assert len(chunked) == 10
    assert Alert.history.filter(history_type="+").count() == 10

    Alert.objects.all().delete()
    Alert.history.all().delete()
    SweepRun.objects.all().delete()
    settings.FOLLOWUP_VISIBILITY_SWEEP_CHUNK_SIZE = 1000
    one = sweep.sweep(now, full=True)
    assert (one.chunks, one.raised) == (1, 10)
    assert keys() == chunked


def test_a_retried_chunk_raises_and_counts_nothing_twice(
    around_the_clock: None, make_user: Callable[..., Any], settings: Any
) -> None:
    new_leads(3, owner=make_user())
    now = T0 + 9 * HOUR
    settings.FOLLOWUP_VISIBILITY_SWEEP_CHUNK_SIZE = 2
    started = sweep.start(now, full=True)
    assert started is not None
    run, [(first, last), (first_2, last_2)] = started
    assert sweep.run_chunk(run.pk, first, last, now) == (4, 4)
    # Delivered again after it committed (a worker lost before acknowledging it): nothing
    # is counted twice, and the run is not finished while its other chunk has not run.
    assert sweep.run_chunk(run.pk, first, last, now) == (0, 0)
    run.refresh_from_db()
    assert Alert.objects.count() == 4
    assert (run.examined, run.raised, run.chunks, run.chunks_done) == (4, 4, 2, 1)
    assert run.finished_at is None and run.done_ranges == [first]
    assert sweep.run_chunk(run.pk, first_2, last_2, now) == (2, 2)
    run.refresh_from_db()
    assert (run.examined, run.raised, run.chunks_done, run.finished_at) == (6, 6, 2, now)


def test_a_full_pass_with_nothing_due_is_finished_at_once(lead: Lead) -> None:
    started = sweep.start(T0 + HOUR, full=True)
    assert started is not None
    run, work = started
    assert work == []
    assert (run.chunks, run.finished_at, run.lag) == (0, T0 + HOUR, timedelta(0))


def test_a_pass_records_what_it_did(lead: Lead, make_user: Callable[..., Any]) -> None:
    user = make_user()
    first = sweep.sweep(T0 + 5 * HOUR)
    assert first.full and (first.raised, first.resolved, first.woken, first.suppressed) == (
        1,
        0,
        0,
        0,
    )
    assert (first.chunks, first.chunks_done, first.finished_at) == (1, 1, T0 + 5 * HOUR)
    assert first.lag == HOUR  # first response was due at 4h
    alert = active(lead, AlertSignal.NO_FIRST_RESPONSE)
    assert alert is not None

    lifecycle.snooze(
        alert, reason="Waiting for the form", by=user, now=first.swept_until, until=T0 + 6 * HOUR
    )
    woke = sweep.sweep(T0 + 6 * HOUR)
    assert not woke.full and (woke.woken, woke.raised) == (1, 0)

    suppressions.create(
        comment="Trade fair",
        by=user,
        now=T0 + 6 * HOUR,
        opportunity=tracked(lead),
        starts_at=T0 + 7 * HOUR,
    )
    held = sweep.sweep(T0 + 7 * HOUR)
    assert held.suppressed == 1

    record_touch(
        lead,
        channel="phone",
        direction="outbound",
        outcome="connected",
        occurred_at=T0 + 8 * HOUR,
        now=T0 + 8 * HOUR,
    )
    after = sweep.sweep(T0 + 9 * HOUR)
    # Resolved between the last pass and this one, whatever resolved it.
    assert (after.resolved, after.raised) == (1, 0)


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_second_start_is_skipped_while_another_holds_the_lock(lead: Lead) -> None:
    now = T0 + 9 * HOUR
    holding, done = threading.Event(), threading.Event()
    first: list[Any] = []

    def hold() -> None:
        try:
            with transaction.atomic():
                first.append(sweep.start(now))
                holding.set()
                done.wait(10)
        finally:
            connection.close()

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert holding.wait(10)
        second = sweep.start(now)
    finally:
        done.set()
        thread.join()
    assert first[0] is not None and second is None
    # Released with its transaction: the next start goes ahead.
    assert sweep.start(now + timedelta(minutes=1)) is not None


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_full_pass_waits_for_the_lock_instead_of_being_skipped(lead: Lead) -> None:
    now = T0 + 9 * HOUR
    holding, release = threading.Event(), threading.Event()
    full: list[Any] = []

    def start_full() -> None:
        try:
            full.append(sweep.start(now, full=True))
        finally:
            connection.close()

    def hold() -> None:
        try:
            with transaction.atomic():
                assert sweep.start(now) is not None  # a steady pass, holding the lock
                holding.set()
                release.wait(10)
        finally:
            connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(10)
    waiter = threading.Thread(target=start_full)
    waiter.start()
    waiter.join(1)
    assert waiter.is_alive() and not full  # waiting, not skipped
    release.set()
    holder.join()
    waiter.join(10)
    assert full[0] is not None and full[0][0].full


def test_consistency_is_zero_after_a_pass_and_sees_rows_changed_behind_its_back(
    lead: Lead, make_user: Callable[..., Any]
) -> None:
    now = T0 + 9 * HOUR
    sweep.sweep(now)
    assert sweep.consistency(now) == {
        "due_deadlines": 2,
        "active_alerts": 2,
        "due_without_alert": 0,
        "alerts_without_deadline": 0,
    }
    # A dismissed episode is accounted for: nothing is missing.
    alert = active(lead, AlertSignal.NEVER_CONTACTED)
    assert alert is not None
    lifecycle.dismiss(alert, reason="Known", by=make_user(), now=now)
    assert sweep.consistency(now)["due_without_alert"] == 0

    Alert.objects.filter(signal=AlertSignal.NO_FIRST_RESPONSE).delete()
    assert sweep.consistency(now)["due_without_alert"] == 1
    sweep.sweep(now + timedelta(minutes=1), full=True)  # the full pass repairs it
    assert sweep.consistency(now)["due_without_alert"] == 0

    Deadline.objects.filter(signal=AlertSignal.NO_FIRST_RESPONSE).delete()
    assert sweep.consistency(now)["alerts_without_deadline"] == 1
