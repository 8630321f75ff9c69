"""The cron commands and the Celery tasks are thin callers of the same domain passes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from example_project.crm.models import Lead
from followup_visibility import tasks
from followup_visibility.alerting import sweep
from followup_visibility.choices import AlertSignal, EscalationOutcome
from followup_visibility.config import escalation_policies
from followup_visibility.models import Alert, Escalation, EscalationPolicy, SweepRun
from followup_visibility.schedule import BEAT_SCHEDULE
from tests.factories_sla import install_defaults, lead_at, make_team, opportunity

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday; the calendar is 24/7 UTC below
HOUR = timedelta(hours=1)
ALL_DAY = tuple((day, datetime.min.time(), datetime.min.time()) for day in range(7))

#: An eager task's result, read in the test: Celery refuses ``get()`` where it believes a task
#: is running, which another test in the same worker process can leave it believing.
EAGER = {"disable_sync_subtasks": False}


@pytest.fixture
def team_lead(db: Any, make_user: Callable[..., Any]) -> Lead:
    install_defaults(time_zone="UTC")
    from followup_visibility.models import Calendar, WorkingWindow

    calendar = Calendar.objects.get(is_default=True)
    WorkingWindow.objects.filter(calendar=calendar).delete()
    WorkingWindow.objects.bulk_create(
        WorkingWindow(calendar=calendar, weekday=d, start=s, end=e) for d, s, e in ALL_DAY
    )
    EscalationPolicy.objects.all().delete()
    escalation_policies.create_policy("Default", [HOUR, 3 * HOUR], is_default=True, now=T0)
    rep, manager = make_user("rep"), make_user("boss", email="boss@example.com")
    team = make_team("emea", members=[rep])
    team.manager = manager
    team.save()
    return lead_at(T0, owner=rep, team="emea")


def first_response_due(lead: Lead) -> datetime:
    return opportunity(lead).deadlines.get(signal=AlertSignal.NO_FIRST_RESPONSE).due_at


def run(command: str, *args: str) -> str:
    out = StringIO()
    call_command(command, *args, stdout=out)
    return out.getvalue()


def test_followup_sweep_raises_at_the_given_now_and_reports(team_lead: Lead) -> None:
    due = first_response_due(team_lead)
    before = run("followup_sweep", "--now", (due - timedelta(seconds=1)).isoformat())
    assert not Alert.objects.filter(signal=AlertSignal.NO_FIRST_RESPONSE).exists()
    assert "full pass" in before  # the first pass is full: nothing to be steady against
    output = run("followup_sweep", "--now", due.isoformat())
    assert "steady pass" in output and "1 alerts raised" in output
    alert = Alert.objects.get(signal=AlertSignal.NO_FIRST_RESPONSE)
    assert alert.raised_at == due
    assert "full pass" in run("followup_sweep", "--full", "--now", due.isoformat())
    assert SweepRun.objects.filter(full=True).count() == 2


def test_followup_escalate_fires_levels_at_the_given_now(team_lead: Lead) -> None:
    due = first_response_due(team_lead)
    run("followup_sweep", "--now", due.isoformat())
    run("followup_escalate", "--now", (due + HOUR - timedelta(seconds=1)).isoformat())
    assert not Escalation.objects.exists()
    output = run("followup_escalate", "--now", (due + HOUR).isoformat())
    assert "escalation:" in output and "notifications:" in output
    step = Escalation.objects.get()
    assert (step.level, step.outcome, step.recipient.username) == (
        1,
        EscalationOutcome.NOTIFIED,
        "boss",
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [("tomorrow", "not an ISO 8601"), ("2026-03-02T10:00:00", "no UTC offset")],
)
@pytest.mark.parametrize("command", ["followup_sweep", "followup_escalate"])
def test_bad_now_is_a_clear_error(db: Any, command: str, value: str, message: str) -> None:
    with pytest.raises(CommandError, match=message):
        run(command, "--now", value)
    assert not SweepRun.objects.exists()


def test_sweep_task_runs_a_pass_and_its_chunks(team_lead: Lead, settings: Any) -> None:
    # Eager in the test settings: the pass and its chunks run here, with the real clock,
    # which is long after the lead's deadlines.
    settings.FOLLOWUP_VISIBILITY_SWEEP_CHUNK_SIZE = 1
    lead_at(T0, team="emea")  # a second opportunity, so a full pass has two chunks
    result = tasks.sweep_pass.delay(full=True).get(**EAGER)
    assert result["chunks"] >= 2
    pass_ = SweepRun.objects.get(pk=result["run"])
    assert pass_.chunks == result["chunks"] == pass_.chunks_done
    assert pass_.finished_at is not None
    assert pass_.raised == Alert.objects.count() > 0
    # Again: the constraints absorb a repeat, nothing is raised twice.
    again = tasks.sweep_pass.delay(full=True).get(**EAGER)
    assert SweepRun.objects.get(pk=again["run"]).raised == 0


def test_escalate_and_notify_tasks(team_lead: Lead, mailoutbox: list[Any]) -> None:
    # The real clock is months after the lead's deadlines: every alert is critical. Raised a
    # week ago (levels count from the raise), so it is past every escalation level now.
    sweep.sweep(timezone.now() - 7 * 24 * HOUR, full=True)
    tasks.sweep_pass.delay().get(**EAGER)
    tasks.escalate.delay().get(**EAGER)
    step = Escalation.objects.get(level=1, alert__signal=AlertSignal.NO_FIRST_RESPONSE)
    assert step.recipient is not None and step.recipient.username == "boss"
    result = tasks.notify.delay().get(**EAGER)
    assert result["created"] >= 1 and result["digests"] >= 1
    assert {m.to[0] for m in mailoutbox} >= {"boss@example.com"}


def test_beat_schedule_names_registered_tasks() -> None:
    from celery import current_app

    registered = set(current_app.tasks)
    for name, entry in BEAT_SCHEDULE.items():
        assert entry["task"] in registered, name
        # A backlog after an outage must not stack passes.
        assert entry["options"]["expires"] <= entry["schedule"]
    sweeps = [e for e in BEAT_SCHEDULE.values() if e["task"] == "followup_visibility.sweep"]
    assert sorted(e.get("kwargs", {}).get("full", False) for e in sweeps) == [False, True]


def test_tasks_are_late_acknowledged_with_time_limits() -> None:
    from celery import current_app

    ours = [t for name, t in current_app.tasks.items() if name.startswith("followup_visibility.")]
    assert len(ours) == 7
    for task in ours:
        assert task.acks_late and task.reject_on_worker_lost, task.name
        # Below Redis's visibility timeout (1 h): never delivered to a second worker meanwhile.
        assert task.soft_time_limit < task.time_limit < 3600, task.name
    assert timezone.is_aware(timezone.now())
