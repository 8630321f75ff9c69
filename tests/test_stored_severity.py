"""Stored severity levels (engine/severity.py, "Stored levels") against the derived severity.

Each active alert keeps its level with the span it holds for; the queue reads the level from
its index inside that span and derives it outside. The spans must be right to the margin: the
derived severity just inside a span's ends is the stored level, and just outside it is not.
The queue served at any moment must be ordered exactly as by the derived severity. The world
is test_register.py's (segments of intent 3 and 0.5, alerts from minutes to days late).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.urls import reverse
from rest_framework.test import APIClient

from followup_visibility.alerting import ranking, sweep
from followup_visibility.choices import ACTIVE_ALERT_STATUSES
from followup_visibility.engine import severity
from followup_visibility.models import Alert
from tests.test_register import HOUR, NOW, World, module_world

URL = reverse("followup_visibility_api:alert-list")
MARGIN = timedelta(microseconds=severity.MARGIN_MICROS)
#: Twice the margin: far enough past a span's end that the derived level must differ.
PAST_MARGIN = 2 * MARGIN


@pytest.fixture(scope="module")
def world(django_db_setup: Any, django_db_blocker: Any) -> Iterator[World]:
    yield from module_world(django_db_blocker)


@pytest.fixture(autouse=True)
def frozen(world: World, db: Any) -> Iterator[None]:
    with time_machine.travel(NOW, tick=False):
        yield


def derived_at(moment: datetime) -> dict[int, int]:
    """Each active alert's derived severity at ``moment`` (0 before it is due)."""
    rows = severity.annotate(Alert.objects.filter(status__in=ACTIVE_ALERT_STATUSES), moment)
    return {pk: level or 0 for pk, level in rows.values_list("pk", "severity")}


def active() -> list[Alert]:
    return list(Alert.objects.filter(status__in=ACTIVE_ALERT_STATUSES).order_by("pk"))


def test_every_active_alert_has_a_stored_level_that_is_its_severity(world: World) -> None:
    alerts = active()
    assert len(alerts) >= 8
    assert {a.severity_level for a in alerts} >= {1, 2}  # more than one level to order by
    now = derived_at(NOW)
    for alert in alerts:
        assert alert.severity_since is not None and alert.severity_changes_at is not None
        assert alert.severity_level == now[alert.pk], alert
        # The span holds NOW, but within the margin of its ends (an alert due at NOW).
        assert alert.severity_since - MARGIN <= NOW < alert.severity_changes_at + MARGIN


def test_each_span_ends_where_the_derived_level_changes(world: World) -> None:
    for alert in active():
        assert alert.severity_since is not None and alert.severity_changes_at is not None
        inside = [alert.severity_since, alert.severity_changes_at - timedelta(microseconds=1)]
        for moment in inside:
            assert derived_at(moment)[alert.pk] == alert.severity_level, (alert, moment)
        if alert.severity_changes_at != severity.NEVER:
            after = derived_at(alert.severity_changes_at + PAST_MARGIN)[alert.pk]
            assert after == alert.severity_level + 1, alert
        if alert.severity_since != severity.FAR_PAST:
            before = derived_at(alert.severity_since - PAST_MARGIN)[alert.pk]
            assert before == alert.severity_level - 1, alert


def test_the_sweep_advances_only_the_levels_that_ended(world: World) -> None:
    later = NOW + 30 * HOUR
    ended = {a.pk for a in active() if a.severity_changes_at <= later}  # type: ignore[operator]
    assert ended and ended != {a.pk for a in active()}
    kept = {a.pk: a.severity_changes_at for a in active() if a.pk not in ended}
    assert ranking.advance(later, batch=2) == len(ended)  # in batches of two
    derived = derived_at(later)
    for alert in active():
        assert alert.severity_level == derived[alert.pk]
        if alert.pk in kept:
            assert alert.severity_changes_at == kept[alert.pk]
    assert ranking.advance(later) == 0
    # A pass of the sweep advances what ended since (to the margin of the pass's moment).
    moment = later + HOUR
    sweep.sweep(moment)
    derived = derived_at(moment)
    for alert in active():
        assert alert.severity_level == derived[alert.pk], alert
        assert alert.severity_since - MARGIN <= moment < alert.severity_changes_at + MARGIN  # type: ignore[operator]


def crossings() -> list[datetime]:
    """Every span's ends, and a microsecond on each side of them."""
    moments = set()
    for alert in active():
        for end in (alert.severity_since, alert.severity_changes_at):
            if end in (None, severity.NEVER, severity.FAR_PAST):
                continue
            assert end is not None
            for shift in (-PAST_MARGIN, -MARGIN, timedelta(0), MARGIN, PAST_MARGIN):
                moments.add(end + shift)
    return sorted(moments)


Api = Callable[..., APIClient]


def served(api: Api, world: World, moment: datetime) -> list[tuple[int, str | None]]:
    with time_machine.travel(moment, tick=False):
        response = api(world.user("ops")).get(URL, {"page_size": 100})
    assert response.status_code == 200, response.json()
    return [(row["id"], row["severity"]) for row in response.json()["results"]]


def expected(moment: datetime) -> list[int]:
    rows = severity.annotate(Alert.objects.filter(status__in=ACTIVE_ALERT_STATUSES), moment)
    keyed = [
        (-(level or 0), due, pk) for pk, level, due in rows.values_list("pk", "severity", "due_at")
    ]
    return [pk for *_key, pk in sorted(keyed)]


def test_the_queue_is_in_derived_order_at_every_moment_stored_or_not(
    api: Api, world: World
) -> None:
    """No pass runs between these moments: past a span's end the queue derives the level,
    and a moment before a span began (a cursor's pinned moment) derives it too."""
    moments = [NOW - 2 * HOUR, NOW, NOW + 5 * HOUR, NOW + 40 * HOUR, NOW + 90 * 24 * HOUR]
    moments += crossings()[::3]
    fresh_seen = stale_seen = 0
    for moment in moments:
        assert [pk for pk, _s in served(api, world, moment)] == expected(moment), moment
        fresh = Alert.objects.filter(severity.fresh_q(moment), status__in=ACTIVE_ALERT_STATUSES)
        unfresh = Alert.objects.filter(severity.unfresh_q(moment), status__in=ACTIVE_ALERT_STATUSES)
        # The two parts the queue reads split the active alerts: none twice, none left out.
        assert not fresh.filter(pk__in=unfresh.values("pk")).exists()
        assert fresh.count() + unfresh.count() == len(active())
        fresh_seen += fresh.count()
        stale_seen += len(active()) - fresh.count()
    # Both parts took part.
    assert fresh_seen and stale_seen


def test_the_queue_pages_through_both_parts_without_a_gap(api: Api, world: World) -> None:
    moment = NOW + 5 * HOUR  # some levels ended, some hold
    client = api(world.user("ops"))
    with time_machine.travel(moment, tick=False):
        response = client.get(URL, {"page_size": 2})
        seen: list[int] = []
        while True:
            seen += [row["id"] for row in response.json()["results"]]
            if response.json()["next"] is None:
                break
            response = client.get(response.json()["next"])
    assert seen == expected(moment)
