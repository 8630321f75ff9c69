"""A real Celery worker (and beat) over Redis, reconciling rows changed behind our back.

Needs PostgreSQL (the worker is a second process on the test database) and Redis at
127.0.0.1:6379; skipped otherwise.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis
from celery import Celery
from django.db import connection

from example_project.crm.models import Lead
from followup_visibility import tasks
from followup_visibility.alerting import outbox
from followup_visibility.choices import Status
from followup_visibility.config import recompute
from tests.conftest import tracked

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

REDIS_HOST, REDIS_PORT, REDIS_DB = "127.0.0.1", 6379, 15
BROKER_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"
ROOT = Path(__file__).resolve().parent.parent
DEADLINE = 30.0  # seconds to wait for the worker to catch up


@pytest.fixture(autouse=True)
def _needs_postgres_and_redis() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: the worker process shares the test database")
    try:
        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        pytest.skip(f"needs Redis at {REDIS_HOST}:{REDIS_PORT}: {exc}")


@pytest.fixture
def queue() -> Iterator[str]:
    """A queue of our own, deleted afterwards, so concurrent runs do not share messages."""
    name = f"followup-test-{uuid.uuid4().hex[:12]}"
    yield name
    # The unique name is in the queue's list and in kombu's binding keys: delete them all.
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB)
    keys = list(client.scan_iter(match=f"*{name}*"))
    if keys:
        client.delete(*keys)
    client.close()


@contextmanager
def producer_app() -> Iterator[Celery]:
    """A sending-only app on the test broker; the suite's own app is eager and stays so."""
    app = Celery("followup_visibility_tests", broker=BROKER_URL, set_as_current=False)
    try:
        yield app
    finally:
        app.close()


def worker_database_url() -> str:
    """The database pytest-django created, as the child processes' DATABASE_URL."""
    db = connection.settings_dict
    user = quote(db["USER"] or "postgres", safe="")
    password = f":{quote(db['PASSWORD'], safe='')}" if db["PASSWORD"] else ""
    host, port = db["HOST"] or "127.0.0.1", db["PORT"] or "5432"
    return f"postgres://{user}{password}@{host}:{port}/{db['NAME']}"


def child_env(settings_module: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOLLOWUP_BEAT_")}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": settings_module,
            "DATABASE_URL": worker_database_url(),
            "CELERY_BROKER_URL": BROKER_URL,
            "PYTHONUNBUFFERED": "1",
            **extra,
        }
    )
    return env


@contextmanager
def celery_process(args: list[str], env: dict[str, str], log: Path) -> Iterator[Any]:
    """Run ``celery -A example_project <args>``; always stopped, gently first."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "example_project", *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def worker(queue: str, log: Path) -> Any:
    args = [
        "worker",
        "--pool=solo",
        "--concurrency=1",
        "-Q",
        queue,
        "-n",
        f"{queue}@%h",
        "--without-heartbeat",
        "--without-gossip",
        "--without-mingle",
        "-l",
        "info",
    ]
    return celery_process(args, child_env("tests.settings"), log)


def wait_until(done: Callable[[], bool], procs: dict[str, tuple[Any, Path]]) -> None:
    deadline = time.monotonic() + DEADLINE
    while not done():
        for name, (proc, log) in procs.items():
            if proc.poll() is not None:
                pytest.fail(f"{name} exited with {proc.returncode}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {n}\n{log.read_text()}" for n, (_p, log) in procs.items())
            pytest.fail(f"not reconciled within {DEADLINE:.0f} s\n{logs}")
        time.sleep(0.25)


def make_stale(make_lead: Callable[..., Lead]) -> tuple[list[Lead], Lead]:
    """Leads whose host rows changed without signals: updated in bulk, and one deleted raw."""
    leads = [make_lead(team="emea") for _ in range(3)]
    gone = make_lead()
    Lead.objects.filter(pk__in=[lead.pk for lead in leads]).update(
        status=Lead.Status.DISQUALIFIED, disqualify_reason="spam", team="apac"
    )
    with connection.cursor() as cursor:
        table = connection.ops.quote_name(Lead._meta.db_table)
        cursor.execute(f"DELETE FROM {table} WHERE id = %s", [gone.pk])
    # The mirror has not noticed.
    assert all(tracked(lead).status == Status.OPEN for lead in leads)
    assert tracked(gone).status == Status.OPEN
    return leads, gone


def reconciled(leads: list[Lead], gone: Lead) -> bool:
    return tracked(gone).status == Status.DELETED and all(
        tracked(lead).status == Status.DISQUALIFIED for lead in leads
    )


def assert_mirrored(leads: list[Lead]) -> None:
    for lead in leads:
        opp = tracked(lead)
        assert opp.status == Status.DISQUALIFIED
        assert opp.close_reason == "spam"
        assert opp.team_key == "apac"
        assert opp.closed_at is not None


def test_worker_reconciles_changes_made_without_signals(
    make_lead: Callable[..., Lead], queue: str, tmp_path: Path
) -> None:
    leads, gone = make_stale(make_lead)
    log = tmp_path / "worker.log"
    with worker(queue, log) as proc, producer_app() as producer:
        producer.send_task("followup_visibility.reconcile", queue=queue)
        wait_until(lambda: reconciled(leads, gone), {"worker": (proc, log)})
    assert_mirrored(leads)
    output = log.read_text()
    assert "followup_visibility.reconcile" in output
    assert "succeeded" in output


def test_beat_schedules_reconcile_for_the_worker(
    make_lead: Callable[..., Lead], queue: str, tmp_path: Path
) -> None:
    leads, gone = make_stale(make_lead)
    worker_log, beat_log = tmp_path / "worker.log", tmp_path / "beat.log"
    # Beat runs on the example project's own settings: tests.settings makes tasks eager, and an
    # eager beat would run reconcile itself instead of sending it to the worker.
    beat_env = child_env(
        "example_project.settings", FOLLOWUP_BEAT_INTERVAL="1", FOLLOWUP_BEAT_QUEUE=queue
    )
    beat_args = ["beat", "-s", str(tmp_path / "celerybeat-schedule"), "-l", "info"]
    with (
        worker(queue, worker_log) as worker_proc,
        celery_process(beat_args, beat_env, beat_log) as beat_proc,
    ):
        wait_until(
            lambda: reconciled(leads, gone),
            {"worker": (worker_proc, worker_log), "beat": (beat_proc, beat_log)},
        )
    assert_mirrored(leads)
    assert "Sending due task followup-visibility-reconcile" in beat_log.read_text()
    assert "followup_visibility.reconcile" in worker_log.read_text()


def test_worker_recomputes_deadlines_after_a_policy_change(
    make_lead: Callable[..., Lead], queue: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import time, timedelta
    from importlib import import_module

    from django.utils import timezone

    from followup_visibility.choices import AlertSignal
    from followup_visibility.config import policies
    from followup_visibility.models import (
        Calendar,
        Deadline,
        SlaPolicy,
        SlaPolicyVersion,
        WorkingWindow,
    )

    DEFAULT_DURATIONS = import_module(
        "followup_visibility.migrations.0003_company_defaults"
    ).DEFAULT_DURATIONS

    # Transactional tests flush the migration's default rows: make sure they exist.
    calendar, created = Calendar.objects.get_or_create(
        is_default=True, defaults={"name": "Company hours", "time_zone": "America/New_York"}
    )
    if created:
        WorkingWindow.objects.bulk_create(
            WorkingWindow(calendar=calendar, weekday=day, start=time(9), end=time(17))
            for day in range(5)
        )
    if not SlaPolicy.objects.filter(is_default=True).exists():
        policies.create_policy("Company default", DEFAULT_DURATIONS, now=timezone.now())
    leads = [make_lead() for _ in range(5)]
    default = SlaPolicy.objects.get(is_default=True)
    values = policies.current_values(default)
    values["first_response"] = timedelta(minutes=30)
    # Stored without scheduling anything here, as if published on another machine: the
    # worker alone must bring the deadlines in line.
    version = SlaPolicyVersion.objects.create(
        policy=default,
        number=default.versions.count() + 1,
        effective_from=timezone.now(),
        applies_to_open=True,
        **{k: v for k, v in values.items() if k != "stage_limits"},
    )

    def moved() -> bool:
        rows = Deadline.objects.filter(
            opportunity__in=[tracked(lead) for lead in leads], signal=AlertSignal.NO_FIRST_RESPONSE
        )
        return rows.count() == 5 and all(d.policy_version_id == version.pk for d in rows)

    assert not moved()
    # The plan is on record in the outbox, as a publisher without Celery leaves it (this
    # process's own app is eager and would do the work itself).
    monkeypatch.setattr(tasks, "_host_app", lambda: None)
    recompute.schedule(recompute.Scope(reason="test"), now=timezone.now())
    assert outbox.pending([recompute.PLAN]).count() == 1
    log = tmp_path / "worker.log"
    with worker(queue, log) as proc, producer_app() as producer:
        producer.send_task("followup_visibility.drain_outbox", queue=queue)
        wait_until(moved, {"worker": (proc, log)})
    for deadline in Deadline.objects.filter(signal=AlertSignal.NO_FIRST_RESPONSE):
        assert deadline.sla == timedelta(minutes=30)
    assert "followup_visibility.drain_outbox" in log.read_text()
    assert not outbox.pending().exists()


def test_a_change_committed_with_the_broker_down_is_applied_once_a_worker_drains(
    make_lead: Callable[..., Lead], queue: str, tmp_path: Path
) -> None:
    """A web process publishes a policy version with its broker on a dead port: it commits
    without an error; a worker on the live broker applies it afterwards."""
    from datetime import timedelta

    from followup_visibility.choices import AlertSignal
    from followup_visibility.models import Deadline, SlaPolicy
    from tests.factories_sla import install_defaults

    install_defaults()
    leads = [make_lead() for _ in range(3)]
    rows = Deadline.objects.filter(
        opportunity__in=[tracked(lead) for lead in leads], signal=AlertSignal.NO_FIRST_RESPONSE
    )
    assert rows.count() == 3
    script = (
        "import time, django; django.setup()\n"
        "from datetime import timedelta\n"
        "from django.utils import timezone\n"
        "from followup_visibility.config import policies\n"
        "from followup_visibility.models import SlaPolicy\n"
        "policy = SlaPolicy.objects.get(is_default=True)\n"
        "values = policies.current_values(policy)\n"
        "values['first_response'] = timedelta(minutes=7)\n"
        "started = time.monotonic()\n"
        "policies.publish_version(policy, values, now=timezone.now(), apply_to_open=True)\n"
        "print('published in %.2f s' % (time.monotonic() - started))\n"
    )
    # The example project's settings: a real (not eager) Celery app, on a dead broker port.
    env = child_env("example_project.settings", CELERY_BROKER_URL="redis://127.0.0.1:1/0")
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "published in" in done.stdout
    assert "no broker" in done.stderr  # logged, not raised
    assert all(row.sla != timedelta(minutes=7) for row in rows)
    assert outbox.pending([recompute.PLAN]).count() == 1
    version = SlaPolicy.objects.get(is_default=True).versions.order_by("-number").first()

    def applied() -> bool:
        return all(row.policy_version_id == version.pk for row in rows.all())

    log = tmp_path / "worker.log"
    with worker(queue, log) as proc, producer_app() as producer:
        # The broker is back: the next beat tick (sent here by hand) drains the outbox.
        producer.send_task("followup_visibility.drain_outbox", queue=queue)
        wait_until(applied, {"worker": (proc, log)})
    assert all(row.sla == timedelta(minutes=7) for row in rows.all())
    assert not outbox.pending().exists()


def test_beat_and_worker_turn_a_due_deadline_into_an_alert_and_an_escalation(
    make_user: Callable[..., Any], queue: str, tmp_path: Path
) -> None:
    """The whole loop on real processes: beat ticks, the worker sweeps and escalates."""
    from datetime import time, timedelta

    from django.utils import timezone

    from followup_visibility.choices import AlertSignal, AlertStatus, EscalationOutcome
    from followup_visibility.config import escalation_policies
    from followup_visibility.models import (
        Alert,
        Escalation,
        EscalationPolicy,
        Notification,
        WorkingWindow,
    )
    from tests.factories_sla import install_defaults, lead_at, make_team, opportunity

    # Transactional tests flush the migration's rows: a known calendar, policy and escalation.
    # Round the clock, so business time passes whenever the suite runs.
    defaults = install_defaults(time_zone="UTC")
    WorkingWindow.objects.filter(calendar=defaults.calendar).delete()
    WorkingWindow.objects.bulk_create(
        WorkingWindow(calendar=defaults.calendar, weekday=day, start=time(0), end=time(0))
        for day in range(7)
    )
    EscalationPolicy.objects.all().delete()
    escalation_policies.create_policy(
        "Default", [timedelta(seconds=2), timedelta(hours=2)], is_default=True, now=timezone.now()
    )
    rep, manager = make_user("rep"), make_user("manager", email="manager@example.com")
    team = make_team("emea", members=[rep])
    team.manager = manager
    team.save()
    # Arrived three weeks ago and never answered: its first-response deadline passed long ago.
    # Levels count from when the alert is raised: level 1 fires two seconds after the sweep.
    lead = lead_at(timezone.now() - timedelta(days=21), owner=rep, team="emea")
    opp = opportunity(lead)
    assert opp.team_id == team.pk
    assert not Alert.objects.exists()

    def escalated() -> bool:
        return Escalation.objects.filter(
            alert__opportunity=opp, alert__signal=AlertSignal.NO_FIRST_RESPONSE, level=1
        ).exists()

    worker_log, beat_log = tmp_path / "worker.log", tmp_path / "beat.log"
    beat_env = child_env(
        "example_project.settings", FOLLOWUP_BEAT_INTERVAL="1", FOLLOWUP_BEAT_QUEUE=queue
    )
    beat_args = ["beat", "-s", str(tmp_path / "celerybeat-schedule"), "-l", "info"]
    with (
        worker(queue, worker_log) as worker_proc,
        celery_process(beat_args, beat_env, beat_log) as beat_proc,
    ):
        wait_until(escalated, {"worker": (worker_proc, worker_log), "beat": (beat_proc, beat_log)})
    alert = Alert.objects.get(opportunity=opp, signal=AlertSignal.NO_FIRST_RESPONSE)
    assert alert.status == AlertStatus.OPEN
    assert alert.escalation_level >= 1
    step = Escalation.objects.get(alert=alert, level=1)
    assert (step.outcome, step.recipient, step.team) == (
        EscalationOutcome.NOTIFIED,
        manager,
        team,
    )
    assert step.fired_at >= alert.raised_at + timedelta(seconds=2)  # not at the raise
    assert Notification.objects.filter(alert=alert, recipient=manager, escalation=step).exists()
    beat_output = beat_log.read_text()
    assert "Sending due task followup-visibility-sweep" in beat_output
    assert "Sending due task followup-visibility-escalate" in beat_output
    worker_output = worker_log.read_text()
    assert "followup_visibility.sweep" in worker_output
    assert "followup_visibility.escalate" in worker_output


def test_a_full_pass_sends_its_chunks_the_way_it_came(
    make_lead: Callable[..., Lead], queue: str, tmp_path: Path
) -> None:
    """A host routes the sweep to a queue whose routing key is not its name: the chunks the
    pass enqueues must reach that queue, or the run never finishes."""
    from followup_visibility.models import SweepRun
    from tests.factories_sla import install_defaults

    install_defaults(time_zone="UTC")  # transactional tests flush the migrations' rows
    make_lead()  # arrived long ago: its deadlines are due, so the pass has a chunk to run
    exchange, routing_key = f"{queue}-x", f"{queue}.sweeps"
    log = tmp_path / "worker.log"
    # The example project's settings: not eager, so the chunks really go through the broker.
    env = child_env(
        "example_project.settings", FOLLOWUP_WORKER_QUEUE=f"{queue},{exchange},{routing_key}"
    )
    args = ["worker", "--pool=solo", "--concurrency=1", "-Q", queue, "-n", f"{queue}@%h"]
    args += ["--without-heartbeat", "--without-gossip", "--without-mingle", "-l", "info"]

    def finished() -> bool:
        return SweepRun.objects.filter(full=True, finished_at__isnull=False).exists()

    with celery_process(args, env, log) as proc, producer_app() as producer:
        # The queue's binding exists once the worker has declared it.
        wait_until(lambda: "ready" in log.read_text(), {"worker": (proc, log)})
        producer.send_task(
            "followup_visibility.sweep",
            kwargs={"full": True},
            exchange=exchange,
            routing_key=routing_key,
        )
        wait_until(finished, {"worker": (proc, log)})
    run = SweepRun.objects.get(full=True)
    assert run.done_ranges and "followup_visibility.sweep_chunk" in log.read_text()
