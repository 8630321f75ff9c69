"""Companies and their leads. ``CompanyLead.objects`` shows only the current company's rows
while one is active (``current_company``), like a manager filtered by the request."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

#: The company the current request works in (``None``: no request, every company).
current_company: ContextVar[int | None] = ContextVar("current_company", default=None)


@contextmanager
def working_in(company: Company) -> Iterator[None]:
    """Run as a request of ``company`` would: its manager shows only that company's rows."""
    token = current_company.set(company.pk)
    try:
        yield
    finally:
        current_company.reset(token)


class Company(models.Model):
    name = models.CharField(max_length=100)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="companies")

    def __str__(self) -> str:
        return self.name


class CurrentCompanyManager(models.Manager["CompanyLead"]):
    def get_queryset(self) -> models.QuerySet[CompanyLead]:
        rows = super().get_queryset()
        company = current_company.get()
        return rows if company is None else rows.filter(company_id=company)


class CompanyLead(models.Model):
    company = models.ForeignKey(Company, on_delete=models.CASCADE, related_name="leads")
    name = models.CharField(max_length=100)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )
    status = models.CharField(max_length=20, default="open")
    team = models.CharField(max_length=50, blank=True)
    phone = models.CharField(max_length=50, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = CurrentCompanyManager()

    def __str__(self) -> str:
        return self.name


def user_tenants(user: Any) -> set[str] | None:
    """The ``FOLLOWUP_VISIBILITY_USER_TENANTS`` hook: the companies ``user`` belongs to,
    narrowed to the current one inside its request; every company for a superuser."""
    if user.is_superuser:
        return None
    mine = {str(pk) for pk in user.companies.values_list("pk", flat=True)}
    company = current_company.get()
    return mine & {str(company)} if company is not None else mine
