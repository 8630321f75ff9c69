from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _


class OutboxMessage(models.Model):
    """Work that must follow a committed change, written in the same transaction.

    A relay drains pending messages (the Celery worker, woken after commit and by beat, or a
    cron command): a committed change is applied even when the broker was down when it
    committed. ``key`` merges repeats while one is pending (five calendar rows saved in one
    form plan one recompute), or names a message that must be the only pending one with that
    key (an email digest: one per recipient at a time).
    """

    kind = models.CharField(_("kind"), max_length=100)
    payload = models.JSONField(_("payload"), default=dict, blank=True)
    key = models.CharField(_("merge key"), max_length=255, blank=True)
    created_at = models.DateTimeField(_("created at"))
    #: Not before this time: a retry waits out its backoff, a side effect its lease.
    available_at = models.DateTimeField(_("available at"))
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    last_error = models.TextField(_("last error"), blank=True)
    done_at = models.DateTimeField(_("done at"), null=True, blank=True)
    #: Given up after the last attempt: kept with its error, for a person to look at.
    failed_at = models.DateTimeField(_("failed at"), null=True, blank=True)

    class Meta:
        verbose_name = _("outbox message")
        verbose_name_plural = _("outbox messages")
        constraints = [
            models.UniqueConstraint(
                fields=["key"],
                condition=Q(done_at__isnull=True, failed_at__isnull=True) & ~Q(key=""),
                name="fv_outbox_pending_key",
            ),
        ]
        indexes = [
            models.Index(
                fields=["available_at", "id"],
                condition=Q(done_at__isnull=True, failed_at__isnull=True),
                name="fv_outbox_pending",
            ),
            models.Index(
                fields=["done_at"], condition=Q(done_at__isnull=False), name="fv_outbox_done"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk}"

    @property
    def pending(self) -> bool:
        return self.done_at is None and self.failed_at is None
