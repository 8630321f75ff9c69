from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _
from simple_history.models import HistoricalRecords

from followup_visibility.choices import AcceptedVia


class Handoff(models.Model):
    """A transfer of ownership, pending until the new owner accepts it."""

    opportunity = models.ForeignKey(
        "followup_visibility.TrackedOpportunity", on_delete=models.CASCADE, related_name="handoffs"
    )
    from_owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    to_owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    handed_at = models.DateTimeField(_("handed over at"))
    accepted_at = models.DateTimeField(_("accepted at"), null=True, blank=True)
    accepted_via = models.CharField(max_length=10, choices=AcceptedVia, blank=True)
    accepted_touch = models.ForeignKey(
        "followup_visibility.Touch",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    superseded_at = models.DateTimeField(_("superseded at"), null=True, blank=True)
    note = models.CharField(_("note"), max_length=255, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    history = HistoricalRecords()

    class Meta:
        verbose_name = _("handoff")
        verbose_name_plural = _("handoffs")
        ordering = ["handed_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["opportunity"],
                condition=Q(accepted_at__isnull=True, superseded_at__isnull=True),
                name="fv_handoff_one_pending",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.from_owner} -> {self.to_owner} @ {self.handed_at}"

    @property
    def is_pending(self) -> bool:
        return self.accepted_at is None and self.superseded_at is None
