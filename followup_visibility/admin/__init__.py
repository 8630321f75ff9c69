"""The admin: the follow-up record (opportunities, touches, deadlines) and its configuration.

Importing the modules registers their model admins; Django's autodiscovery imports this one.
"""

from followup_visibility.admin import calendar, deadline, opportunity, org, policy

__all__ = ["calendar", "deadline", "opportunity", "org", "policy"]
