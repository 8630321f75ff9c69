"""A small host CRM: integer-keyed leads, UUID-keyed deals. It knows nothing of follow-ups."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone


class Lead(models.Model):
    class Status(models.TextChoices):
        NEW = "new", "New"
        WORKING = "working", "Working"
        CONVERTED = "converted", "Converted"
        DISQUALIFIED = "disqualified", "Disqualified"
        LOST = "lost", "Lost"

    class Source(models.TextChoices):
        WEB_FORM = "web_form", "Web form"
        PHONE = "phone", "Phone call"
        MISSED_CALL = "missed_call", "Missed call"
        EMAIL = "email", "Email"
        CHAT = "chat", "Chat"
        MARKETPLACE = "marketplace", "Marketplace"
        BROCHURE = "brochure", "Brochure download"
        PRICING = "pricing", "Pricing request"

    name = models.CharField(max_length=200)
    company = models.CharField(max_length=200, blank=True)
    phone = models.CharField(max_length=50, blank=True)
    email = models.EmailField(blank=True)
    source = models.CharField(max_length=20, choices=Source, default=Source.WEB_FORM)
    status = models.CharField(max_length=20, choices=Status, default=Status.NEW)
    disqualify_reason = models.CharField(max_length=200, blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="leads",
    )
    team = models.CharField(max_length=50, blank=True)
    next_step_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.name} ({self.company})" if self.company else self.name


class Deal(models.Model):
    class Stage(models.TextChoices):
        QUALIFICATION = "qualification", "Qualification"
        PROPOSAL = "proposal", "Proposal sent"
        NEGOTIATION = "negotiation", "Negotiation"
        CLOSED = "closed", "Closed"

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        WON = "won", "Won"
        LOST = "lost", "Lost"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    lead = models.ForeignKey(
        Lead, on_delete=models.SET_NULL, null=True, blank=True, related_name="deals"
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="deals",
    )
    stage = models.CharField(max_length=20, choices=Stage, default=Stage.QUALIFICATION)
    status = models.CharField(max_length=10, choices=Status, default=Status.OPEN)
    lost_reason = models.CharField(max_length=200, blank=True)
    amount = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    contact_phone = models.CharField(max_length=50, blank=True)
    contact_email = models.EmailField(blank=True)
    team = models.CharField(max_length=50, blank=True)
    next_step_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.name
