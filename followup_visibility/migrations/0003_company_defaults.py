"""A company default calendar and SLA policy, so deadlines work from the first migrate.

Both are ordinary rows to edit in the admin: the calendar is Monday to Friday, 09:00-17:00 in
``settings.TIME_ZONE``; the durations are documented in docs/configuration.md.
"""

from datetime import time, timedelta

from django.conf import settings
from django.db import migrations
from django.utils import timezone

DEFAULT_DURATIONS = {
    "first_response": timedelta(hours=4),
    "never_contacted": timedelta(hours=8),
    "reply": timedelta(hours=4),
    "call_retry": timedelta(hours=2),
    "next_action_grace": timedelta(hours=1),
    "no_next_action": timedelta(hours=16),
    "stale": timedelta(hours=40),
    "owner_assignment": timedelta(hours=1),
    "handoff_acceptance": timedelta(hours=4),
}


def create_defaults(apps, schema_editor):
    Calendar = apps.get_model("followup_visibility", "Calendar")
    WorkingWindow = apps.get_model("followup_visibility", "WorkingWindow")
    SlaPolicy = apps.get_model("followup_visibility", "SlaPolicy")
    SlaPolicyVersion = apps.get_model("followup_visibility", "SlaPolicyVersion")
    if not Calendar.objects.filter(is_default=True).exists():
        calendar = Calendar.objects.create(
            name="Company hours",
            time_zone=getattr(settings, "TIME_ZONE", None) or "UTC",
            is_default=True,
        )
        WorkingWindow.objects.bulk_create(
            WorkingWindow(calendar=calendar, weekday=day, start=time(9), end=time(17))
            for day in range(5)
        )
    if not SlaPolicy.objects.filter(is_default=True).exists():
        policy = SlaPolicy.objects.create(name="Company default", is_default=True)
        SlaPolicyVersion.objects.create(
            policy=policy,
            number=1,
            effective_from=timezone.now(),
            applies_to_open=True,
            comment="Created by migration",
            **DEFAULT_DURATIONS,
        )


class Migration(migrations.Migration):
    dependencies = [("followup_visibility", "0002_calendars_segments_teams_policies")]

    operations = [migrations.RunPython(create_defaults, migrations.RunPython.noop, elidable=True)]
