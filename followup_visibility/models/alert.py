from __future__ import annotations

from datetime import UTC, datetime

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils.translation import gettext_lazy as _
from simple_history.models import HistoricalRecords

from followup_visibility.choices import (
    ACTIVE_ALERT_STATUSES,
    AlertSignal,
    AlertStatus,
    IdentityKind,
    Resolution,
    SnoozeCondition,
)
from followup_visibility.querysets import AlertQuerySet, SuppressionQuerySet

#: The span of a severity level not stored yet: it ended long ago (engine/severity.py).
LEVEL_ENDED = datetime(1970, 1, 1, tzinfo=UTC)


class Alert(models.Model):
    """One episode of a signal on an opportunity, from falling due until it is cleared.

    The episode is named by the event that started its clock (``episode_at``): a dismissed
    episode never comes back, a new event starts a new one.
    """

    # Indexes on this table are paid per raised alert (a first sweep raises millions), so each
    # one earns its place: the unique constraints lead with the opportunity and serve its
    # lookups, and the nullable foreign keys get partial indexes over the rows that set them.
    # Those nullable keys (who acknowledged or changed it, the touch that resolved it, the
    # suppression holding it) have no database constraint: PostgreSQL queues a check for
    # every inserted row even when the key is null, which cost a first sweep of 1.25M alerts
    # about 10 s. They are set only through the ORM, and Django applies their on_delete
    # itself, so only a raw SQL delete could leave one dangling. The opportunity keeps its
    # constraint.
    opportunity = models.ForeignKey(
        "followup_visibility.TrackedOpportunity",
        on_delete=models.CASCADE,
        related_name="alerts",
        db_index=False,
    )
    signal = models.CharField(_("signal"), max_length=30, choices=AlertSignal)
    episode_at = models.DateTimeField(_("episode started"))
    due_at = models.DateTimeField(_("due at"))
    #: Where the SLA window began; ``due_at - clock_start`` is the SLA's length in wall time,
    #: which severity compares lateness with.
    clock_start = models.DateTimeField(_("clock started"), null=True, blank=True)
    sla = models.DurationField(_("SLA (business time)"))
    raised_at = models.DateTimeField(_("raised at"))
    status = models.CharField(
        _("status"), max_length=20, choices=AlertStatus, default=AlertStatus.OPEN
    )

    acknowledged_at = models.DateTimeField(_("acknowledged at"), null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    dismissed_at = models.DateTimeField(_("dismissed at"), null=True, blank=True)
    dismissed_reason = models.CharField(_("dismissed because"), max_length=255, blank=True)
    resolved_at = models.DateTimeField(_("resolved at"), null=True, blank=True)
    resolution = models.CharField(
        _("resolution"), max_length=10, choices=Resolution, blank=True, default=""
    )
    resolution_note = models.CharField(_("resolution"), max_length=255, blank=True)
    resolved_touch = models.ForeignKey(
        "followup_visibility.Touch",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="resolved_alerts",
        db_index=False,
        db_constraint=False,
    )
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )

    # Snooze: until a time, or until a condition with the time as its limit.
    snoozed_at = models.DateTimeField(_("snoozed at"), null=True, blank=True)
    snoozed_until = models.DateTimeField(_("snoozed until"), null=True, blank=True)
    snooze_condition = models.CharField(
        _("snoozed until"), max_length=20, choices=SnoozeCondition, blank=True, default=""
    )
    snooze_reason = models.CharField(_("snooze reason"), max_length=255, blank=True)
    #: The stage when snoozed, for "until the stage changes".
    snooze_stage = models.CharField(max_length=100, blank=True)

    #: The rule holding a suppressed alert.
    suppression = models.ForeignKey(
        "followup_visibility.Suppression",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="alerts",
        db_index=False,
        db_constraint=False,
    )

    # Escalation is stored (it triggers actions); severity is derived when read (the stored
    # level below only lets the queue read it from an index while it holds).
    escalation_level = models.PositiveSmallIntegerField(_("escalation level"), default=0)
    #: When the next level fires if nobody acknowledges; null when no level is left.
    escalate_at = models.DateTimeField(_("next escalation"), null=True, blank=True)
    escalation_planned = models.BooleanField(default=False, editable=False)
    #: When a snoozed or suppressed alert came back open: its escalation levels count from
    #: here (or from ``due_at`` if later), not from the due time it was put aside after.
    escalation_from = models.DateTimeField(
        _("escalation counts from"), null=True, blank=True, editable=False
    )
    # The severity it has from ``severity_since`` until ``severity_changes_at``, so that the
    # queue can be read in severity order from an index (engine/severity.py, "Stored
    # levels"); outside that span, or before it is first stored, severity is derived.
    severity_level = models.PositiveSmallIntegerField(
        _("severity level"), db_default=0, default=0, editable=False
    )
    # Not null: a level not stored yet ended long ago (``LEVEL_ENDED``), so that "ended by
    # now" is one range of one index, for the planner as for the sweep.
    severity_since = models.DateTimeField(
        db_default=LEVEL_ENDED, default=LEVEL_ENDED, editable=False
    )
    severity_changes_at = models.DateTimeField(
        db_default=LEVEL_ENDED, default=LEVEL_ENDED, editable=False
    )

    # The history table is written as often as the alert table; it is read per alert (``id``)
    # and by date, so the foreign keys' copies go unindexed there.
    history = HistoricalRecords(
        # Who made a change is audit data, set through the ORM: no per-row database check.
        user_db_constraint=False,
        # A cache of the derived severity, moved by the clock: not a change anyone made.
        excluded_fields=["severity_level", "severity_since", "severity_changes_at"],
        no_db_index=[
            "opportunity",
            "acknowledged_by",
            "changed_by",
            "resolved_touch",
            "suppression",
        ],
    )

    objects = AlertQuerySet.as_manager()

    class Meta:
        verbose_name = _("alert")
        verbose_name_plural = _("alerts")
        constraints = [
            models.UniqueConstraint(
                fields=["opportunity", "signal"],
                condition=Q(status__in=ACTIVE_ALERT_STATUSES),
                name="fv_alert_one_active",
            ),
            models.UniqueConstraint(
                fields=["opportunity", "signal", "episode_at"], name="fv_alert_one_per_episode"
            ),
        ]
        # No index on ``due_at`` alone: nothing reads active alerts by due time alone, and
        # each index is an entry per raised alert.
        indexes = [
            # The queue's order: most severe first (as stored), then the earliest due.
            models.Index(
                F("severity_level").desc(),
                "due_at",
                "id",
                condition=Q(status__in=ACTIVE_ALERT_STATUSES),
                name="fv_alert_queue",
            ),
            # Each pass moves the stored levels whose span ended (few per pass); the queue
            # derives those, and those whose span began after its moment.
            models.Index(
                fields=["severity_changes_at"],
                condition=Q(status__in=ACTIVE_ALERT_STATUSES),
                name="fv_alert_level_ends",
            ),
            models.Index(
                fields=["severity_since"],
                condition=Q(status__in=ACTIVE_ALERT_STATUSES),
                name="fv_alert_level_starts",
            ),
            # Raised alerts have no escalation time until it is planned: no entry until then.
            models.Index(
                fields=["escalate_at"],
                condition=Q(status=AlertStatus.OPEN, escalate_at__isnull=False),
                name="fv_alert_escalate_at",
            ),
            # Escalation planning reads only alerts not planned yet.
            models.Index(
                fields=["id"],
                condition=Q(status=AlertStatus.OPEN, escalation_planned=False),
                name="fv_alert_unplanned",
            ),
            # Each pass counts what was resolved since the last one.
            models.Index(
                fields=["resolved_at"],
                condition=Q(status=AlertStatus.RESOLVED),
                name="fv_alert_resolved_at",
            ),
            models.Index(
                fields=["snoozed_until"],
                condition=Q(status=AlertStatus.SNOOZED),
                name="fv_alert_snoozed_until",
            ),
            # Each pass releases suppressed alerts no rule matches any more.
            models.Index(
                fields=["suppression"],
                condition=Q(status=AlertStatus.SUPPRESSED),
                name="fv_alert_suppressed",
            ),
            # Deleting a user, touch or suppression clears these references (SET_NULL).
            *(
                models.Index(
                    fields=[field],
                    condition=Q(**{f"{field}__isnull": False}),
                    name=f"fv_alert_{field}",
                )
                for field in ("acknowledged_by", "changed_by", "resolved_touch", "suppression")
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_signal_display()} on {self.opportunity_id} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_ALERT_STATUSES


class Suppression(models.Model):
    """A rule that keeps alerts from being raised while it is active.

    Every matcher that is set must match (empty ones match everything); at least one must be
    set. While the rule is active no alert is raised for what it matches, and active alerts it
    matches are held as suppressed (out of the register) until it ends.
    """

    opportunity = models.ForeignKey(
        "followup_visibility.TrackedOpportunity",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="suppressions",
    )
    identity_kind = models.CharField(
        _("contact identity kind"), max_length=10, choices=IdentityKind, blank=True
    )
    identity_key = models.CharField(
        _("contact identity"),
        max_length=255,
        blank=True,
        help_text=_("A phone number or email address; normalized when saved."),
    )
    segment = models.ForeignKey(
        "followup_visibility.Segment",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="+",
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="+",
    )
    team = models.ForeignKey(
        "followup_visibility.Team",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="+",
    )
    signal = models.CharField(_("signal"), max_length=30, choices=AlertSignal, blank=True)
    older_than = models.DurationField(
        _("arrived more than"),
        null=True,
        blank=True,
        help_text=_("Matches opportunities that arrived longer ago than this (e.g. 90 days)."),
    )
    starts_at = models.DateTimeField(_("starts at"))
    ends_at = models.DateTimeField(_("ends at"), null=True, blank=True)
    comment = models.CharField(_("comment"), max_length=255)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(_("created at"))

    history = HistoricalRecords()

    objects = SuppressionQuerySet.as_manager()

    class Meta:
        verbose_name = _("suppression")
        verbose_name_plural = _("suppressions")
        ordering = ["-starts_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(ends_at__isnull=True) | Q(ends_at__gt=models.F("starts_at")),
                name="fv_suppression_ends_after_start",
            ),
        ]

    def __str__(self) -> str:
        return self.comment


class InhibitionRule(models.Model):
    """While ``source`` is due on an opportunity, ``target`` is not raised on the same one."""

    source = models.CharField(_("when this is due"), max_length=30, choices=AlertSignal)
    target = models.CharField(_("do not raise"), max_length=30, choices=AlertSignal)
    is_active = models.BooleanField(_("active"), default=True)
    comment = models.CharField(_("comment"), max_length=255, blank=True)

    history = HistoricalRecords()

    class Meta:
        verbose_name = _("inhibition rule")
        verbose_name_plural = _("inhibition rules")
        ordering = ["source", "target"]
        constraints = [
            models.UniqueConstraint(fields=["source", "target"], name="fv_inhibition_unique"),
            models.CheckConstraint(
                condition=~Q(source=models.F("target")), name="fv_inhibition_not_self"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_source_display()} inhibits {self.get_target_display()}"


class SweepRun(models.Model):
    """One sweep pass: what it covered and what it did (the sweep's own consistency record)."""

    started_at = models.DateTimeField(_("started at"))
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)
    #: The pass considered deadlines due up to here (the clock it ran for).
    swept_until = models.DateTimeField(_("swept until"))
    full = models.BooleanField(_("full pass"), default=False)
    examined = models.PositiveIntegerField(_("deadlines examined"), default=0)
    raised = models.PositiveIntegerField(_("alerts raised"), default=0)
    resolved = models.PositiveIntegerField(_("alerts resolved"), default=0)
    woken = models.PositiveIntegerField(_("alerts woken"), default=0)
    suppressed = models.PositiveIntegerField(_("alerts suppressed"), default=0)
    chunks = models.PositiveIntegerField(_("chunks"), default=1)
    chunks_done = models.PositiveIntegerField(_("chunks done"), default=0)
    #: The first key of each chunk done: a chunk retried after it committed counts once.
    done_ranges = models.JSONField(_("chunks done (first keys)"), default=list, editable=False)
    #: Every chunk of a full pass as ``[first, last]`` keys, so that chunks lost with a worker
    #: can be issued again; ``[first, last, issued]`` (ISO 8601) once one was.
    ranges = models.JSONField(_("chunks (key ranges)"), default=list, editable=False)
    lag = models.DurationField(_("lag"), null=True, blank=True)

    class Meta:
        verbose_name = _("sweep run")
        verbose_name_plural = _("sweep runs")
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"{'full' if self.full else 'steady'} sweep until {self.swept_until:%Y-%m-%d %H:%M}"
