from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _

from followup_visibility.choices import AlertSignal


class Deadline(models.Model):
    """When one signal fires on one opportunity if nothing happens first.

    Computed in business time whenever the opportunity, its timeline or its policy changes,
    so that the sweep only compares ``due_at`` with the clock.
    """

    # Every write of a deadline that moves it writes a new entry in each of the table's
    # indexes, and a recompute moves hundreds of thousands: only the indexes something reads
    # are kept. The opportunity's lookups use the unique (opportunity, signal) index; nothing
    # looks deadlines up by policy version or calendar (deleting either, which the PROTECT
    # checks, is rare and may scan).
    opportunity = models.ForeignKey(
        "followup_visibility.TrackedOpportunity",
        on_delete=models.CASCADE,
        related_name="deadlines",
        db_index=False,
    )
    signal = models.CharField(_("signal"), max_length=30, choices=AlertSignal)
    event_at = models.DateTimeField(_("event"), help_text=_("What started the clock."))
    clock_start = models.DateTimeField(
        _("clock start"), help_text=_("The event, or the next opening when it came after hours.")
    )
    sla = models.DurationField(_("SLA (business time)"))
    due_at = models.DateTimeField(_("due at"))
    policy_version = models.ForeignKey(
        "followup_visibility.SlaPolicyVersion",
        on_delete=models.PROTECT,
        related_name="deadlines",
        db_index=False,
    )
    calendar = models.ForeignKey(
        "followup_visibility.Calendar",
        on_delete=models.PROTECT,
        related_name="deadlines",
        db_index=False,
    )
    computed_at = models.DateTimeField(_("computed at"))

    class Meta:
        verbose_name = _("deadline")
        verbose_name_plural = _("deadlines")
        constraints = [
            models.UniqueConstraint(fields=["opportunity", "signal"], name="fv_deadline_unique"),
        ]
        indexes = [
            models.Index(fields=["due_at"], name="fv_deadline_due"),
            # A steady sweep also looks at deadlines rewritten since the last pass.
            models.Index(fields=["computed_at"], name="fv_deadline_computed"),
        ]

    def __str__(self) -> str:
        return f"{self.get_signal_display()} due {self.due_at:%Y-%m-%d %H:%M}"
