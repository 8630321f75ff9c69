from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from followup_visibility.choices import AlertSignal

#: The version field holding each signal's business-time duration.
DURATION_FIELDS: dict[str, str] = {
    AlertSignal.NO_FIRST_RESPONSE: "first_response",
    AlertSignal.NEVER_CONTACTED: "never_contacted",
    AlertSignal.CUSTOMER_WAITING: "reply",
    AlertSignal.CALL_RETRY_DUE: "call_retry",
    AlertSignal.NEXT_ACTION_OVERDUE: "next_action_grace",
    AlertSignal.NO_NEXT_ACTION: "no_next_action",
    AlertSignal.STALE: "stale",
    AlertSignal.NO_OWNER: "owner_assignment",
    AlertSignal.OWNER_UNCONFIRMED: "handoff_acceptance",
}
#: Durations that may be zero (a next action is overdue the moment its date passes).
ZERO_ALLOWED = frozenset({"next_action_grace"})


class SlaPolicy(models.Model):
    """Where a set of SLA durations applies: team+segment, segment, team, or company default.

    The durations live in immutable :class:`SlaPolicyVersion` rows; publishing a change adds a
    version (see ``policies.publish_version``).
    """

    name = models.CharField(_("name"), max_length=100)
    team = models.ForeignKey(
        "followup_visibility.Team",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="sla_policies",
    )
    segment = models.ForeignKey(
        "followup_visibility.Segment",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="sla_policies",
    )
    is_default = models.BooleanField(_("company default"), default=False, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("SLA policy")
        verbose_name_plural = _("SLA policies")
        ordering = ["-is_default", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["team", "segment"],
                condition=Q(team__isnull=False, segment__isnull=False),
                name="fv_policy_team_segment",
            ),
            models.UniqueConstraint(
                fields=["team"],
                condition=Q(team__isnull=False, segment__isnull=True),
                name="fv_policy_team",
            ),
            models.UniqueConstraint(
                fields=["segment"],
                condition=Q(team__isnull=True, segment__isnull=False),
                name="fv_policy_segment",
            ),
            models.UniqueConstraint(
                fields=["is_default"], condition=Q(is_default=True), name="fv_policy_one_default"
            ),
            # The default is exactly the scope with neither team nor segment.
            models.CheckConstraint(
                condition=Q(is_default=True, team__isnull=True, segment__isnull=True)
                | (Q(is_default=False) & (Q(team__isnull=False) | Q(segment__isnull=False))),
                name="fv_policy_scope",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def scope_label(self) -> str:
        if self.is_default:
            return str(_("company default"))
        parts = [str(p) for p in (self.team, self.segment) if p is not None]
        return " + ".join(parts)


class SlaPolicyVersion(models.Model):
    """One published set of durations, never edited; deadlines record the version they used.

    An empty duration inherits from the next less specific policy. ``applies_to_open`` is the
    publisher's choice: also recompute open opportunities, or only those arriving from
    ``effective_from`` on.
    """

    policy = models.ForeignKey(SlaPolicy, on_delete=models.PROTECT, related_name="versions")
    number = models.PositiveIntegerField(_("version"))
    effective_from = models.DateTimeField(_("effective from"))
    applies_to_open = models.BooleanField(
        _("also applies to open opportunities"),
        default=False,
        help_text=_("Otherwise only opportunities arriving from now on use this version."),
    )
    retired = models.BooleanField(
        _("retired"),
        default=False,
        help_text=_("This scope stops overriding: its opportunities fall back to broader ones."),
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    comment = models.CharField(_("comment"), max_length=255, blank=True)

    first_response = models.DurationField(_("first response"), null=True, blank=True)
    never_contacted = models.DurationField(_("first contact attempt"), null=True, blank=True)
    reply = models.DurationField(_("reply to a waiting customer"), null=True, blank=True)
    call_retry = models.DurationField(_("call retry"), null=True, blank=True)
    next_action_grace = models.DurationField(_("next action grace"), null=True, blank=True)
    no_next_action = models.DurationField(_("next action scheduled"), null=True, blank=True)
    stale = models.DurationField(_("stale after"), null=True, blank=True)
    owner_assignment = models.DurationField(_("owner assignment"), null=True, blank=True)
    handoff_acceptance = models.DurationField(_("handoff acceptance"), null=True, blank=True)
    #: ``{stage: seconds}`` of business time an opportunity may stay in that stage.
    stage_limits = models.JSONField(_("stage limits"), default=dict, blank=True)

    class Meta:
        verbose_name = _("SLA policy version")
        verbose_name_plural = _("SLA policy versions")
        ordering = ["policy", "number"]
        constraints = [
            models.UniqueConstraint(fields=["policy", "number"], name="fv_policy_version_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.policy} v{self.number}"
