from django.db import models
from django.utils.translation import gettext_lazy as _


class Status(models.TextChoices):
    OPEN = "open", _("Open")
    WON = "won", _("Won")
    LOST = "lost", _("Lost")
    DISQUALIFIED = "disqualified", _("Disqualified")
    #: Closed because it continues as a successor (a lead converted into a deal).
    CONVERTED = "converted", _("Converted")
    #: Folded into another opportunity by a merge; points at the survivor.
    MERGED = "merged", _("Merged")
    #: The host object was deleted.
    DELETED = "deleted", _("Deleted")


class Channel(models.TextChoices):
    PHONE = "phone", _("Phone")
    EMAIL = "email", _("Email")
    SMS = "sms", _("SMS")
    CHAT = "chat", _("Chat")
    WEB_FORM = "web_form", _("Web form")
    MEETING = "meeting", _("Meeting")
    MARKETPLACE = "marketplace", _("Marketplace")
    SOCIAL = "social", _("Social")
    NOTE = "note", _("Internal note")
    SYSTEM = "system", _("System event")


class Direction(models.TextChoices):
    INBOUND = "inbound", _("Inbound")
    OUTBOUND = "outbound", _("Outbound")
    INTERNAL = "internal", _("Internal")


class Outcome(models.TextChoices):
    UNSPECIFIED = "", _("Unspecified")
    CONNECTED = "connected", _("Connected")
    NO_ANSWER = "no_answer", _("No answer")
    VOICEMAIL = "voicemail", _("Voicemail")
    BUSY = "busy", _("Busy")
    SENT = "sent", _("Sent")
    RECEIVED = "received", _("Received")
    REPLIED = "replied", _("Replied")
    BOUNCED = "bounced", _("Bounced")
    HELD = "held", _("Held")
    NO_SHOW = "no_show", _("No-show")
    SUBMITTED = "submitted", _("Submitted")


#: Call outcomes that mean "we tried and nobody talked": they start the call-retry clock.
UNANSWERED_CALL_OUTCOMES = frozenset({Outcome.NO_ANSWER, Outcome.VOICEMAIL, Outcome.BUSY})


class IdentityKind(models.TextChoices):
    PHONE = "phone", _("Phone")
    EMAIL = "email", _("Email")


class AcceptedVia(models.TextChoices):
    EXPLICIT = "explicit", _("Accepted explicitly")
    TOUCH = "touch", _("Owner's first meaningful touch")
    BACKFILL = "backfill", _("Owner predates tracking")


class AlertSignal(models.TextChoices):
    """What is wrong with an opportunity; each has its own clock (see docs/signals)."""

    NO_FIRST_RESPONSE = "no_first_response", _("No first response")
    NEVER_CONTACTED = "never_contacted", _("Never contacted")
    CUSTOMER_WAITING = "customer_waiting", _("Customer waiting")
    CALL_RETRY_DUE = "call_retry_due", _("Call retry due")
    NEXT_ACTION_OVERDUE = "next_action_overdue", _("Next action overdue")
    NO_NEXT_ACTION = "no_next_action", _("No next action")
    STALE = "stale", _("Stale")
    NO_OWNER = "no_owner", _("No owner")
    OWNER_UNCONFIRMED = "owner_unconfirmed", _("Owner unconfirmed")
    CONFLICTING_OWNERS = "conflicting_owners", _("Conflicting owners")
    DUPLICATE = "duplicate", _("Duplicate")
    STAGE_STALLED = "stage_stalled", _("Stage stalled")


class ClosedDateKind(models.TextChoices):
    PUBLIC_HOLIDAY = "public_holiday", _("Public holiday")
    CLOSURE = "closure", _("Company closure")


class SegmentSource(models.TextChoices):
    NONE = "", _("Unassigned")
    MANUAL = "manual", _("Set by hand")
    ADAPTER = "adapter", _("From the host (adapter)")
    RULE = "rule", _("Assignment rule")
    PREDECESSOR = "predecessor", _("Inherited from the lead")


class Weekday(models.IntegerChoices):
    MONDAY = 0, _("Monday")
    TUESDAY = 1, _("Tuesday")
    WEDNESDAY = 2, _("Wednesday")
    THURSDAY = 3, _("Thursday")
    FRIDAY = 4, _("Friday")
    SATURDAY = 5, _("Saturday")
    SUNDAY = 6, _("Sunday")


class AlertStatus(models.TextChoices):
    OPEN = "open", _("Open")
    ACKNOWLEDGED = "acknowledged", _("Acknowledged")
    SNOOZED = "snoozed", _("Snoozed")
    #: Held by a suppression rule: out of the register, back to open when the rule ends.
    SUPPRESSED = "suppressed", _("Suppressed")
    DISMISSED = "dismissed", _("Dismissed")
    RESOLVED = "resolved", _("Resolved")


#: Statuses of an alert whose episode is still running; at most one per (opportunity, signal).
ACTIVE_ALERT_STATUSES = (
    AlertStatus.OPEN,
    AlertStatus.ACKNOWLEDGED,
    AlertStatus.SNOOZED,
    AlertStatus.SUPPRESSED,
)


class AlertTransition(models.TextChoices):
    """A change of an alert's status, as ``alert_status_changed`` announces it."""

    ACKNOWLEDGED = "acknowledged", _("Acknowledged")
    SNOOZED = "snoozed", _("Snoozed")
    WOKEN = "woken", _("Woken from a snooze")
    DISMISSED = "dismissed", _("Dismissed")
    RESOLVED = "resolved", _("Resolved")
    REOPENED = "reopened", _("Reopened: due again")
    HELD = "held", _("Held by a suppression")
    RELEASED = "released", _("Released by its suppression")


class Resolution(models.TextChoices):
    NONE = "", _("Not resolved")
    AUTO = "auto", _("Condition cleared")
    MANUAL = "manual", _("Resolved by hand")


class SnoozeCondition(models.TextChoices):
    """What ends a snooze early; the snooze's time limit ends it in any case."""

    TIME = "", _("Until the time")
    CUSTOMER_REPLIES = "customer_replies", _("Until the customer replies")
    STAGE_CHANGES = "stage_changes", _("Until the stage changes")


class Severity(models.IntegerChoices):
    """Derived when read from how late an alert is (see engine/severity.py); the queue also
    reads it from a stored level while that level holds."""

    LOW = 1, _("Low")
    MEDIUM = 2, _("Medium")
    HIGH = 3, _("High")
    CRITICAL = 4, _("Critical")


class EscalationOutcome(models.TextChoices):
    NOTIFIED = "notified", _("Sent to the manager")
    NO_MANAGER = "no_manager", _("No manager to send to")
    CLEARED = "cleared", _("Breach no longer held")


class NotificationKind(models.TextChoices):
    ALERT = "alert", _("Alert")
    ESCALATION = "escalation", _("Escalation")


class NotificationChannel(models.TextChoices):
    INBOX = "inbox", _("In-app inbox")
    EMAIL = "email", _("Email")


class Reason(models.TextChoices):
    """Why an opportunity is in the unfollowed register: the reason code of its signals."""

    NO_FIRST_TOUCH = "no_first_touch", _("No first touch")
    STALE_TOUCH = "stale_touch", _("Stale touch")
    AWAITING_REPLY = "awaiting_reply", _("Customer awaiting a reply")
    OVERDUE_NEXT_ACTION = "overdue_next_action", _("Overdue next action")
    MISSING_NEXT_ACTION = "missing_next_action", _("Missing next action")
    NO_OWNER = "no_owner", _("No confirmed owner")
    CONFLICTING_OWNERS = "conflicting_owners", _("Conflicting owners")
    DUPLICATE = "duplicate", _("Duplicate")
    STALLED_STAGE = "stalled_stage", _("Stalled in a stage")


#: The register's reason code of each signal (the signal catalogue in docs/alerts.md).
REASON_OF_SIGNAL: dict[str, str] = {
    AlertSignal.NO_FIRST_RESPONSE: Reason.NO_FIRST_TOUCH,
    AlertSignal.NEVER_CONTACTED: Reason.STALE_TOUCH,
    AlertSignal.CALL_RETRY_DUE: Reason.STALE_TOUCH,
    AlertSignal.STALE: Reason.STALE_TOUCH,
    AlertSignal.CUSTOMER_WAITING: Reason.AWAITING_REPLY,
    AlertSignal.NEXT_ACTION_OVERDUE: Reason.OVERDUE_NEXT_ACTION,
    AlertSignal.NO_NEXT_ACTION: Reason.MISSING_NEXT_ACTION,
    AlertSignal.NO_OWNER: Reason.NO_OWNER,
    AlertSignal.OWNER_UNCONFIRMED: Reason.NO_OWNER,
    AlertSignal.CONFLICTING_OWNERS: Reason.CONFLICTING_OWNERS,
    AlertSignal.DUPLICATE: Reason.DUPLICATE,
    AlertSignal.STAGE_STALLED: Reason.STALLED_STAGE,
}


def signals_of_reason(reason: str) -> list[str]:
    """The signals whose reason code is ``reason``."""
    return [signal for signal, code in REASON_OF_SIGNAL.items() if code == reason]
