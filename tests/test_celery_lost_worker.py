"""A worker killed with chunks of a full pass reserved: the next pass issues them again.

Redis keeps the messages a dead worker reserved (``acks_late``) for its visibility timeout, an
hour by default, and a run waited that long with due deadlines and no alert. Needs PostgreSQL
(the workers are other processes on the test database) and Redis at 127.0.0.1:6379; skipped
otherwise.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from django.db import connection, transaction

from followup_visibility.alerting import sweep
from followup_visibility.models import Alert, Calendar, Deadline, SweepRun, WorkingWindow
from tests.factories_sla import install_defaults, lead_at, opportunity
from tests.test_celery_integration import (
    REDIS_DB,
    REDIS_HOST,
    REDIS_PORT,
    celery_process,
    child_env,
    producer_app,
)

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

T1 = datetime(2026, 3, 3, 10, 0, tzinfo=UTC)  # the full pass whose worker dies
WAIT = 30.0  # seconds for each step of the workers


@pytest.fixture(autouse=True)
def _needs_postgres_and_redis() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: the workers share the test database")
    try:
        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        pytest.skip(f"needs Redis at {REDIS_HOST}:{REDIS_PORT}: {exc}")


@pytest.fixture
def broker() -> Iterator[redis.Redis]:
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB)
    yield client
    client.close()


@pytest.fixture
def queue(broker: redis.Redis) -> Iterator[str]:
    """A queue of our own; afterwards its keys and the messages the dead worker reserved are
    deleted, so that no worker of another run is handed them in an hour."""
    name = f"followup-test-{uuid.uuid4().hex[:12]}"
    yield name
    keys = list(broker.scan_iter(match=f"*{name}*"))
    if keys:
        broker.delete(*keys)
    tags = reserved(broker, name)
    if tags:
        broker.hdel("unacked", *tags)
        broker.zrem("unacked_index", *tags)


def reserved(broker: redis.Redis, queue: str) -> list[bytes]:
    """Delivery tags of the messages for ``queue`` taken but not acknowledged (kombu's Redis
    transport keeps them in the ``unacked`` hash as ``[message, exchange, routing key]``)."""
    return [tag for tag, raw in broker.hscan_iter("unacked") if json.loads(raw)[2] == queue]


@pytest.fixture
def three_due(db: Any) -> list[int]:
    """Three opportunities whose deadlines fell due long before ``T1``, and a last pass just
    before it that left them without alerts (deleted by hand, say): steady passes raise
    nothing for them, only the full pass does."""
    install_defaults(time_zone="UTC")  # transactional tests flush the migrations' rows
    calendar = Calendar.objects.get(is_default=True)
    WorkingWindow.objects.filter(calendar=calendar).delete()
    midnight = datetime.min.time()
    WorkingWindow.objects.bulk_create(
        WorkingWindow(calendar=calendar, weekday=day, start=midnight, end=midnight)
        for day in range(7)
    )
    leads = [lead_at(T1 - timedelta(days=1)) for _ in range(3)]
    before = T1 - timedelta(minutes=1)
    SweepRun.objects.create(started_at=before, swept_until=before, finished_at=before)
    assert not Deadline.objects.filter(due_at__gt=before - sweep.OVERLAP).exists()
    return sorted(opportunity(lead).pk for lead in leads)


@contextmanager
def holding_alerts_of(opportunity_id: int) -> Iterator[int]:
    """Another transaction raises the opportunity's alerts and keeps them uncommitted, so a
    chunk covering it waits in its insert (``ON CONFLICT`` waits for the other transaction)
    until this one rolls back. Yields that transaction's backend pid."""
    ready, release = threading.Event(), threading.Event()
    held: list[Any] = []

    def hold() -> None:
        try:
            with transaction.atomic():
                deadlines = sweep.due(T1, first=opportunity_id, last=opportunity_id)
                _examined, raised, _oldest = sweep.raise_due(deadlines, T1)
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_backend_pid()")
                    held.append((cursor.fetchone()[0], raised))
                ready.set()
                release.wait(timeout=120)
                transaction.set_rollback(True)
        except BaseException as exc:
            held.append(exc)
            ready.set()
        finally:
            connection.close()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert ready.wait(timeout=WAIT)
    assert isinstance(held[0], tuple) and held[0][1] > 0, held
    try:
        yield held[0][0]
    finally:
        release.set()
        thread.join(timeout=WAIT)


def blocked_by(pid: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))", [pid]
        )
        return bool(cursor.fetchone()[0])


def worker(queue: str, log: Path, *options: str) -> Any:
    args = ["worker", *options, "--concurrency=1", "-Q", queue]
    args += ["-n", f"{uuid.uuid4().hex[:8]}@%h", "--without-heartbeat", "--without-gossip"]
    args += ["--without-mingle", "-l", "info"]
    return celery_process(args, child_env("tests.worker_settings"), log)


def wait_for(what: str, done: Callable[[], bool], proc: Any, log: Path) -> None:
    deadline = time.monotonic() + WAIT
    while not done():
        if proc.poll() is not None:
            pytest.fail(f"the worker exited with {proc.returncode}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"not {what} within {WAIT:.0f} s:\n{log.read_text()}")
        time.sleep(0.2)


def received(log: Path) -> int:
    return len(re.findall(r"sweep_chunk\[[^]]+\] received", log.read_text()))


def test_chunks_reserved_by_a_killed_worker_are_issued_again_by_the_next_pass(
    three_due: list[int], queue: str, broker: redis.Redis, tmp_path: Path
) -> None:
    first, middle, _last = three_due
    log_a, log_b = tmp_path / "worker-a.log", tmp_path / "worker-b.log"
    # The middle chunk waits for the held alerts; meanwhile the worker, one thread with
    # prefetch, reserves the chunk after it. It is killed there, by pid, before it
    # acknowledges either.
    with (
        holding_alerts_of(middle) as holder,
        worker(queue, log_a, "--pool=threads", "--prefetch-multiplier=8") as proc,
        producer_app() as producer,
    ):
        wait_for("ready", lambda: "ready" in log_a.read_text(), proc, log_a)
        producer.send_task(
            "followup_visibility.sweep", kwargs={"full": True, "now": T1.isoformat()}, queue=queue
        )
        wait_for(
            "stuck with every chunk reserved",
            lambda: blocked_by(holder) and received(log_a) == 3,
            proc,
            log_a,
        )
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=WAIT)
    run = SweepRun.objects.get(full=True)
    assert (run.started_at, run.chunks, run.finished_at) == (T1, 3, None)
    assert run.done_ranges == [first]
    assert run.ranges == [[key, key] for key in three_due]
    # The last two chunks are with the broker, reserved by a worker that is gone (the first
    # one's acknowledgement may have been lost with it too).
    assert len(reserved(broker, queue)) >= 2 and not broker.llen(queue)
    assert sweep.consistency(T1)["due_without_alert"] > 0

    later = T1 + sweep.LOST_AFTER + timedelta(minutes=1)
    with worker(queue, log_b, "--pool=solo") as proc, producer_app() as producer:
        wait_for("ready", lambda: "ready" in log_b.read_text(), proc, log_b)
        assert SweepRun.objects.get(pk=run.pk).finished_at is None  # nothing came back
        # The next beat tick, as if the lost chunks' wait were over: a steady pass.
        producer.send_task(
            "followup_visibility.sweep", kwargs={"now": later.isoformat()}, queue=queue
        )

        def finished() -> bool:
            return SweepRun.objects.filter(pk=run.pk, finished_at__isnull=False).exists()

        wait_for("finished", finished, proc, log_b)
    run.refresh_from_db()
    assert (run.chunks_done, run.finished_at) == (3, T1)
    assert sorted(run.done_ranges) == three_due
    # Every due deadline has its alert, raised by the chunks for the pass's clock.
    assert sweep.consistency(T1)["due_without_alert"] == 0
    assert Alert.objects.count() == Deadline.objects.filter(due_at__lte=T1).count()
    assert set(Alert.objects.values_list("raised_at", flat=True)) == {T1}
    assert SweepRun.objects.get(started_at=later).raised == 0  # not by the steady pass
