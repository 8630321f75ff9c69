"""Concurrent deliveries of one touch through the API store it once (PostgreSQL: SQLite
serializes writers on its own)."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.core.cache import cache
from django.db import connection, connections  # noqa: F401 (connection: read by postgres_only)
from django.utils import timezone
from rest_framework.test import APIClient

from followup_visibility.models import Touch
from tests.conftest import postgres_only, tracked

THREADS = 8
URL = "/api/followup/touches/"

pytestmark = [postgres_only, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _race(clients: list[APIClient], body: str) -> list[tuple[int, Any]]:
    """Every client posts ``body`` at once (released together by a barrier)."""
    barrier = threading.Barrier(len(clients))

    def deliver(client: APIClient) -> tuple[int, Any]:
        try:
            barrier.wait(timeout=30)
            response = client.post(URL, body, content_type="application/json")
            return response.status_code, response.json()
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=len(clients)) as pool:
        return list(pool.map(deliver, clients, timeout=120))


def test_concurrent_posts_of_one_touch_store_it_once(make_lead: Any, make_user: Any) -> None:
    """One touch, then a batch: each race stores one touch, and every answer is 201 or 200."""
    cache.clear()
    rep = make_user()
    rep.user_permissions.set(Permission.objects.filter(codename="add_touch"))
    lead = make_lead(owner=rep)
    opportunity = tracked(lead).pk
    clients = []
    for _i in range(THREADS):
        client = APIClient()
        client.force_login(rep)  # before the race: signing in writes a session
        clients.append(client)

    def item(external_id: str) -> dict[str, Any]:
        return {
            "opportunity": opportunity,
            "channel": "phone",
            "direction": "outbound",
            "outcome": "connected",
            "occurred_at": (timezone.now() - timedelta(minutes=20)).isoformat(),
            "source": "telephony",
            "external_id": external_id,
            "summary": "Demo booked",
        }

    answers = _race(clients, json.dumps(item("call-7")))

    touch = Touch.objects.get(external_id="call-7")
    assert touch.opportunity_id == opportunity
    assert sorted(code for code, _body in answers) == [200] * (THREADS - 1) + [201], answers
    assert {body["id"] for _code, body in answers} == {touch.pk}

    answers = _race(clients, json.dumps({"touches": [item("call-8"), item("call-9")]}))

    assert Touch.objects.count() == 3
    stored = {
        t.external_id: t.pk for t in Touch.objects.filter(external_id__in=["call-8", "call-9"])
    }
    assert sorted(code for code, _body in answers) == [200] * (THREADS - 1) + [201], answers
    for index, external_id in enumerate(["call-8", "call-9"]):
        results = [body["results"][index] for _code, body in answers]
        assert sorted(r["status"] for r in results) == ["created"] + ["repeat"] * (THREADS - 1)
        assert {r["id"] for r in results} == {stored[external_id]}
