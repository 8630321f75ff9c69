from __future__ import annotations

from datetime import timedelta
from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import connection, transaction
from django.db.models import Count
from django.urls import reverse
from django.utils import timezone
from rest_framework.authtoken.models import Token

from example_project.crm.models import Lead
from example_project.crm.seed import LOGINS, seed
from followup_visibility.alerting import notifications
from followup_visibility.choices import ACTIVE_ALERT_STATUSES, AlertSignal, AlertStatus, Status
from followup_visibility.engine import access
from followup_visibility.models import (
    Alert,
    Deadline,
    DuplicateMatch,
    Escalation,
    Handoff,
    Notification,
    Team,
    Touch,
    TrackedOpportunity,
)


def _restore_migration_defaults() -> None:
    """``flush`` empties every table, including the rows our data migrations created."""
    from django.apps import apps

    for name, function in [
        ("0003_company_defaults", "create_defaults"),
        ("0006_default_escalation_policy", "create"),
    ]:
        module = import_module(f"followup_visibility.migrations.{name}")
        getattr(module, function)(apps, None)


def login_lines() -> list[str]:
    """One line per demo login: password, role, and what ``access`` lets the user see."""
    users = get_user_model().objects.in_bulk(list(LOGINS), field_name="username")
    # A database seeded by an older demo may lack some logins: list those it has.
    present = [(users[name], LOGINS[name]) for name in LOGINS if name in users]
    width = max(len(f"{user.username} / {password}") for user, password in present)
    return [
        f"{f'{user.username} / {password}':<{width}}  {_role(user)}: {_sees(user)}"
        for user, password in present
    ]


def _role(user: Any) -> str:
    if user.is_superuser:
        return "superuser"
    if access.sees_everything(user):
        return f"operations ({access.SEE_ALL_PERMISSION})"
    managed = list(
        Team.objects.filter(manager=user).order_by("name").values_list("name", flat=True)
    )
    if managed:
        return f"manager of {', '.join(managed)}"
    member = list(user.followup_teams.order_by("name").values_list("name", flat=True))
    return f"rep in {', '.join(member)}" if member else "staff"


def _sees(user: Any) -> str:
    if access.sees_everything(user):
        scope = "sees all"
        inbox = Notification.objects.all()  # the whole notification log, as the admin shows it
    else:
        managed = access.managed_team_ids(user)
        names = Team.objects.filter(pk__in=managed).order_by("name").values_list("name", flat=True)
        scope = f"sees {', '.join(names)}:" if managed else "sees own"
        inbox = notifications.inbox(user)
    alerts = access.alerts_for(user)
    active = alerts.filter(status__in=ACTIVE_ALERT_STATUSES).count()
    return (
        f"{scope} {access.opportunities_for(user).count()} opportunities, "
        f"{alerts.count()} alerts ({active} active), {inbox.count()} notifications"
    )


def api_tokens() -> dict[str, str]:
    """Each demo login's API token, created on the first run and kept on the next ones."""
    users = get_user_model().objects.filter(username__in=list(LOGINS))
    keys = {user.username: Token.objects.get_or_create(user=user)[0].key for user in users}
    return {name: keys[name] for name in LOGINS if name in keys}


def api_lines(base: str) -> list[str]:
    """The demo logins' tokens, one curl that fetches a rep's queue, the schema and reference."""
    tokens = api_tokens()
    if not tokens:
        return []
    width = max(len(name) for name in tokens)
    lines = [f"  {name:<{width}}  {key}" for name, key in tokens.items()]
    if "alex" in tokens:
        register = base + reverse("followup_visibility_api:register-list")
        lines.append("alex's queue (the unfollowed register, alex's rows only):")
        lines.append(f'  curl -H "Authorization: Token {tokens["alex"]}" {register}')
    schema = base + reverse("followup_visibility_api:schema")
    page = base + reverse("followup_visibility_api:reference")
    width = max(len(schema), len(page))
    lines.append("The API's contract:")
    lines.append(f"  {schema:<{width}}  the OpenAPI schema")
    lines.append(f"  {page:<{width}}  the API reference (signed in to the admin, or with a token)")
    return lines


class Command(BaseCommand):
    help = "Migrate, seed weeks of demo demand and serve the example CRM."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--no-serve", action="store_true", help="Seed, print and exit.")
        parser.add_argument("--reseed", action="store_true", help="Wipe and seed again.")
        parser.add_argument("--leads", type=int, default=180)
        parser.add_argument("--addrport", default="127.0.0.1:8000")

    def handle(self, *args: Any, **options: Any) -> None:
        db = settings.DATABASES["default"]
        self.stdout.write(f"Database: {db['ENGINE'].rsplit('.', 1)[-1]} {db['NAME']}")
        call_command("migrate", verbosity=0)
        if options["reseed"]:
            call_command("flush", interactive=False, verbosity=0)
            _restore_migration_defaults()
        if Lead.objects.exists():
            self.stdout.write("Demo data already present (use --reseed to start over).")
        else:
            self.stdout.write("Seeding six weeks of inbound demand ...")
            with transaction.atomic():
                summary = seed(timezone.now(), leads=options["leads"])
            self.stdout.write(
                f"Seeded {summary.leads} leads, {summary.deals} deals, {summary.touches} touches."
            )
        self._print_overview(options["addrport"])
        if not options["no_serve"]:
            call_command("runserver", options["addrport"], use_reloader=False)

    def _print_overview(self, addrport: str) -> None:
        opps = TrackedOpportunity.objects
        open_ = opps.open()
        rows = [
            ("open opportunities", open_.count()),
            ("  without owner", open_.unowned().count()),
            ("  owner not confirmed", open_.owner_unconfirmed().count()),
            ("  no first response yet", open_.filter(first_response_at__isnull=True).count()),
            (
                "  customer waiting for a reply",
                open_.filter(awaiting_reply_since__isnull=False).count(),
            ),
            (
                "  unanswered call to retry",
                open_.filter(last_unanswered_call_at__isnull=False).count(),
            ),
            (
                "touches (meaningful)",
                f"{Touch.objects.count()} ({Touch.objects.filter(is_meaningful=True).count()})",
            ),
            (
                "touches logged a day or more late",
                Touch.objects.filter(logging_lag__gte=timedelta(days=1)).count(),
            ),
            (
                "duplicate pairs (by phone/email)",
                DuplicateMatch.objects.filter(cleared_at__isnull=True).count() // 2,
            ),
            (
                "pending handoffs",
                Handoff.objects.filter(
                    accepted_at__isnull=True, superseded_at__isnull=True
                ).count(),
            ),
            ("closed (won/lost/disqualified/converted)", opps.exclude(status=Status.OPEN).count()),
        ]
        now = timezone.now()
        overdue = Deadline.objects.filter(due_at__lte=now)
        rows.append(
            (
                "overdue now: opportunities (deadlines)",
                f"{overdue.values('opportunity').distinct().count()} ({overdue.count()})",
            )
        )
        by_signal = overdue.values_list("signal").annotate(n=Count("id")).order_by("-n", "signal")
        labels = dict(AlertSignal.choices)
        rows += [(f"  {labels[signal]}", n) for signal, n in by_signal]
        active = Alert.objects.filter(status__in=ACTIVE_ALERT_STATUSES)
        rows.append(
            (
                "active alerts (open)",
                f"{active.count()} ({active.filter(status=AlertStatus.OPEN).count()})",
            )
        )
        statuses = dict(AlertStatus.choices)
        by_status = active.values_list("status").annotate(n=Count("id")).order_by("status")
        rows += [(f"  {statuses[status]}", n) for status, n in by_status]
        alert_signals = active.values_list("signal").annotate(n=Count("id")).order_by("signal")
        rows.append(("alerts by signal", ", ".join(f"{s} {n}" for s, n in alert_signals)))
        by_recipient = (
            Escalation.objects.values_list("recipient__username")
            .annotate(n=Count("id"))
            .order_by("recipient__username")
        )
        rows.append(
            (
                "escalations by recipient",
                ", ".join(f"{name or 'nobody'} {n}" for name, n in by_recipient),
            )
        )
        width = max(len(label) for label, _ in rows)
        self.stdout.write("")
        for label, value in rows:
            self.stdout.write(f"  {label:<{width}}  {value}")
        base = f"http://{addrport}"
        self.stdout.write(f"\nOpen {base}/admin/ and log in as (what each sees, counted now):")
        for line in login_lines():
            self.stdout.write(f"  {line}")
        self.stdout.write(f"""
  {base}/admin/followup_visibility/alert/                alerts: triage (acknowledge, snooze, ...)
  {base}/admin/followup_visibility/suppression/          suppression rules
  {base}/admin/followup_visibility/escalationpolicy/     escalation policies
  {base}/admin/followup_visibility/escalation/           escalations as they happened
  {base}/admin/followup_visibility/notification/         your inbox
  {base}/admin/followup_visibility/sweeprun/             sweep passes (lag, examined, raised)
  {base}/admin/followup_visibility/trackedopportunity/   tracked opportunities
  {base}/admin/followup_visibility/touch/                touch timeline
  {base}/admin/followup_visibility/deadline/             deadlines (business time)
  {base}/admin/followup_visibility/slapolicy/            SLA policies, versions, what-if
  {base}/admin/followup_visibility/calendar/             business calendars and holidays
  {base}/admin/followup_visibility/team/                 teams (US East, EMEA)
  {base}/admin/crm/lead/                                 the host CRM's leads (admin, ops)
""")
        self.stdout.write("\nAPI tokens (send one as the header Authorization: Token <key>):")
        for line in api_lines(base):
            self.stdout.write(line)
        if connection.vendor == "sqlite":
            self.stdout.write(f"(SQLite file: {settings.DATABASES['default']['NAME']})")
