"""Notifications: once per key and interval, held for quiet hours, emailed as one digest."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO
from smtplib import SMTPServerDisconnected
from typing import Any

import pytest
from django.core import mail
from django.core.mail.backends.base import BaseEmailBackend
from django.core.management import call_command
from django.db import connection, transaction
from django.db.models import QuerySet
from django.test import override_settings
from django.urls import reverse

from followup_visibility.alerting import lifecycle, notifications, outbox, sweep
from followup_visibility.alerting.notifications import Delivery
from followup_visibility.choices import AlertSignal, NotificationChannel, NotificationKind, Severity
from followup_visibility.engine import severity
from followup_visibility.models import (
    Alert,
    Notification,
    OutboxMessage,
    Segment,
    TrackedOpportunity,
)
from tests.conftest import postgres_only
from tests.factories_sla import install_defaults, lead_at, make_calendar, make_team, ny, opportunity

SECOND, HOUR = timedelta(seconds=1), timedelta(hours=1)
LONG = 200 * HOUR
DURATIONS: dict[str, timedelta | None] = {
    "first_response": HOUR,
    "never_contacted": LONG,
    "reply": LONG,
    "call_retry": LONG,
    "next_action_grace": LONG,
    "no_next_action": LONG,
    "stale": LONG,
    "owner_assignment": LONG,
    "handoff_acceptance": LONG,
}
#: Monday 2 March 2026 in New York (calendar 9-17): arrives 10:00, first response due 11:00.
#: The SLA spans one hour, so the alert is high from 12:00 and critical from 14:00.
ARRIVAL, DUE = ny(3, 2, 10), ny(3, 2, 11)
HIGH_AT, CRITICAL_AT = ny(3, 2, 12), ny(3, 2, 14)


@pytest.fixture(autouse=True)
def earlier_severity_scale(settings: Any) -> None:
    """These tests are about the notification mechanics and keep the scale they were written
    on (high from one SLA late, critical from three); the calibrated default and when it
    notifies are tests/test_severity.py's."""
    settings.FOLLOWUP_VISIBILITY_SEVERITY_THRESHOLDS = (0.25, 1.0, 3.0)
    settings.FOLLOWUP_VISIBILITY_NOTIFY_MIN_SEVERITY = "high"


@dataclass
class Setup:
    rep: Any
    make_user: Callable[..., Any]


@pytest.fixture
def setup(db: Any, make_user: Callable[..., Any]) -> Setup:
    install_defaults(durations=DURATIONS)
    rep = make_user("rep", email="rep@example.com")
    make_team("sales", members=[rep])
    return Setup(rep, make_user)


def alert_for(owner: Any, arrival: datetime = ARRIVAL) -> Alert:
    """A lead's first-response alert, raised by the sweep when it fell due."""
    lead = lead_at(arrival, owner=owner, team="sales")
    sweep.sweep(arrival + HOUR, full=True)
    return Alert.objects.get(opportunity=opportunity(lead), signal=AlertSignal.NO_FIRST_RESPONSE)


def notes_of(alert: Alert) -> list[tuple[str, str]]:
    return sorted(Notification.objects.filter(alert=alert).values_list("channel", "dedupe_key"))


def test_an_unchanged_alert_is_notified_once(setup: Setup) -> None:
    alert = alert_for(setup.rep)
    assert notifications.notify_alerts(HIGH_AT - timedelta(seconds=1)) == 0  # still medium
    assert notifications.notify_alerts(HIGH_AT) == 1
    assert notifications.notify_alerts(HIGH_AT + HOUR / 2) == 0
    assert notes_of(alert) == [("email", "alert:3:0"), ("inbox", "alert:3:0")]
    inbox = Notification.objects.get(alert=alert, channel=NotificationChannel.INBOX)
    assert inbox.recipient == setup.rep and inbox.kind == NotificationKind.ALERT
    assert inbox.sent_at == inbox.created_at == inbox.deliver_after == HIGH_AT
    assert inbox.subject.startswith("High: No first response")


def test_a_severity_change_is_news(setup: Setup) -> None:
    alert = alert_for(setup.rep)
    notifications.notify_alerts(HIGH_AT)
    assert notifications.notify_alerts(CRITICAL_AT - timedelta(seconds=1)) == 0
    assert notifications.notify_alerts(CRITICAL_AT) == 1
    assert [k for c, k in notes_of(alert) if c == "inbox"] == ["alert:3:0", "alert:4:0"]


@override_settings(FOLLOWUP_VISIBILITY_NOTIFY_REPEAT=HOUR + HOUR / 2)
def test_an_unchanged_alert_is_sent_again_a_whole_interval_after_the_last_message(
    setup: Setup,
) -> None:
    alert = alert_for(setup.rep)  # raised at 11:00, high from 12:00, critical from 14:00
    assert notifications.notify_alerts(HIGH_AT) == 1
    # Counted from the message, not from the raise (11:00 + 1.5 h would be 12:30).
    assert notifications.notify_alerts(ny(3, 2, 13, 29)) == 0
    assert notifications.notify_alerts(ny(3, 2, 13, 30)) == 1
    assert notifications.notify_alerts(ny(3, 2, 13, 59)) == 0
    assert [k for c, k in notes_of(alert) if c == "inbox"] == ["alert:3:0", "alert:3:1"]


def test_the_key_counts_the_earlier_messages_at_that_severity(setup: Setup) -> None:
    alert = alert_for(setup.rep)
    now = ny(3, 3, 15, 17)
    assert severity.of_alert(alert, now) == Severity.CRITICAL
    pending = notifications.pending_alerts
    assert list(pending(now).values_list("notify_key", flat=True)) == ["alert:4:0"]
    assert notifications.notify_alerts(now) == 1
    assert not pending(now + 24 * HOUR - timedelta(seconds=1)).exists()
    assert list(pending(now + 24 * HOUR).values_list("notify_key", flat=True)) == ["alert:4:1"]


def test_a_reopened_episode_is_news(setup: Setup) -> None:
    alert = alert_for(setup.rep)
    assert notifications.notify_alerts(HIGH_AT) == 1
    # Resolved automatically, then due again: a new raise, at the same severity.
    Alert.objects.filter(pk=alert.pk).update(
        status="resolved", resolution="auto", resolved_at=HIGH_AT + HOUR / 4
    )
    sweep.sweep(HIGH_AT + HOUR / 2, full=True)
    alert.refresh_from_db()
    assert (alert.status, alert.raised_at) == ("open", HIGH_AT + HOUR / 2)
    assert notifications.notify_alerts(HIGH_AT + HOUR / 2) == 1
    assert [k for c, k in notes_of(alert) if c == "inbox"] == ["alert:3:0", "alert:3:1"]


@override_settings(FOLLOWUP_VISIBILITY_NOTIFY_MIN_SEVERITY="critical")
def test_only_alerts_as_severe_as_the_setting_notify(setup: Setup) -> None:
    alert_for(setup.rep)
    assert notifications.notify_alerts(HIGH_AT) == 0
    assert notifications.notify_alerts(CRITICAL_AT) == 1


@override_settings(FOLLOWUP_VISIBILITY_NOTIFY_EMAIL=False)
def test_without_email_only_the_inbox_is_written(setup: Setup) -> None:
    alert = alert_for(setup.rep)
    notifications.notify_alerts(HIGH_AT)
    assert notes_of(alert) == [("inbox", "alert:3:0")]


def test_only_open_owned_alerts_notify(setup: Setup) -> None:
    acknowledged = alert_for(setup.rep)
    lifecycle.acknowledge(acknowledged, by=setup.rep, now=DUE)
    unowned = alert_for(None)
    assert unowned.signal == AlertSignal.NO_FIRST_RESPONSE
    assert notifications.notify_alerts(CRITICAL_AT) == 0
    assert not Notification.objects.exists()


def test_quiet_hours_hold_a_non_critical_email_until_the_next_opening(
    setup: Setup, mailoutbox: list[mail.EmailMessage]
) -> None:
    # Both fall due at 17:00, when the office closes; at 18:00 one is high, the other critical
    # because its segment's intent triples its lateness.
    plain = alert_for(setup.rep, ny(3, 2, 16))
    keen = alert_for(setup.rep, ny(3, 2, 16))
    hot = Segment.objects.create(code="hot", name="Hot", intent_weight=Decimal("3.00"))
    TrackedOpportunity.objects.filter(pk=keen.opportunity_id).update(segment=hot)
    evening = ny(3, 2, 18)
    assert notifications.notify_alerts(evening) == 2

    def email(alert: Alert) -> Notification:
        return Notification.objects.get(alert=alert, channel=NotificationChannel.EMAIL)

    assert email(plain).subject.startswith("High") and email(keen).subject.startswith("Critical")
    assert email(plain).deliver_after == ny(3, 3, 9)
    assert email(keen).deliver_after == evening
    assert Notification.objects.filter(channel="inbox", deliver_after=evening).count() == 2

    assert notifications.deliver(evening) == Delivery(composed=1, sent=1)
    assert len(mailoutbox) == 1 and "Critical" in mailoutbox[0].body
    assert notifications.deliver(ny(3, 3, 8, 59)) == Delivery()
    assert notifications.deliver(ny(3, 3, 9)) == Delivery(composed=1, sent=1)
    assert "High" in mailoutbox[1].body
    assert email(plain).sent_at == ny(3, 3, 9)


def test_quiet_hours_follow_the_recipients_own_calendar(setup: Setup) -> None:
    london = make_calendar("London", "Europe/London")
    abroad = setup.make_user("abroad", email="abroad@example.com")
    make_team("emea", calendar=london, members=[abroad])
    alert = alert_for(abroad, ny(3, 2, 16))  # a New York opportunity, a London owner
    notifications.notify_alerts(ny(3, 2, 18))  # 23:00 in London
    email = Notification.objects.get(alert=alert, channel=NotificationChannel.EMAIL)
    assert email.deliver_after == datetime(2026, 3, 3, 9, 0, tzinfo=UTC)  # 09:00 in London


def test_a_digest_groups_a_recipients_notifications_into_one_email(
    setup: Setup, mailoutbox: list[mail.EmailMessage]
) -> None:
    made = [alert_for(setup.rep) for _ in range(3)]
    other = setup.make_user("other", email="other@example.com")
    alert_for(other)
    assert notifications.notify_alerts(HIGH_AT) == 4
    assert notifications.deliver(HIGH_AT) == Delivery(composed=2, sent=2)
    assert len(mailoutbox) == 2
    (digest,) = [m for m in mailoutbox if m.to == ["rep@example.com"]]
    assert digest.subject == "3 follow-ups need you"
    assert digest.body.count("High: No first response") == 3
    (single,) = [m for m in mailoutbox if m.to == ["other@example.com"]]
    assert single.subject == "1 follow-up needs you"
    assert not Notification.objects.filter(channel="email", sent_at__isnull=True).exists()
    assert Notification.objects.filter(alert__in=made, sent_at=HIGH_AT).count() == 6
    assert notifications.deliver(HIGH_AT + HOUR) == Delivery()
    assert len(mailoutbox) == 2


def test_a_recipient_without_an_address_keeps_the_inbox_only(
    setup: Setup, mailoutbox: list[mail.EmailMessage]
) -> None:
    mute = setup.make_user("mute", email="")
    alert = alert_for(mute)
    notifications.notify_alerts(HIGH_AT)
    assert notifications.deliver(HIGH_AT) == Delivery()
    assert mailoutbox == []
    email = Notification.objects.get(alert=alert, channel=NotificationChannel.EMAIL)
    assert email.sent_at == HIGH_AT and notifications.NO_ADDRESS_NOTE in email.body
    inbox = Notification.objects.get(alert=alert, channel=NotificationChannel.INBOX)
    assert inbox.read_at is None and notifications.NO_ADDRESS_NOTE not in inbox.body


def test_a_failed_email_is_tried_again_and_others_go_out(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = setup.make_user("broken", email="broken@example.com")
    alert_for(broken)
    alert_for(setup.rep)
    notifications.notify_alerts(HIGH_AT)
    original = mail.EmailMessage.send

    def send(message: mail.EmailMessage, fail_silently: bool = False) -> int:
        if message.to == ["broken@example.com"]:
            raise OSError("connection refused")
        return original(message, fail_silently)

    monkeypatch.setattr(mail.EmailMessage, "send", send)
    assert notifications.deliver(HIGH_AT) == Delivery(composed=2, sent=1, failed=1)
    assert [m.to for m in mail.outbox] == [[setup.rep.email]]
    # The failed digest waits in the outbox with its error, for the next pass.
    waiting = outbox.pending([notifications.EMAIL])
    assert [m.payload["to"] for m in waiting] == ["broken@example.com"]
    assert "connection refused" in waiting.get().last_error
    unsent = email_rows().filter(sent_at__isnull=True)
    assert list(unsent.values_list("recipient", flat=True)) == [broken.pk]
    monkeypatch.undo()
    assert notifications.deliver(HIGH_AT + HOUR) == Delivery(sent=1)  # nothing new; sent again
    assert not outbox.pending([notifications.EMAIL]).exists()
    assert [m.to for m in mail.outbox] == [[setup.rep.email], ["broken@example.com"]]
    assert not Notification.objects.filter(channel="email", sent_at__isnull=True).exists()


class AcceptsNothing(BaseEmailBackend):
    """A backend that fails silently: it reports no message sent and raises nothing."""

    def send_messages(self, email_messages: Sequence[mail.EmailMessage]) -> int:
        return 0


class Refuses(BaseEmailBackend):
    def send_messages(self, email_messages: Sequence[mail.EmailMessage]) -> int:
        raise SMTPServerDisconnected("the mail server hung up")


SILENT = "tests.test_notifications.AcceptsNothing"
RAISING = "tests.test_notifications.Refuses"


def email_rows() -> QuerySet[Notification]:
    return Notification.objects.filter(channel=NotificationChannel.EMAIL)


@pytest.mark.parametrize(
    ("backend", "error"), [(SILENT, "accepted none"), (RAISING, "the mail server hung up")]
)
def test_an_email_the_backend_did_not_send_stays_pending_until_a_retry_sends_it_once(
    setup: Setup, mailoutbox: list[mail.EmailMessage], backend: str, error: str
) -> None:
    # Fails on the code before the fix: the rows were marked sent when the digest was composed,
    # and a 0 from send() marked its message done (the email lost, never retried).
    alert_for(setup.rep)
    alert_for(setup.rep)
    notifications.notify_alerts(HIGH_AT)
    with override_settings(EMAIL_BACKEND=backend):
        assert notifications.deliver(HIGH_AT) == Delivery(composed=1, failed=1)
        assert not email_rows().filter(sent_at__isnull=False).exists()
        waiting = outbox.pending([notifications.EMAIL]).get()
        assert waiting.attempts == 1 and error in waiting.last_error
        assert waiting.available_at == HIGH_AT + outbox.BACKOFF[0]
        note = email_rows().first()
        assert note is not None and error in notifications.delivery_state(note, HIGH_AT)

        # Before its backoff nothing is tried; after it, tried again: the rows are in that
        # digest, so the pass composes no second one.
        assert notifications.deliver(HIGH_AT + SECOND) == Delivery()
        retry = HIGH_AT + outbox.BACKOFF[0]
        assert notifications.deliver(retry) == Delivery(failed=1)
        assert outbox.pending([notifications.EMAIL]).get().attempts == 2
        assert email_rows().filter(sent_at__isnull=True).count() == 2
    assert mailoutbox == []

    later = retry + outbox.BACKOFF[1]
    assert notifications.deliver(later) == Delivery(sent=1)
    assert [m.subject for m in mailoutbox] == ["2 follow-ups need you"]
    assert set(email_rows().values_list("sent_at", flat=True)) == {later}
    sent = OutboxMessage.objects.get(kind=notifications.EMAIL)
    assert (sent.done_at, sent.attempts) == (later, 3)
    # Nothing left: no pass, drain or retry sends it again.
    assert notifications.deliver(later + HOUR) == Delivery()
    assert outbox.drain(clock=lambda: later + 2 * HOUR) == outbox.DrainResult()
    assert len(mailoutbox) == 1


def test_a_digest_accepted_before_its_done_mark_is_not_sent_again(
    setup: Setup, mailoutbox: list[mail.EmailMessage]
) -> None:
    # Fails on the code before the fix: the retried message sent the digest a second time.
    alert_for(setup.rep)
    notifications.notify_alerts(HIGH_AT)
    assert notifications.deliver(HIGH_AT) == Delivery(composed=1, sent=1)
    # The worker died after the backend accepted it and the rows were marked, before its
    # message was marked done: the message is claimed again once its lease runs out.
    OutboxMessage.objects.update(done_at=None, available_at=HIGH_AT)
    assert notifications.deliver(HIGH_AT + HOUR) == Delivery(sent=1)
    assert len(mailoutbox) == 1
    assert email_rows().get().sent_at == HIGH_AT  # marked once, by the accepted attempt
    assert not outbox.pending([notifications.EMAIL]).exists()


def test_a_given_up_digest_keeps_its_error_and_its_rows_go_in_the_next_digest(
    setup: Setup, mailoutbox: list[mail.EmailMessage], admin_client: Any
) -> None:
    # Fails on the code before the fix: the rows were marked sent though nothing was sent.
    first = alert_for(setup.rep)
    notifications.notify_alerts(HIGH_AT)
    moment = HIGH_AT
    with override_settings(EMAIL_BACKEND=SILENT):
        assert notifications.deliver(moment).composed == 1
        for wait in outbox.BACKOFF:
            moment += wait
            assert notifications.deliver(moment).composed == 0
    given_up = OutboxMessage.objects.get(kind=notifications.EMAIL)
    assert given_up.failed_at == moment and given_up.attempts == 8
    assert "accepted none" in given_up.last_error
    note = email_rows().get(alert=first)
    assert note.sent_at is None
    state = notifications.delivery_state(note, moment)
    assert "given up" in state and "accepted none" in state
    page = admin_client.get(
        reverse("admin:followup_visibility_notification_change", args=[note.pk])
    )
    assert "given up" in page.content.decode() and "accepted none" in page.content.decode()

    # The backend works again, and the alert turned critical meanwhile (news): one digest
    # carries the given-up message and the new one.
    assert notifications.notify_alerts(moment) == 1
    assert notifications.deliver(moment) == Delivery(composed=1, sent=1)
    assert [m.subject for m in mailoutbox] == ["2 follow-ups need you"]
    assert not email_rows().filter(sent_at__isnull=True).exists()
    assert OutboxMessage.objects.get(pk=given_up.pk).failed_at == moment  # kept, as it was
    note.refresh_from_db()
    sent_at = f"sent at {moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
    assert notifications.delivery_state(note, moment) == sent_at


@override_settings(EMAIL_BACKEND=SILENT)
def test_the_command_counts_the_digests_the_backend_accepted(setup: Setup) -> None:
    # Fails on the code before the fix: it said nothing of what was sent, and marked it sent.
    alert_for(setup.rep)
    out = StringIO()
    call_command("followup_escalate", "--now", HIGH_AT.isoformat(), stdout=out)
    assert out.getvalue().splitlines()[-1] == (
        "notifications: 1 created, 1 email digests composed, 0 sent, 1 failed"
    )
    with override_settings(EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend"):
        out = StringIO()
        call_command("followup_escalate", "--now", (HIGH_AT + HOUR).isoformat(), stdout=out)
    assert out.getvalue().splitlines()[-1] == (
        "notifications: 0 created, 0 email digests composed, 1 sent, 0 failed"
    )


def test_composing_costs_the_same_few_queries_for_any_number_of_rows(
    setup: Setup, django_assert_max_num_queries: Any
) -> None:
    others = [setup.make_user(f"rep{i}", email=f"rep{i}@example.com") for i in range(3)]
    for owner in [setup.rep, *others]:
        for _ in range(3):
            alert_for(owner)
    mute = setup.make_user("mute", email="")
    alert_for(mute)
    notifications.notify_alerts(HIGH_AT)
    # Composing: the recipients, then per batch the lock, the queued digests, the rows, the
    # no-address mark and the insert of the digests; the drain is per digest.
    with django_assert_max_num_queries(8):
        assert notifications.compose(HIGH_AT) == 4
    assert email_rows().get(recipient=mute).sent_at == HIGH_AT
    assert email_rows().filter(sent_at__isnull=True).count() == 12


def test_mark_read_touches_only_the_users_own_inbox(setup: Setup) -> None:
    other = setup.make_user("other", email="other@example.com")
    mine, theirs = alert_for(setup.rep), alert_for(other)
    notifications.notify_alerts(HIGH_AT)
    ids = list(Notification.objects.values_list("pk", flat=True))
    assert notifications.mark_read(ids, setup.rep, HIGH_AT + HOUR) == 1
    read = Notification.objects.filter(read_at__isnull=False)
    assert list(read.values_list("alert", "channel", "read_at")) == [
        (mine.pk, "inbox", HIGH_AT + HOUR)
    ]
    assert notifications.mark_read(ids, setup.rep, HIGH_AT + 2 * HOUR) == 0
    assert not Notification.objects.filter(alert=theirs, read_at__isnull=False).exists()
    assert list(notifications.inbox(other).values_list("alert", flat=True)) == [theirs.pk]


def test_severity_names_in_subjects_match_the_levels(setup: Setup) -> None:
    alert = alert_for(setup.rep)
    notifications.notify_alerts(CRITICAL_AT)
    note = Notification.objects.get(alert=alert, channel="inbox")
    assert note.subject.startswith(str(Severity.CRITICAL.label))


def test_an_email_held_overnight_is_dropped_if_the_alert_closes_meanwhile(
    setup: Setup, mailoutbox: list[mail.EmailMessage]
) -> None:
    alert = alert_for(setup.rep, ny(3, 2, 16))
    notifications.notify_alerts(ny(3, 2, 18))
    lifecycle.resolve(alert, evidence="Called from my mobile", by=setup.rep, now=ny(3, 2, 19))
    assert notifications.deliver(ny(3, 3, 9)) == Delivery()
    assert mailoutbox == []
    email = Notification.objects.get(alert=alert, channel=NotificationChannel.EMAIL)
    assert email.sent_at == ny(3, 3, 9) and notifications.CLOSED_NOTE in email.body


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_recipient_another_pass_is_mailing_is_skipped_whole(
    make_user: Callable[..., Any], mailoutbox: list[mail.EmailMessage]
) -> None:
    install_defaults(durations=DURATIONS)
    rep = make_user("rep", email="rep@example.com")
    for _ in range(3):
        lead_at(ARRIVAL, owner=rep)
    sweep.sweep(DUE, full=True)
    assert notifications.notify_alerts(CRITICAL_AT) == 3
    holding, release = threading.Event(), threading.Event()

    def other_pass() -> None:
        try:
            with transaction.atomic():
                # Another pass has claimed the recipient and not committed yet.
                assert notifications._claim_recipients([rep.pk]) == [rep.pk]
                holding.set()
                release.wait(10)
        finally:
            connection.close()

    thread = threading.Thread(target=other_pass)
    thread.start()
    try:
        assert holding.wait(10)
        # Row locks alone would let this pass take the rows: here it leaves the recipient.
        assert notifications.deliver(CRITICAL_AT) == Delivery()
    finally:
        release.set()
        thread.join()
    # Committed here: the worker the commit woke (the suite's eager app) sends it first.
    assert notifications.deliver(CRITICAL_AT) == Delivery(composed=1)
    assert len(mailoutbox) == 1 and mailoutbox[0].to == ["rep@example.com"]


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_overlapping_passes_notify_and_email_once(
    make_user: Callable[..., Any], mailoutbox: list[mail.EmailMessage]
) -> None:
    install_defaults(durations=DURATIONS)  # transactional tests start from an empty database
    owners = [make_user(f"rep{i}", email=f"rep{i}@example.com") for i in range(5)]
    for owner in owners:
        for _ in range(3):
            lead_at(ARRIVAL, owner=owner)
    sweep.sweep(DUE, full=True)
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait()
            notifications.notify_alerts(HIGH_AT, batch=4)
            notifications.deliver(HIGH_AT, recipients_per_batch=2)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert Notification.objects.count() == 30  # 15 alerts x (inbox, email)
    assert sorted(m.to[0] for m in mailoutbox) == sorted(o.email for o in owners)
    assert {m.subject for m in mailoutbox} == {"3 follow-ups need you"}
