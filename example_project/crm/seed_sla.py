"""The demo's follow-up configuration: calendars, teams, segments and SLA policies.

Created through the app's public functions, dated before the first seeded lead so that every
lead is measured against it; one policy change is published later, "for new opportunities
only", to show versioning.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from decimal import Decimal
from typing import Any

from followup_visibility.choices import Channel, ClosedDateKind, Direction, Outcome
from followup_visibility.config import calendars as calendar_changes
from followup_visibility.config import policies
from followup_visibility.models import (
    Calendar,
    ClosedDate,
    Segment,
    SegmentRule,
    SlaPolicy,
    SpecialHours,
    Team,
    WorkingWindow,
)

HOURS = timedelta(hours=1)

# code: (name, intent weight, first response, other durations)
SEGMENTS: dict[str, tuple[str, str, dict[str, timedelta]]] = {
    "missed-call": (
        "Missed call",
        "3.00",
        {"first_response": 1 * HOURS, "never_contacted": 1 * HOURS, "call_retry": 1 * HOURS},
    ),
    "pricing": ("Pricing request", "2.50", {"first_response": 4 * HOURS}),
    "demo-request": ("Demo request", "2.00", {"first_response": 2 * HOURS}),
    "brochure": (
        "Brochure download",
        "0.50",
        {"first_response": 24 * HOURS, "never_contacted": 24 * HOURS, "stale": 80 * HOURS},
    ),
}
# Lead.source value -> segment code
SOURCE_SEGMENTS = {
    "missed_call": "missed-call",
    "pricing": "pricing",
    "brochure": "brochure",
    "web_form": "demo-request",
}


def _calendar(
    name: str, tz: str, windows: list[tuple[time, time]], country: str, subdivision: str = ""
) -> Calendar:
    calendar, _ = Calendar.objects.update_or_create(
        name=name,
        defaults={
            "time_zone": tz,
            "holiday_country": country,
            "holiday_subdivision": subdivision,
        },
    )
    calendar.windows.all().delete()
    WorkingWindow.objects.bulk_create(
        WorkingWindow(calendar=calendar, weekday=day, start=start, end=end)
        for day in range(5)
        for start, end in windows
    )
    return calendar


def configure(now: datetime, users: dict[str, Any]) -> dict[str, Any]:
    """Create the demo's calendars, teams, segments and policies, effective from ``since``."""
    since = now - timedelta(days=60)
    years = range(now.year - 1, now.year + 2)
    new_york = _calendar(
        "New York office",
        "America/New_York",
        [(time(9), time(12, 30)), (time(13, 30), time(18))],  # a lunch break: split shift
        "US",
        "NY",
    )
    london = _calendar("London office", "Europe/London", [(time(9), time(17, 30))], "GB", "ENG")
    for calendar in (new_york, london):
        calendar_changes.seed_holidays(calendar, years, now=now)
    # A company closure and a half day, as a manager would enter them.
    ClosedDate.objects.update_or_create(
        calendar=new_york,
        date=(now - timedelta(days=9)).date(),
        defaults={"name": "Sales kick-off (office closed)", "kind": ClosedDateKind.CLOSURE},
    )
    SpecialHours.objects.update_or_create(
        calendar=london,
        date=(now - timedelta(days=16)).date(),
        defaults={"start": time(9), "end": time(13), "name": "Half day: office move"},
    )

    sales, _ = Team.objects.update_or_create(
        # Olivia heads sales: she sees both teams below, and escalation level 2 climbs from
        # Maria's and Nina's teams to her.
        key="sales",
        defaults={"name": "Sales", "manager": users["olivia"]},
    )
    us, _ = Team.objects.update_or_create(
        key="us-east",
        defaults={
            "name": "US East",
            "parent": sales,
            "manager": users["maria"],
            "calendar": new_york,
        },
    )
    us.members.set([users["alex"], users["bea"]])
    emea, _ = Team.objects.update_or_create(
        key="emea",
        defaults={"name": "EMEA", "parent": sales, "manager": users["nina"], "calendar": london},
    )
    emea.members.set([users["chen"], users["dana"]])

    segments = {}
    for code, (name, weight, _durations) in SEGMENTS.items():
        segments[code], _ = Segment.objects.update_or_create(
            code=code, defaults={"name": name, "intent_weight": Decimal(weight)}
        )
    SegmentRule.objects.filter(segment__in=segments.values()).delete()
    # An unanswered inbound call is a missed call whatever the CRM's source field says.
    SegmentRule.objects.create(
        segment=segments["missed-call"],
        priority=10,
        channel=Channel.PHONE,
        direction=Direction.INBOUND,
        outcome=Outcome.NO_ANSWER,
    )
    for source, code in SOURCE_SEGMENTS.items():
        SegmentRule.objects.create(
            segment=segments[code], priority=50, hint_field="source", hint_value=source
        )

    admin = users["admin"]
    default = SlaPolicy.objects.get(is_default=True)
    values = policies.current_values(default)
    values["stage_limits"] = {"proposal": 5 * 8 * 3600, "negotiation": 10 * 8 * 3600}
    policies.publish_version(
        default,
        values,
        now=since,
        apply_to_open=True,
        by=admin,
        comment="Demo: stage limits for proposals and negotiations",
    )
    for code, (name, _weight, durations) in SEGMENTS.items():
        if not SlaPolicy.objects.filter(segment=segments[code], team=None).exists():
            policies.create_policy(
                name, durations, now=since, segment=segments[code], apply_to_open=True, by=admin
            )
    if not SlaPolicy.objects.filter(team=emea, segment=segments["pricing"]).exists():
        policies.create_policy(
            "EMEA pricing",
            {"first_response": 2 * HOURS},
            now=since,
            team=emea,
            segment=segments["pricing"],
            apply_to_open=True,
            by=admin,
        )
    # Versioning: brochure leads from last week on get a tighter first response.
    brochure = SlaPolicy.objects.get(segment=segments["brochure"], team=None)
    tighter = policies.current_values(brochure)
    tighter["first_response"] = 16 * HOURS
    policies.publish_version(
        brochure,
        tighter,
        now=now - timedelta(days=7),
        apply_to_open=False,
        by=admin,
        comment="Brochure: 16 business hours for new leads",
    )
    return {"teams": ["us-east", "emea"], "segments": segments}
