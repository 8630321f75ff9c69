from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class ConfigurationGeneration(models.Model):
    """One row whose ``token`` changes whenever configuration the engine caches changes.

    Policies, calendars, teams, segments and rules are read once and cached per process; a
    refresh reads this token (one small query) to know whether its copy is current. A new
    random token, not a counter, so that a rolled-back change can never make an old copy
    look current again.
    """

    token = models.CharField(max_length=32)
    changed_at = models.DateTimeField(_("changed at"))

    class Meta:
        verbose_name = _("configuration generation")
        verbose_name_plural = _("configuration generation")

    def __str__(self) -> str:
        return self.token
