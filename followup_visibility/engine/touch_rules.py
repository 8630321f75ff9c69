"""Rules that decide whether a touch is *meaningful*, and why.

Each rule takes a ``TouchDraft`` and returns a ``Verdict`` or ``None`` (no opinion). The rules
named by ``FOLLOWUP_VISIBILITY_TOUCH_RULES`` run in order; the first verdict wins, and a touch
no rule objects to is meaningful because it is customer-facing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from django.utils.module_loading import import_string

from followup_visibility.choices import Channel, Direction, Outcome
from followup_visibility.conf import app_settings


@dataclass(frozen=True)
class TouchDraft:
    channel: str
    direction: str
    outcome: str
    source: str = ""
    summary: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Verdict:
    meaningful: bool
    reason: str


Rule = Callable[[TouchDraft], Verdict | None]

CUSTOMER_FACING = Verdict(True, "customer_facing")


def classify(draft: TouchDraft) -> Verdict:
    """The first verdict of the configured rules; customer-facing when none objects."""
    for rule in _rules(tuple(app_settings.TOUCH_RULES)):
        verdict = rule(draft)
        if verdict is not None:
            return verdict
    return CUSTOMER_FACING


@cache
def _rules(paths: tuple[str, ...]) -> tuple[Rule, ...]:
    # Keyed by the setting's value: ``override_settings`` gets its own rules, and a batch of
    # touches imports each rule once, not once per touch.
    return tuple(import_string(path) for path in paths)


def internal_note(draft: TouchDraft) -> Verdict | None:
    """Notes and other internal events never reach the customer."""
    if draft.direction == Direction.INTERNAL or draft.channel == Channel.NOTE:
        return Verdict(False, "internal_note")
    return None


def stage_change_without_contact(draft: TouchDraft) -> Verdict | None:
    """A stage moved in the CRM: bookkeeping, not contact."""
    if draft.channel == Channel.SYSTEM or draft.metadata.get("event") == "stage_change":
        return Verdict(False, "stage_change")
    return None


# RFC 3834 and the de-facto headers mail systems set on automatic messages.
_AUTO_HEADERS = ("x-autoreply", "x-autorespond", "x-auto-response-suppress")
_AUTO_PRECEDENCE = frozenset({"auto_reply", "bulk", "junk", "list"})


def auto_reply(draft: TouchDraft) -> Verdict | None:
    """Auto-replies both ways: out-of-office answers and "we received your request" mails."""
    headers = {str(k).lower(): str(v).strip().lower() for k, v in _headers(draft).items()}
    auto_submitted = headers.get("auto-submitted", "no")
    if (
        draft.metadata.get("auto_reply") is True
        or auto_submitted != "no"
        or any(name in headers for name in _AUTO_HEADERS)
        or headers.get("precedence") in _AUTO_PRECEDENCE
    ):
        return Verdict(False, "auto_reply")
    return None


def untargeted_template(draft: TouchDraft) -> Verdict | None:
    """A template sent without personalization ignores what the buyer asked."""
    if draft.metadata.get("template") and not draft.metadata.get("personalized"):
        return Verdict(False, "untargeted_template")
    return None


def failed_delivery(draft: TouchDraft) -> Verdict | None:
    if draft.outcome == Outcome.BOUNCED:
        return Verdict(False, "not_delivered")
    return None


def no_conversation(draft: TouchDraft) -> Verdict | None:
    """Our attempt nobody answered (no answer, voicemail, busy, no-show) is not contact.

    Only outbound: a customer's missed call to us is the most urgent inbound signal there is.
    """
    if draft.direction == Direction.OUTBOUND and draft.outcome in {
        Outcome.NO_ANSWER,
        Outcome.VOICEMAIL,
        Outcome.BUSY,
        Outcome.NO_SHOW,
    }:
        return Verdict(False, "no_conversation")
    return None


def _headers(draft: TouchDraft) -> Mapping[str, Any]:
    headers = draft.metadata.get("headers")
    return headers if isinstance(headers, Mapping) else {}
