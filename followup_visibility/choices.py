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
