"""The register's admin page: the ranked rows of the user's scope, with reasons and shares."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from followup_visibility.alerting import lifecycle
from followup_visibility.choices import AlertSignal
from tests import test_admin_alerts
from tests.test_admin_alerts import NOW, World

# The alert admin tests' world: two reps, a manager, two alerts on each rep's lead.
around_the_clock = test_admin_alerts.around_the_clock
frozen = test_admin_alerts.frozen
staff = test_admin_alerts.staff
world = test_admin_alerts.world

URL = "admin:followup_visibility_trackedopportunity_register"


def _page(user: Any, query: str = "") -> str:
    user.user_permissions.add(Permission.objects.get(codename="view_trackedopportunity"))
    client = Client()
    client.force_login(user)
    response = client.get(reverse(URL) + query)
    assert response.status_code == 200
    return response.content.decode()


def _titles(html: str) -> list[str]:
    return re.findall(r'trackedopportunity/\d+/change/">([^<]+)</a>', html)


def test_each_user_sees_the_rows_of_their_scope(world: World, make_user: Any) -> None:
    assert _titles(_page(world.rep)) == ["Acme pricing"]
    assert _titles(_page(world.other_rep)) == ["Globex brochure"]
    assert _titles(_page(world.manager)) == ["Acme pricing"]


def test_a_row_shows_its_reasons_severity_and_shares(world: World) -> None:
    html = _page(world.rep)
    # No first response (5 h past 4 h: high) and never contacted (1 h past 8 h: low).
    assert "No first touch" in html and "Stale touch" in html
    shares = re.findall(r"(\d+)% / (\d+)% / (\d+)% / (\d+)%", html)
    assert len(shares) == 1 and 98 <= sum(int(s) for s in shares[0]) <= 102


def test_filters_by_reason_and_drops_what_is_set_aside(world: World) -> None:
    assert _titles(_page(world.rep, "?reason=no_owner")) == []
    assert _titles(_page(world.rep, "?reason=no_first_touch")) == ["Acme pricing"]
    for signal in (AlertSignal.NO_FIRST_RESPONSE, AlertSignal.NEVER_CONTACTED):
        lifecycle.snooze(
            world.alert(world.mine, signal),
            reason="on it",
            by=world.rep,
            now=NOW,
            until=NOW + timedelta(days=1),
        )
    assert _titles(_page(world.rep)) == []


def test_the_page_needs_the_view_permission(world: World, make_user: Any) -> None:
    outsider = make_user("outsider", is_staff=True)
    client = Client()
    client.force_login(outsider)
    assert client.get(reverse(URL)).status_code == 403
