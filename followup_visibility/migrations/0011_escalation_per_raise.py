# Escalation steps are recorded once per level and raise of the alert (a reopened episode
# escalates again), and a cleared step no longer holds its level.

from django.db import migrations, models


def fill_alert_raised_at(apps, schema_editor):
    Escalation = apps.get_model("followup_visibility", "Escalation")
    Alert = apps.get_model("followup_visibility", "Alert")
    raised = Alert.objects.filter(pk=models.OuterRef("alert_id")).values("raised_at")[:1]
    Escalation.objects.update(alert_raised_at=models.Subquery(raised))


class Migration(migrations.Migration):

    dependencies = [
        ("followup_visibility", "0010_alert_unchecked_keys_escalation_from"),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name="escalation",
            name="fv_escalation_once_per_level",
        ),
        migrations.AddField(
            model_name="escalation",
            name="alert_raised_at",
            field=models.DateTimeField(null=True, verbose_name="alert raised at"),
        ),
        migrations.RunPython(fill_alert_raised_at, migrations.RunPython.noop, elidable=True),
        migrations.AlterField(
            model_name="escalation",
            name="alert_raised_at",
            field=models.DateTimeField(verbose_name="alert raised at"),
        ),
        migrations.AddConstraint(
            model_name="escalation",
            constraint=models.UniqueConstraint(
                condition=models.Q(("outcome", "cleared"), _negated=True),
                fields=("alert", "alert_raised_at", "level"),
                name="fv_escalation_once_per_level",
            ),
        ),
    ]
