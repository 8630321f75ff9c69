from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _
from simple_history.models import HistoricalRecords

from followup_visibility.choices import Channel, SegmentSource, Status
from followup_visibility.querysets import TrackedOpportunityQuerySet


class TrackedOpportunity(models.Model):
    """Our record of one host lead or deal: a mirror of the host plus what only we know."""

    # The host object, by a text key so that integer and UUID primary keys both work.
    content_type = models.ForeignKey(ContentType, on_delete=models.PROTECT, related_name="+")
    object_pk = models.CharField(_("object key"), max_length=64)
    host_object = GenericForeignKey("content_type", "object_pk")

    # Mirrored from the host through its adapter.
    title = models.CharField(_("title"), max_length=255, blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="followup_opportunities",
    )
    stage = models.CharField(_("stage"), max_length=100, blank=True)
    status = models.CharField(_("status"), max_length=20, choices=Status, default=Status.OPEN)
    close_reason = models.CharField(_("close reason"), max_length=255, blank=True)
    arrived_at = models.DateTimeField(_("arrived at"))
    value = models.DecimalField(_("value"), max_digits=14, decimal_places=2, null=True, blank=True)
    team_key = models.CharField(_("team key"), max_length=100, blank=True)
    segment_hints = models.JSONField(_("segment hints"), default=dict, blank=True)
    #: A segment code reported by the host through its adapter (empty: use the rules).
    segment_code = models.CharField(_("host segment code"), max_length=50, blank=True)
    #: The host company (tenant) the object belongs to, from the adapter's ``tenant``; empty
    #: on single-company hosts, where scope ignores it.
    tenant = models.CharField(_("tenant"), max_length=64, blank=True, db_index=True)

    # Resolved by us (see assignment.py): which team's calendar and which segment's SLAs apply.
    team = models.ForeignKey(
        "followup_visibility.Team",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="opportunities",
    )
    segment = models.ForeignKey(
        "followup_visibility.Segment",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="opportunities",
    )
    segment_source = models.CharField(
        _("segment from"), max_length=20, choices=SegmentSource, blank=True
    )

    # What only we know: ownership confirmation and stage timing.
    owner_confirmed_at = models.DateTimeField(_("owner confirmed at"), null=True, blank=True)
    #: When the CRM last cleared the owner: a "no owner" episode starts there (or at arrival,
    #: for one never owned), so an episode dismissed once does not cover every later time.
    unowned_since = models.DateTimeField(_("without an owner since"), null=True, blank=True)
    stage_entered_at = models.DateTimeField(_("stage entered at"), null=True, blank=True)
    closed_at = models.DateTimeField(_("closed at"), null=True, blank=True)

    # The dated next action, from the host's next-step field or set through our API.
    next_action_due_at = models.DateTimeField(_("next action due"), null=True, blank=True)
    next_action_note = models.CharField(_("next action"), max_length=255, blank=True)
    next_action_set_at = models.DateTimeField(null=True, blank=True)
    next_action_done_at = models.DateTimeField(_("next action done"), null=True, blank=True)

    # Derived from the touch timeline (see timeline.py); rebuilt whenever a touch lands.
    first_outbound_at = models.DateTimeField(_("first outbound attempt"), null=True, blank=True)
    first_response_at = models.DateTimeField(_("first meaningful response"), null=True, blank=True)
    first_response_touch = models.ForeignKey(
        "followup_visibility.Touch",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    last_touch_at = models.DateTimeField(_("last touch"), null=True, blank=True)
    last_meaningful_touch_at = models.DateTimeField(
        _("last meaningful touch"), null=True, blank=True
    )
    last_meaningful_touch = models.ForeignKey(
        "followup_visibility.Touch",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    awaiting_reply_since = models.DateTimeField(_("customer waiting since"), null=True, blank=True)
    last_unanswered_call_at = models.DateTimeField(_("last unanswered call"), null=True, blank=True)
    #: The channel of the chain's earliest customer touch: where the demand came in.
    arrival_channel = models.CharField(
        _("arrival channel"), max_length=20, choices=Channel, blank=True
    )

    # Stalled for a known reason (the customer asked to be called after their budget round):
    # staleness is silenced until the resumption date, and no activity is pretended.
    stalled_until = models.DateTimeField(_("stalled until"), null=True, blank=True)
    stalled_reason = models.CharField(_("stalled because"), max_length=255, blank=True)
    stalled_at = models.DateTimeField(_("stalled at"), null=True, blank=True)
    stalled_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    # Chains: a deal continues its lead; a merged duplicate points at its survivor.
    predecessor = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="successors"
    )
    chain_root = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="chain_members"
    )
    merged_into = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="merged_from"
    )
    merged_at = models.DateTimeField(null=True, blank=True)

    snapshot_digest = models.CharField(max_length=64, blank=True, editable=False)
    synced_at = models.DateTimeField(_("synced at"), null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    history = HistoricalRecords(excluded_fields=["snapshot_digest", "synced_at", "updated_at"])

    objects = TrackedOpportunityQuerySet.as_manager()

    class Meta:
        verbose_name = _("tracked opportunity")
        verbose_name_plural = _("tracked opportunities")
        permissions = [
            ("view_all_opportunities", _("Can see every opportunity and its alerts")),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["content_type", "object_pk"], name="fv_opportunity_unique_host_object"
            ),
        ]
        indexes = [
            models.Index(
                fields=["owner"], condition=Q(status=Status.OPEN), name="fv_opp_open_owner"
            ),
            models.Index(fields=["arrived_at"], name="fv_opp_arrived"),
        ]

    def __str__(self) -> str:
        return self.title or f"{self.content_type_id}:{self.object_pk}"

    @property
    def is_open(self) -> bool:
        return self.status == Status.OPEN

    @property
    def owner_confirmed(self) -> bool:
        return self.owner_id is not None and self.owner_confirmed_at is not None

    @property
    def root_id(self) -> Any:
        return self.chain_root_id or self.pk
