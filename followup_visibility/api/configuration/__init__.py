"""``inhibition-rules/`` and ``sla-policies/``: company configuration, read by whoever may view
it in the admin and changed by whoever may change it there (``engine.administration``)."""

from followup_visibility.api.configuration.inhibition_rules import InhibitionRuleViewSet
from followup_visibility.api.configuration.sla_policies import SlaPolicyViewSet

__all__ = ["InhibitionRuleViewSet", "SlaPolicyViewSet"]
