"""A default escalation policy and inhibition rule, so escalation works right after migrate.

Level 1 reaches the owner's team manager after 4 business hours unacknowledged, level 2 the
manager one team up after a business day. "No owner" inhibits "next action overdue": with
nobody owning the opportunity, the missing owner is the problem to fix first.
"""

from datetime import timedelta

from django.db import migrations


def create(apps, schema_editor):
    EscalationPolicy = apps.get_model("followup_visibility", "EscalationPolicy")
    EscalationLevel = apps.get_model("followup_visibility", "EscalationLevel")
    InhibitionRule = apps.get_model("followup_visibility", "InhibitionRule")
    if not EscalationPolicy.objects.filter(is_default=True).exists():
        policy = EscalationPolicy.objects.create(name="Company default", is_default=True)
        EscalationLevel.objects.create(policy=policy, number=1, after=timedelta(hours=4))
        EscalationLevel.objects.create(policy=policy, number=2, after=timedelta(hours=8))
    InhibitionRule.objects.get_or_create(
        source="no_owner",
        target="next_action_overdue",
        defaults={"comment": "Without an owner, assigning one comes first."},
    )


class Migration(migrations.Migration):
    dependencies = [("followup_visibility", "0005_alert_lifecycle_escalation")]

    operations = [migrations.RunPython(create, migrations.RunPython.noop, elidable=True)]
