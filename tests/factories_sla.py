"""Calendars, teams, segments, SLA policies and opportunities with exact clocks, for SLA tests.

Migration 0003's company defaults are gone after any transactional test flushed the database,
so SLA tests install their own with ``install_defaults``: a New York Monday-Friday 09:00-17:00
calendar and a default policy whose durations all differ, so that a mixed-up signal shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.db import connection, models

from example_project.crm.models import Deal, Lead
from followup_visibility.config import policies
from followup_visibility.engine import calendars
from followup_visibility.ingest.crm import sync_objects
from followup_visibility.models import (
    Calendar,
    Deadline,
    Segment,
    SlaPolicy,
    SlaPolicyVersion,
    Team,
    TrackedOpportunity,
    WorkingWindow,
)

NEW_YORK = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
#: Before any arrival in the tests: versions effective from here apply to every opportunity.
EPOCH = datetime(2020, 1, 1, tzinfo=UTC)
WEEKDAYS_9_TO_5 = tuple((day, time(9), time(17)) for day in range(5))

#: The test company default: every duration distinct.
DURATIONS: dict[str, timedelta] = {
    "first_response": timedelta(hours=1),
    "never_contacted": timedelta(hours=2),
    "reply": timedelta(hours=3),
    "call_retry": timedelta(minutes=30),
    "next_action_grace": timedelta(minutes=45),
    "no_next_action": timedelta(hours=5),
    "stale": timedelta(hours=16),
    "owner_assignment": timedelta(minutes=90),
    "handoff_acceptance": timedelta(hours=4),
}


def ny(month: int, day: int, hour: int, minute: int = 0, *, year: int = 2026) -> datetime:
    """A New York wall-clock instant (March 2026: EST until the 8th, EDT from then)."""
    return datetime(year, month, day, hour, minute, tzinfo=NEW_YORK)


@dataclass(frozen=True)
class Defaults:
    calendar: Calendar
    policy: SlaPolicy
    version: SlaPolicyVersion


def install_defaults(
    *,
    durations: dict[str, timedelta | None] | None = None,
    stage_limits: dict[str, float] | None = None,
    time_zone: str = "America/New_York",
) -> Defaults:
    """Replace whatever company defaults exist with a known calendar and policy."""
    Deadline.objects.all().delete()
    SlaPolicyVersion.objects.all().delete()
    SlaPolicy.objects.all().delete()
    Calendar.objects.all().delete()
    calendars._cache.clear()
    calendar = make_calendar("Company hours", time_zone, is_default=True)
    policy = SlaPolicy.objects.create(name="Company default", is_default=True)
    version = SlaPolicyVersion.objects.create(
        policy=policy,
        number=1,
        effective_from=EPOCH,
        applies_to_open=True,
        stage_limits=stage_limits or {},
        **(DURATIONS if durations is None else durations),
    )
    return Defaults(calendar, policy, version)


def make_calendar(
    name: str,
    time_zone: str,
    windows: tuple[tuple[int, time, time], ...] = WEEKDAYS_9_TO_5,
    *,
    is_default: bool = False,
) -> Calendar:
    """A calendar and its windows (bulk-created: no change signals, version stays 1)."""
    calendar = Calendar.objects.create(name=name, time_zone=time_zone, is_default=is_default)
    WorkingWindow.objects.bulk_create(
        WorkingWindow(calendar=calendar, weekday=day, start=start, end=end)
        for day, start, end in windows
    )
    return calendar


def make_team(
    key: str, *, calendar: Calendar | None = None, parent: Team | None = None, members: Any = ()
) -> Team:
    team = Team.objects.create(key=key, name=key.title(), calendar=calendar, parent=parent)
    team.members.add(*members)
    return team


def make_segment(code: str) -> Segment:
    return Segment.objects.create(code=code, name=code.replace("-", " ").title())


def make_policy(
    *,
    team: Team | None = None,
    segment: Segment | None = None,
    effective_from: datetime = EPOCH,
    applies_to_open: bool = True,
    retired: bool = False,
    stage_limits: dict[str, float] | None = None,
    **durations: timedelta | None,
) -> SlaPolicyVersion:
    """The next version of the policy for this scope (created if needed), written directly."""
    policy, _created = SlaPolicy.objects.get_or_create(
        team=team,
        segment=segment,
        is_default=False,
        defaults={"name": " + ".join(str(p) for p in (team, segment) if p is not None)},
    )
    return SlaPolicyVersion.objects.create(
        policy=policy,
        number=policy.versions.count() + 1,
        effective_from=effective_from,
        applies_to_open=applies_to_open,
        retired=retired,
        stage_limits=stage_limits or {},
        **durations,
    )


def lead_at(arrived: datetime, now: datetime | None = None, **fields: Any) -> Lead:
    """A lead that arrived at ``arrived``, tracked at ``now`` (default: the arrival).

    Created without signals and synced explicitly, so that stage entry and handoff times are
    ``now`` rather than the wall clock.
    """
    fields.setdefault("name", "Ann")
    (lead,) = Lead.objects.bulk_create([Lead(created_at=arrived, **fields)])
    sync_objects([lead], now or arrived)
    return lead


def deal_at(arrived: datetime, now: datetime | None = None, **fields: Any) -> Deal:
    fields.setdefault("name", "Deal")
    (deal,) = Deal.objects.bulk_create([Deal(created_at=arrived, **fields)])
    sync_objects([deal], now or arrived)
    return deal


def change_host(obj: models.Model, now: datetime, **changes: Any) -> models.Model:
    """The CRM changes a row; the mirror follows at ``now``."""
    model = type(obj)
    model._default_manager.filter(pk=obj.pk).update(**changes)
    fresh = model._default_manager.get(pk=obj.pk)
    sync_objects([fresh], now)
    return fresh


def opportunity(obj: models.Model) -> TrackedOpportunity:
    return TrackedOpportunity.objects.for_object(obj).get()


def deadlines_of(obj: models.Model | TrackedOpportunity) -> dict[str, Deadline]:
    """The stored deadlines of a host object or tracked opportunity, by signal."""
    opp = obj if isinstance(obj, TrackedOpportunity) else opportunity(obj)
    return {d.signal: d for d in Deadline.objects.filter(opportunity_id=opp.pk)}


def due(obj: models.Model | TrackedOpportunity) -> dict[str, datetime]:
    return {signal: d.due_at for signal, d in deadlines_of(obj).items()}


def day(month: int, dom: int) -> date:
    return date(2026, month, dom)


def snapshot(obj: models.Model | TrackedOpportunity) -> dict[str, tuple[Any, ...]]:
    """Every stored value of every deadline (model instances compare by key only)."""
    return {
        signal: (
            d.pk,
            d.event_at,
            d.clock_start,
            d.sla,
            d.due_at,
            d.policy_version_id,
            d.calendar_id,
            d.computed_at,
        )
        for signal, d in deadlines_of(obj).items()
    }


def run_pending_commit_hooks() -> None:
    """Run the on-commit callbacks queued so far, as the setup's own commits would have.

    Tests run in one transaction, so a later change's callback could be folded into an
    identical one queued while setting up (one plan per scope per transaction).
    """
    while connection.run_on_commit:
        _savepoints, callback, _robust = connection.run_on_commit.pop(0)
        callback()


def around_the_clock(durations: dict[str, timedelta], *, since: datetime) -> None:
    """A 24/7 UTC default calendar, so business time is elapsed time, and the default policy
    holding ``durations`` from ``since`` (created, or a new version applied to open ones)."""
    Calendar.objects.filter(is_default=True).update(is_default=False)
    calendar = Calendar.objects.create(name="24/7", time_zone="UTC", is_default=True)
    WorkingWindow.objects.bulk_create(
        WorkingWindow(calendar=calendar, weekday=d, start=time(0), end=time(0)) for d in range(7)
    )
    default = SlaPolicy.objects.filter(is_default=True).first()
    if default is None:
        policies.create_policy("Default", durations, now=since)
    else:
        policies.publish_version(default, durations, now=since, apply_to_open=True)
