"""Notifications: an in-app inbox and an email digest, logged so nothing is sent twice.

Every message is a :class:`~followup_visibility.models.Notification` row whose ``dedupe_key``
names what it says (kind, severity or level, and which repeat). The unique constraint on (alert,
recipient, channel, dedupe_key) makes creating one idempotent: overlapping or retried passes
insert nothing new. Inbox rows are delivered when created; email rows wait for
:func:`deliver`, which sends one digest per recipient, and for the recipient's working hours
unless the alert is critical. An email row is marked sent only once the mail backend accepted
its digest; until then the outbox tries again, with backoff.
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
    TextField,
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
from followup_visibility.engine import access, calendars, severity
from followup_visibility.engine.business_time import BusinessCalendar, next_opening
from followup_visibility.models import Alert, Escalation, Notification, OutboxMessage, Team

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
    With tenancy, an owner outside the opportunity's tenant is not told (nor counted).
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
                "opportunity__tenant",
            )[:batch]
        )
        if not rows:
            return created
        last_pk = rows[-1][0]
        gate = access.TenantGate.load({row[1] for row in rows})
        rows = [row for row in rows if gate.allows(row[1], row[8])]
        quiet = QuietHours.load({row[1] for row in rows})
        notes: list[Notification] = []
        for pk, owner, level, key, signal, due_at, title, opp_id, _tenant in rows:
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
    escalation: Escalation,
    now: datetime,
    *,
    quiet: QuietHours | None = None,
    gate: access.TenantGate | None = None,
) -> int:
    """Tell the manager an alert was escalated to them (inbox, and email); return rows made.

    The dedupe key is ``escalation:<level>:<step id>``: each step notifies its recipient once
    (a reopened episode climbs the levels again, with new steps). With tenancy, a recipient
    outside the opportunity's tenant is not told (``gate``: the batch's, else read here).
    """
    recipient = escalation.recipient_id
    if recipient is None:
        return 0
    alert = escalation.alert
    opp = alert.opportunity
    gate = gate or access.TenantGate.load([recipient])
    if not gate.allows(recipient, opp.tenant):
        return 0
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


def _close(ids: Sequence[int], now: datetime, note: str) -> None:
    """Mark these rows done without an email, saying why in their body (one statement)."""
    if ids:
        body = Concat(F("body"), Value(f"\n\n{note}"), output_field=TextField())
        Notification.objects.filter(pk__in=ids).update(sent_at=now, body=body)


def _utc(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


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


def _queue_key(recipient_id: Any) -> str:
    """The outbox key of a recipient's digest: a key is pending once at a time (an index)."""
    return f"{EMAIL}:{recipient_id}"


class NotSent(Exception):
    """The mail backend accepted none of a digest, without raising (it fails silently)."""


@dataclass(frozen=True)
class Delivery:
    """What a :func:`deliver` pass did."""

    #: Digests the pass composed and queued in the outbox.
    composed: int = 0
    #: Queued digests (this pass's or earlier ones) its drain completed: each was accepted
    #: by the mail backend.
    sent: int = 0
    #: Attempts of its drain that failed (raised, or accepted by none): tried again later.
    failed: int = 0
    #: Of those, digests given up after their last attempt.
    given_up: int = 0


def deliver(now: datetime, *, recipients_per_batch: int = 100) -> Delivery:
    """Email what is due: compose the digests (:func:`compose`), then send the queued ones.

    They are sent here, after the commit, unless a worker the commit woke got there first:
    ``sent`` counts what this pass's drain sent, retries of earlier digests included.
    """
    composed = compose(now, recipients_per_batch=recipients_per_batch)
    drained = outbox.drain(clock=lambda: now, kinds=[EMAIL])
    return Delivery(composed, drained.done, drained.failed, drained.given_up)


def compose(now: datetime, *, recipients_per_batch: int = 100) -> int:
    """Queue one digest per recipient of the email rows due by ``now``; return how many.

    Each recipient is claimed whole (a transaction-scoped advisory lock) and their due rows
    with ``SELECT ... FOR UPDATE SKIP LOCKED``, so overlapping passes never take the same
    row twice nor split one recipient's messages into two digests. The digest, with the ids
    of its rows, goes into the outbox in that transaction; the rows stay unsent until the
    mail backend accepts it (:func:`send_email`). A recipient whose digest is still queued
    (waiting for a retry) gets no second one: what fell due meanwhile waits for their next.
    Rows are marked sent without an email, with a note in their body, when the recipient
    has no email address (:data:`NO_ADDRESS_NOTE`; the inbox has the message) or the alert
    was closed while the email waited for working hours (:data:`CLOSED_NOTE`).
    """
    due = Notification.objects.filter(
        channel=NotificationChannel.EMAIL, sent_at__isnull=True, deliver_after__lte=now
    )
    recipients = list(
        due.order_by("recipient_id").values_list("recipient_id", flat=True).distinct()
    )
    composed = 0
    for start in range(0, len(recipients), recipients_per_batch):
        with transaction.atomic():
            chunk = recipients[start : start + recipients_per_batch]
            composed += _compose_batch(due, _claim_recipients(chunk), now)
    return composed


def _compose_batch(due: QuerySet[Notification], recipients: list[Any], now: datetime) -> int:
    keys = {_queue_key(r): r for r in recipients}
    queued = set(outbox.pending([EMAIL]).filter(key__in=list(keys)).values_list("key", flat=True))
    rows = (
        due.filter(recipient_id__in=[r for k, r in keys.items() if k not in queued])
        .select_for_update(skip_locked=True, of=("self",))
        .select_related("recipient", "alert")
        .order_by("recipient_id", "created_at", "pk")
    )
    by_recipient: dict[Any, list[Notification]] = {}
    closed: list[int] = []
    for row in rows:
        if row.alert.status in ACTIVE_ALERT_STATUSES:
            by_recipient.setdefault(row.recipient_id, []).append(row)
        else:
            closed.append(row.pk)
    email_field = get_user_model().get_email_field_name()
    unaddressed: list[int] = []
    emails: list[dict[str, Any]] = []
    digest_keys: list[str] = []
    for recipient, notes in by_recipient.items():
        address = getattr(notes[0].recipient, email_field, "") or ""
        if not address:
            unaddressed += [note.pk for note in notes]
            continue
        subject, body = _digest(notes)
        ids = [note.pk for note in notes]
        emails.append({"to": address, "subject": subject, "body": body, "notifications": ids})
        digest_keys.append(_queue_key(recipient))
    _close(closed, now, CLOSED_NOTE)
    _close(unaddressed, now, NO_ADDRESS_NOTE)
    outbox.enqueue(EMAIL, emails, now=now, keys=digest_keys)
    return len(emails)


def send_email(payload: Mapping[str, Any], now: datetime) -> None:
    """The outbox work of a composed digest: send it, then mark its rows sent (one statement).

    A side effect, run after commit. Only a digest the mail backend accepted marks its rows:
    one that raises, or whose ``send()`` returns 0 (a backend failing silently), raises here,
    so the outbox keeps the rows unsent, records the error and tries again after its backoff.
    A digest whose rows are all marked was accepted by an attempt that died before its
    message was marked done: it is not sent again.
    """
    ids = payload.get("notifications")
    unsent = Notification.objects.filter(pk__in=ids or (), sent_at__isnull=True)
    if ids is not None and not unsent.exists():
        return
    message = EmailMessage(payload["subject"], payload["body"], to=[payload["to"]])
    if not message.send():
        raise NotSent("the mail backend accepted none of it (send() returned 0)")
    # A digest queued by an older version carries no ids: its rows were marked when composed.
    if ids is not None:
        unsent.update(sent_at=now)


def delivery_state(note: Notification, now: datetime) -> str:
    """Where an email row's delivery stands, in words (the admin shows it).

    Sent, or closed without an email; held for working hours; due for the next pass; or in
    a queued digest: its attempts, last error and next try, or given up with its error.
    """
    if note.channel != NotificationChannel.EMAIL:
        return _("delivered to the inbox")
    if note.sent_at is not None:
        for reason in (NO_ADDRESS_NOTE, CLOSED_NOTE):
            if note.body.endswith(reason):
                return reason.strip("[]")
        return _("sent at %(at)s") % {"at": _utc(note.sent_at)}
    digests = OutboxMessage.objects.filter(
        kind=EMAIL,
        key=_queue_key(note.recipient_id),
        done_at__isnull=True,
        created_at__gte=note.created_at,
    ).order_by("-pk")
    for digest in digests.iterator():
        if note.pk in digest.payload.get("notifications", ()):
            return _queued_state(digest)
    if note.deliver_after > now:
        return _("held for working hours until %(at)s") % {"at": _utc(note.deliver_after)}
    return _("due: the next delivery pass composes it")


def _queued_state(digest: OutboxMessage) -> str:
    facts = {"n": digest.attempts, "error": digest.last_error}
    if digest.failed_at is not None:
        return _(
            "not sent: given up at %(at)s after %(n)d attempts (%(error)s); the next "
            "delivery pass puts it in a new digest"
        ) % {**facts, "at": _utc(digest.failed_at)}
    if digest.last_error:
        return _(
            "not sent yet: %(n)d attempts, the last error %(error)s; next not before %(at)s"
        ) % {**facts, "at": _utc(digest.available_at)}
    return _("queued to be sent")


def inbox(user: Any) -> QuerySet[Notification]:
    """``user``'s in-app messages, newest first; with tenancy, about their tenants only."""
    mine = Notification.objects.filter(recipient=user, channel=NotificationChannel.INBOX)
    return mine.filter(access.tenant_q(access.user_tenants(user), "alert__opportunity"))


def mark_read(notification_ids: Iterable[int], user: Any, now: datetime) -> int:
    """Mark these inbox messages read, only those that are ``user``'s; return how many."""
    return (
        inbox(user).filter(pk__in=list(notification_ids), read_at__isnull=True).update(read_at=now)
    )
