from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class RegisterRow(models.Model):
    """One opportunity of the unfollowed register with its priority as of ``scored_at``.

    Written by :mod:`followup_visibility.alerting.ranking` whenever what the opportunity owes
    changes (the refresh, an alert's transition, a raise) and again for every row by the
    periodic rescore, which moves lateness and age with the clock. A first page is then an
    index scan of its first rows instead of a ranking of the whole team at each request.

    Team and owner are copies, so that a team's or an owner's page has its own index; they
    carry no constraint (the opportunity's own columns decide who may see it). Whether the
    opportunity is still listed (open, not stalled, an open or acknowledged alert) is checked
    again when the register is read: a stored row never lists what is no longer unfollowed.
    """

    opportunity = models.OneToOneField(
        "followup_visibility.TrackedOpportunity",
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="register_row",
    )
    team = models.ForeignKey(
        "followup_visibility.Team",
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        null=True,
        related_name="+",
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        null=True,
        related_name="+",
    )
    score = models.FloatField(_("priority score"))
    intent = models.FloatField(_("intent weight"))
    value = models.FloatField(_("value"))
    #: The greatest lateness of its listing alerts, in lengths of their SLAs.
    lateness = models.FloatField(_("lateness"))
    #: Wall time since arrival, in microseconds (the score's age factor).
    age = models.FloatField(_("age"))
    severity = models.PositiveSmallIntegerField(_("severity"), null=True)
    #: When its oldest listing alert fell due.
    since = models.DateTimeField(_("unfollowed since"), null=True)
    scored_at = models.DateTimeField(_("scored at"))

    class Meta:
        verbose_name = _("register row")
        verbose_name_plural = _("register rows")
        indexes = [
            models.Index(fields=["-score", "-opportunity"], name="fv_register_score"),
            models.Index(fields=["team", "-score", "-opportunity"], name="fv_register_team"),
            models.Index(fields=["owner", "-score", "-opportunity"], name="fv_register_owner"),
        ]

    def __str__(self) -> str:
        return f"{self.opportunity_id}: {self.score:.2f}"
