"""Multi-company hosts: a two-company CRM (``tests.tenant_host``) whose default manager shows
only the current company's leads. No read, write, notification or deletion crosses companies."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.urls import reverse

from followup_visibility.adapters import Snapshot, tenant_key
from followup_visibility.alerting import escalation, notifications, sweep
from followup_visibility.choices import (
    AlertSignal,
    EscalationOutcome,
    NotificationChannel,
    NotificationKind,
    Status,
)
from followup_visibility.config import escalation_policies, suppressions
from followup_visibility.engine import access
from followup_visibility.ingest import crm
from followup_visibility.ingest.merge import merge_opportunities
from followup_visibility.models import (
    Alert,
    DuplicateMatch,
    EscalationPolicy,
    Notification,
    Suppression,
    Team,
    TrackedOpportunity,
)
from followup_visibility.registry import get_adapter
from tests.factories_sla import install_defaults, make_team, ny, opportunity
from tests.tenant_host import models as host
from tests.tenant_host.models import Company, CompanyLead, working_in
from tests.test_notifications import DURATIONS, HOUR

HOOK = "tests.tenant_host.models.user_tenants"
#: Monday 2 March 2026 in New York (calendar 9-17): arrives 10:00, first response due 11:00;
#: the alert is high from 12:00, escalation level 1 fires at 12:00 and level 2 at 14:00.
ARRIVAL, DUE = ny(3, 2, 10), ny(3, 2, 11)
LEVEL_1, LEVEL_2 = ny(3, 2, 12), ny(3, 2, 14)
#: The first two views are the admin's; the last lets ops see every opportunity.
VIEW_PERMISSIONS = (
    "view_trackedopportunity",
    "view_alert",
    "view_notification",
    "view_escalation",
    "view_suppression",
)


@dataclass
class World:
    """Acme (A) and Bolt (B) share one database and one team tree.

    Sales (managed by Ann of Acme) holds a rep of each company; the company team above it is
    managed by Vic of Bolt. Olga runs sales operations for Acme (see-all). Dee works for both.
    """

    acme: Company
    bolt: Company
    rep_a: Any
    rep_b: Any
    ann_a: Any
    vic_b: Any
    olga_a: Any
    dee_ab: Any
    sales: Team
    lead_a: CompanyLead
    lead_b: CompanyLead


def lead(company: Company, name: str, owner: Any, now: datetime = ARRIVAL, **kw: Any) -> Any:
    """A lead created without signals and synced at ``now``, so that times are exact."""
    (row,) = CompanyLead.objects.bulk_create(
        [CompanyLead(company=company, name=name, owner=owner, created_at=now, **kw)]
    )
    crm.sync_objects([row], now)
    return row


@pytest.fixture
def world(db: Any, make_user: Callable[..., Any]) -> World:
    install_defaults(durations=DURATIONS)
    users = {
        name: make_user(name, email=f"{name}@example.com", is_staff=True)
        for name in ("rep_a", "rep_b", "ann_a", "vic_b", "olga_a", "dee_ab")
    }
    permissions = Permission.objects.filter(codename__in=VIEW_PERMISSIONS)
    for user in users.values():
        user.user_permissions.set(permissions)
    users["olga_a"].user_permissions.add(Permission.objects.get(codename="view_all_opportunities"))
    acme, bolt = Company.objects.create(name="Acme"), Company.objects.create(name="Bolt")
    acme.members.set([users[n] for n in ("rep_a", "ann_a", "olga_a", "dee_ab")])
    bolt.members.set([users[n] for n in ("rep_b", "vic_b", "dee_ab")])
    top = make_team("company")
    sales = make_team("sales", parent=top, members=[users["rep_a"], users["rep_b"]])
    Team.objects.filter(pk=top.pk).update(manager=users["vic_b"])
    Team.objects.filter(pk=sales.pk).update(manager=users["ann_a"])
    EscalationPolicy.objects.all().delete()
    escalation_policies.create_policy("Default", [HOUR, 3 * HOUR], is_default=True, now=ARRIVAL)
    phone = "(212) 555-0142"
    lead_a = lead(acme, "Acme pricing", users["rep_a"], team="sales", phone=phone)
    lead_b = lead(bolt, "Bolt brochure", users["rep_b"], team="sales", phone=phone)
    return World(acme, bolt, **users, sales=sales, lead_a=lead_a, lead_b=lead_b)


@pytest.fixture
def tenancy(settings: Any) -> None:
    settings.FOLLOWUP_VISIBILITY_USER_TENANTS = HOOK


def alert_of(row: CompanyLead) -> Alert:
    return Alert.objects.get(opportunity=opportunity(row), signal=AlertSignal.NO_FIRST_RESPONSE)


# Sync, backfill and reconcile --------------------------------------------------------------


def test_sync_stores_each_rows_company_and_follows_a_move(world: World) -> None:
    assert opportunity(world.lead_a).tenant == str(world.acme.pk)
    assert opportunity(world.lead_b).tenant == str(world.bolt.pk)
    CompanyLead.objects.filter(pk=world.lead_b.pk).update(company=world.acme)
    result = crm.sync_objects([CompanyLead.objects.get(pk=world.lead_b.pk)], DUE)
    assert result.updated == [opportunity(world.lead_b).pk]
    assert opportunity(world.lead_b).tenant == str(world.acme.pk)


def test_a_tenant_longer_than_the_column_is_hashed_not_cut() -> None:
    long_a, long_b = "x" * 64 + "a", "x" * 64 + "b"
    assert tenant_key("acme") == "acme"
    assert len(tenant_key(long_a)) == 64 and tenant_key(long_a) != tenant_key(long_b)


def test_reconcile_inside_one_companys_request_reads_every_company(world: World) -> None:
    gone = lead(world.acme, "Acme gone", world.rep_a)
    with working_in(world.acme):
        assert list(CompanyLead.objects.values_list("company", flat=True).distinct()) == [
            world.acme.pk
        ]
        # Made and deleted without signals, as an import or raw SQL would.
        (untracked,) = CompanyLead.objects.bulk_create(
            [CompanyLead(company=world.bolt, name="Bolt import", created_at=ARRIVAL)]
        )
        CompanyLead.objects.filter(pk=gone.pk)._raw_delete(connection.alias)
        out = StringIO()
        call_command("followup_reconcile", "tenant_host.CompanyLead", "--no-progress", stdout=out)
    assert "1 created, 0 updated, 1 closed as deleted" in out.getvalue()
    assert opportunity(world.lead_b).status == Status.OPEN
    assert opportunity(untracked).tenant == str(world.bolt.pk)
    assert opportunity(gone).status == Status.DELETED


def test_the_deletion_pass_reads_the_adapters_queryset(world: World) -> None:
    with working_in(world.acme):
        assert crm.reconcile_deleted(CompanyLead, DUE) == 0
        assert set(get_adapter(CompanyLead).get_queryset()) == {world.lead_a, world.lead_b}
    assert opportunity(world.lead_b).status == Status.OPEN


def test_backfill_inside_one_companys_request_tracks_every_company(world: World) -> None:
    TrackedOpportunity.objects.for_model(CompanyLead).delete()
    with working_in(world.bolt):
        call_command(
            "followup_backfill", "tenant_host.CompanyLead", "--no-progress", stdout=StringIO()
        )
    tracked = TrackedOpportunity.objects.for_model(CompanyLead)
    assert sorted(tracked.values_list("tenant", flat=True)) == sorted(
        [str(world.acme.pk), str(world.bolt.pk)]
    )


def test_two_companies_contacts_are_never_duplicates(world: World) -> None:
    twin = lead(world.acme, "Acme twin", world.rep_a, phone="212-555-0142")
    pairs = set(DuplicateMatch.objects.values_list("opportunity_id", "duplicate_id"))
    a, b, t = (opportunity(row).pk for row in (world.lead_a, world.lead_b, twin))
    assert pairs == {(a, t), (t, a)}
    assert b not in {pk for pair in pairs for pk in pair}


# Scope: the admin ----------------------------------------------------------------------------


def listed(client: Client, model: str) -> list[Any]:
    response = client.get(reverse(f"admin:followup_visibility_{model}_changelist"))
    assert response.status_code == 200
    return list(response.context["cl"].result_list)


def change_page(client: Client, model: str, pk: Any) -> int:
    return client.get(reverse(f"admin:followup_visibility_{model}_change", args=[pk])).status_code


def hidden(client: Client, model: str, obj: Any) -> bool:
    """The change page answers as for a key that does not exist: 404, or the admin's redirect
    to the index saying so, never the object."""
    url = reverse(f"admin:followup_visibility_{model}_change", args=[obj.pk])
    response = client.get(url, follow=True)
    gone = response.status_code == 404 or "doesn’t exist" in response.content.decode()
    return gone and str(obj) not in response.content.decode()


@pytest.mark.parametrize("who", ["olga_a", "ann_a"])
def test_a_user_of_one_company_sees_only_its_opportunities_and_alerts(
    client: Client, world: World, tenancy: None, who: str
) -> None:
    # Olga sees everything (of Acme); Ann manages sales, which holds a Bolt rep too.
    sweep.sweep(DUE, full=True)
    client.force_login(getattr(world, who))
    mine, theirs = opportunity(world.lead_a), opportunity(world.lead_b)
    assert [o.pk for o in listed(client, "trackedopportunity")] == [mine.pk]
    assert change_page(client, "trackedopportunity", mine.pk) == 200
    assert hidden(client, "trackedopportunity", theirs)
    assert [a.pk for a in listed(client, "alert")] == [alert_of(world.lead_a).pk]
    assert change_page(client, "alert", alert_of(world.lead_b).pk) == 404
    assert set(access.alerts_for(getattr(world, who))) == {alert_of(world.lead_a)}


def test_the_active_company_narrows_a_user_of_both(
    client: Client, world: World, tenancy: None
) -> None:
    sweep.sweep(DUE, full=True)
    for row in (world.lead_a, world.lead_b):
        Notification.objects.create(
            recipient=world.dee_ab,
            alert=alert_of(row),
            kind=NotificationKind.ALERT,
            channel=NotificationChannel.INBOX,
            dedupe_key="alert:3:0",
            subject=row.name,
            created_at=DUE,
            deliver_after=DUE,
        )
    assert set(notifications.inbox(world.dee_ab).values_list("subject", flat=True)) == {
        "Acme pricing",
        "Bolt brochure",
    }
    client.force_login(world.dee_ab)
    with working_in(world.bolt):
        assert [n.subject for n in listed(client, "notification")] == ["Bolt brochure"]
        # Dee owns nothing: a see-all Dee would see Bolt's only.
        assert not access.opportunities_for(world.dee_ab).exists()


def test_a_see_all_user_of_one_company_lists_only_its_notifications(
    client: Client, world: World, tenancy: None
) -> None:
    sweep.sweep(DUE, full=True)
    notifications.notify_alerts(LEVEL_1)
    client.force_login(world.olga_a)
    assert {n.alert_id for n in listed(client, "notification")} == {alert_of(world.lead_a).pk}


def test_escalation_steps_are_listed_within_the_users_company(
    client: Client, world: World, tenancy: None
) -> None:
    sweep.sweep(DUE, full=True)
    escalation.escalate(LEVEL_1)
    client.force_login(world.olga_a)
    assert {e.alert_id for e in listed(client, "escalation")} == {alert_of(world.lead_a).pk}


def test_a_superuser_the_hook_answers_none_for_sees_every_company(
    world: World, tenancy: None, make_user: Callable[..., Any]
) -> None:
    root = make_user("root", is_superuser=True)
    assert access.user_tenants(root) is None
    assert set(access.opportunities_for(root)) >= {
        opportunity(world.lead_a),
        opportunity(world.lead_b),
    }


def test_a_hook_returning_a_string_is_refused(
    world: World, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.FOLLOWUP_VISIBILITY_USER_TENANTS = HOOK
    monkeypatch.setattr(host, "user_tenants", lambda user: "acme")
    with pytest.raises(TypeError, match="returned the string"):
        access.scope_q(world.olga_a)


# Scope: suppression rules and people -----------------------------------------------------------


def test_a_limited_user_confines_rules_to_an_opportunity_of_theirs(
    world: World, tenancy: None
) -> None:
    with pytest.raises(ValidationError) as refused:
        suppressions.check_scope(world.olga_a, team=world.sales)
    assert "opportunity" in refused.value.message_dict
    with pytest.raises(ValidationError):
        suppressions.check_scope(world.olga_a, opportunity=opportunity(world.lead_b))
    suppressions.check_scope(world.olga_a, opportunity=opportunity(world.lead_a))


def test_rules_are_listed_within_the_users_company(world: World, tenancy: None) -> None:
    def rule(by: Any, **matchers: Any) -> Suppression:
        return suppressions.create(comment="why", by=by, now=DUE, **matchers)

    ours = rule(world.vic_b, opportunity=opportunity(world.lead_a))
    rule(world.vic_b, opportunity=opportunity(world.lead_b))
    rule(world.vic_b, signal=AlertSignal.STALE)  # every company's: not Olga's to see or end
    own = rule(world.olga_a, signal=AlertSignal.STALE)  # made before tenancy was turned on
    assert set(access.suppressions_for(world.olga_a)) == {ours, own}


def test_managing_a_person_needs_a_shared_company(world: World, tenancy: None) -> None:
    assert access.manages_person(world.olga_a, world.rep_a)
    assert not access.manages_person(world.olga_a, world.rep_b)
    assert not access.manages_person(world.ann_a, world.rep_b)  # in her team, not her company
    assert access.manages_person(world.ann_a, world.rep_a)


# Notifications and escalation ----------------------------------------------------------------


def test_an_owner_outside_the_opportunitys_company_is_not_notified(
    world: World, tenancy: None
) -> None:
    # A Bolt rep left as owner of an Acme lead (the CRM allows it; the company does not).
    stray = lead(world.acme, "Acme stray", world.rep_b, team="sales")
    sweep.sweep(DUE, full=True)
    assert notifications.notify_alerts(LEVEL_1) == 2
    told = set(Notification.objects.values_list("recipient", "alert"))
    assert (world.rep_b.pk, alert_of(stray).pk) not in told
    assert {
        (world.rep_a.pk, alert_of(world.lead_a).pk),
        (world.rep_b.pk, alert_of(world.lead_b).pk),
    } <= told


def test_escalation_passes_over_a_manager_of_another_company(world: World, tenancy: None) -> None:
    sweep.sweep(DUE, full=True)
    escalation.plan(DUE)
    steps = {s.alert_id: s for s in escalation.fire(LEVEL_1)}
    a, b = steps[alert_of(world.lead_a).pk], steps[alert_of(world.lead_b).pk]
    assert (a.outcome, a.recipient_id) == (EscalationOutcome.NOTIFIED, world.ann_a.pk)
    # Ann manages sales but not Bolt: level 1 of Bolt's alert goes up to Vic.
    assert (b.outcome, b.recipient_id) == (EscalationOutcome.NOTIFIED, world.vic_b.pk)
    (level_2,) = [s for s in escalation.fire(LEVEL_2) if s.alert_id == alert_of(world.lead_a).pk]
    # Above Ann there is only Vic, of Bolt: Acme's level 2 finds no one.
    assert level_2.outcome == EscalationOutcome.NO_MANAGER and level_2.recipient_id is None
    assert "company" in level_2.note
    notified = set(Notification.objects.values_list("recipient", "alert__opportunity__tenant"))
    assert notified == {(world.ann_a.pk, str(world.acme.pk)), (world.vic_b.pk, str(world.bolt.pk))}


def counting(user: Any) -> set[str] | None:
    """The test host's hook, counting who it is asked about."""
    asked[user.pk] += 1
    return host.user_tenants(user)


asked: Counter[Any] = Counter()


def test_the_hook_is_asked_once_per_recipient_per_batch(world: World, settings: Any) -> None:
    settings.FOLLOWUP_VISIBILITY_USER_TENANTS = "tests.test_tenancy.counting"
    asked.clear()
    lead(world.acme, "Acme second", world.rep_a, team="sales")
    sweep.sweep(DUE, full=True)
    assert notifications.notify_alerts(LEVEL_1) == 3
    assert asked == {world.rep_a.pk: 1, world.rep_b.pk: 1}
    asked.clear()
    escalation.plan(DUE)
    assert len(escalation.fire(LEVEL_1)) == 3
    # Ann is asked once for three alerts; Vic once, for Bolt's (Ann was passed over).
    assert asked == {world.ann_a.pk: 1, world.vic_b.pk: 1}


# Tenancy off ---------------------------------------------------------------------------------


def test_without_the_hook_tenants_limit_nothing(client: Client, world: World) -> None:
    stray = lead(world.acme, "Acme stray", world.rep_b, team="sales")
    sweep.sweep(DUE, full=True)
    assert access.user_tenants(world.olga_a) is None
    client.force_login(world.olga_a)
    assert len(listed(client, "trackedopportunity")) == 3
    assert change_page(client, "alert", alert_of(world.lead_b).pk) == 200
    assert access.opportunities_for(world.ann_a).count() == 3  # her team's, both companies
    assert access.manages_person(world.ann_a, world.rep_b)
    suppressions.check_scope(world.olga_a, team=world.sales)
    assert notifications.notify_alerts(LEVEL_1) == 3
    assert Notification.objects.filter(recipient=world.rep_b, alert=alert_of(stray)).exists()
    escalation.plan(DUE)
    steps = {s.alert_id: s for s in escalation.fire(LEVEL_1)}
    assert steps[alert_of(world.lead_b).pk].recipient_id == world.ann_a.pk


def test_an_empty_tenant_leaves_the_digest_as_it_was() -> None:
    # The digest this snapshot had before tenants existed: one-company hosts resync nothing.
    snap = Snapshot(
        title="Ann",
        owner_id=7,
        stage="new",
        status="open",
        close_reason="",
        arrived_at=datetime(2026, 3, 2, 15, tzinfo=UTC),
        value=Decimal("10.00"),
        team_key="sales",
        segment_hints={"source": "web"},
        phones=("+12125550142",),
    )
    assert snap.digest() == "d5f9eeec1e69a9f2c483e80c37e1bffd0fb0cfafbdd78be9c156ba5a1a124887"
    assert replace(snap, tenant="1").digest() != snap.digest()


def test_two_companies_records_are_never_merged(world: World) -> None:
    with pytest.raises(ValidationError) as refused:
        merge_opportunities(opportunity(world.lead_b), opportunity(world.lead_a), now=DUE)
    assert refused.value.code == "other_tenant"
    twin = lead(world.acme, "Acme twin", world.rep_a)
    merge_opportunities(opportunity(twin), opportunity(world.lead_a), now=DUE)
    assert opportunity(twin).status == Status.MERGED
