"""How followup_visibility reads this CRM: one adapter per tracked model."""

from __future__ import annotations

from typing import Any

from followup_visibility.adapters import OpportunityAdapter
from followup_visibility.choices import Status


class LeadAdapter(OpportunityAdapter):
    stage_field = "status"
    status_map = {
        "new": Status.OPEN,
        "working": Status.OPEN,
        "converted": Status.CONVERTED,
        "disqualified": Status.DISQUALIFIED,
        "lost": Status.LOST,
    }
    close_reason_field = "disqualify_reason"
    team_field = "team"
    phone_fields = ("phone",)
    email_fields = ("email",)
    next_action_field = "next_step_at"
    segment_hint_fields = ("source",)


class DealAdapter(OpportunityAdapter):
    close_reason_field = "lost_reason"
    value_field = "amount"
    team_field = "team"
    phone_fields = ("contact_phone",)
    email_fields = ("contact_email",)
    next_action_field = "next_step_at"
    predecessor_field = "lead"

    def get_queryset(self) -> Any:
        return super().get_queryset().select_related("lead")

    def get_segment_hints(self, obj: Any) -> dict[str, str]:
        # A deal inherits the channel its lead came from.
        return {"source": obj.lead.source if obj.lead_id else "", "kind": "deal"}
