"""The outbox: work recorded in the change's transaction, drained later, each message once.

Throwaway kinds are registered in a copy of the handler table (see ``handlers``). Drains take
an explicit clock, except where they must see what the receivers planned on the wall clock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from io import StringIO
from typing import Any

import pytest
import time_machine
from celery import Celery
from celery import _state as celery_state
from celery.app.task import Task
from django.contrib.auth.models import Group
from django.core import mail
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import IntegrityError, connection, transaction
from django.urls import reverse

from example_project.crm.models import Lead
from followup_visibility import tasks
from followup_visibility.alerting import notifications, outbox, sweep
from followup_visibility.alerting.notifications import Delivery
from followup_visibility.alerting.outbox import BACKOFF, KEEP_DONE, LEASE, DrainResult
from followup_visibility.choices import AlertSignal
from followup_visibility.config import recompute
from followup_visibility.config.policies import publish_version
from followup_visibility.config.recompute import Scope
from followup_visibility.engine import calendars
from followup_visibility.models import OutboxMessage, Team
from tests.conftest import postgres_only
from tests.factories_sla import DURATIONS, Defaults, due, install_defaults, lead_at, make_team, ny

T0 = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)
SECOND, MINUTE, HOUR, DAY = (
    timedelta(seconds=1),
    timedelta(minutes=1),
    timedelta(hours=1),
    timedelta(days=1),
)
NFR = AlertSignal.NO_FIRST_RESPONSE

#: Throwaway kinds, registered only in the ``handlers`` fixture's copy of the table.
WORK = "tests.outbox.work"
FAILING = "tests.outbox.failing"
EFFECT = "tests.outbox.effect"
UNKNOWN = "tests.outbox.unknown"


class Boom(Exception):
    pass


class Crash(BaseException):
    """The process dies mid-message (not an error a handler reports: nothing catches it)."""


def at(moment: datetime) -> Callable[[], datetime]:
    return lambda: moment


@dataclass
class Clock:
    """A clock the test (or a handler) moves."""

    now: datetime

    def __call__(self) -> datetime:
        return self.now


def depth() -> int:
    """How many atomic blocks are open on the connection (the test's own included)."""
    return len(connection.atomic_blocks)


@pytest.fixture(autouse=True)
def empty_outbox(db: Any) -> None:
    OutboxMessage.objects.all().delete()


@pytest.fixture
def handlers(monkeypatch: pytest.MonkeyPatch) -> dict[str, outbox.Handler]:
    """A copy of the handler table: what a test registers is gone after it."""
    table = dict(outbox._handlers)
    monkeypatch.setattr(outbox, "_handlers", table)
    return table


@pytest.fixture
def no_celery(monkeypatch: pytest.MonkeyPatch) -> None:
    """A host without a Celery app: waking a worker publishes nothing."""
    monkeypatch.setattr(tasks, "_host_app", lambda: None)


@pytest.fixture
def ready_calls() -> Iterator[list[dict[str, Any]]]:
    calls: list[dict[str, Any]] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        calls.append({"kinds": kwargs["kinds"], "count": kwargs["count"]})

    outbox.ready.connect(receiver, weak=False, dispatch_uid="tests.outbox.ready")
    yield calls
    outbox.ready.disconnect(dispatch_uid="tests.outbox.ready")


@pytest.fixture
def publishes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every task publish (``apply_async``) of any app, recorded and not sent."""
    names: list[str] = []

    def record(self: Task[Any, Any], *args: Any, **kwargs: Any) -> None:
        names.append(self.name)

    monkeypatch.setattr(Task, "apply_async", record)
    return names


def message(kind: str) -> OutboxMessage:
    return OutboxMessage.objects.get(kind=kind)


def pending_kinds() -> list[str]:
    return list(outbox.pending().values_list("kind", flat=True))


# 1. Enqueueing is part of the change's transaction ----------------------------------------------


def test_a_rolled_back_enqueue_leaves_nothing_and_a_committed_one_is_pending(
    no_celery: None,
    ready_calls: list[dict[str, Any]],
    django_capture_on_commit_callbacks: Any,
) -> None:
    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(Boom),
        transaction.atomic(),
    ):
        outbox.enqueue(WORK, [{"n": 1}], now=T0)
        assert OutboxMessage.objects.filter(kind=WORK).count() == 1
        raise Boom
    assert not OutboxMessage.objects.exists()
    assert callbacks == [] and ready_calls == []

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with transaction.atomic():
            outbox.enqueue(WORK, [{"n": 1}, {"n": 2}], now=T0)
        assert ready_calls == []  # not before the commit
    assert len(callbacks) == 1
    assert ready_calls == [{"kinds": [WORK], "count": 2}]
    rows = list(
        outbox.pending([WORK])
        .order_by("pk")
        .values_list("payload", "key", "created_at", "available_at", "attempts", "last_error")
    )
    assert rows == [({"n": n}, "", T0, T0, 0, "") for n in (1, 2)]
    assert all(m.pending for m in OutboxMessage.objects.all())


def test_a_merge_key_names_one_message_and_nothing_is_enqueued_for_no_payloads() -> None:
    with pytest.raises(ValueError, match="merge key"):
        outbox.enqueue(WORK, [{"n": 1}, {"n": 2}], now=T0, key="k")
    outbox.enqueue(WORK, [], now=T0)
    assert not OutboxMessage.objects.exists()


def test_keys_name_messages_one_pending_each_without_merging() -> None:
    outbox.enqueue(WORK, [{"n": 1}, {"n": 2}], now=T0, keys=["a", "b"])
    assert sorted(outbox.pending([WORK]).values_list("key", "payload")) == [
        ("a", {"n": 1}),
        ("b", {"n": 2}),
    ]
    # A pending twin is the caller's mistake (it holds the lock that rules one out): refused.
    with pytest.raises(IntegrityError), transaction.atomic():
        outbox.enqueue(WORK, [{"n": 3}], now=T0, keys=["a"])
    OutboxMessage.objects.filter(key="a").update(done_at=T0)
    outbox.enqueue(WORK, [{"n": 3}], now=T0, keys=["a"])  # once done, the key is free again
    assert outbox.pending([WORK]).get(key="a").payload == {"n": 3}
    with pytest.raises(ValueError, match="one message each"):
        outbox.enqueue(WORK, [{"n": 4}], now=T0, keys=["c", "d"])


# 2. Atomic handlers: their writes and the message's completion commit together -----------------


def test_an_atomic_handler_runs_in_the_claiming_transaction_and_commits_with_the_done_mark(
    handlers: dict[str, outbox.Handler],
) -> None:
    seen: list[tuple[Mapping[str, Any], datetime, int]] = []

    def write(payload: Mapping[str, Any], now: datetime) -> None:
        Group.objects.create(name=payload["name"])
        seen.append((payload, now, depth()))

    outbox.register(WORK, write)
    outbox.enqueue(WORK, [{"name": "written"}], now=T0)
    base = depth()
    assert outbox.drain(clock=at(T0 + MINUTE)) == DrainResult(done=1)
    # Inside the claiming transaction, in a savepoint of its own.
    assert seen == [({"name": "written"}, T0 + MINUTE, base + 2)]
    assert Group.objects.filter(name="written").exists()
    done = message(WORK)
    assert (done.done_at, done.attempts, done.pending) == (T0 + MINUTE, 1, False)
    assert outbox.drain(clock=at(T0 + HOUR)) == DrainResult()
    assert len(seen) == 1


def test_an_atomic_handler_that_raises_leaves_no_write_and_its_message_retried_then_given_up(
    handlers: dict[str, outbox.Handler],
) -> None:
    runs: list[datetime] = []

    def write_then_fail(payload: Mapping[str, Any], now: datetime) -> None:
        runs.append(now)
        Group.objects.create(name=payload["name"])
        raise Boom("halfway")

    outbox.register(FAILING, write_then_fail, max_attempts=3)
    outbox.enqueue(FAILING, [{"name": "half-written"}], now=T0)

    assert outbox.drain(clock=at(T0)) == DrainResult(failed=1)
    assert not Group.objects.filter(name="half-written").exists()
    first = message(FAILING)
    assert first.pending and first.attempts == 1
    assert "halfway" in first.last_error
    assert first.available_at == T0 + BACKOFF[0]

    # Not before its backoff.
    assert outbox.drain(clock=at(T0 + BACKOFF[0] - SECOND)) == DrainResult()
    assert runs == [T0]

    second_at = T0 + BACKOFF[0]
    assert outbox.drain(clock=at(second_at)) == DrainResult(failed=1)
    second = message(FAILING)
    assert (second.attempts, second.available_at) == (2, second_at + BACKOFF[1])
    assert second.pending

    last_at = second_at + BACKOFF[1]
    assert outbox.drain(clock=at(last_at)) == DrainResult(failed=1, given_up=1)
    given_up = message(FAILING)
    assert (given_up.attempts, given_up.failed_at, given_up.done_at) == (3, last_at, None)
    assert not given_up.pending and "halfway" in given_up.last_error
    assert not outbox.pending().exists()

    # Never drained again, and kept (with its error) for a person to look at.
    assert outbox.drain(clock=at(last_at + KEEP_DONE + 30 * DAY)) == DrainResult()
    assert runs == [T0, second_at, last_at]
    assert message(FAILING).attempts == 3
    assert not Group.objects.exists()


def test_an_atomic_handler_interrupted_midway_rolls_back_with_its_claim(
    handlers: dict[str, outbox.Handler],
) -> None:
    runs: list[datetime] = []

    def write(payload: Mapping[str, Any], now: datetime) -> None:
        runs.append(now)
        Group.objects.create(name=f"run {len(runs)}")
        if len(runs) == 1:
            raise Crash

    outbox.register(WORK, write)
    outbox.enqueue(WORK, [{}], now=T0)
    with pytest.raises(Crash):
        outbox.drain(clock=at(T0))
    # Neither the write nor the claim (its attempt) survived: claimed again at once.
    assert not Group.objects.exists()
    untouched = message(WORK)
    assert (untouched.attempts, untouched.available_at, untouched.pending) == (0, T0, True)
    assert outbox.drain(clock=at(T0)) == DrainResult(done=1)
    assert list(Group.objects.values_list("name", flat=True)) == ["run 2"]
    assert message(WORK).attempts == 1


# 3. Side effects: a lease, the effect outside any transaction, done once -----------------------


def test_a_failed_side_effect_is_retried_after_its_backoff_and_a_done_one_is_not_repeated(
    handlers: dict[str, outbox.Handler],
) -> None:
    calls: list[tuple[datetime, int, datetime, int]] = []

    def send(payload: Mapping[str, Any], now: datetime) -> None:
        # The lease is on record (committed) before the effect runs, outside the claim.
        leased = message(EFFECT)
        calls.append((now, leased.attempts, leased.available_at, depth()))
        if len(calls) == 1:
            raise OSError("smtp down")

    outbox.register(EFFECT, send, atomic=False)
    outbox.enqueue(EFFECT, [{"to": "rep@example.com"}], now=T0)
    base = depth()

    # The lease runs on the wall clock (it guards against other processes): put it at T0.
    with time_machine.travel(T0, tick=False):
        assert outbox.drain(clock=at(T0)) == DrainResult(failed=1)
    assert calls == [(T0, 1, T0 + LEASE, base)]
    failed = message(EFFECT)
    assert failed.pending and failed.attempts == 1 and "smtp down" in failed.last_error
    assert failed.available_at == T0 + BACKOFF[0]

    assert outbox.drain(clock=at(T0 + BACKOFF[0] - SECOND)) == DrainResult()
    assert len(calls) == 1

    retry = T0 + BACKOFF[0]
    with time_machine.travel(retry, tick=False):
        assert outbox.drain(clock=at(retry)) == DrainResult(done=1)
    assert calls[1] == (retry, 2, retry + LEASE, base)
    sent = message(EFFECT)
    assert (sent.done_at, sent.attempts, sent.pending) == (retry, 2, False)

    # Done once: later drains (after any lease or backoff) leave it alone.
    assert outbox.drain(clock=at(retry + LEASE + HOUR)) == DrainResult()
    assert len(calls) == 2


def test_a_side_effect_interrupted_before_its_done_mark_is_claimed_again_after_its_lease(
    handlers: dict[str, outbox.Handler],
) -> None:
    calls: list[datetime] = []

    def send(payload: Mapping[str, Any], now: datetime) -> None:
        calls.append(now)
        if len(calls) == 1:
            raise Crash

    outbox.register(EFFECT, send, atomic=False)
    outbox.enqueue(EFFECT, [{}], now=T0)
    with time_machine.travel(T0, tick=False), pytest.raises(Crash):
        outbox.drain(clock=at(T0))
    leased = message(EFFECT)
    assert (leased.attempts, leased.available_at, leased.pending) == (1, T0 + LEASE, True)
    assert outbox.drain(clock=at(T0 + LEASE - SECOND)) == DrainResult()
    with time_machine.travel(T0 + LEASE, tick=False):
        assert outbox.drain(clock=at(T0 + LEASE)) == DrainResult(done=1)
    assert calls == [T0, T0 + LEASE]
    assert message(EFFECT).done_at == T0 + LEASE


def test_a_message_without_a_handler_is_kept_with_an_error_not_lost(
    handlers: dict[str, outbox.Handler],
) -> None:
    outbox.enqueue(UNKNOWN, [{"x": 1}], now=T0)
    assert outbox.drain(clock=at(T0)) == DrainResult(failed=1)
    kept = message(UNKNOWN)
    assert kept.pending and kept.attempts == 1
    assert "no handler" in kept.last_error and UNKNOWN in kept.last_error
    assert kept.available_at == T0 + BACKOFF[0]
    # A deploy that registers the handler does the work on the next drain after the backoff.
    got: list[Mapping[str, Any]] = []
    outbox.register(UNKNOWN, lambda payload, now: got.append(payload))
    assert outbox.drain(clock=at(T0 + BACKOFF[0])) == DrainResult(done=1)
    assert got == [{"x": 1}]


# 4. Merge keys: one pending plan per recompute scope ------------------------------------------


def plans(team_id: int) -> Any:
    return OutboxMessage.objects.filter(kind=recompute.PLAN, payload__team_ids=[team_id]).order_by(
        "pk"
    )


def test_a_pending_plan_absorbs_a_repeat_of_its_scope_and_a_done_one_does_not() -> None:
    recompute.schedule(Scope(team_ids=[4242], reason="first"), now=T0)
    recompute.schedule(Scope(team_ids=[4242], reason="second"), now=T0 + MINUTE)
    recompute.schedule(Scope(team_ids=[4343], reason="other"), now=T0 + MINUTE)
    assert outbox.pending([recompute.PLAN]).count() == 2
    (pending,) = plans(4242)
    assert (pending.payload["reason"], pending.available_at) == ("first", T0)
    assert pending.key.startswith("recompute:")

    assert outbox.drain(clock=at(T0 + 2 * MINUTE)) == DrainResult(done=2)
    recompute.schedule(Scope(team_ids=[4242], reason="third"), now=T0 + 3 * MINUTE)
    done, new = plans(4242)
    assert done.done_at == T0 + 2 * MINUTE and done.key == new.key
    assert new.pending and new.payload["reason"] == "third"
    assert new.created_at == T0 + 3 * MINUTE
    assert outbox.pending([recompute.PLAN]).count() == 1


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_change_merged_into_a_pending_plan_is_not_lost_to_a_concurrent_drain(
    no_celery: None,
) -> None:
    defaults = install_defaults()
    outbox.drain()  # what replacing the defaults planned: no opportunities yet
    lead = lead_at(ny(3, 9, 9))  # first response due at 10:00
    # An earlier change's plan of every open opportunity, committed and pending.
    recompute.schedule(Scope(reason="an earlier change"), now=ny(3, 10, 9))
    assert pending_kinds() == [recompute.PLAN]
    merged, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def publish() -> None:
        try:
            with transaction.atomic():
                publish_version(
                    defaults.policy,
                    {**DURATIONS, "first_response": 3 * HOUR},
                    now=ny(3, 10, 10),
                    apply_to_open=True,
                )
                merged.set()  # its plan merged into the pending one; not committed yet
                release.wait(10)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=publish)
    thread.start()
    try:
        assert merged.wait(10)
        # A worker drains meanwhile: the merge holds the plan, so the worker cannot do it
        # without the new version (which it could not see yet) and leaves it.
        assert outbox.drain().done == 0
    finally:
        release.set()
        thread.join()
    assert errors == []
    assert due(lead)[NFR] == ny(3, 9, 10)
    # The new version is committed: its recompute must be on record (or done) by now.
    outbox.drain()
    assert due(lead)[NFR] == ny(3, 9, 12)


# 5. Limits, budgets and clean-up --------------------------------------------------------------


def test_limit_and_budget_stop_a_drain_and_report_more(
    handlers: dict[str, outbox.Handler],
) -> None:
    clock = Clock(T0)
    done: list[int] = []

    def step(payload: Mapping[str, Any], now: datetime) -> None:
        done.append(payload["n"])
        clock.now += MINUTE  # each message takes a minute

    outbox.register(WORK, step)
    outbox.enqueue(WORK, [{"n": n} for n in range(5)], now=T0)
    outbox.enqueue(WORK, [{"n": 99}], now=T0 + DAY)  # not available yet

    assert outbox.drain(clock=clock, limit=2) == DrainResult(done=2, more=True)
    assert done == [0, 1]
    assert outbox.drain(clock=clock, budget=2 * MINUTE) == DrainResult(done=2, more=True)
    assert done == [0, 1, 2, 3]
    # The limit reached with nothing more available: nothing more to report.
    assert outbox.drain(clock=clock, limit=1) == DrainResult(done=1, more=False)
    assert outbox.drain(clock=clock) == DrainResult()
    assert done == [0, 1, 2, 3, 4]
    assert list(outbox.pending().values_list("payload", flat=True)) == [{"n": 99}]


def test_a_drain_deletes_done_messages_older_than_keep_done(
    handlers: dict[str, outbox.Handler],
) -> None:
    outbox.enqueue(WORK, [{"n": n} for n in range(4)], now=T0 - KEEP_DONE - 2 * DAY)
    old, boundary, failed, waiting = OutboxMessage.objects.order_by("pk")
    OutboxMessage.objects.filter(pk=old.pk).update(done_at=T0 - KEEP_DONE - SECOND)
    OutboxMessage.objects.filter(pk=boundary.pk).update(done_at=T0 - KEEP_DONE)
    OutboxMessage.objects.filter(pk=failed.pk).update(failed_at=T0 - KEEP_DONE - DAY)
    OutboxMessage.objects.filter(pk=waiting.pk).update(available_at=T0 + DAY)
    assert outbox.drain(clock=at(T0)) == DrainResult()
    assert set(OutboxMessage.objects.values_list("pk", flat=True)) == {
        boundary.pk,
        failed.pk,
        waiting.pk,
    }


# 6. Waking a worker after commit --------------------------------------------------------------


@dataclass
class PolicyChange:
    defaults: Defaults
    lead: Lead

    def publish(self) -> None:
        """Publish a slower first response for open opportunities (a plan in the outbox)."""
        publish_version(
            self.defaults.policy,
            {**DURATIONS, "first_response": 3 * HOUR},
            now=ny(3, 10, 10),
            apply_to_open=True,
        )

    def before(self) -> bool:
        return due(self.lead)[NFR] == ny(3, 9, 10)

    def after(self) -> bool:
        return due(self.lead)[NFR] == ny(3, 9, 12)


@pytest.fixture
def change(db: Any) -> Iterator[PolicyChange]:
    defaults = install_defaults()
    outbox.drain()  # what replacing the defaults planned (on the wall clock): no opportunities
    lead = lead_at(ny(3, 9, 9))  # Monday 09:00, first response due at 10:00
    assert not outbox.pending().exists()
    yield PolicyChange(defaults, lead)
    calendars._cache.clear()


def dead_broker() -> Celery:
    """A host app whose broker is down (nothing listens on port 1); not eager."""
    return Celery("host", broker="redis://127.0.0.1:1/0", set_as_current=False)


def test_host_app_is_none_when_only_celerys_fallback_app_is_current(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    host = tasks._host_app()
    assert host is not None and host.main == "example_project"
    monkeypatch.setattr(celery_state._tls, "current_app", Celery("default", set_as_current=False))
    assert tasks._host_app() is None


def test_without_celery_a_publish_waits_for_a_drain(
    change: PolicyChange,
    no_celery: None,
    publishes: list[str],
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        change.publish()
    assert len(callbacks) == 1  # the commit sent ``ready``...
    assert publishes == []  # ...and nothing was published
    assert pending_kinds() == [recompute.PLAN]
    assert change.before()
    # The cron path: a drain on the wall clock (the plan was written for it) applies it.
    assert outbox.drain() == DrainResult(done=2)  # the plan, then its one range
    assert change.after()
    assert not outbox.pending().exists()


def test_with_an_unreachable_broker_a_publish_logs_and_leaves_the_plan_pending(
    change: PolicyChange,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    django_capture_on_commit_callbacks: Any,
) -> None:
    host = dead_broker()
    monkeypatch.setattr(tasks, "_host_app", lambda: host)
    caplog.set_level(logging.WARNING, logger=tasks.logger.name)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        change.publish()  # raises nothing
    assert len(callbacks) == 1
    warnings = [
        r for r in caplog.records if r.name == tasks.logger.name and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 1 and "no broker" in warnings[0].getMessage()
    assert pending_kinds() == [recompute.PLAN]
    assert change.before()
    assert outbox.drain().done == 2  # beat or cron does it later
    assert change.after()


def test_an_unreachable_broker_does_not_hold_up_the_commit(
    change: PolicyChange,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    host = dead_broker()
    monkeypatch.setattr(tasks, "_host_app", lambda: host)
    started = time.monotonic()
    with django_capture_on_commit_callbacks(execute=True):
        change.publish()
    assert time.monotonic() - started < 2.0
    assert pending_kinds() == [recompute.PLAN]


def test_with_the_suites_eager_app_the_commit_drains_the_plan_at_once(
    change: PolicyChange, django_capture_on_commit_callbacks: Any
) -> None:
    before = set(OutboxMessage.objects.values_list("pk", flat=True))
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        change.publish()
        assert change.before()  # nothing moves before the commit
    assert callbacks
    assert change.after()
    assert not outbox.pending().exists()
    made = OutboxMessage.objects.exclude(pk__in=before).order_by("pk")
    assert [(m.kind, m.done_at is not None) for m in made] == [
        (recompute.PLAN, True),
        (recompute.RANGE, True),
    ]


# 7. The admin without Celery ------------------------------------------------------------------


def test_adding_a_team_in_the_admin_without_celery_redirects_and_plans_a_reassignment(
    admin_client: Any,
    no_celery: None,
    publishes: list[str],
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            reverse("admin:followup_visibility_team_add"), {"key": "north", "name": "North"}
        )
    assert response.status_code == 302
    assert response.url == reverse("admin:followup_visibility_team_changelist")
    assert Team.objects.filter(key="north").exists()
    assert publishes == []
    (plan,) = outbox.pending([recompute.PLAN])
    assert plan.payload["reassign"] is True
    assert plan.payload["team_ids"] is None  # every open opportunity may move


# 8. Email digests are sent once -----------------------------------------------------------------

#: Only the first response matters: due one hour after arrival, high an hour later.
NOTIFY_DURATIONS: dict[str, timedelta | None] = {
    name: (HOUR if name == "first_response" else 200 * HOUR) for name in DURATIONS
}
ARRIVAL = ny(3, 2, 10)  # Monday 10:00 in New York
HIGH_AT = ny(3, 2, 12)


def test_a_digest_pass_retried_after_it_sent_mails_nothing_more(
    make_user: Callable[..., Any],
    mailoutbox: list[mail.EmailMessage],
    django_capture_on_commit_callbacks: Any,
) -> None:
    # The wall clock follows the test's, for the worker the commit wakes and for the task.
    with time_machine.travel(ARRIVAL - HOUR, tick=False) as clock:
        install_defaults(durations=NOTIFY_DURATIONS)
        rep = make_user("rep", email="rep@example.com")
        make_team("sales", members=[rep])
        outbox.drain()  # the team's reassignment plan, before any opportunity
        lead_at(ARRIVAL, owner=rep, team="sales")
        sweep.sweep(ARRIVAL + HOUR, full=True)
        assert notifications.notify_alerts(HIGH_AT) == 1
        assert not outbox.pending().exists()

        clock.move_to(HIGH_AT)
        # Delivered, and the worker the commit woke (the suite's eager app) finds it sent.
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            assert notifications.deliver(HIGH_AT) == Delivery(composed=1, sent=1)
            assert len(mailoutbox) == 1  # sent by the pass itself
        assert callbacks
        assert [m.to for m in mailoutbox] == [["rep@example.com"]]
        assert mailoutbox[0].subject == "1 follow-up needs you"
        sent = message(notifications.EMAIL)
        assert (sent.done_at, sent.attempts) == (HIGH_AT, 1)

        # The pass retried, a drain, and the task redelivered minutes later: nothing more.
        clock.move_to(HIGH_AT + 5 * MINUTE)
        with django_capture_on_commit_callbacks(execute=True):
            assert notifications.deliver(HIGH_AT) == Delivery()
            assert outbox.drain() == DrainResult()
            assert tasks.notify() == {"created": 0, "digests": 0, "sent": 0, "failed": 0}
        assert len(mailoutbox) == 1
        assert message(notifications.EMAIL).attempts == 1


# 9. The cron command ----------------------------------------------------------------------------


def test_the_followup_outbox_command_drains_pending_work(
    change: PolicyChange, handlers: dict[str, outbox.Handler]
) -> None:
    change.publish()  # in the test's transaction: its commit never comes, nobody is woken
    assert pending_kinds() == [recompute.PLAN]

    out = StringIO()
    call_command("followup_outbox", "--limit", "1", stdout=out)
    assert out.getvalue() == "outbox: 1 done, 0 failed (more left)\n"
    assert pending_kinds() == [recompute.RANGE]
    assert change.before()

    out = StringIO()
    call_command("followup_outbox", stdout=out)
    assert out.getvalue() == "outbox: 1 done, 0 failed\n"
    assert change.after()
    assert not outbox.pending().exists()

    def fail(payload: Mapping[str, Any], now: datetime) -> None:
        raise Boom("no")

    outbox.register(FAILING, fail, max_attempts=1)
    outbox.enqueue(FAILING, [{}], now=T0)
    out = StringIO()
    call_command("followup_outbox", stdout=out)
    assert out.getvalue() == "outbox: 0 done, 1 failed, 1 given up\n"
    with pytest.raises(CommandError, match="at least 1"):
        call_command("followup_outbox", "--limit", "0")


def test_a_side_effect_claimed_with_an_old_clock_is_not_taken_twice(
    handlers: dict[str, outbox.Handler],
) -> None:
    # A digest pass whose ``now`` was fixed minutes before it drains: its lease still runs
    # on the wall clock, so a worker woken by its commit does not send the email again.
    from django.utils import timezone

    runs: list[int] = []
    old = timezone.now() - 2 * LEASE

    def send(payload: Mapping[str, Any], now: datetime) -> None:
        runs.append(1)
        if len(runs) == 1:
            outbox.drain(kinds=[WORK])  # a worker with the real clock, meanwhile

    outbox.register(WORK, send, atomic=False)
    outbox.enqueue(WORK, [{}], now=old)
    assert outbox.drain(clock=lambda: old, kinds=[WORK]).done == 1
    assert runs == [1]
    assert not outbox.pending([WORK]).exists()


def test_a_lease_taken_over_after_it_ran_out_is_marked_by_its_new_holder_only(
    handlers: dict[str, outbox.Handler],
) -> None:
    from django.utils import timezone

    runs: list[int] = []

    def send(payload: Mapping[str, Any], now: datetime) -> None:
        runs.append(1)
        if len(runs) == 1:
            # The first holder is slow past its lease: another drain takes the message over.
            OutboxMessage.objects.filter(kind=WORK).update(available_at=timezone.now())
            assert outbox.drain(kinds=[WORK]).done == 1

    outbox.register(WORK, send, atomic=False)
    outbox.enqueue(WORK, [{}], now=timezone.now())
    first = outbox.drain(kinds=[WORK])
    # Sent twice (the lease ran out), but counted once, by the holder of the last attempt.
    assert (len(runs), first.done) == (2, 0)
    assert OutboxMessage.objects.get(kind=WORK).attempts == 2
