"""What an alert looks like in the API."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from followup_visibility.api.fields import SEVERITY_NAMES, severity_name
from followup_visibility.api.register import (
    Named,
    OwnerSerializer,
    SegmentSerializer,
    stamper,
    user_ref,
)
from followup_visibility.choices import (
    REASON_OF_SIGNAL,
    AlertSignal,
    AlertStatus,
    Reason,
    Resolution,
    SnoozeCondition,
)
from followup_visibility.models import Alert

SNOOZE_CONDITIONS = [
    (SnoozeCondition.CUSTOMER_REPLIES.value, SnoozeCondition.CUSTOMER_REPLIES.label),
    (SnoozeCondition.STAGE_CHANGES.value, SnoozeCondition.STAGE_CHANGES.label),
]


# The register's shapes under the names the schema gives them here (its components UserRef,
# TeamRef and SegmentRef): renaming them would change the published schema.
class UserRef(OwnerSerializer):
    pass


class TeamRef(Named):
    pass


class SegmentRef(SegmentSerializer):
    pass


class OpportunityRef(serializers.Serializer[Any]):
    id = serializers.IntegerField(source="pk")
    title = serializers.CharField(source="__str__")


def _blank_as_null(value: str) -> str | None:
    return value or None


class AlertSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField(source="pk")
    opportunity = OpportunityRef()
    signal = serializers.ChoiceField(choices=AlertSignal.choices)
    reason = serializers.SerializerMethodField(help_text=_("The signal's reason code."))
    status = serializers.ChoiceField(choices=AlertStatus.choices)
    severity = serializers.SerializerMethodField(
        help_text=_("Derived now from the lateness; null while the alert is not yet due.")
    )
    due_at = serializers.DateTimeField()
    raised_at = serializers.DateTimeField()
    episode_at = serializers.DateTimeField(help_text=_("When the episode's clock started."))
    sla_seconds = serializers.SerializerMethodField(help_text=_("The SLA, in business seconds."))
    escalation_level = serializers.IntegerField()
    acknowledged_at = serializers.DateTimeField(allow_null=True)
    acknowledged_by = UserRef(allow_null=True)
    snoozed_at = serializers.DateTimeField(allow_null=True)
    snoozed_until = serializers.DateTimeField(allow_null=True)
    snooze_condition = serializers.SerializerMethodField(
        help_text=_("What ends the snooze early; null: only the time.")
    )
    snooze_reason = serializers.CharField()
    dismissed_at = serializers.DateTimeField(allow_null=True)
    dismissed_reason = serializers.CharField()
    resolved_at = serializers.DateTimeField(allow_null=True)
    resolution = serializers.SerializerMethodField()
    resolution_note = serializers.CharField()
    owner = UserRef(source="opportunity.owner", allow_null=True)
    team = TeamRef(source="opportunity.team", allow_null=True)
    segment = SegmentRef(source="opportunity.segment", allow_null=True)

    def to_representation(self, instance: Any) -> Any:
        # Written out rather than walked field by field (as the register's rows are): DRF's
        # walk over a page of alerts and their nested opportunity, owner, team and segment
        # cost most of a request's CPU. The declared fields stay the schema; a test holds
        # the two to the same output.
        alert: Alert = instance
        stamp = getattr(self, "_stamp_of", None)
        if stamp is None:
            stamp = self._stamp_of = stamper(self.fields["due_at"])
        opportunity = alert.opportunity
        owner, team, segment = opportunity.owner, opportunity.team, opportunity.segment
        acknowledged_by = alert.acknowledged_by

        def when(value: Any) -> str | None:
            return None if value is None else stamp(value)

        return {
            "id": alert.pk,
            "opportunity": {"id": opportunity.pk, "title": str(opportunity)},
            "signal": alert.signal,
            "reason": REASON_OF_SIGNAL[alert.signal],
            "status": alert.status,
            "severity": self.get_severity(alert),
            "due_at": stamp(alert.due_at),
            "raised_at": stamp(alert.raised_at),
            "episode_at": stamp(alert.episode_at),
            "sla_seconds": self.get_sla_seconds(alert),
            "escalation_level": alert.escalation_level,
            "acknowledged_at": when(alert.acknowledged_at),
            "acknowledged_by": user_ref(acknowledged_by),
            "snoozed_at": when(alert.snoozed_at),
            "snoozed_until": when(alert.snoozed_until),
            "snooze_condition": _blank_as_null(alert.snooze_condition),
            "snooze_reason": alert.snooze_reason,
            "dismissed_at": when(alert.dismissed_at),
            "dismissed_reason": alert.dismissed_reason,
            "resolved_at": when(alert.resolved_at),
            "resolution": _blank_as_null(alert.resolution),
            "resolution_note": alert.resolution_note,
            "owner": user_ref(owner),
            "team": None if team is None else {"id": team.pk, "name": team.name},
            "segment": None if segment is None else {"code": segment.code, "name": segment.name},
        }

    @extend_schema_field(serializers.ChoiceField(choices=Reason.choices))
    def get_reason(self, alert: Alert) -> str:
        return REASON_OF_SIGNAL[alert.signal]

    @extend_schema_field(serializers.ChoiceField(choices=list(SEVERITY_NAMES), allow_null=True))
    def get_severity(self, alert: Any) -> str | None:
        return severity_name(getattr(alert, "severity", None))

    def get_sla_seconds(self, alert: Alert) -> int:
        return int(alert.sla.total_seconds())

    @extend_schema_field(serializers.ChoiceField(choices=SNOOZE_CONDITIONS, allow_null=True))
    def get_snooze_condition(self, alert: Alert) -> str | None:
        return _blank_as_null(alert.snooze_condition)

    @extend_schema_field(
        serializers.ChoiceField(
            choices=[(Resolution.AUTO.value, Resolution.AUTO.label)]
            + [(Resolution.MANUAL.value, Resolution.MANUAL.label)],
            allow_null=True,
        )
    )
    def get_resolution(self, alert: Alert) -> str | None:
        return _blank_as_null(alert.resolution)
