from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from followup_visibility.alerting import escalation, notifications
from followup_visibility.management.commands._clock import add_now_argument, parse_now


class Command(BaseCommand):
    help = (
        "Escalate unacknowledged alerts past their policy's levels, notify owners of "
        "high-severity alerts and deliver pending notifications (the escalate and notify "
        "tasks, for hosts that schedule with cron)."
    )

    def add_arguments(self, parser: Any) -> None:
        add_now_argument(parser)
        parser.add_argument(
            "--no-notify", action="store_true", help="Escalate only; send no notifications."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        now = parse_now(options["now"])
        figures = escalation.escalate(now)
        self.stdout.write(
            "escalation: " + ", ".join(f"{value} {name}" for name, value in figures.items())
        )
        if not options["no_notify"]:
            created = notifications.notify_alerts(now)
            done = notifications.deliver(now)
            # "sent": accepted by the mail backend. A failed digest stays queued for a retry.
            self.stdout.write(
                f"notifications: {created} created, {done.composed} email digests composed, "
                f"{done.sent} sent, {done.failed} failed"
                + (f", {done.given_up} given up" if done.given_up else "")
            )
