"""The host's Celery app; followup_visibility only declares shared tasks."""

from __future__ import annotations

import os

from celery import Celery

from followup_visibility.schedule import BEAT_SCHEDULE

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")

app = Celery("example_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
app.conf.beat_schedule = dict(BEAT_SCHEDULE)
