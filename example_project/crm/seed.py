"""Seeds weeks of realistic inbound demand through the app's public functions.

Time is explicit throughout: each host change is synced and each touch recorded at the moment
it happened, so the demo's handoffs, lags and waiting customers look like a real pipeline.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission

from example_project.crm import seed_alerts, seed_sla
from example_project.crm.models import Deal, Lead
from followup_visibility.choices import Channel, Direction, Outcome
from followup_visibility.ingest.crm import sync_objects
from followup_visibility.ingest.handoffs import accept_handoff
from followup_visibility.ingest.touches import record_touch
from followup_visibility.models import Team, TrackedOpportunity

PASSWORD = "demo"

FIRST = [
    "Ann",
    "Ben",
    "Carla",
    "Dev",
    "Elif",
    "Farid",
    "Greta",
    "Hiro",
    "Ines",
    "Jon",
    "Kemi",
    "Lars",
    "Mina",
    "Noah",
    "Olga",
    "Priya",
    "Quinn",
    "Rosa",
    "Sami",
    "Tara",
    "Uma",
    "Vik",
]
LAST = [
    "Okafor",
    "Schmidt",
    "Rossi",
    "Nguyen",
    "Kowalski",
    "Haddad",
    "Silva",
    "Tanaka",
    "Moreau",
    "Larsen",
    "Patel",
    "Garcia",
    "Cohen",
    "Novak",
    "Berg",
    "Khan",
]
COMPANIES = [
    "Northwind",
    "Acme Dental",
    "Blue Harbor Clinic",
    "Pine Motors",
    "Helio Solar",
    "Urban Loft",
    "Cedar Logistics",
    "Fjord Foods",
    "Atlas Fitness",
    "Nova Print",
]

# Source -> (weight, inbound channel, inbound outcome)
SOURCES: dict[str, tuple[int, Channel, Outcome]] = {
    Lead.Source.MISSED_CALL: (3, Channel.PHONE, Outcome.NO_ANSWER),
    Lead.Source.PRICING: (3, Channel.WEB_FORM, Outcome.SUBMITTED),
    Lead.Source.WEB_FORM: (3, Channel.WEB_FORM, Outcome.SUBMITTED),
    Lead.Source.BROCHURE: (2, Channel.WEB_FORM, Outcome.SUBMITTED),
    Lead.Source.EMAIL: (2, Channel.EMAIL, Outcome.RECEIVED),
    Lead.Source.CHAT: (1, Channel.CHAT, Outcome.RECEIVED),
    Lead.Source.MARKETPLACE: (1, Channel.MARKETPLACE, Outcome.RECEIVED),
}


@dataclass
class SeedSummary:
    users: dict[str, str] = field(default_factory=dict)
    leads: int = 0
    deals: int = 0
    touches: int = 0


def _app(*codenames: str) -> list[str]:
    return [f"followup_visibility.{codename}" for codename in codenames]


def _each(actions: str, *models: str) -> list[str]:
    return _app(*(f"{action}_{model}" for model in models for action in actions.split()))


# Each role is a group with an explicit list of permissions, never a prefix match: "view_"
# would also catch view_all_opportunities, the permission to see every opportunity.
#: The follow-up record of an opportunity: its page, timeline, handoffs, deadlines,
#: duplicates, escalations and the rules holding its alerts (all scoped to what they see).
_RECORD = (
    "trackedopportunity",
    "touch",
    "handoff",
    "deadline",
    "duplicatematch",
    "contactidentity",
    "escalation",
    "suppression",
)
#: Configuration of teams, with its inline rows: a manager adds and changes their teams'.
_TEAM_CONFIGURATION = ("team", "escalationpolicy", "slapolicy")
_CONFIGURATION_ROWS = ("workingwindow", "closeddate", "specialhours", "escalationlevel")
#: Company-wide configuration a manager reads and operations changes.
_COMPANY_CONFIGURATION = ("segment", "segmentrule", "inhibitionrule")

REP_PERMISSIONS = [
    *_each("view", *_RECORD, "alert", "notification"),
    *_app(
        # The triage actions (acknowledge, snooze, dismiss, resolve) on the alerts they see;
        # "Mark as read" on their own inbox needs only view_notification.
        "change_alert",
        # Accepting the handoffs made to them, and logging a touch on their opportunities.
        "change_handoff",
        "add_touch",
    ),
]
MANAGER_PERMISSIONS = [
    *REP_PERMISSIONS,
    # Merge, stall and pin the segment of opportunities; create and end suppression rules.
    *_app("change_trackedopportunity", "add_suppression", "change_suppression"),
    # Their teams' configuration: the admin confines them to the subtree they manage (a
    # calendar only their teams use; adding one needs the see-all permission).
    *_each("view add change", *_TEAM_CONFIGURATION),
    *_each("view change", "calendar"),
    *_each("view add change delete", *_CONFIGURATION_ROWS),
    *_each("view", *_COMPANY_CONFIGURATION),
]
OPS_PERMISSIONS = [
    # The one permission that lifts the scope: every opportunity, alert and notification.
    "followup_visibility.view_all_opportunities",
    *MANAGER_PERMISSIONS,
    *_each("view", "sweeprun"),
    "followup_visibility.add_calendar",
    # SLA policies are retired, never deleted; a rule that started is ended, not deleted.
    *_each("delete", "team", "escalationpolicy", "calendar", "suppression"),
    *_each("add change delete", *_COMPANY_CONFIGURATION),
    # The host CRM's own admin is not scoped: only operations works in it.
    *(f"crm.{action}_{model}" for model in ("lead", "deal") for action in ("view", "change")),
]

#: Group name -> permissions.
ROLES: dict[str, list[str]] = {
    "Sales reps": REP_PERMISSIONS,
    "Sales managers": MANAGER_PERMISSIONS,
    "Sales operations": OPS_PERMISSIONS,
}
#: username, first name, last name, group. Which teams they manage or belong to: seed_sla.
PEOPLE = [
    ("ops", "Sales", "Operations", "Sales operations"),
    ("olivia", "Olivia", "Grant", "Sales managers"),
    ("maria", "Maria", "Lopez", "Sales managers"),
    ("nina", "Nina", "Berg", "Sales managers"),
    ("alex", "Alex", "Reed", "Sales reps"),
    ("bea", "Bea", "Young", "Sales reps"),
    ("chen", "Chen", "Wu", "Sales reps"),
    ("dana", "Dana", "Ortiz", "Sales reps"),
]
#: The demo's logins, in the order the demo prints them.
LOGINS = {"admin": "admin", **{username: PASSWORD for username, *_rest in PEOPLE}}


def permissions(names: list[str]) -> list[Permission]:
    """The permissions named ``app_label.codename``; a name that matches none is an error."""
    wanted = {tuple(name.split(".", 1)) for name in names}
    found = [
        p
        for p in Permission.objects.filter(
            content_type__app_label__in={app for app, _codename in wanted},
            codename__in={codename for _app, codename in wanted},
        ).select_related("content_type")
        if (p.content_type.app_label, p.codename) in wanted
    ]
    missing = wanted - {(p.content_type.app_label, p.codename) for p in found}
    if missing:
        raise LookupError(f"No such permissions: {sorted(missing)}")
    return found


def create_users() -> dict[str, Any]:
    User = get_user_model()
    users: dict[str, Any] = {}
    admin, _ = User.objects.get_or_create(username="admin", defaults={"email": "admin@example.com"})
    admin.is_staff = admin.is_superuser = True
    admin.set_password(LOGINS["admin"])
    admin.save()
    users["admin"] = admin
    groups = {}
    for name, names in ROLES.items():
        groups[name], _ = Group.objects.get_or_create(name=name)
        groups[name].permissions.set(permissions(names))
    for username, first, last, group in PEOPLE:
        user, _ = User.objects.get_or_create(
            username=username,
            defaults={"first_name": first, "last_name": last, "email": f"{username}@example.com"},
        )
        user.is_staff = True
        user.set_password(LOGINS[username])
        user.save()
        # The role is the group alone, so what the demo shows is what the group grants.
        user.user_permissions.clear()
        user.groups.set([groups[group]])
        users[username] = user
    return users


def _phone(rng: random.Random) -> str:
    # 555-01xx numbers are fictional but not valid keys; use real-looking NANP numbers instead.
    area = rng.choice(["212", "646", "415", "312", "617"])
    number = f"{rng.randint(2, 9)}{rng.randint(10, 99)}{rng.randint(1000, 9999)}"
    style = rng.choice(["({a}) {b}-{c}", "+1 {a} {b} {c}", "{a}.{b}.{c}", "1{a}{b}{c}"])
    return style.format(a=area, b=number[:3], c=number[3:])


def seed(now: datetime, *, leads: int = 180, seed_value: int = 42) -> SeedSummary:
    """Create users, leads, deals and their timelines over the six weeks before ``now``."""
    rng = random.Random(seed_value)
    users = create_users()
    config = seed_sla.configure(now, users)
    # A lead goes to a rep of its own team, so that each manager's subtree holds their reps'
    # work and nothing of the other team's.
    reps = {
        key: list(Team.objects.get(key=key).members.order_by("username")) for key in config["teams"]
    }
    summary = SeedSummary(users=dict(LOGINS))
    earlier_phones: list[str] = []
    sources = list(SOURCES)
    weights = [SOURCES[s][0] for s in sources]
    for i in range(leads):
        age = timedelta(minutes=rng.randint(20, 42 * 24 * 60))
        arrived = (now - age).replace(second=0, microsecond=0)
        source = rng.choices(sources, weights)[0]
        name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        duplicate = earlier_phones and rng.random() < 0.06
        phone = rng.choice(earlier_phones) if duplicate else _phone(rng)
        earlier_phones.append(phone)
        lead = Lead.objects.bulk_create(
            [
                Lead(
                    name=name,
                    company=rng.choice(COMPANIES),
                    phone=phone,
                    email=f"{name.split()[0].lower()}.{i}@example.com"
                    if rng.random() < 0.8
                    else "",
                    source=source,
                    team=rng.choice(["us-east", "emea"]),
                    created_at=arrived,
                )
            ]
        )[0]
        # Bulk-created rows send no signal: sync explicitly at the arrival instant.
        sync_objects([lead], arrived)
        summary.leads += 1
        summary.touches += _play(lead, source, arrived, now, reps, rng, summary)
    summary.touches += seed_alerts.play(now, users, rng)
    return summary


def _touch(
    lead: Any, at: datetime, now: datetime, *, lag: timedelta = timedelta(0), **kwargs: Any
) -> None:
    recorded = min(at + lag, now)
    record_touch(lead, occurred_at=at, recorded_at=recorded, now=recorded, **kwargs)


def _play(
    lead: Lead,
    source: str,
    arrived: datetime,
    now: datetime,
    reps: dict[str, list[Any]],
    rng: random.Random,
    summary: SeedSummary,
) -> int:
    """One lead's story: arrival, assignment, attempts, replies, next step, outcome."""
    _w, channel, outcome = SOURCES[source]
    direction = Direction.INBOUND
    _touch(
        lead,
        arrived,
        now,
        channel=channel,
        direction=direction,
        outcome=outcome,
        phone=lead.phone or None,
        source="demo",
        external_id=f"in-{lead.pk}",
    )
    count = 1
    if rng.random() < 0.1:
        return count  # nobody ever picked it up: an ownerless lead
    rep = rng.choice(reps[lead.team])
    assigned = arrived + timedelta(minutes=rng.randint(5, 600))
    if assigned >= now:
        return count
    Lead.objects.filter(pk=lead.pk).update(owner=rep, status=Lead.Status.WORKING)
    lead.refresh_from_db()
    sync_objects([lead], assigned)
    t = assigned
    opp = TrackedOpportunity.objects.for_object(lead).get()
    if rng.random() < 0.15:
        t += timedelta(minutes=rng.randint(10, 120))
        if t < now:
            accept_handoff(opp, rep, t)
    # Email leads get an automatic acknowledgement: it must not count as a response.
    if channel == Channel.EMAIL:
        _touch(
            lead,
            arrived + timedelta(minutes=1),
            now,
            channel=Channel.EMAIL,
            direction=Direction.OUTBOUND,
            outcome=Outcome.SENT,
            source="demo",
            metadata={"headers": {"Auto-Submitted": "auto-replied"}},
        )
        count += 1
    if rng.random() < 0.15:
        return count  # assigned but never contacted
    for _attempt in range(rng.randint(1, 4)):
        t += timedelta(minutes=rng.randint(15, 60 * 30))
        if t >= now:
            return count
        answered = rng.random() < 0.55
        late = timedelta(days=rng.randint(1, 4)) if rng.random() < 0.2 else timedelta(0)
        _touch(
            lead,
            t,
            now,
            channel=Channel.PHONE,
            direction=Direction.OUTBOUND,
            outcome=Outcome.CONNECTED
            if answered
            else rng.choice([Outcome.NO_ANSWER, Outcome.VOICEMAIL]),
            actor=rep,
            lag=late,
            source="demo",
        )
        count += 1
        if answered:
            break
    else:
        return count
    if rng.random() < 0.35:
        # The customer writes back; sometimes nobody answers.
        t += timedelta(hours=rng.randint(2, 72))
        if t < now:
            _touch(
                lead,
                t,
                now,
                channel=Channel.EMAIL,
                direction=Direction.INBOUND,
                outcome=Outcome.RECEIVED,
                email=lead.email or None,
                phone=lead.phone,
                source="demo",
                external_id=f"reply-{lead.pk}",
            )
            count += 1
            if rng.random() < 0.5 and t + timedelta(hours=3) < now:
                _touch(
                    lead,
                    t + timedelta(hours=3),
                    now,
                    channel=Channel.EMAIL,
                    direction=Direction.OUTBOUND,
                    outcome=Outcome.SENT,
                    actor=rep,
                    source="demo",
                )
                count += 1
    roll = rng.random()
    if roll < 0.5:
        next_step = t + timedelta(days=rng.randint(1, 10))
        Lead.objects.filter(pk=lead.pk).update(next_step_at=next_step)
    elif roll < 0.65:
        Lead.objects.filter(pk=lead.pk).update(
            status=Lead.Status.DISQUALIFIED, disqualify_reason="No budget"
        )
    elif roll < 0.85:
        Lead.objects.filter(pk=lead.pk).update(status=Lead.Status.CONVERTED)
        deal = Deal(
            name=f"{lead.company} - {lead.name}",
            lead=lead,
            owner=rep,
            amount=Decimal(rng.randrange(2_000, 80_000, 500)),
            contact_phone=lead.phone,
            contact_email=lead.email,
            team=lead.team,
            created_at=t,
            stage=rng.choice(list(Deal.Stage)[:3]),
            next_step_at=t + timedelta(days=rng.randint(-3, 14)),
        )
        Deal.objects.bulk_create([deal])
        lead.refresh_from_db()
        sync_objects([lead], t)
        sync_objects([deal], t)
        summary.deals += 1
    lead.refresh_from_db()
    sync_objects([lead], min(t, now))
    return count
