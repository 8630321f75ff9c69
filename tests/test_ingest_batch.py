"""Batch ingestion: validated whole, idempotent within and across batches, one refresh, and a
bounded number of queries whatever the batch's size."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext

from example_project.crm.models import Lead
from followup_visibility.choices import AlertSignal, Channel, Direction, Outcome
from followup_visibility.ingest.touches import NewTouch, record_touch, record_touches
from followup_visibility.models import Deadline, Touch, TrackedOpportunity
from tests.conftest import postgres_only
from tests.factories_sla import install_defaults, lead_at, ny, opportunity

pytestmark = pytest.mark.django_db
NOW = ny(3, 9, 15)


@pytest.fixture(autouse=True)
def defaults(db: Any) -> Any:
    return install_defaults()


def call(target: Any, at: datetime, external_id: str = "", **extra: Any) -> dict[str, Any]:
    return {
        "target": target,
        "channel": Channel.PHONE,
        "direction": Direction.OUTBOUND,
        "outcome": Outcome.CONNECTED,
        "occurred_at": at,
        "source": "pbx",
        "external_id": external_id,
        **extra,
    }


def leads(n: int) -> list[TrackedOpportunity]:
    return [opportunity(lead_at(ny(3, 9, 9))) for _ in range(n)]


# Validation ------------------------------------------------------------------------------


def test_a_batch_with_one_bad_item_writes_nothing() -> None:
    first, second = leads(2)
    # Created without signals: the batch would start tracking it, were it valid.
    Lead.objects.bulk_create([Lead(name="not tracked yet", created_at=ny(3, 9, 9))])
    untracked = Lead.objects.get(name="not tracked yet")
    before = (Touch.objects.count(), TrackedOpportunity.objects.count())
    batch = [
        call(first, ny(3, 9, 10), "a"),
        call(untracked, ny(3, 9, 11), "b"),
        call(second, ny(3, 9, 12), "c", channel="fax"),
        call(second, NOW + timedelta(hours=2), "d"),
    ]
    with pytest.raises(ValidationError) as raised:
        record_touches(batch, now=NOW)
    errors = raised.value.message_dict
    assert set(errors) == {"2.channel", "3.occurred_at"}
    assert "fax" in errors["2.channel"][0]
    assert (Touch.objects.count(), TrackedOpportunity.objects.count()) == before


def test_unknown_and_missing_fields_of_a_mapping_are_named() -> None:
    (opp,) = leads(1)
    item = call(opp, ny(3, 9, 10))
    del item["direction"]
    with pytest.raises(ValidationError) as raised:
        record_touches([call(opp, ny(3, 9, 10)), {**item, "colour": "red"}], now=NOW)
    assert set(raised.value.message_dict) == {"1.direction", "1.colour"}
    assert not Touch.objects.exists()


def test_a_target_nothing_resolves_is_an_error_of_its_item_and_nothing_is_written() -> None:
    (opp,) = leads(1)
    batch = [call(opp, ny(3, 9, 10), "a"), call(None, ny(3, 9, 11), "b", phone="+12125550199")]
    with pytest.raises(ValidationError) as raised:
        record_touches(batch, now=NOW)
    assert set(raised.value.message_dict) == {"1.contact"}
    assert not Touch.objects.exists()


def test_record_touch_names_fields_without_an_index() -> None:
    (opp,) = leads(1)
    with pytest.raises(ValidationError) as raised:
        record_touch(opp, channel="fax", direction="outbound", occurred_at=ny(3, 9, 10), now=NOW)
    assert set(raised.value.message_dict) == {"channel"}


# Idempotency -----------------------------------------------------------------------------


def test_repeats_within_and_across_batches_store_each_touch_once() -> None:
    first, second = leads(2)
    results = record_touches(
        [call(first, ny(3, 9, 10), "x1"), call(second, ny(3, 9, 11), "x2")], now=NOW
    )
    assert [r.status for r in results] == ["created", "created"]
    again = record_touches(
        [
            call(second, ny(3, 9, 11), "x2"),  # a repeat of the earlier batch
            call(first, ny(3, 9, 12), "x3"),
            call(first, ny(3, 9, 12), "x3"),  # a repeat within this batch
        ],
        now=NOW + timedelta(minutes=1),
    )
    assert [r.status for r in again] == ["repeat", "created", "repeat"]
    assert again[0].touch.pk == results[1].touch.pk
    assert again[2].touch.pk == again[1].touch.pk
    assert Touch.objects.count() == 3


def test_a_repeat_whose_payload_differs_is_reported_and_not_applied() -> None:
    (opp,) = leads(1)
    (stored,) = record_touches([call(opp, ny(3, 9, 10), "c1")], now=NOW)
    batch = [
        call(opp, ny(3, 9, 10), "c1", outcome=Outcome.NO_ANSWER, summary="missed"),
        call(opp, ny(3, 9, 11), "c2"),
        call(opp, ny(3, 9, 12), "c2"),  # differs from the batch's own first delivery
    ]
    conflict, new, late = record_touches(batch, now=NOW)
    assert (conflict.status, conflict.differs) == ("conflict", ("outcome", "summary"))
    assert conflict.touch.pk == stored.touch.pk
    assert Touch.objects.get(pk=stored.touch.pk).outcome == Outcome.CONNECTED
    assert (new.status, late.status, late.differs) == ("created", "conflict", ("occurred_at",))
    assert late.touch.pk == new.touch.pk


def test_record_touch_is_a_batch_of_one() -> None:
    (opp,) = leads(1)
    first = record_touch(opp, now=NOW, **_kwargs(call(opp, ny(3, 9, 10), "one")))
    again = record_touch(opp, now=NOW, **_kwargs(call(opp, ny(3, 9, 10), "one")))
    assert (first.created, again.created, again.status) == (True, False, "repeat")
    assert again.touch == first.touch


def _kwargs(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k != "target"}


# Targets and the refresh -----------------------------------------------------------------


def test_targets_of_every_kind_resolve_in_one_batch(make_lead: Callable[..., Lead]) -> None:
    by_phone = lead_at(ny(3, 9, 9), phone="+1 212 555 0142")
    host = lead_at(ny(3, 9, 9))
    (tracked,) = leads(1)
    results = record_touches(
        [
            NewTouch(**call(tracked, ny(3, 9, 10))),
            call(host, ny(3, 9, 11)),
            call(None, ny(3, 9, 12), phone="212.555.0142", direction=Direction.INBOUND),
        ],
        now=NOW,
    )
    assert [r.touch.opportunity_id for r in results] == [
        tracked.pk,
        opportunity(host).pk,
        opportunity(by_phone).pk,
    ]


def test_one_refresh_brings_every_touched_opportunity_up_to_date() -> None:
    opps = leads(3)
    record_touches([call(opp, ny(3, 9, 10 + i)) for i, opp in enumerate(opps)], now=NOW)
    for i, opp in enumerate(opps):
        opp.refresh_from_db()
        assert opp.first_response_at == ny(3, 9, 10 + i)
        signals = set(Deadline.objects.filter(opportunity=opp).values_list("signal", flat=True))
        assert AlertSignal.NO_FIRST_RESPONSE not in signals
        assert AlertSignal.NEVER_CONTACTED not in signals


def test_the_touches_of_a_batch_are_announced_once_each(
    django_capture_on_commit_callbacks: Any,
) -> None:
    from followup_visibility.signals import touch_recorded

    opps = leads(2)
    seen: list[Any] = []

    def receiver(sender: Any, touch: Touch, opportunity: Any, **kwargs: Any) -> None:
        seen.append((touch.pk, opportunity.pk))

    touch_recorded.connect(receiver, weak=False)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            results = record_touches(
                [call(opp, ny(3, 9, 10), f"t{i}") for i, opp in enumerate(opps)], now=NOW
            )
        with django_capture_on_commit_callbacks(execute=True):
            record_touches([call(opps[0], ny(3, 9, 10), "t0")], now=NOW)  # a repeat
    finally:
        touch_recorded.disconnect(receiver)
    assert seen == [(r.touch.pk, r.touch.opportunity_id) for r in results]


# Queries ---------------------------------------------------------------------------------


def test_record_touch_costs_at_most_twelve_queries() -> None:
    (opp,) = leads(1)
    record_touch(opp, now=NOW, **_kwargs(call(opp, ny(3, 9, 10), "q0")))
    with CaptureQueriesContext(connection) as captured:
        record_touch(
            opp,
            now=NOW,
            **_kwargs(call(opp, ny(3, 9, 11), "q1", direction=Direction.INBOUND)),
        )
    assert len(captured) <= 12, [q["sql"][:80] for q in captured.captured_queries]


@pytest.mark.parametrize("size", [5, 40])
def test_a_batch_costs_the_same_queries_whatever_its_size(size: int) -> None:
    def batch_queries(n: int, tag: str) -> int:
        opps = leads(n)
        record_touches([call(o, ny(3, 9, 10), f"{tag}-first-{o.pk}") for o in opps], now=NOW)
        with CaptureQueriesContext(connection) as captured:
            record_touches([call(o, ny(3, 9, 11), f"{tag}-second-{o.pk}") for o in opps], now=NOW)
        return len(captured)

    assert batch_queries(size, "big") == batch_queries(2, "small")


# Concurrency -----------------------------------------------------------------------------


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicate_batches_store_each_touch_once() -> None:
    install_defaults()  # transactional tests start from an empty database
    opps = leads(20)
    batch = [call(opp, ny(3, 9, 10), f"dup-{opp.pk}") for opp in opps]
    barrier = threading.Barrier(3)
    results: dict[int, list[Any]] = {}
    errors: list[BaseException] = []

    def deliver(number: int) -> None:
        try:
            barrier.wait(10)
            # Opposite orders: the inserts must still queue rather than deadlock.
            items = batch if number % 2 else list(reversed(batch))
            results[number] = record_touches(items, now=NOW)
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=deliver, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    assert Touch.objects.count() == len(batch)
    created = [r for found in results.values() for r in found if r.created]
    assert len(created) == len(batch)
    stored = {t.external_id: t.pk for t in Touch.objects.all()}
    for found in results.values():
        assert {r.touch.external_id: r.touch.pk for r in found} == stored
    for opp in opps:
        opp.refresh_from_db()
        assert opp.first_response_at == ny(3, 9, 10)


@pytest.mark.parametrize("metadata", ["oops", [1, 2], 5, {"at": NOW}])
def test_metadata_that_is_no_json_mapping_is_a_field_error(metadata: Any) -> None:
    (opp,) = leads(1)
    with pytest.raises(ValidationError) as raised:
        record_touches([call(opp, ny(3, 9, 10), "m", metadata=metadata)], now=NOW)
    assert set(raised.value.message_dict) == {"0.metadata"}
    assert not Touch.objects.exists()


def test_a_repeat_is_compared_with_its_metadata_as_stored() -> None:
    (opp,) = leads(1)
    item = call(opp, ny(3, 9, 10), "legs", metadata={"legs": (1, 2)})  # a tuple reads back a list
    record_touches([item], now=NOW)
    (again,) = record_touches([item], now=NOW)
    assert (again.status, again.differs) == ("repeat", ())


def test_touch_recorded_carries_the_opportunity_as_the_touch_left_it(
    django_capture_on_commit_callbacks: Any,
) -> None:
    from followup_visibility.signals import touch_recorded

    (opp,) = leads(1)
    seen: list[Any] = []

    def receiver(sender: Any, touch: Touch, opportunity: Any, **kwargs: Any) -> None:
        seen.append(opportunity.last_touch_at)

    touch_recorded.connect(receiver, sender=Touch, weak=False)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            record_touches([call(opp, ny(3, 9, 10), "fresh")], now=NOW)
    finally:
        touch_recorded.disconnect(receiver, sender=Touch)
    assert seen == [ny(3, 9, 10)]


def test_key_lists_of_another_type_find_the_same_rows() -> None:
    from followup_visibility.alerting import sql

    (opp,) = leads(1)
    keys = [str(opp.pk), "0" + str(opp.pk + 1)]  # as an API might pass them
    found = TrackedOpportunity.objects.filter(sql.among(TrackedOpportunity, "id", keys))
    assert list(found) == [opp]
