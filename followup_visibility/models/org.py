from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.utils.translation import gettext_lazy as _

from followup_visibility.choices import Channel, Direction, Outcome


class Segment(models.Model):
    """A class of demand with its own clocks (missed call, pricing request, brochure, ...)."""

    code = models.SlugField(_("code"), max_length=50, unique=True)
    name = models.CharField(_("name"), max_length=100)
    intent_weight = models.DecimalField(
        _("intent weight"),
        max_digits=5,
        decimal_places=2,
        default=Decimal("1.00"),
        validators=[MinValueValidator(Decimal("0.01"))],
        help_text=_("How strongly this demand signals buying intent; 1.00 is ordinary."),
    )
    description = models.TextField(_("description"), blank=True)

    class Meta:
        verbose_name = _("segment")
        verbose_name_plural = _("segments")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class SegmentRule(models.Model):
    """Assigns a segment when every condition given matches; lowest priority number first.

    Touch conditions look at the opportunity's arrival touch (its earliest inbound touch, the
    lead's for a deal); the hint condition looks at a host field the adapter copies into
    ``segment_hints``.
    """

    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="rules")
    priority = models.PositiveIntegerField(_("priority"), default=100)
    active = models.BooleanField(_("active"), default=True)
    content_type = models.ForeignKey(
        ContentType,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("only for host model"),
    )
    channel = models.CharField(_("arrival channel"), max_length=20, choices=Channel, blank=True)
    direction = models.CharField(
        _("arrival direction"), max_length=10, choices=Direction, blank=True
    )
    outcome = models.CharField(_("arrival outcome"), max_length=20, choices=Outcome, blank=True)
    touch_source = models.CharField(_("arrival touch source"), max_length=50, blank=True)
    hint_field = models.CharField(_("host hint field"), max_length=50, blank=True)
    hint_value = models.CharField(_("host hint value"), max_length=100, blank=True)

    class Meta:
        verbose_name = _("segment rule")
        verbose_name_plural = _("segment rules")
        ordering = ["priority", "id"]

    def __str__(self) -> str:
        return f"#{self.priority} -> {self.segment}"

    def clean(self) -> None:
        touch_conditions = (self.channel, self.direction, self.outcome, self.touch_source)
        if not any(touch_conditions) and not self.hint_field:
            raise ValidationError(_("A rule needs at least one condition."), code="empty_rule")
        if bool(self.hint_field) != bool(self.hint_value):
            raise ValidationError(
                {"hint_value": _("Give both the hint field and the value it must have.")},
                code="hint_pair",
            )


class Team(models.Model):
    """A sales team: its manager, members, parent (the escalation chain) and calendar."""

    key = models.SlugField(
        _("key"),
        max_length=100,
        unique=True,
        help_text=_("Matches the team key the host reports for an opportunity."),
    )
    name = models.CharField(_("name"), max_length=100)
    parent = models.ForeignKey(
        "self",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="children",
        verbose_name=_("parent team"),
    )
    manager = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="followup_managed_teams",
        verbose_name=_("manager"),
    )
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        blank=True,
        related_name="followup_teams",
        verbose_name=_("members"),
    )
    calendar = models.ForeignKey(
        "followup_visibility.Calendar",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="teams",
        verbose_name=_("calendar"),
        help_text=_("Empty: the parent team's calendar, else the company default."),
    )

    class Meta:
        verbose_name = _("team")
        verbose_name_plural = _("teams")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        seen = {self.pk} if self.pk else set()
        parent = self.parent
        while parent is not None:
            if parent.pk in seen:
                raise ValidationError(
                    {"parent": _("A team cannot be its own ancestor.")}, code="team_cycle"
                )
            seen.add(parent.pk)
            parent = parent.parent
