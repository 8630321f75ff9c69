"""Notifications: an in-app inbox and an email digest, logged so nothing is sent twice.

Every message is a :class:`~followup_visibility.models.Notification` row whose ``dedupe_key``
names what it says (kind, severity or level, and which repeat). The unique constraint on (alert,
recipient, channel, dedupe_key) makes creating one idempotent: overlapping or retried passes
insert nothing new. Inbox rows are delivered when created; email rows wait for
:func:`deliver`, which sends one digest per recipient, and for the recipient's working hours
unless the alert is critical.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMessage
from django.db import transaction
from django.db.models import (
    CharField,
    Count,
    Exists,
    F,
    IntegerField,
    OuterRef,
    QuerySet,
    Subquery,
    Value,
)
from django.db.models.functions import Cast, Coalesce, Concat
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from followup_visibility.alerting import outbox, sql
from followup_visibility.choices import (
    ACTIVE_ALERT_STATUSES,
    AlertSignal,
    AlertStatus,
    NotificationChannel,
    NotificationKind,
    Severity,
)
from followup_visibility.conf import app_settings
from followup_visibility.engine import calendars, severity
from followup_visibility.engine.business_time import BusinessCalendar, next_opening
from followup_visibility.models import Alert, Escalation, Notification, Team

logger = logging.getLogger(__name__)

#: Appended to an email notification marked sent for a recipient without an address: the
#: message stays in their inbox, and the log says why no email went out.
NO_ADDRESS_NOTE = "[Not emailed: the recipient has no email address.]"
#: Likewise for an email whose alert was resolved or dismissed before it could go out.
CLOSED_NOTE = "[Not emailed: the alert was closed before delivery.]"


@dataclass(frozen=True)
class QuietHours:
    """When each recipient's working time next begins: read once per pass for its recipients.

    A recipient's calendar is that of a team they manage, else of a team they belong to (the
    lowest-numbered), else the company default.
    """

    calendar_of: dict[Any, int | None]
    default_calendar: int | None
    engines: dict[int, BusinessCalendar]

    @classmethod
    def load(cls, user_ids: Iterable[Any]) -> QuietHours:
        users = set(user_ids)
        teams = calendars.TeamCalendars.load()
        calendar_of: dict[Any, int | None] = {}
        managed = Team.objects.filter(manager__in=users).order_by("pk")
        for manager, team in managed.values_list("manager_id", "pk"):
            calendar_of.setdefault(manager, teams.by_team.get(team, teams.default))
        # Through the relation, not the through table: its column is named after the user model.
        member = Team.objects.filter(members__in=users).order_by("pk")
        for user, team in member.values_list("members", "pk"):
            calendar_of.setdefault(user, teams.by_team.get(team, teams.default))
        return cls(calendar_of, teams.default, dict(teams.engines))

    def deliver_after(self, user_id: Any, now: datetime, *, critical: bool) -> datetime:
        """``now`` for a critical message or inside working hours, else the next opening."""
        if critical:
            return now
        calendar_id = self.calendar_of.get(user_id, self.default_calendar)
        engine = self.engines.get(calendar_id) if calendar_id is not None else None
        return next_opening(engine, now) if engine is not None else now


def _label(value: int | None) -> str:
    return str(Severity(value).label) if value else ""


def _alert_rows(
    alert_id: int,
    recipient_id: Any,
    kind: str,
    key: str,
    subject: str,
    body: str,
    now: datetime,
    deliver_after: datetime,
    escalation: Escalation | None = None,
) -> list[Notification]:
    common: dict[str, Any] = {
        "alert_id": alert_id,
        "recipient_id": recipient_id,
        "escalation": escalation,
        "kind": kind,
        "dedupe_key": key,
        "subject": subject[:255],
        "body": body,
        "created_at": now,
    }
    rows = [
        Notification(channel=NotificationChannel.INBOX, deliver_after=now, sent_at=now, **common)
    ]
    if app_settings.NOTIFY_EMAIL:
        rows.append(
            Notification(channel=NotificationChannel.EMAIL, deliver_after=deliver_after, **common)
        )
    return rows


def _minimum() -> Severity:
    try:
        level = severity.named(app_settings.NOTIFY_MIN_SEVERITY)
    except ValueError as exc:
        raise ImproperlyConfigured(f"FOLLOWUP_VISIBILITY_NOTIFY_MIN_SEVERITY: {exc}") from None
    return level


def pending_alerts(now: datetime) -> QuerySet[Any]:
    """Open, owned alerts severe enough to notify whose owner is due a message about them.

    Due: no message at this severity since the alert was raised, or the last one is at least
    ``NOTIFY_REPEAT`` old. A new severity is news, and so is a new raise (a reopened episode).
    Annotated with ``severity`` and ``notify_key``: ``alert:<severity>:<n>``, ``n`` counting
    the owner's earlier messages about the alert at that severity. Two overlapping passes
    compute the same key, so the unique constraint keeps one message.
    """
    repeat = app_settings.NOTIFY_REPEAT
    if repeat.total_seconds() <= 0:
        raise ImproperlyConfigured("FOLLOWUP_VISIBILITY_NOTIFY_REPEAT must be positive.")
    candidates = severity.at_least(
        Alert.objects.filter(
            status=AlertStatus.OPEN,
            opportunity__owner__isnull=False,
            due_at__lte=now,
            raised_at__lte=now,
        ),
        _minimum(),
        now,
    ).annotate(
        notify_prefix=Concat(
            Value("alert:"), Cast(F("severity"), CharField()), Value(":"), output_field=CharField()
        )
    )
    # The owner's messages about the alert at its current severity (any raise).
    sent = Notification.objects.filter(
        alert=OuterRef("pk"),
        recipient=OuterRef("opportunity__owner"),
        channel=NotificationChannel.INBOX,
        kind=NotificationKind.ALERT,
        dedupe_key__startswith=OuterRef("notify_prefix"),
    )
    recent = sent.filter(created_at__gte=OuterRef("raised_at"), created_at__gt=now - repeat)
    earlier = sent.order_by().values("alert").annotate(n=Count("pk")).values("n")
    return candidates.filter(~Exists(recent)).annotate(
        notify_key=Concat(
            F("notify_prefix"),
            Cast(Coalesce(Subquery(earlier, output_field=IntegerField()), 0), CharField()),
            output_field=CharField(),
        )
    )


def notify_alerts(now: datetime, *, batch: int = 2000) -> int:
    """Notify owners of open alerts at or above ``NOTIFY_MIN_SEVERITY``; return how many
    alerts this pass found due a message (an overlapping pass may have written some of them).

    Each gets an inbox message and, with ``NOTIFY_EMAIL``, an email (held until the owner's
    working hours unless the alert is critical). Only alerts whose owner is due a message
    are read (see :func:`pending_alerts`), so a pass costs in proportion to what is new.
    """
    created, last_pk = 0, 0
    while True:
        rows = list(
            pending_alerts(now)
            .filter(pk__gt=last_pk)
            .order_by("pk")
            .values_list(
                "pk",
                "opportunity__owner",
                "severity",
                "notify_key",
                "signal",
                "due_at",
                "opportunity__title",
                "opportunity_id",
            )[:batch]
        )
        if not rows:
            return created
        last_pk = rows[-1][0]
        quiet = QuietHours.load({row[1] for row in rows})
        notes: list[Notification] = []
        for pk, owner, level, key, signal, due_at, title, opp_id in rows:
            what = _("%(signal)s on %(title)s") % {
                "signal": AlertSignal(signal).label,
                "title": title or _("opportunity %(pk)s") % {"pk": opp_id},
            }
            subject = f"{_label(level)}: {what}"
            body = _("%(what)s: due since %(due)s UTC, nobody has acted yet.") % {
                "what": what,
                "due": f"{due_at.astimezone(UTC):%Y-%m-%d %H:%M}",
            }
            critical = level == Severity.CRITICAL
            after = quiet.deliver_after(owner, now, critical=critical)
            notes += _alert_rows(pk, owner, NotificationKind.ALERT, key, subject, body, now, after)
        # The unique key makes a concurrent pass's rows and ours one set.
        Notification.objects.bulk_create(notes, ignore_conflicts=True)
        created += len(rows)


def notify_escalation(
    escalation: Escalation, now: datetime, *, quiet: QuietHours | None = None
) -> int:
    """Tell the manager an alert was escalated to them (inbox, and email); return rows made.

    The dedupe key is ``escalation:<level>:<step id>``: each step notifies its recipient once
    (a reopened episode climbs the levels again, with new steps).
    """
    recipient = escalation.recipient_id
    if recipient is None:
        return 0
    alert = escalation.alert
    opp = alert.opportunity
    level = severity.of_alert(alert, now)
    what = _("%(signal)s on %(title)s") % {
        "signal": alert.get_signal_display(),
        "title": opp.title or _("opportunity %(pk)s") % {"pk": opp.pk},
    }
    subject = _("Escalated to you (level %(n)d): %(what)s") % {"n": escalation.level, "what": what}
    owner = opp.owner.get_username() if opp.owner is not None else _("nobody")
    body = _(
        "%(what)s has been due since %(due)s UTC and is still not acknowledged. "
        "Owner: %(owner)s. Severity: %(severity)s."
    ) % {
        "what": what,
        "due": f"{alert.due_at.astimezone(UTC):%Y-%m-%d %H:%M}",
        "owner": owner,
        "severity": _label(level).lower() or "-",
    }
    quiet = quiet or QuietHours.load([recipient])
    after = quiet.deliver_after(recipient, now, critical=level == Severity.CRITICAL)
    rows = _alert_rows(
        alert.pk,
        recipient,
        NotificationKind.ESCALATION,
        f"escalation:{escalation.level}:{escalation.pk}",
        subject,
        body,
        now,
        after,
        escalation=escalation,
    )
    Notification.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


def _digest(notes: Sequence[Notification]) -> tuple[str, str]:
    count = len(notes)
    subject = ngettext("%(n)d follow-up needs you", "%(n)d follow-ups need you", count) % {
        "n": count
    }
    lines = [subject + ":", ""]
    for note in notes:
        lines += [f"- {note.subject}", f"  {note.body}", ""]
    return subject, "\n".join(lines).rstrip() + "\n"


def _mark(notes: Sequence[Notification], now: datetime, note: str = "") -> None:
    for row in notes:
        row.sent_at = now
        if note:
            row.body = f"{row.body}\n\n{note}".strip()


#: The first key of the per-recipient advisory locks ``deliver`` takes ("fvdl").
_DELIVER_LOCK = int.from_bytes(b"fvdl", "big") - 2**31


def _claim_recipients(recipient_ids: list[Any]) -> list[Any]:
    """The recipients whose transaction-scoped advisory lock this pass got (PostgreSQL).

    Row locks alone let two passes split one recipient's rows between them (each skipping
    what the other had locked), and send two digests. A recipient another pass is mailing is
    skipped whole; its rows are sent when that pass commits. SQLite has one writer: all.
    """
    return sql.try_advisory_locks(_DELIVER_LOCK, recipient_ids)


#: The outbox kind of a composed email (sent after commit, never under the pass's locks).
EMAIL = "followup_visibility.email"


def deliver(now: datetime, *, recipients_per_batch: int = 100) -> int:
    """Email what is due: one digest per recipient per pass; return how many it composed.

    Composing and sending are apart. Each recipient is claimed whole (a transaction-scoped
    advisory lock) and their pending email rows with ``SELECT ... FOR UPDATE SKIP LOCKED``,
    so overlapping passes never take the same row twice nor split one recipient's messages
    into two digests; the digest is queued in the outbox and the rows marked sent in the same
    transaction. The queued digests are sent after that transaction commits, outside any
    lock, each once (here, or by a worker the commit woke): a pass retried after it sent
    finds nothing left to send, and an email that fails is tried again by the next drain of
    the outbox. Rows are marked sent without an
    email, with a note in their body, when the recipient has no email address
    (:data:`NO_ADDRESS_NOTE`; the inbox has the message) or the alert was closed while the
    email waited for working hours (:data:`CLOSED_NOTE`).
    """
    due = Notification.objects.filter(
        channel=NotificationChannel.EMAIL, sent_at__isnull=True, deliver_after__lte=now
    )
    recipients = list(
        due.order_by("recipient_id").values_list("recipient_id", flat=True).distinct()
    )
    email_field = get_user_model().get_email_field_name()
    composed = 0
    for start in range(0, len(recipients), recipients_per_batch):
        chunk = recipients[start : start + recipients_per_batch]
        with transaction.atomic():
            chunk = _claim_recipients(chunk)
            claimed = list(
                due.filter(recipient_id__in=chunk)
                .select_for_update(skip_locked=True, of=("self",))
                .select_related("recipient", "alert")
                .order_by("recipient_id", "created_at", "pk")
            )
            by_recipient: dict[Any, list[Notification]] = {}
            done: list[Notification] = []
            emails: list[dict[str, Any]] = []
            for row in claimed:
                if row.alert.status in ACTIVE_ALERT_STATUSES:
                    by_recipient.setdefault(row.recipient_id, []).append(row)
                else:
                    _mark([row], now, CLOSED_NOTE)
                    done.append(row)
            for notes in by_recipient.values():
                address = getattr(notes[0].recipient, email_field, "") or ""
                if not address:
                    _mark(notes, now, NO_ADDRESS_NOTE)
                    done += notes
                    continue
                subject, body = _digest(notes)
                emails.append({"to": address, "subject": subject, "body": body})
                _mark(notes, now)
                done += notes
            Notification.objects.bulk_update(done, ["sent_at", "body"])
            outbox.enqueue(EMAIL, emails, now=now)
            composed += len(emails)
    # Sent here unless a worker woken by the commit got there first.
    outbox.drain(clock=lambda: now, kinds=[EMAIL])
    return composed


def send_email(payload: Mapping[str, Any], now: datetime) -> None:
    """The outbox work of a composed email: send it (a side effect, after commit)."""
    EmailMessage(payload["subject"], payload["body"], to=[payload["to"]]).send()


def inbox(user: Any) -> QuerySet[Notification]:
    """``user``'s in-app messages, newest first."""
    return Notification.objects.filter(recipient=user, channel=NotificationChannel.INBOX)


def mark_read(notification_ids: Iterable[int], user: Any, now: datetime) -> int:
    """Mark these inbox messages read, only those that are ``user``'s; return how many."""
    return (
        inbox(user).filter(pk__in=list(notification_ids), read_at__isnull=True).update(read_at=now)
    )
