from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _
from simple_history.models import HistoricalRecords

from followup_visibility.choices import EscalationOutcome


class EscalationPolicy(models.Model):
    """Levels at which an unacknowledged alert climbs the team tree.

    Applies to the opportunities of ``team`` and of its descendants (the nearest team with a
    policy wins); the one default policy applies everywhere else.
    """

    name = models.CharField(_("name"), max_length=100)
    team = models.OneToOneField(
        "followup_visibility.Team",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="escalation_policy",
    )
    is_default = models.BooleanField(_("company default"), default=False)

    history = HistoricalRecords()

    class Meta:
        verbose_name = _("escalation policy")
        verbose_name_plural = _("escalation policies")
        ordering = ["-is_default", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"],
                condition=Q(is_default=True),
                name="fv_escalation_one_default",
            ),
            models.CheckConstraint(
                condition=Q(is_default=False) | Q(team__isnull=True),
                name="fv_escalation_default_has_no_team",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class EscalationLevel(models.Model):
    """Level ``number`` fires when the alert is still unacknowledged ``after`` past due.

    ``after`` is business time in the opportunity's calendar. Level 1 goes to the manager of
    the owner's team, level 2 to the manager one team up, and so on.
    """

    policy = models.ForeignKey(EscalationPolicy, on_delete=models.CASCADE, related_name="levels")
    number = models.PositiveSmallIntegerField(_("level"))
    after = models.DurationField(_("unacknowledged for (business time)"))

    class Meta:
        verbose_name = _("escalation level")
        verbose_name_plural = _("escalation levels")
        ordering = ["policy", "number"]
        constraints = [
            models.UniqueConstraint(fields=["policy", "number"], name="fv_escalation_level_unique"),
            models.CheckConstraint(condition=Q(number__gte=1), name="fv_escalation_level_from_1"),
        ]

    def __str__(self) -> str:
        return f"{self.policy}: level {self.number} after {self.after}"


class Escalation(models.Model):
    """One escalation step as it happened: who it went to, or why it went nowhere."""

    alert = models.ForeignKey(
        "followup_visibility.Alert", on_delete=models.CASCADE, related_name="escalations"
    )
    level = models.PositiveSmallIntegerField(_("level"))
    #: The alert's ``raised_at`` when the step fired: a reopened episode is raised anew and
    #: climbs the levels again, on the record.
    alert_raised_at = models.DateTimeField(_("alert raised at"))
    fired_at = models.DateTimeField(_("fired at"))
    outcome = models.CharField(_("outcome"), max_length=20, choices=EscalationOutcome)
    recipient = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    team = models.ForeignKey(
        "followup_visibility.Team",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    policy = models.ForeignKey(
        EscalationPolicy, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    note = models.CharField(_("note"), max_length=255, blank=True)

    class Meta:
        verbose_name = _("escalation")
        verbose_name_plural = _("escalations")
        ordering = ["alert", "level"]
        constraints = [
            # A retried or overlapping escalation pass records each step once per raise of the
            # alert. A step that found the breach cleared holds no level: if the alert breaches
            # again and is planned again, that level fires for real.
            models.UniqueConstraint(
                fields=["alert", "alert_raised_at", "level"],
                condition=~Q(outcome=EscalationOutcome.CLEARED),
                name="fv_escalation_once_per_level",
            ),
        ]

    def __str__(self) -> str:
        return f"level {self.level} of alert {self.alert_id}: {self.get_outcome_display()}"
