from followup_visibility.models.identity import ContactIdentity, DuplicateMatch
from followup_visibility.models.opportunity import TrackedOpportunity
from followup_visibility.models.ownership import Handoff
from followup_visibility.models.touch import Touch

__all__ = ["ContactIdentity", "DuplicateMatch", "Handoff", "Touch", "TrackedOpportunity"]
