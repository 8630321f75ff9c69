from followup_visibility.models.alert import Alert, InhibitionRule, Suppression, SweepRun
from followup_visibility.models.calendar import Calendar, ClosedDate, SpecialHours, WorkingWindow
from followup_visibility.models.deadline import Deadline
from followup_visibility.models.escalation import Escalation, EscalationLevel, EscalationPolicy
from followup_visibility.models.generation import ConfigurationGeneration
from followup_visibility.models.identity import ContactIdentity, DuplicateMatch
from followup_visibility.models.notification import Notification
from followup_visibility.models.opportunity import TrackedOpportunity
from followup_visibility.models.org import Segment, SegmentRule, Team
from followup_visibility.models.outbox import OutboxMessage
from followup_visibility.models.ownership import Handoff
from followup_visibility.models.policy import SlaPolicy, SlaPolicyVersion
from followup_visibility.models.register import RegisterRow
from followup_visibility.models.touch import Touch

__all__ = [
    "Alert",
    "SweepRun",
    "Calendar",
    "ClosedDate",
    "ConfigurationGeneration",
    "ContactIdentity",
    "Deadline",
    "DuplicateMatch",
    "Escalation",
    "EscalationLevel",
    "EscalationPolicy",
    "InhibitionRule",
    "Notification",
    "OutboxMessage",
    "RegisterRow",
    "Handoff",
    "Segment",
    "SegmentRule",
    "SlaPolicy",
    "SlaPolicyVersion",
    "SpecialHours",
    "Suppression",
    "Team",
    "Touch",
    "TrackedOpportunity",
    "WorkingWindow",
]
