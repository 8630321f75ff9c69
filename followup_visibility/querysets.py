from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.db.models import Q

from followup_visibility.choices import ACTIVE_ALERT_STATUSES, AlertStatus, Status


class TrackedOpportunityQuerySet(models.QuerySet[Any]):
    def open(self) -> TrackedOpportunityQuerySet:
        return self.filter(status=Status.OPEN)

    def for_model(self, model: type[models.Model]) -> TrackedOpportunityQuerySet:
        return self.filter(content_type=ContentType.objects.get_for_model(model))

    def for_object(self, obj: models.Model) -> TrackedOpportunityQuerySet:
        return self.for_model(type(obj)).filter(object_pk=str(obj.pk))

    def unowned(self) -> TrackedOpportunityQuerySet:
        return self.filter(owner__isnull=True)

    def owner_unconfirmed(self) -> TrackedOpportunityQuerySet:
        return self.filter(owner__isnull=False, owner_confirmed_at__isnull=True)


# Generic over Any: the models import this module, so it cannot name them.
class AlertQuerySet(models.QuerySet[Any]):
    def active(self) -> AlertQuerySet:
        """Alerts whose episode is still running (open, acknowledged, snoozed, suppressed)."""
        return self.filter(status__in=ACTIVE_ALERT_STATUSES)

    def open(self) -> AlertQuerySet:
        return self.filter(status=AlertStatus.OPEN)


class SuppressionQuerySet(models.QuerySet[Any]):
    def active_at(self, now: datetime) -> SuppressionQuerySet:
        """Rules in force at ``now``: started, and not ended (``ends_at`` is exclusive)."""
        return self.filter(starts_at__lte=now).filter(Q(ends_at__isnull=True) | Q(ends_at__gt=now))
