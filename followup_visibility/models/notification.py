from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from followup_visibility.choices import NotificationChannel, NotificationKind


class Notification(models.Model):
    """One message to one person on one channel: the in-app inbox and the notification log.

    ``dedupe_key`` names what the message says (kind, level, severity, repeat round); the
    unique constraint means an unchanged alert is never sent twice in the same round, however
    often passes overlap or retry.
    """

    recipient = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="followup_notifications"
    )
    alert = models.ForeignKey(
        "followup_visibility.Alert", on_delete=models.CASCADE, related_name="notifications"
    )
    escalation = models.ForeignKey(
        "followup_visibility.Escalation",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="notifications",
    )
    kind = models.CharField(_("kind"), max_length=20, choices=NotificationKind)
    channel = models.CharField(_("channel"), max_length=10, choices=NotificationChannel)
    dedupe_key = models.CharField(max_length=100)
    subject = models.CharField(_("subject"), max_length=255)
    body = models.TextField(_("body"), blank=True)
    created_at = models.DateTimeField(_("created at"))
    #: Quiet hours: a non-critical message waits for the recipient's next working time.
    deliver_after = models.DateTimeField(_("deliver after"))
    #: Inbox: when created. Email: when the mail backend accepted its digest, or when it was
    #: closed without one (a note in the body says why); unset while it fails and is retried.
    sent_at = models.DateTimeField(_("sent at"), null=True, blank=True)
    read_at = models.DateTimeField(_("read at"), null=True, blank=True)

    class Meta:
        verbose_name = _("notification")
        verbose_name_plural = _("notifications")
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["alert", "recipient", "channel", "dedupe_key"],
                name="fv_notification_once",
            ),
        ]
        indexes = [
            models.Index(
                fields=["deliver_after"],
                condition=Q(sent_at__isnull=True),
                name="fv_notification_pending",
            ),
            models.Index(
                fields=["recipient", "created_at"],
                condition=Q(read_at__isnull=True),
                name="fv_notification_unread",
            ),
        ]

    def __str__(self) -> str:
        return self.subject
