from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from followup_visibility.choices import IdentityKind


class ContactIdentity(models.Model):
    """A phone number or email of an opportunity's contact, raw and normalized."""

    opportunity = models.ForeignKey(
        "followup_visibility.TrackedOpportunity",
        on_delete=models.CASCADE,
        related_name="identities",
    )
    kind = models.CharField(max_length=10, choices=IdentityKind)
    raw = models.CharField(max_length=255)
    #: E.164 for phones, normalized address for emails; empty when the input is not valid.
    key = models.CharField(max_length=255, blank=True)

    class Meta:
        verbose_name = _("contact identity")
        verbose_name_plural = _("contact identities")
        constraints = [
            models.UniqueConstraint(
                fields=["opportunity", "kind", "raw"], name="fv_identity_unique_raw"
            ),
        ]
        indexes = [
            models.Index(fields=["kind", "key"], condition=~Q(key=""), name="fv_identity_key"),
        ]

    def __str__(self) -> str:
        return self.key or self.raw


class DuplicateMatch(models.Model):
    """Two open opportunities that share a normalized identity; stored in both directions."""

    opportunity = models.ForeignKey(
        "followup_visibility.TrackedOpportunity", on_delete=models.CASCADE, related_name="+"
    )
    duplicate = models.ForeignKey(
        "followup_visibility.TrackedOpportunity", on_delete=models.CASCADE, related_name="+"
    )
    kind = models.CharField(max_length=10, choices=IdentityKind)
    key = models.CharField(max_length=255)
    detected_at = models.DateTimeField()
    cleared_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("duplicate match")
        verbose_name_plural = _("duplicate matches")
        constraints = [
            models.UniqueConstraint(
                fields=["opportunity", "duplicate"],
                condition=Q(cleared_at__isnull=True),
                name="fv_duplicate_one_open",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.opportunity_id} ~ {self.duplicate_id} ({self.key})"
