"""The admin: the follow-up record, alert triage, and their configuration.

Importing the modules registers their model admins; Django's autodiscovery imports this one.
"""

from followup_visibility.admin import (
    alert,
    calendar,
    deadline,
    escalation,
    opportunity,
    org,
    policy,
    suppressions,
)

__all__ = [
    "alert",
    "calendar",
    "deadline",
    "escalation",
    "opportunity",
    "org",
    "policy",
    "suppressions",
]
