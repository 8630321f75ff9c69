from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from followup_visibility.choices import Channel, Direction, Outcome


class Touch(models.Model):
    """One event on a customer's timeline, with the customer's clock and the logging clock."""

    opportunity = models.ForeignKey(
        "followup_visibility.TrackedOpportunity", on_delete=models.CASCADE, related_name="touches"
    )
    channel = models.CharField(_("channel"), max_length=20, choices=Channel)
    direction = models.CharField(_("direction"), max_length=10, choices=Direction)
    outcome = models.CharField(_("outcome"), max_length=20, choices=Outcome, blank=True)
    occurred_at = models.DateTimeField(_("occurred at"), help_text=_("The customer's clock."))
    recorded_at = models.DateTimeField(_("recorded at"), help_text=_("When it was logged."))
    logging_lag = models.DurationField(_("logging lag"))
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="followup_touches",
    )
    source = models.CharField(_("source"), max_length=50, default="manual")
    external_id = models.CharField(_("external id"), max_length=255, blank=True)
    contact = models.CharField(
        _("contact"), max_length=255, blank=True, help_text=_("Phone or email it came from.")
    )
    summary = models.TextField(_("summary"), blank=True)
    metadata = models.JSONField(_("metadata"), default=dict, blank=True)
    is_meaningful = models.BooleanField(_("meaningful"))
    meaningful_reason = models.CharField(_("why it counted or not"), max_length=50)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("touch")
        verbose_name_plural = _("touches")
        ordering = ["occurred_at", "id"]
        constraints = [
            # Ingestion is idempotent per (source, external id); touches without one are not.
            models.UniqueConstraint(
                fields=["source", "external_id"],
                condition=~Q(external_id=""),
                name="fv_touch_unique_external_id",
            ),
        ]
        indexes = [models.Index(fields=["opportunity", "occurred_at"], name="fv_touch_timeline")]

    def __str__(self) -> str:
        return f"{self.get_direction_display()} {self.get_channel_display()} @ {self.occurred_at}"
