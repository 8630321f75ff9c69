"""The host's Celery app; followup_visibility only declares shared tasks."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from followup_visibility.schedule import BEAT_SCHEDULE

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")


def beat_schedule() -> dict[str, dict[str, Any]]:
    """The packaged schedule, with two test-only knobs read from the environment.

    ``FOLLOWUP_BEAT_INTERVAL`` (seconds) replaces every entry's interval and
    ``FOLLOWUP_BEAT_QUEUE`` routes the entries to one queue; the integration tests use them.
    """
    interval = os.environ.get("FOLLOWUP_BEAT_INTERVAL")
    queue = os.environ.get("FOLLOWUP_BEAT_QUEUE")
    schedule = {}
    for name, entry in BEAT_SCHEDULE.items():
        entry = {**entry, "options": dict(entry.get("options", {}))}
        if interval:
            entry["schedule"] = float(interval)
        if queue:
            entry["options"]["queue"] = queue
        schedule[name] = entry
    return schedule


app = Celery("example_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
app.conf.beat_schedule = beat_schedule()
# Test-only: ``FOLLOWUP_WORKER_QUEUE=queue,exchange,routing_key`` declares a queue bound with a
# routing key of its own, as a host routing the sweep apart might.
if binding := os.environ.get("FOLLOWUP_WORKER_QUEUE"):
    name, exchange, routing_key = binding.split(",")
    app.conf.task_queues = [Queue(name, Exchange(exchange, type="direct"), routing_key=routing_key)]
