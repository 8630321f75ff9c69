"""Admin writes go through the domain function that owns them, and no refusal is silent.

The world (two reps, one with a manager, an alerting lead each) comes from the alert admin's
tests; the clock is frozen at their ``NOW``.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.contrib.messages import get_messages
from django.urls import reverse

from example_project.crm.models import Lead
from followup_visibility.admin.opportunity import ADMIN_SOURCE, TrackedContentTypeFilter
from followup_visibility.alerting import lifecycle
from followup_visibility.choices import AlertSignal, AlertStatus, Channel, Direction, Status
from followup_visibility.ingest.crm import sync_objects
from followup_visibility.models import Alert, Handoff, Touch, TrackedOpportunity
from tests.conftest import tracked
from tests.test_admin_alerts import (  # noqa: F401 (fixtures)
    NOW,
    World,
    around_the_clock,
    frozen,
    split,
    staff,
    world,
)
from tests.test_admin_configuration import form_data

pytestmark = pytest.mark.django_db

OPPORTUNITIES = "admin:followup_visibility_trackedopportunity_changelist"


def grant(user: Any, *codenames: str) -> None:
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


# Silent refusals ------------------------------------------------------------------------------


def test_an_action_on_an_alert_the_active_filter_hides_says_so(client: Any, world: World) -> None:  # noqa: F811
    alert = world.alert(world.mine, AlertSignal.NO_FIRST_RESPONSE)
    lifecycle.dismiss(alert, reason="duplicate lead", by=world.rep, now=NOW)
    client.force_login(world.rep)
    response = client.post(
        reverse("admin:followup_visibility_alert_changelist"),
        {"action": "acknowledge", "_selected_action": [alert.pk]},
        follow=True,
    )
    alert.refresh_from_db()
    assert alert.status == AlertStatus.DISMISSED  # not acknowledged: it is closed
    assert any("1 selected row was not acted on" in text for text in messages_of(response))


def test_an_action_on_another_reps_alert_changes_nothing_and_says_so(
    client: Any,
    world: World,  # noqa: F811
) -> None:
    theirs = world.alert(world.theirs, AlertSignal.NO_FIRST_RESPONSE)
    client.force_login(world.rep)
    response = client.post(
        reverse("admin:followup_visibility_alert_changelist"),
        {"action": "acknowledge", "_selected_action": [theirs.pk]},
        follow=True,
    )
    theirs.refresh_from_db()
    assert theirs.status == AlertStatus.OPEN
    assert any("1 selected row was not acted on" in text for text in messages_of(response))


# The tracked opportunity: mirrored fields are read-only -------------------------------------


def test_the_change_form_writes_no_mirrored_or_chain_field(client: Any, world: World) -> None:  # noqa: F811
    grant(world.manager, "view_trackedopportunity", "change_trackedopportunity")
    client.force_login(world.manager)
    url = reverse("admin:followup_visibility_trackedopportunity_change", args=[world.mine.pk])
    data = form_data(client, url, "trackedopportunity_form")
    assert "owner" not in data and "status" not in data and "predecessor" not in data
    # A crafted post naming them anyway: Django ignores fields the form does not have.
    data.update(owner=world.other_rep.pk, status=Status.WON, predecessor=world.theirs.pk)
    response = client.post(url, data)
    assert response.status_code == 302
    mine = TrackedOpportunity.objects.get(pk=world.mine.pk)
    assert (mine.owner_id, mine.status, mine.predecessor_id) == (world.rep.pk, Status.OPEN, None)
    assert Alert.objects.active().filter(opportunity=mine).count() == 2  # nothing went stale


def test_tracking_is_never_added_or_deleted_by_hand(client: Any, world: World) -> None:  # noqa: F811
    grant(
        world.manager,
        "view_trackedopportunity",
        "add_trackedopportunity",
        "change_trackedopportunity",
        "delete_trackedopportunity",
    )
    client.force_login(world.manager)
    add = reverse("admin:followup_visibility_trackedopportunity_add")
    delete = reverse("admin:followup_visibility_trackedopportunity_delete", args=[world.mine.pk])
    assert client.get(add).status_code == 403
    assert client.post(delete, {"post": "yes"}).status_code == 403
    assert TrackedOpportunity.objects.filter(pk=world.mine.pk).exists()
    assert "Add tracked opportunity" not in client.get(reverse(OPPORTUNITIES)).content.decode()


def test_the_host_model_filter_lists_the_tracked_models_only(rf: Any, world: World) -> None:  # noqa: F811
    choices = TrackedContentTypeFilter(rf.get("/"), {}, TrackedOpportunity, None).lookup_choices
    tracked_ids = {str(ct.pk) for ct in ContentType.objects.get_for_models(Lead).values()}
    offered = {value for value, _label in choices}
    assert tracked_ids <= offered
    assert str(ContentType.objects.get_for_model(Permission).pk) not in offered
    assert str(ContentType.objects.get_for_model(Alert).pk) not in offered


# Touches are recorded through the ingestion function -----------------------------------------


def _touch_form(opportunity_pk: Any) -> dict[str, Any]:
    return {
        "opportunity": str(opportunity_pk),
        "channel": Channel.PHONE,
        "direction": Direction.OUTBOUND,
        "outcome": "connected",
        **{f"occurred_at_{part}": value for part, value in split(NOW).items()},
        "summary": "Called back",
    }


def test_adding_a_touch_records_it_through_ingestion(client: Any, world: World) -> None:  # noqa: F811
    grant(world.rep, "view_touch", "add_touch")
    client.force_login(world.rep)
    response = client.post(
        reverse("admin:followup_visibility_touch_add"), _touch_form(world.mine.pk)
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    touch = Touch.objects.get(opportunity=world.mine)
    assert (touch.source, touch.actor_id) == (ADMIN_SOURCE, world.rep.pk)
    assert touch.logging_lag is not None and touch.is_meaningful
    # The refresh ran: the first response is recorded and its alert resolved.
    assert tracked(Lead.objects.get(name="Acme pricing")).first_response_at is not None
    alert = world.alert(world.mine, AlertSignal.NO_FIRST_RESPONSE)
    assert alert.status == AlertStatus.RESOLVED


def test_a_touch_on_an_out_of_scope_opportunity_is_refused_like_a_missing_one(
    client: Any,
    world: World,  # noqa: F811
) -> None:
    grant(world.rep, "view_touch", "add_touch")
    client.force_login(world.rep)
    url = reverse("admin:followup_visibility_touch_add")
    other = client.post(url, _touch_form(world.theirs.pk))
    missing = client.post(url, _touch_form(10**9))
    assert other.status_code == missing.status_code == 200
    error = "Select a valid choice. That choice is not one of the available choices."
    assert error in other.content.decode() and error in missing.content.decode()
    assert not Touch.objects.exists()


# Handoffs are accepted by their new owner, through accept_handoff -----------------------------


@pytest.fixture
def handed_over(world: World) -> Handoff:  # noqa: F811
    world.team.members.add(world.other_rep)  # handed within the team: the manager still sees it
    lead = Lead.objects.get(name="Acme pricing")
    lead.owner = world.other_rep
    lead.save()
    sync_objects([lead], NOW)
    return Handoff.objects.get(opportunity=world.mine, accepted_at__isnull=True)


def test_a_handoff_is_accepted_by_its_new_owner_only(
    client: Any,
    world: World,  # noqa: F811
    handed_over: Handoff,
) -> None:
    changelist = reverse("admin:followup_visibility_handoff_changelist")
    grant(world.manager, "view_handoff", "change_handoff")
    client.force_login(world.manager)
    refused = client.post(
        changelist, {"action": "accept", "_selected_action": [handed_over.pk]}, follow=True
    )
    assert any("Only the new owner" in text for text in messages_of(refused))
    handed_over.refresh_from_db()
    assert handed_over.accepted_at is None

    grant(world.other_rep, "view_handoff", "change_handoff")
    client.force_login(world.other_rep)
    client.post(changelist, {"action": "accept", "_selected_action": [handed_over.pk]})
    handed_over.refresh_from_db()
    assert handed_over.accepted_at == NOW
    assert TrackedOpportunity.objects.get(pk=world.mine.pk).owner_confirmed_at == NOW


def test_a_handoff_cannot_be_edited_or_added(
    client: Any,
    world: World,  # noqa: F811
    handed_over: Handoff,
) -> None:
    grant(world.manager, "view_handoff", "change_handoff", "add_handoff")
    client.force_login(world.manager)
    change = reverse("admin:followup_visibility_handoff_change", args=[handed_over.pk])
    response = client.post(change, {"opportunity": world.theirs.pk})
    assert response.status_code == 403
    assert client.get(reverse("admin:followup_visibility_handoff_add")).status_code == 403
    handed_over.refresh_from_db()
    assert handed_over.opportunity_id == world.mine.pk
