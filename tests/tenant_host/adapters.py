from __future__ import annotations

from followup_visibility.adapters import OpportunityAdapter


class CompanyLeadAdapter(OpportunityAdapter):
    stage_field = None
    team_field = "team"
    phone_fields = ("phone",)
    tenant_field = "company"
