"""No active alert outlives its deadline: the raise racing a refresh, and older leftovers.

The race (PostgreSQL): the sweep raises from a snapshot taken before a touch commits, and the
touch's automatic resolution cannot see the uncommitted alert. Two connections, each in its
own thread, are put through the interleavings in a fixed order.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import pytest
from django.db import connection, connections, transaction

from example_project.crm.models import Lead
from followup_visibility.alerting import sql, sweep
from followup_visibility.choices import AlertSignal, AlertStatus, AlertTransition, Resolution
from followup_visibility.ingest.touches import record_touch
from followup_visibility.models import Alert, Deadline, SweepRun
from followup_visibility.signals import alert_status_changed
from tests.conftest import is_postgres, postgres_only, tracked
from tests.test_sweep import HOUR, T0, install_clock, new_leads

NOW = T0 + 9 * HOUR  # first response (due at 4h) and first contact (8h) are overdue
MINUTE = timedelta(minutes=1)
OVERDUE = {AlertSignal.NO_FIRST_RESPONSE, AlertSignal.NEVER_CONTACTED}


def connect(lead: Lead) -> None:
    """A connected call: the lead is contacted, so both overdue deadlines go."""
    record_touch(
        lead,
        channel="phone",
        direction="outbound",
        outcome="connected",
        occurred_at=NOW - 10 * MINUTE,
        now=NOW,
    )


def active_signals(lead: Lead) -> set[str]:
    return set(
        Alert.objects.active().filter(opportunity=tracked(lead)).values_list("signal", flat=True)
    )


@pytest.fixture
def lead(db: Any, make_user: Callable[..., Any]) -> Lead:
    install_clock()
    return new_leads(owner=make_user())[0]


# The race ----------------------------------------------------------------------------------


class Paused:
    """Holds the sweep's raise before its commit until ``go`` is set (other threads pass)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.raised, self.go = threading.Event(), threading.Event()
        self.pid: int | None = None
        original = sql.raise_alerts

        def raise_alerts(*args: Any, **kwargs: Any) -> sql.Raised:
            done = original(*args, **kwargs)
            if threading.current_thread().name == "sweep" and done.raised:
                self.pid = connection.connection.info.backend_pid
                self.raised.set()
                assert self.go.wait(30)
            return done

        monkeypatch.setattr(sql, "raise_alerts", raise_alerts)

    def waiting_on_a_lock(self, thread: threading.Thread, timeout: float = 10) -> bool:
        """Whether the sweep's connection comes to wait on a lock before ``thread`` ends."""
        deadline = time.monotonic() + timeout
        while thread.is_alive() and time.monotonic() < deadline:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [self.pid]
                )
                row = cursor.fetchone()
            if row and row[0] == "Lock":
                return True
            time.sleep(0.05)
        return False


def in_thread(name: str, work: Callable[[], None], errors: list[BaseException]) -> threading.Thread:
    def run() -> None:
        try:
            work()
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run, name=name)
    thread.start()
    return thread


@postgres_only
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("full", [False, True], ids=["steady", "full"])
def test_a_touch_committed_while_the_raise_is_uncommitted_leaves_no_alert(
    lead: Lead, monkeypatch: pytest.MonkeyPatch, full: bool
) -> None:
    """The touch clears the deadlines, resolves what it sees (nothing) and commits; then the
    raise commits."""
    if not full:
        sweep.sweep(T0 + HOUR)  # the first pass is always full; nothing is due yet
    paused = Paused(monkeypatch)
    errors: list[BaseException] = []
    sweeping = in_thread("sweep", partial(sweep.sweep, NOW, full=full), errors)
    try:
        assert paused.raised.wait(30)
        connect(lead)  # its own transaction, committed here
        assert not Deadline.objects.filter(due_at__lte=NOW).exists()
        assert active_signals(lead) == set()  # the raise is not committed yet
    finally:
        paused.go.set()
        sweeping.join(30)
    assert not errors, [repr(e) for e in errors]
    assert active_signals(lead) == set()
    assert sweep.consistency(NOW)["alerts_without_deadline"] == 0
    resolved = Alert.objects.filter(opportunity=tracked(lead))
    assert {(a.signal, a.status, a.resolution) for a in resolved} == {
        (signal, AlertStatus.RESOLVED, Resolution.AUTO) for signal in OVERDUE
    }


@postgres_only
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("full", [False, True], ids=["steady", "full"])
def test_a_touch_that_commits_after_the_raise_is_waited_for(
    lead: Lead, monkeypatch: pytest.MonkeyPatch, full: bool
) -> None:
    """The touch clears the deadlines and resolves what it sees (nothing) while the raise is
    uncommitted, and commits only after the raise did: the check after the raise waits for it."""
    if not full:
        sweep.sweep(T0 + HOUR)
    paused = Paused(monkeypatch)
    touched, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def touch() -> None:
        with transaction.atomic():
            connect(lead)
            touched.set()
            assert release.wait(30)

    sweeping = in_thread("sweep", partial(sweep.sweep, NOW, full=full), errors)
    touching: threading.Thread | None = None
    try:
        assert paused.raised.wait(30)
        touching = in_thread("touch", touch, errors)
        assert touched.wait(30)
        paused.go.set()  # the raise commits; the touch has not
        waited = paused.waiting_on_a_lock(sweeping)
    finally:
        paused.go.set()
        release.set()
        sweeping.join(30)
        if touching is not None:
            touching.join(30)
    assert not errors, [repr(e) for e in errors]
    assert active_signals(lead) == set()
    assert sweep.consistency(NOW)["alerts_without_deadline"] == 0
    assert waited  # the check after the raise waited for the touch's lock


# Leftovers: the next full pass ---------------------------------------------------------------


@pytest.fixture
def resolved_events() -> Iterator[list[dict[str, Any]]]:
    sent: list[dict[str, Any]] = []

    def receive(sender: Any, **kwargs: Any) -> None:
        if kwargs["transition"] == AlertTransition.RESOLVED:
            sent.append(kwargs)

    alert_status_changed.connect(receive, dispatch_uid="test_sweep_race")
    yield sent
    alert_status_changed.disconnect(dispatch_uid="test_sweep_race")


@pytest.fixture
def full_pass(django_capture_on_commit_callbacks: Any) -> Callable[[datetime], SweepRun]:
    """A full pass with what follows its commits run (a test's transaction never commits)."""

    def run(now: datetime) -> SweepRun:
        with django_capture_on_commit_callbacks(execute=True):
            return sweep.sweep(now, full=True)

    return run


def test_a_full_pass_resolves_alerts_left_without_a_due_deadline(
    lead: Lead,
    full_pass: Callable[[datetime], SweepRun],
    resolved_events: list[dict[str, Any]],
) -> None:
    sweep.sweep(NOW)
    assert active_signals(lead) == OVERDUE
    opp = tracked(lead)
    # Left behind by an older version, a crash or a write without a refresh: one deadline
    # gone, the other moved past the clock (by a change made at its old time).
    Deadline.objects.filter(opportunity=opp, signal=AlertSignal.NO_FIRST_RESPONSE).delete()
    Deadline.objects.filter(opportunity=opp, signal=AlertSignal.NEVER_CONTACTED).update(
        due_at=NOW + HOUR
    )
    assert sweep.consistency(NOW)["alerts_without_deadline"] == 2
    # A steady pass checks only what it raised.
    sweep.sweep(NOW + MINUTE)
    assert active_signals(lead) == OVERDUE

    run = full_pass(NOW + 2 * MINUTE)

    assert run.raised == 0
    assert active_signals(lead) == set()
    assert sweep.consistency(NOW + 2 * MINUTE)["alerts_without_deadline"] == 0
    alerts = Alert.objects.filter(opportunity=opp)
    assert {(a.status, a.resolution, a.resolved_at) for a in alerts} == {
        (AlertStatus.RESOLVED, Resolution.AUTO, NOW + 2 * MINUTE)
    }
    assert {a.resolution_note for a in alerts} == {"condition cleared: no due deadline"}
    for alert in alerts:
        assert alert.history.first().history_change_reason == "condition cleared: no due deadline"
    assert [sorted(e["alert_ids"]) for e in resolved_events] == [sorted(a.pk for a in alerts)]


def test_a_full_pass_with_nothing_due_still_checks_the_active_alerts(
    lead: Lead, make_user: Callable[..., Any], full_pass: Callable[[datetime], SweepRun]
) -> None:
    """A stale alert on an opportunity above the highest key with a due deadline, or with
    nothing due at all, is in a range too."""
    other = new_leads(owner=make_user())[0]
    sweep.sweep(NOW)
    assert tracked(other).pk > tracked(lead).pk
    Deadline.objects.filter(opportunity=tracked(other)).delete()
    full_pass(NOW + MINUTE)
    assert active_signals(other) == set()
    assert active_signals(lead) == OVERDUE  # backed by due deadlines: kept

    Deadline.objects.all().delete()
    run = full_pass(NOW + 2 * MINUTE)
    assert run.chunks == 1
    assert not Alert.objects.active().exists()


def test_a_chunk_behind_the_clock_of_a_refresh_keeps_what_that_refresh_kept(
    lead: Lead, full_pass: Callable[[datetime], SweepRun]
) -> None:
    """A chunk runs with the clock its pass started with. A refresh made later moved a
    deadline to a time between the two: due at the refresh's clock, so the alert stays."""
    sweep.sweep(NOW)
    opp = tracked(lead)
    Deadline.objects.filter(opportunity=opp, signal=AlertSignal.NEVER_CONTACTED).update(
        due_at=NOW + 2 * MINUTE, computed_at=NOW + 3 * MINUTE
    )
    full_pass(NOW + MINUTE)
    assert active_signals(lead) == OVERDUE
    # The same deadline written at a clock at which it was not due yet is repaired.
    Deadline.objects.filter(opportunity=opp, signal=AlertSignal.NEVER_CONTACTED).update(
        computed_at=NOW + MINUTE
    )
    full_pass(NOW + MINUTE)
    assert active_signals(lead) == {AlertSignal.NO_FIRST_RESPONSE}


def test_the_check_after_a_raise_ignores_alerts_of_a_later_clock(lead: Lead) -> None:
    """An alert raised by a pass with a later clock than this one is left to that pass."""
    sweep.sweep(NOW)
    Alert.objects.update(raised_at=NOW + HOUR)
    Deadline.objects.all().delete()
    assert sweep.recheck(NOW, [tracked(lead).pk]) == 0
    assert active_signals(lead) == OVERDUE
    assert sweep.recheck(NOW + HOUR, [tracked(lead).pk]) == 2


# What the check costs ----------------------------------------------------------------------

Check = tuple[datetime, list[int], Any]


@pytest.fixture
def checks(
    monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> Callable[[Callable[[], Any]], list[Check]]:
    """The checks that running ``work`` leaves to its commit, as their arguments (run them
    with ``sweep.recheck(*args)``; here the commit never comes)."""

    def run(work: Callable[[], Any]) -> list[Check]:
        found: list[Check] = []
        with monkeypatch.context() as patch:
            patch.setattr(
                sweep, "recheck", lambda now, ids, keys=None: found.append((now, list(ids), keys))
            )
            with django_capture_on_commit_callbacks(execute=True):
                work()
        return found

    return run


@pytest.mark.parametrize("how", ["raised", "reopened"])
def test_the_check_after_a_steady_raise_costs_three_statements_and_one_to_resolve(
    lead: Lead,
    checks: Callable[[Callable[[], Any]], list[Check]],
    django_assert_num_queries: Any,
    how: str,
) -> None:
    sweep.sweep(T0 + HOUR)
    if how == "reopened":
        sweep.sweep(T0 + 5 * HOUR)  # first response, due at 4h
        Alert.objects.update(status=AlertStatus.RESOLVED, resolution=Resolution.AUTO)
        # Recomputed since: the steady pass looks at it again, and reopens the episode.
        Deadline.objects.filter(signal=AlertSignal.NO_FIRST_RESPONSE).update(
            computed_at=T0 + 9 * HOUR
        )
    runs: list[SweepRun] = []
    found = checks(lambda: runs.append(sweep.sweep(NOW)))
    assert not runs[0].full and runs[0].raised == 2
    if not is_postgres():
        # One writer: no refresh can commit during the raise, so nothing is checked after.
        assert found == []
        return
    assert found == [(NOW, [tracked(lead).pk], None)]
    # Commits unflushed, the lock and the look for alerts to resolve.
    with django_assert_num_queries(3):
        assert sweep.recheck(*found[0]) == 0
    connect(lead)  # as if it had committed while the raise was running
    Alert.objects.update(status=AlertStatus.OPEN, resolution="", resolved_at=None)
    # The resolution, and the register's stored ranking kept (the resolved alerts'
    # opportunities, their active alerts, the row of one no longer listed dropped).
    with django_assert_num_queries(4 + 3):
        assert sweep.recheck(*found[0]) == 2
    assert active_signals(lead) == set()


def test_a_steady_pass_that_raises_nothing_checks_nothing_after(
    lead: Lead, checks: Callable[[Callable[[], Any]], list[Check]]
) -> None:
    sweep.sweep(NOW)
    runs: list[SweepRun] = []
    assert checks(lambda: runs.append(sweep.sweep(NOW + MINUTE))) == []
    assert runs[0].raised == 0


@pytest.mark.parametrize("raising", [True, False], ids=["raising", "nothing new"])
def test_the_check_after_a_chunk_covers_its_range(
    lead: Lead,
    checks: Callable[[Callable[[], Any]], list[Check]],
    django_assert_num_queries: Any,
    raising: bool,
) -> None:
    if not raising:
        sweep.sweep(NOW)
    started = sweep.start(NOW + MINUTE, full=True)
    assert started is not None
    run, [(first, last)] = started
    found = checks(lambda: sweep.run_chunk(run.pk, first, last, NOW + MINUTE))
    raised = [tracked(lead).pk] if raising and is_postgres() else []
    assert found == [(NOW + MINUTE, raised, (first, last))]
    # PostgreSQL: commits unflushed, jit off, the lock (if it raised) and the look; SQLite:
    # the look.
    with django_assert_num_queries((3 + bool(raised)) if is_postgres() else 1):
        assert sweep.recheck(*found[0]) == 0
    assert active_signals(lead) == OVERDUE


@pytest.mark.django_db(transaction=True)
def test_a_failing_check_is_logged_and_the_pass_goes_on(
    lead: Lead, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The raise has committed: a check that fails (a deadlock, a lost connection) leaves
    its work to the next full pass instead of failing the pass."""

    def broken(*args: Any) -> int:
        raise RuntimeError("check failed")

    monkeypatch.setattr(sweep, "recheck", broken)
    run = sweep.sweep(NOW, full=True)
    run.refresh_from_db()
    assert (run.raised, run.finished_at) == (2, NOW)
    assert "check failed" in caplog.text
