from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _
from simple_history.models import HistoricalRecords

from followup_visibility.choices import (
    ACTIVE_ALERT_STATUSES,
    AlertStatus,
    Resolution,
    Signal,
)


class Alert(models.Model):
    """One episode of a signal on an opportunity, from falling due until it is cleared.

    The episode is named by the event that started its clock (``episode_at``): a dismissed
    episode never comes back, a new event starts a new one.
    """

    opportunity = models.ForeignKey(
        "followup_visibility.TrackedOpportunity", on_delete=models.CASCADE, related_name="alerts"
    )
    signal = models.CharField(_("signal"), max_length=30, choices=Signal)
    episode_at = models.DateTimeField(_("episode started"))
    due_at = models.DateTimeField(_("due at"))
    sla = models.DurationField(_("SLA (business time)"))
    raised_at = models.DateTimeField(_("raised at"))
    status = models.CharField(
        _("status"), max_length=20, choices=AlertStatus, default=AlertStatus.OPEN
    )

    acknowledged_at = models.DateTimeField(_("acknowledged at"), null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    dismissed_at = models.DateTimeField(_("dismissed at"), null=True, blank=True)
    dismissed_reason = models.CharField(_("dismissed because"), max_length=255, blank=True)
    resolved_at = models.DateTimeField(_("resolved at"), null=True, blank=True)
    resolution = models.CharField(
        _("resolution"), max_length=10, choices=Resolution, blank=True, default=""
    )
    resolution_note = models.CharField(_("resolution"), max_length=255, blank=True)
    resolved_touch = models.ForeignKey(
        "followup_visibility.Touch",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="resolved_alerts",
    )
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    history = HistoricalRecords()

    class Meta:
        verbose_name = _("alert")
        verbose_name_plural = _("alerts")
        constraints = [
            models.UniqueConstraint(
                fields=["opportunity", "signal"],
                condition=Q(status__in=ACTIVE_ALERT_STATUSES),
                name="fv_alert_one_active",
            ),
            models.UniqueConstraint(
                fields=["opportunity", "signal", "episode_at"], name="fv_alert_one_per_episode"
            ),
        ]
        indexes = [
            models.Index(
                fields=["due_at"],
                condition=Q(status__in=ACTIVE_ALERT_STATUSES),
                name="fv_alert_active_due",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_signal_display()} on {self.opportunity_id} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_ALERT_STATUSES


class SweepRun(models.Model):
    """One sweep pass: what it covered and what it did (the sweep's own consistency record)."""

    started_at = models.DateTimeField(_("started at"))
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)
    #: The pass considered deadlines due up to here (the clock it ran for).
    swept_until = models.DateTimeField(_("swept until"))
    full = models.BooleanField(_("full pass"), default=False)
    examined = models.PositiveIntegerField(_("deadlines examined"), default=0)
    raised = models.PositiveIntegerField(_("alerts raised"), default=0)
    resolved = models.PositiveIntegerField(_("alerts resolved"), default=0)
    lag = models.DurationField(_("lag"), null=True, blank=True)

    class Meta:
        verbose_name = _("sweep run")
        verbose_name_plural = _("sweep runs")
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"{'full' if self.full else 'steady'} sweep until {self.swept_until:%Y-%m-%d %H:%M}"
