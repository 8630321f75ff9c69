"""Concurrent deliveries of touches (PostgreSQL: SQLite serializes writers on its own)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, connections  # noqa: F401 (connection: read by postgres_only)

from followup_visibility.choices import Channel, Direction, Outcome
from followup_visibility.engine.timeline import STATE_FIELDS, fold
from followup_visibility.ingest.touches import RecordedTouch, record_touch
from followup_visibility.models import Handoff, Touch
from tests.conftest import postgres_only, tracked

THREADS = 8

pytestmark = [postgres_only, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _in_threads(work: Callable[[int], RecordedTouch]) -> list[RecordedTouch]:
    """Run ``work(i)`` in THREADS threads released together by a barrier."""
    barrier = threading.Barrier(THREADS)

    def run(i: int) -> RecordedTouch:
        try:
            barrier.wait(timeout=30)
            return work(i)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        return list(pool.map(run, range(THREADS), timeout=120))


def _stored_state(obj: Any) -> dict[str, Any]:
    opp = tracked(obj)
    return {name: getattr(opp, name) for name in STATE_FIELDS}


def _folded_state(obj: Any) -> dict[str, Any]:
    rows = Touch.objects.filter(opportunity=tracked(obj)).values(
        "id", "channel", "direction", "outcome", "occurred_at", "is_meaningful"
    )
    state = fold(rows)
    return {name: getattr(state, name) for name in STATE_FIELDS}


def test_concurrent_deliveries_of_one_touch_store_it_once(make_lead, make_user, now):
    rep = make_user()
    lead = make_lead(owner=rep)
    occurred = now - timedelta(minutes=20)

    def deliver(i: int) -> RecordedTouch:
        return record_touch(
            lead,
            channel=Channel.PHONE,
            direction=Direction.OUTBOUND,
            outcome=Outcome.CONNECTED,
            occurred_at=occurred,
            now=now,
            actor=rep,
            source="telephony",
            external_id="call-7",
            summary=f"delivery {i}",
        )

    results = _in_threads(deliver)

    touch = Touch.objects.get()
    assert {r.touch.pk for r in results} == {touch.pk}
    assert sorted(r.created for r in results) == [False] * (THREADS - 1) + [True]
    assert touch.summary == next(r.touch.summary for r in results if r.created)
    stored = _stored_state(lead)
    assert stored == _folded_state(lead)
    assert stored["first_response_touch_id"] == touch.pk
    assert stored["last_touch_at"] == occurred
    handoff = Handoff.objects.get(opportunity=tracked(lead))
    assert (handoff.accepted_at, handoff.accepted_touch_id) == (now, touch.pk)
    assert tracked(lead).owner_confirmed_at == now


def test_concurrent_different_touches_are_all_folded(make_lead, now):
    lead = make_lead()

    def deliver(i: int) -> RecordedTouch:
        inbound = i % 2 == 0
        return record_touch(
            lead,
            channel=Channel.EMAIL,
            direction=Direction.INBOUND if inbound else Direction.OUTBOUND,
            outcome=Outcome.RECEIVED if inbound else Outcome.SENT,
            occurred_at=now - timedelta(minutes=60 - i),
            now=now,
            source="mailbox",
            external_id=f"msg-{i}",
        )

    results = _in_threads(deliver)

    assert all(r.created for r in results)
    assert Touch.objects.filter(opportunity=tracked(lead)).count() == THREADS
    latest = now - timedelta(minutes=60 - (THREADS - 1))
    stored = _stored_state(lead)
    assert stored == _folded_state(lead)
    assert stored["last_touch_at"] == latest
    assert stored["first_outbound_at"] == now - timedelta(minutes=59)
    # The last touch (i=7) is an outbound reply: nobody is waiting.
    assert stored["awaiting_reply_since"] is None


def test_concurrent_touches_on_a_lead_and_its_deal_keep_both_in_step(make_lead, make_deal, now):
    lead = make_lead()
    deal = make_deal(lead=lead)

    def deliver(i: int) -> RecordedTouch:
        return record_touch(
            lead if i % 2 else deal,
            channel=Channel.EMAIL,
            direction=Direction.INBOUND,
            outcome=Outcome.RECEIVED,
            occurred_at=now - timedelta(minutes=60 - i),
            now=now,
            source="mailbox",
            external_id=f"chain-{i}",
        )

    results = _in_threads(deliver)

    assert all(r.created for r in results)
    assert Touch.objects.count() == THREADS
    # One timeline for the chain: both records hold the fold of every touch on either.
    chain = fold(
        Touch.objects.values(
            "id", "channel", "direction", "outcome", "occurred_at", "is_meaningful"
        )
    )
    assert chain.last_touch_at == now - timedelta(minutes=60 - (THREADS - 1))
    assert chain.awaiting_reply_since == now - timedelta(minutes=60)
    expected = {name: getattr(chain, name) for name in STATE_FIELDS}
    assert _stored_state(lead) == expected
    assert _stored_state(deal) == expected


@pytest.mark.parametrize("change", ["sync", "delete"])
def test_a_crm_change_of_a_deal_and_a_touch_on_its_lead_do_not_deadlock(
    make_lead: Callable[..., Any],
    make_deal: Callable[..., Any],
    now: Any,
    monkeypatch: pytest.MonkeyPatch,
    change: str,
) -> None:
    """A writer of the deal locks the lead's chain in key order, as the touch does: before,
    it locked the deal alone, then the chain (lead first) in its refresh, while the touch
    held the lead and waited for the deal."""
    import time

    from example_project.crm.models import Deal
    from followup_visibility.alerting import refresh
    from followup_visibility.ingest import crm

    lead = make_lead()
    deal = make_deal(lead=lead)
    assert tracked(lead).pk < tracked(deal).pk
    holding = threading.Event()
    original = refresh.refresh

    def slow(*args: Any, **kwargs: Any) -> Any:
        if threading.current_thread().name == "crm":
            holding.set()
            time.sleep(1.0)  # the touch runs meanwhile
        return original(*args, **kwargs)

    monkeypatch.setattr(refresh, "refresh", slow)
    errors: list[BaseException] = []

    def crm_change() -> None:
        try:
            if change == "sync":
                Deal.objects.filter(pk=deal.pk).update(stage=Deal.Stage.PROPOSAL)
                crm.sync_objects([Deal.objects.get(pk=deal.pk)], now)
            else:
                crm.mark_deleted(Deal, [deal.pk], now)
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)
        finally:
            connections.close_all()

    def touch() -> None:
        try:
            assert holding.wait(10)
            record_touch(
                lead,
                channel=Channel.EMAIL,
                direction=Direction.INBOUND,
                outcome=Outcome.RECEIVED,
                occurred_at=now - timedelta(minutes=5),
                now=now,
                source="mailbox",
                external_id="deadlock-1",
            )
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=crm_change, name="crm"), threading.Thread(target=touch)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, [repr(e) for e in errors]
    assert Touch.objects.filter(external_id="deadlock-1").count() == 1
