from __future__ import annotations

from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db import models

from followup_visibility.choices import Status


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
