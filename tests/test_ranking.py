"""The register's stored ranking (alerting/ranking.py) against the register scored live.

The stored rows are written by the changes themselves (the refresh, every alert transition,
the sweep's raise) and by the periodic rescore; the register read from them must list the
same opportunities, in the same order, with the same numbers, as the register scored at the
same moment from the alerts (``register.live``). The world is test_register.py's.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.core.management import call_command
from django.db import connection, transaction
from django.db.models import F
from django.test.utils import CaptureQueriesContext

from example_project.crm.models import Deal
from followup_visibility.alerting import lifecycle, outbox, ranking, sweep
from followup_visibility.choices import AlertStatus, Channel, Direction
from followup_visibility.ingest.crm import sync_objects
from followup_visibility.ingest.touches import record_touch
from followup_visibility.models import Alert, OutboxMessage, RegisterRow, TrackedOpportunity
from followup_visibility.register import rows as register
from tests.test_register import HOUR, LISTED, NOW, World, module_world


@pytest.fixture(scope="module")
def world(django_db_setup: Any, django_db_blocker: Any) -> Iterator[World]:
    yield from module_world(django_db_blocker)


@pytest.fixture(autouse=True)
def frozen(world: World, db: Any) -> Iterator[None]:
    with time_machine.travel(NOW, tick=False):
        yield


def stored(now: Any = NOW) -> list[tuple[Any, float, float, Any]]:
    return [
        (o.pk, o.fv_score, o.fv_lateness, o.fv_severity)  # type: ignore[attr-defined]
        for o in register.unfollowed(now)
    ]


def scored_live(now: Any = NOW) -> list[tuple[Any, float, float, Any]]:
    return [
        (o.pk, o.fv_score, o.fv_lateness or 0.0, o.fv_severity)  # type: ignore[attr-defined]
        for o in register.live(now)
    ]


def assert_in_step(now: Any = NOW) -> None:
    assert stored(now) == scored_live(now)
    # The copies of team and owner follow the opportunity's.
    mismatched = RegisterRow.objects.exclude(
        team_id__isnull=True, opportunity__team__isnull=True
    ).exclude(team_id=F("opportunity__team_id"))
    assert not mismatched.exists()


def test_the_stored_register_is_the_register_scored_live(world: World) -> None:
    assert {world.name_of(pk) for pk, *_ in stored()} == LISTED
    assert_in_step()
    # Rows are stored only for what is listed but for the stall, checked when read.
    assert set(RegisterRow.objects.values_list("opportunity_id", flat=True)) == {
        world.opps[name] for name in (*LISTED, "stalled")
    }


def test_each_change_stores_its_rows_in_its_own_transaction(world: World) -> None:
    a = world.user("a")
    # A reply from the owner resolves the hot deal's alert and takes it off the register.
    record_touch(
        world.opp("nobody"),
        channel=Channel.PHONE,
        direction=Direction.OUTBOUND,
        occurred_at=NOW,
        actor=a,
        now=NOW,
    )
    assert_in_step()
    # A snooze takes a row out; acknowledging keeps it; a dismissal of the last alert too.
    (old_alert, *_) = Alert.objects.filter(opportunity=world.opp("old"), status=AlertStatus.OPEN)
    lifecycle.snooze(old_alert, reason="On leave", by=a, now=NOW, until=NOW + 2 * HOUR)
    assert_in_step()
    for alert in Alert.objects.filter(opportunity=world.opp("north"), status=AlertStatus.OPEN):
        lifecycle.acknowledge(alert, by=a, now=NOW)
    assert_in_step()
    # The CRM changes the hot deal's value and owner: its row follows at once.
    deal = Deal.objects.get(name="Hot")
    deal.amount, deal.owner = Decimal(5_000), world.user("b")
    deal.save()
    sync_objects([deal], NOW, confirm_owners=True)
    row = RegisterRow.objects.get(opportunity_id=world.opps["hot"])
    assert (row.value, row.owner_id) == (5_000.0, world.users["b"])
    assert_in_step()
    # The snooze wakes at a later pass: the sweep stores the woken row at its moment.
    later = NOW + 3 * HOUR
    sweep.sweep(later)
    woken = RegisterRow.objects.get(opportunity_id=world.opps["old"])
    assert woken.scored_at == later
    assert world.opps["old"] in {pk for pk, *_ in stored(later)}


def test_the_rescore_moves_lateness_and_age_with_the_clock(world: World) -> None:
    before = {pk: score for pk, score, *_ in stored()}
    later = NOW + 2 * HOUR
    # Until the rescore, rows keep the scores they were stored with.
    assert {pk: score for pk, score, *_ in stored(later)} == before
    assert set(RegisterRow.objects.values_list("scored_at", flat=True)) == {NOW}
    assert ranking.rescore(later, chunk=3) == len(LISTED) + 1  # the stalled one is stored
    after = {pk: score for pk, score, *_ in stored(later)}
    assert after.keys() == before.keys()
    assert all(after[pk] > before[pk] for pk in before)
    assert_in_step(later)


def test_a_stale_row_never_lists_and_the_rescore_drops_it(world: World) -> None:
    hot = world.opps["hot"]
    # A write that went round the app (a raw update): the stored row is left behind...
    Alert.objects.filter(opportunity_id=hot).update(status=AlertStatus.RESOLVED)
    assert RegisterRow.objects.filter(opportunity_id=hot).exists()
    # ...but the register checks the alerts when read.
    assert hot not in {pk for pk, *_ in stored()}
    ranking.rescore(NOW)
    assert not RegisterRow.objects.filter(opportunity_id=hot).exists()
    assert_in_step()


def test_a_missing_row_comes_back_at_the_rescore(world: World) -> None:
    hot = world.opps["hot"]
    (before,) = [entry for entry in stored() if entry[0] == hot]
    RegisterRow.objects.filter(opportunity_id=hot).delete()
    assert hot not in {pk for pk, *_ in stored()}
    call_command("followup_rescore", now=NOW.isoformat(), stdout=(out := _Out()))
    assert out.text == f"register: {len(LISTED) + 1} rows scored\n"
    assert before in stored()


def test_nothing_is_stored_when_the_change_fails(world: World) -> None:
    hot = world.opps["hot"]
    TrackedOpportunity.objects.filter(pk=hot).update(value=Decimal(1))
    with pytest.raises(RuntimeError), transaction.atomic(), ranking.batched(NOW):
        ranking.mark([hot], NOW)
        raise RuntimeError("the change failed")
    assert RegisterRow.objects.get(opportunity_id=hot).value == 50_000.0


def test_storing_costs_the_same_statements_for_one_row_or_all(world: World) -> None:
    ids = list(TrackedOpportunity.objects.values_list("pk", flat=True))
    counts = []
    for chosen in (ids[:1], ids):
        with CaptureQueriesContext(connection) as queries, transaction.atomic():
            ranking.store(chosen, NOW)
        counts.append(len(queries))
    # The alerts with their opportunities read, their levels written, the rows upserted, and
    # the deletion when a chosen one is not listed.
    assert counts[0] <= counts[1] <= 4 + 2  # and the savepoint's two


def test_a_batch_stores_once_at_its_end(world: World) -> None:
    ids = [world.opps["hot"], world.opps["old"]]
    with CaptureQueriesContext(connection) as queries, transaction.atomic(), ranking.batched(NOW):
        for pk in ids:
            ranking.mark([pk], NOW)
        alerts = Alert.objects.filter(opportunity_id__in=ids).values_list("pk", flat=True)
        ranking.mark_alerts(list(alerts), NOW)
        marked = len(queries)
    stores = len(queries) - marked
    # The alerts' opportunities, then the alerts with their opportunities read, their levels
    # written and the rows upserted (no deletion: both are listed), then the commit.
    assert stores == 4 + 1


class _Out:
    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> None:
        self.text += text

    def flush(self) -> None:
        pass


def test_rows_are_scored_at_the_moment_they_are_stored(world: World) -> None:
    later = NOW + timedelta(minutes=30)
    ranking.store([world.opps["hot"]], later)
    row = RegisterRow.objects.get(opportunity_id=world.opps["hot"])
    (live,) = [e for e in scored_live(later) if e[0] == world.opps["hot"]]
    assert (row.scored_at, row.score, row.lateness) == (later, live[1], live[2])


def test_a_large_change_ranks_in_the_outbox(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Beyond SYNC_LIMIT opportunities, a change enqueues ranges instead of storing them in
    its own transaction; draining the outbox stores them as the change would have."""
    monkeypatch.setattr(ranking, "SYNC_LIMIT", 2)
    monkeypatch.setattr(ranking, "RANGE_KEYS", 3)
    RegisterRow.objects.all().delete()
    ids = list(TrackedOpportunity.objects.values_list("pk", flat=True))
    with transaction.atomic(), ranking.batched(NOW):
        ranking.mark(ids, NOW)
    assert not RegisterRow.objects.exists()
    ranges = OutboxMessage.objects.filter(kind=ranking.RANGE)
    assert ranges.filter(done_at__isnull=True).count() == -(-len(ids) // 3)
    done = outbox.drain(clock=lambda: NOW, kinds=[ranking.RANGE])
    assert done.done == ranges.count() and not ranges.filter(done_at__isnull=True).exists()
    assert_in_step()
    # A small change still stores at once.
    RegisterRow.objects.filter(opportunity_id=world.opps["hot"]).delete()
    ranking.mark([world.opps["hot"]], NOW)
    assert RegisterRow.objects.filter(opportunity_id=world.opps["hot"]).exists()


def test_rows_scored_in_sql_for_large_chunks_are_the_same(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Large chunks are scored by the SQL of ``register.live``, small ones in Python: the
    stored numbers are the same either way, to the last bit."""
    monkeypatch.setattr(ranking, "SCORE_IN_SQL", 0)
    RegisterRow.objects.all().delete()
    ranking.rescore(NOW)
    assert_in_step()
