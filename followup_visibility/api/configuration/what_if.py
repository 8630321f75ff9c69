"""``sla-policies/{id}/what-if/``: what a proposed change of a policy would make overdue now."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

from followup_visibility.api import base
from followup_visibility.api.configuration.durations import Durations, duration_fields
from followup_visibility.api.fields import JsonBoolean, JsonNumber
from followup_visibility.api.register import Named
from followup_visibility.choices import AlertSignal
from followup_visibility.config import policies, preview
from followup_visibility.models import SlaPolicy


class WhatIfRequest(base.Strict):
    """Proposed values; those left out keep the newest version's."""

    stage_limits = serializers.DictField(
        child=JsonNumber(),
        required=False,
        allow_null=True,
        help_text=_("Business seconds allowed in each stage, replacing the current limits."),
    )
    retired = JsonBoolean(
        required=False, help_text=_("Preview retiring this scope (not the company default).")
    )

    def get_fields(self) -> dict[str, Any]:
        return {**duration_fields(required=False), **super().get_fields()}


class WhatIfRow(serializers.Serializer[Any]):
    signal = serializers.ChoiceField(choices=AlertSignal.choices)
    segment = Named(allow_null=True)
    current = serializers.IntegerField(help_text=_("Overdue deadlines now, as things are."))
    proposed = serializers.IntegerField(help_text=_("Overdue now under the proposed values."))
    change = serializers.IntegerField()


class WhatIfDraft(Durations):
    stage_limits = serializers.DictField(child=serializers.FloatField())
    retired = serializers.BooleanField()


class WhatIfResult(serializers.Serializer[Any]):
    now = serializers.DateTimeField()
    examined = serializers.IntegerField(help_text=_("Open opportunities in the policy's scope."))
    current = serializers.IntegerField(help_text=_("Opportunities overdue now, as things are."))
    proposed = serializers.IntegerField(
        help_text=_("Opportunities overdue now under the proposed values.")
    )
    change = serializers.IntegerField(help_text=_("proposed - current"))
    draft = WhatIfDraft(help_text=_("The values compared: the newest version's, as proposed."))
    rows = WhatIfRow(many=True, help_text=_("By signal and segment, largest change first."))


def compare(policy: SlaPolicy, proposed: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The ``WhatIfResult`` of ``proposed`` (a valid ``WhatIfRequest``) over the newest
    version's values: nothing is saved."""
    proposed = dict(proposed)
    values = policies.current_values(policy)
    retired = proposed.pop("retired", None)
    if retired is None:
        latest = policy.versions.order_by("-number").first()
        retired = bool(latest and latest.retired)
    if "stage_limits" in proposed:
        proposed["stage_limits"] = proposed["stage_limits"] or {}
    values.update(proposed)
    result = preview.what_if(values, now=now, policy=policy, retired=retired)
    rows = [
        {
            **row,
            "segment": (
                {"id": row["segment_id"], "name": row["segment"]}
                if row["segment_id"] is not None
                else None
            ),
        }
        for row in result.rows()
    ]
    return {
        "now": result.now,
        "examined": result.examined,
        "current": result.current_opportunities,
        "proposed": result.proposed_opportunities,
        "change": result.proposed_opportunities - result.current_opportunities,
        "draft": {
            **values,
            "stage_limits": values.get("stage_limits") or {},
            "retired": retired,
        },
        "rows": rows,
    }
