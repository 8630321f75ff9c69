"""The configuration endpoints: ``suppressions/``, ``inhibition-rules/`` and ``sla-policies/``.

Roles: alex, a rep of EMEA (no permission); bea, a rep of APAC; maria and olga, the managers
of EMEA and APAC (the suppression permissions, and those of inhibition rules and SLA policies,
without see-all); a viewer who may only read configuration; ops (see-all and every permission of
the app). The world is built once per module through the public functions, in a transaction
rolled back at the end; each test runs in its own savepoint, with the clock frozen at ``NOW``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
import time_machine
from django.apps import apps
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from example_project.crm.models import Lead
from followup_visibility.alerting import sweep
from followup_visibility.choices import AlertSignal, AlertStatus
from followup_visibility.config import policies, suppressions
from followup_visibility.ingest.crm import sync_objects
from followup_visibility.models import (
    Alert,
    ConfigurationGeneration,
    Deadline,
    InhibitionRule,
    OutboxMessage,
    Segment,
    SlaPolicy,
    SlaPolicyVersion,
    Suppression,
    Team,
    TrackedOpportunity,
)
from followup_visibility.models.policy import DURATION_FIELDS
from tests.conftest import tracked
from tests.test_admin_alerts import HOUR, NOW, T0
from tests.test_admin_matrix import (
    around_the_clock,
    company_defaults,
    every_permission_of_the_app,
    grant,
)

API = "/api/followup/"
MISSING = 987654321
MANAGER = (
    "add_suppression",
    "change_suppression",
    "view_slapolicy",
    "change_slapolicy",
    "view_inhibitionrule",
    "add_inhibitionrule",
    "change_inhibitionrule",
    "delete_inhibitionrule",
)


@dataclass
class World:
    users: dict[str, int] = field(default_factory=dict)
    opps: dict[str, int] = field(default_factory=dict)
    rules: dict[str, int] = field(default_factory=dict)
    teams: dict[str, int] = field(default_factory=dict)
    policies: dict[str, int] = field(default_factory=dict)
    inhibition: int = 0

    def user(self, name: str) -> Any:
        return get_user_model().objects.get(pk=self.users[name])

    def opp(self, name: str) -> TrackedOpportunity:
        return TrackedOpportunity.objects.get(pk=self.opps[name])


def build() -> World:
    world = World()
    User = get_user_model()
    users = {
        name: User.objects.create_user(name, password="pw")
        for name in ("alex", "bea", "maria", "olga", "viewer", "ops")
    }
    for name in ("maria", "olga"):
        grant(users[name], MANAGER)
    grant(users["viewer"], ("view_slapolicy", "view_inhibitionrule"))
    grant(users["ops"], every_permission_of_the_app())
    users["root"] = User.objects.create_superuser("root", password="pw")
    world.users = {name: user.pk for name, user in users.items()}

    past = T0 - 100 * HOUR
    default = company_defaults(past)
    # Team calendars around the clock: business time is elapsed time.
    emea = Team.objects.create(
        key="emea", name="EMEA", manager=users["maria"], calendar=around_the_clock("EMEA")
    )
    apac = Team.objects.create(
        key="apac", name="APAC", manager=users["olga"], calendar=around_the_clock("APAC")
    )
    emea.members.add(users["alex"])
    apac.members.add(users["bea"])
    world.teams = {"emea": emea.pk, "apac": apac.pk}
    for team in (emea, apac):
        policies.create_policy(
            f"{team.name} SLA", {"first_response": 4 * HOUR}, team=team, now=past
        )
    world.policies = {
        "default": default.pk,
        "emea": SlaPolicy.objects.get(team=emea).pk,
        "apac": SlaPolicy.objects.get(team=apac).pk,
    }
    Segment.objects.create(code="pricing", name="Pricing request")
    leads = Lead.objects.bulk_create(
        [
            Lead(name="Acme pricing", owner=users["alex"], phone="(212) 555-0142", created_at=T0),
            Lead(name="Acme renewal", owner=users["alex"], created_at=T0),
            Lead(name="Globex brochure", owner=users["bea"], created_at=T0),
        ]
    )
    sync_objects(leads, T0, confirm_owners=True)
    make = suppressions.create
    # Ended before anything fell due: it held nothing.
    ended = make(
        comment="Old EMEA pause",
        by=users["maria"],
        now=T0 + HOUR,
        team=emea,
        ends_at=T0 + 2 * HOUR,
    )
    sweep.sweep(NOW)  # first response (4 h) and first contact (8 h) are overdue on each
    world.opps = {
        name: tracked(lead).pk
        for name, lead in zip(("acme", "renewal", "globex"), leads, strict=True)
    }
    acme, globex = world.opp("acme"), world.opp("globex")
    world.rules = {
        "maria": make(
            comment="Acme: on holiday",
            by=users["maria"],
            now=NOW - HOUR,
            opportunity=acme,
            signal=AlertSignal.NEVER_CONTACTED,
        ).pk,
        "olga": make(
            comment="Globex: paused", by=users["olga"], now=NOW - HOUR, opportunity=globex
        ).pk,
        "ended": ended.pk,
        "scheduled": make(
            comment="APAC offsite", by=users["ops"], now=NOW, starts_at=NOW + HOUR, team=apac
        ).pk,
    }
    rule, _created = InhibitionRule.objects.get_or_create(
        source=AlertSignal.DUPLICATE, target=AlertSignal.STALE
    )
    world.inhibition = rule.pk
    return world


@pytest.fixture(scope="module")
def world(django_db_setup: Any, django_db_blocker: Any) -> Iterator[World]:
    with django_db_blocker.unblock(), transaction.atomic():
        with time_machine.travel(NOW, tick=False):
            built = build()
        yield built
        transaction.set_rollback(True)


@pytest.fixture(autouse=True)
def frozen(world: World, db: Any) -> Iterator[None]:
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def as_(world: World, api: Callable[..., APIClient]) -> Callable[[str | None], APIClient]:
    """A signed-in client for a role (anonymous for None)."""
    return lambda name: api(world.user(name) if name else None)


def census() -> dict[str, int]:
    """Rows of every model (history included): a refused or read-only request changes none.
    Sessions aside: signing a test client in writes one."""
    return {
        model._meta.label: model._base_manager.count()
        for model in apps.get_models()
        if model is not Session
    }


def ids(response: Any) -> set[int]:
    assert response.status_code == 200, response.json()
    return {row["id"] for row in response.json()["results"]}


def fields(response: Any) -> dict[str, list[str]]:
    assert response.status_code == 400, response.json()
    body = response.json()
    assert (body["status"], body["code"]) == (400, "invalid")
    return dict(body["fields"])


def queries(client: APIClient, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200
    return len(captured)


# suppressions/ -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "visible"),
    [
        # A rep sees the rules confined to their opportunities; a manager also those about
        # their team and the ones they made; see-all everything.
        ("alex", {"maria"}),
        ("bea", {"olga"}),
        ("maria", {"maria", "ended"}),
        ("olga", {"olga", "scheduled"}),
        ("ops", {"maria", "olga", "ended", "scheduled"}),
    ],
)
def test_the_list_is_scoped(world: World, as_: Any, role: str, visible: set[str]) -> None:
    assert ids(as_(role).get(API + "suppressions/")) == {world.rules[n] for n in visible}


def test_the_list_filters_by_state_at_the_request_moment(world: World, as_: Any) -> None:
    client = as_("ops")
    expected = {"active": {"maria", "olga"}, "ended": {"ended"}, "scheduled": {"scheduled"}}
    for state, names in expected.items():
        found = ids(client.get(API + f"suppressions/?state={state}"))
        assert found == {world.rules[n] for n in names}, state
    assert "state" in fields(client.get(API + "suppressions/?state=sometime"))


def test_a_rule_reads_with_its_matchers_state_and_held_alerts(world: World, as_: Any) -> None:
    body = as_("alex").get(API + f"suppressions/{world.rules['maria']}/").json()
    assert body["opportunity"] == world.opps["acme"]
    assert (body["signal"], body["state"], body["held_alerts"]) == ("never_contacted", "active", 1)
    assert body["created_by"]["username"] == "maria"
    ended = as_("maria").get(API + f"suppressions/{world.rules['ended']}/").json()
    assert (ended["state"], ended["team"]["name"], ended["held_alerts"]) == ("ended", "EMEA", 0)


def test_a_rule_out_of_scope_answers_like_a_missing_one(world: World, as_: Any) -> None:
    client = as_("alex")
    hidden = client.get(API + f"suppressions/{world.rules['olga']}/")
    missing = client.get(API + f"suppressions/{MISSING}/")
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json() == missing.json()
    assert as_(None).get(API + "suppressions/").status_code == 401


def test_a_manager_creates_a_rule_in_their_scope_and_it_holds_at_once(
    world: World, as_: Any
) -> None:
    renewal = world.opp("renewal")
    response = as_("maria").post(
        API + "suppressions/",
        {
            "opportunity": renewal.pk,
            "signal": "no_first_response",
            "ends_at": (NOW + 48 * HOUR).isoformat(),
            "comment": "Customer asked us to wait",
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["state"], body["held_alerts"], body["created_by"]["username"]) == (
        "active",
        1,
        "maria",
    )
    rule = Suppression.objects.get(pk=body["id"])
    assert (rule.opportunity_id, rule.starts_at, rule.created_at) == (renewal.pk, NOW, NOW)
    alert = Alert.objects.get(opportunity=renewal, signal=AlertSignal.NO_FIRST_RESPONSE)
    assert (alert.status, alert.suppression_id) == (AlertStatus.SUPPRESSED, rule.pk)
    assert rule.history.get().history_user == world.user("maria")


def test_the_contact_identity_is_normalized_and_see_all_may_reach_further(
    world: World, as_: Any
) -> None:
    response = as_("ops").post(
        API + "suppressions/",
        {"identity": "212.555.0142", "segment": "pricing", "comment": "Known tester"},
        format="json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["identity_kind"], body["segment"]["code"]) == ("phone", "pricing")
    assert body["identity"].endswith("2125550142")
    before = census()
    matchless = as_("ops").post(API + "suppressions/", {"comment": "Everything"}, format="json")
    assert fields(matchless)["non_field_errors"][0].startswith("Say what to suppress")
    assert census() == before


@pytest.mark.parametrize(
    ("payload", "field", "message"),
    [
        # Another team's opportunity is "no such", exactly as one that does not exist.
        (lambda w: {"opportunity": w.opps["globex"]}, "opportunity", "No such opportunity."),
        (lambda w: {"opportunity": MISSING}, "opportunity", "No such opportunity."),
        (lambda w: {"team": w.teams["apac"]}, "team", "No such team."),
        (lambda w: {"team": MISSING}, "team", "No such team."),
        (lambda w: {"owner": w.users["bea"]}, "owner", "No such user."),
        (lambda w: {"owner": MISSING}, "owner", "No such user."),
        # Unconfined: a signal alone would silence the whole company.
        (lambda w: {"signal": "stale"}, "non_field_errors", "A rule you make must stay within"),
    ],
)
def test_a_manager_may_not_reach_beyond_their_scope(
    world: World, as_: Any, payload: Callable[[World], dict[str, Any]], field: str, message: str
) -> None:
    client = as_("maria")
    before = census()
    body = {**payload(world), "comment": "Too wide"}
    errors = fields(client.post(API + "suppressions/", body, format="json"))
    assert list(errors) == [field] and errors[field][0].startswith(message), errors
    assert census() == before


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"starts_at": "2026-03-02T18:00:00"}, "starts_at"),  # naive
        ({"ends_at": "2026-03-01T00:00:00Z"}, "ends_at"),  # in the past (the domain says so)
        ({"signal": "sometimes"}, "signal"),
        ({"identity": "not a number"}, "identity"),
        ({"older_than": "soon"}, "older_than"),
        ({"older_than": "-1 00:00:00"}, "older_than"),
        ({"opportunity": "1"}, "opportunity"),  # ids are JSON numbers
        ({"comment": 5}, "comment"),
        ({"colour": "red"}, "colour"),
        ({"comment": "  "}, "comment"),
    ],
)
def test_bad_input_is_a_field_error_and_writes_nothing(
    world: World, as_: Any, payload: dict[str, Any], field: str
) -> None:
    client = as_("maria")
    body = {"opportunity": world.opps["renewal"], "comment": "Why", **payload}
    before = census()
    assert field in fields(client.post(API + "suppressions/", body, format="json"))
    assert census() == before


def test_creating_needs_the_add_permission(world: World, as_: Any) -> None:
    body = {"opportunity": world.opps["acme"], "comment": "Mine"}
    before = census()
    refused = as_("alex").post(API + "suppressions/", body, format="json")
    assert (refused.status_code, refused.json()["code"]) == (403, "permission_denied")
    assert as_(None).post(API + "suppressions/", body, format="json").status_code == 401
    assert census() == before


def test_ending_a_rule_releases_what_it_held(world: World, as_: Any) -> None:
    acme = world.opp("acme")
    held = Alert.objects.get(opportunity=acme, signal=AlertSignal.NEVER_CONTACTED)
    assert held.status == AlertStatus.SUPPRESSED
    response = as_("maria").post(API + f"suppressions/{world.rules['maria']}/end/")
    assert response.status_code == 200, response.json()
    assert response.json()["state"] == "ended"
    assert datetime.fromisoformat(response.json()["ends_at"]) == NOW
    held.refresh_from_db()
    assert held.status == AlertStatus.OPEN
    assert Suppression.objects.get(pk=world.rules["maria"]).history.first().history_user == (
        world.user("maria")
    )


def test_ending_is_refused_without_permission_out_of_scope_or_when_not_active(
    world: World, as_: Any
) -> None:
    before = census()
    url = API + "suppressions/{}/end/"
    assert as_("alex").post(url.format(world.rules["maria"])).status_code == 403
    assert as_(None).post(url.format(world.rules["maria"])).status_code == 401
    hidden = as_("olga").post(url.format(world.rules["maria"]))
    missing = as_("olga").post(url.format(MISSING))
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json() == missing.json()
    assert fields(as_("maria").post(url.format(world.rules["ended"]))) == {
        "ends_at": ["This suppression has already ended."]
    }
    assert "ends_at" in fields(as_("ops").post(url.format(world.rules["scheduled"])))
    # It takes no body: a field is refused, not ignored.
    assert fields(as_("maria").post(url.format(world.rules["maria"]), {"x": 1}, format="json")) == {
        "x": ["Unknown field."]
    }
    assert "non_field_errors" in fields(
        as_("maria").post(url.format(world.rules["maria"]), [], format="json")
    )
    assert census() == before


def test_the_list_costs_the_same_at_any_page_size(world: World, as_: Any) -> None:
    client = as_("ops")
    assert queries(client, API + "suppressions/?page_size=1") == queries(
        client, API + "suppressions/?page_size=20"
    )
    manager = as_("maria")
    assert queries(manager, API + "suppressions/?page_size=1") == queries(
        manager, API + "suppressions/?page_size=20"
    )


# inhibition-rules/ ---------------------------------------------------------------------------


def test_inhibition_rules_are_read_with_the_view_permission(world: World, as_: Any) -> None:
    listed = ids(as_("viewer").get(API + "inhibition-rules/"))
    assert world.inhibition in listed
    assert listed == set(InhibitionRule.objects.values_list("pk", flat=True))
    body = as_("maria").get(API + f"inhibition-rules/{world.inhibition}/").json()
    assert (body["source"], body["target"], body["is_active"]) == ("duplicate", "stale", True)
    assert as_("alex").get(API + "inhibition-rules/").status_code == 403
    assert as_(None).get(API + "inhibition-rules/").status_code == 401
    assert as_("viewer").get(API + f"inhibition-rules/{MISSING}/").status_code == 404
    filtered = ids(as_("viewer").get(API + "inhibition-rules/?source=duplicate&is_active=true"))
    assert filtered == {world.inhibition}
    assert ids(as_("viewer").get(API + "inhibition-rules/?is_active=false")) == set()
    assert "is_active" in fields(as_("viewer").get(API + "inhibition-rules/?is_active=maybe"))


def test_see_all_creates_changes_and_deletes_a_rule_with_history(world: World, as_: Any) -> None:
    client = as_("ops")
    created = client.post(
        API + "inhibition-rules/",
        {"source": "no_first_response", "target": "never_contacted", "comment": " One is enough "},
        format="json",
    )
    assert created.status_code == 201, created.json()
    pk = created.json()["id"]
    rule = InhibitionRule.objects.get(pk=pk)
    assert (rule.is_active, rule.comment) == (True, "One is enough")

    changed = client.patch(API + f"inhibition-rules/{pk}/", {"is_active": False}, format="json")
    assert changed.status_code == 200, changed.json()
    assert changed.json()["is_active"] is False
    assert client.delete(API + f"inhibition-rules/{pk}/").status_code == 204
    assert not InhibitionRule.objects.filter(pk=pk).exists()
    history = InhibitionRule.history.filter(id=pk).order_by("history_date", "history_id")
    assert [(h.history_type, h.history_user_id, h.history_date) for h in history] == [
        ("+", world.users["ops"], NOW),
        ("~", world.users["ops"], NOW),
        ("-", world.users["ops"], NOW),
    ]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"source": "stale", "target": "stale"}, "target"),
        ({"source": "duplicate", "target": "stale"}, "target"),  # the pair exists
        ({"source": "sometimes", "target": "stale"}, "source"),
        ({"source": "stale"}, "target"),
        ({"source": "stale", "target": "no_owner", "is_active": "maybe"}, "is_active"),
        ({"source": "stale", "target": "no_owner", "priority": 1}, "priority"),
    ],
)
def test_a_bad_rule_is_a_field_error(
    world: World, as_: Any, payload: dict[str, Any], field: str
) -> None:
    before = census()
    assert field in fields(as_("ops").post(API + "inhibition-rules/", payload, format="json"))
    assert census() == before


def test_changing_a_rule_into_an_existing_pair_is_refused(world: World, as_: Any) -> None:
    client = as_("ops")
    other = client.post(
        API + "inhibition-rules/", {"source": "duplicate", "target": "no_owner"}, format="json"
    ).json()["id"]
    before = census()
    response = client.patch(API + f"inhibition-rules/{other}/", {"target": "stale"}, format="json")
    assert "target" in fields(response)
    assert census() == before


def test_only_see_all_changes_inhibition_rules(world: World, as_: Any) -> None:
    """Company-wide: a manager holding every inhibition permission is refused, 403."""
    url = API + f"inhibition-rules/{world.inhibition}/"
    before = census()
    maria = as_("maria")
    attempts = [
        maria.post(
            API + "inhibition-rules/", {"source": "stale", "target": "no_owner"}, format="json"
        ),
        maria.patch(url, {"is_active": False}, format="json"),
        maria.delete(url),
        as_("viewer").patch(url, {"is_active": False}, format="json"),
        as_("viewer").delete(url),
    ]
    assert [r.status_code for r in attempts] == [403] * 5
    assert as_(None).delete(url).status_code == 401
    assert as_("ops").patch(
        API + f"inhibition-rules/{MISSING}/", {}, format="json"
    ).status_code == (404)
    assert census() == before


def test_inhibition_rules_list_costs_the_same_at_any_page_size(world: World, as_: Any) -> None:
    client = as_("ops")
    for source in ("no_first_response", "customer_waiting", "call_retry_due"):
        created = client.post(
            API + "inhibition-rules/", {"source": source, "target": "stale"}, format="json"
        )
        assert created.status_code == 201
    assert InhibitionRule.objects.count() >= 3
    assert queries(client, API + "inhibition-rules/?page_size=1") == queries(
        client, API + "inhibition-rules/?page_size=20"
    )


# sla-policies/ -------------------------------------------------------------------------------


def test_policies_are_read_with_the_view_permission(world: World, as_: Any) -> None:
    listed = ids(as_("viewer").get(API + "sla-policies/"))
    assert listed == set(SlaPolicy.objects.values_list("pk", flat=True))
    assert set(world.policies.values()) <= listed
    body = as_("viewer").get(API + f"sla-policies/{world.policies['emea']}/").json()
    assert (body["name"], body["team"]["name"], body["is_default"]) == ("EMEA SLA", "EMEA", False)
    assert (body["latest_version"], body["retired"], body["scope"]) == (1, False, "EMEA")
    assert ids(as_("viewer").get(API + f"sla-policies/?team={world.teams['apac']}")) == {
        world.policies["apac"]
    }
    assert as_("alex").get(API + "sla-policies/").status_code == 403
    assert as_(None).get(API + "sla-policies/").status_code == 401
    assert as_("viewer").get(API + f"sla-policies/{MISSING}/").status_code == 404
    assert as_("viewer").get(API + f"sla-policies/{MISSING}/versions/").status_code == 404


def test_versions_carry_their_durations_and_effective_from(world: World, as_: Any) -> None:
    policy = SlaPolicy.objects.get(pk=world.policies["emea"])
    policies.publish_version(
        policy,
        {"first_response": 2 * HOUR, "stage_limits": {"proposal": 144000}},
        now=NOW - HOUR,
        apply_to_open=False,
        by=world.user("maria"),
        comment="Faster",
    )
    response = as_("viewer").get(API + f"sla-policies/{policy.pk}/versions/")
    rows = response.json()["results"]
    assert [row["number"] for row in rows] == [2, 1]
    newest = rows[0]
    assert datetime.fromisoformat(newest["effective_from"]) == NOW - HOUR
    assert (newest["applies_to_open"], newest["comment"]) == (False, "Faster")
    assert newest["created_by"]["username"] == "maria"
    assert newest["durations"]["first_response"] == "02:00:00"
    assert newest["durations"]["stale"] is None  # inherited
    assert set(newest["durations"]) == set(DURATION_FIELDS.values())
    assert newest["stage_limits"] == {"proposal": 144000.0}


def test_policy_lists_cost_the_same_at_any_page_size(world: World, as_: Any) -> None:
    client = as_("viewer")
    assert queries(client, API + "sla-policies/?page_size=1") == queries(
        client, API + "sla-policies/?page_size=20"
    )
    policy = SlaPolicy.objects.get(pk=world.policies["default"])
    for hours in (3, 5):
        values = {**policies.current_values(policy), "first_response": hours * HOUR}
        policies.publish_version(policy, values, now=NOW, apply_to_open=False, by=world.user("ops"))
    url = API + f"sla-policies/{policy.pk}/versions/"
    assert queries(client, url + "?page_size=1") == queries(client, url + "?page_size=20")


def stored() -> tuple[Any, ...]:
    """Every row of every model counted, and the rows a recompute or publish would touch."""
    return (
        census(),
        list(Deadline.objects.order_by("pk").values()),
        list(Alert.objects.order_by("pk").values()),
        list(TrackedOpportunity.objects.order_by("pk").values()),
        list(SlaPolicyVersion.objects.order_by("pk").values()),
        list(OutboxMessage.objects.order_by("pk").values()),
        list(ConfigurationGeneration.objects.values()),
    )


def test_what_if_counts_the_change_and_saves_nothing(world: World, as_: Any) -> None:
    before = stored()
    url = API + f"sla-policies/{world.policies['emea']}/what-if/"
    # EMEA's first response is 4 h: alex's two leads, 9 h old, are overdue; at 20 h neither.
    response = as_("maria").post(url, {"first_response": "20:00:00"}, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["examined"], datetime.fromisoformat(body["now"])) == (2, NOW)
    assert body["draft"]["first_response"] == "20:00:00"
    first = [row for row in body["rows"] if row["signal"] == "no_first_response"]
    assert [(r["segment"], r["current"], r["proposed"], r["change"]) for r in first] == [
        (None, 2, 0, -2)
    ]
    assert body["rows"][0]["signal"] == "no_first_response"  # the largest change first
    # First contact (8 h, inherited) stays overdue on both: as many opportunities either way.
    assert body["current"] == body["proposed"] == 2 and body["change"] == 0
    assert stored() == before


def test_what_if_on_the_default_with_iso_durations_and_stage_limits(world: World, as_: Any) -> None:
    before = stored()
    url = API + f"sla-policies/{world.policies['default']}/what-if/"
    response = as_("ops").post(
        url,
        {"never_contacted": "PT20H", "stage_limits": {"new": 3600}},
        format="json",
    )
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["examined"] == 3
    assert body["draft"]["never_contacted"] == "20:00:00"
    assert body["draft"]["stage_limits"] == {"new": 3600.0}
    contact = {r["signal"]: r for r in body["rows"]}["never_contacted"]
    # APAC's lead has no first-contact override: 9 h old, no longer overdue at 20 h. EMEA's
    # policy overrides only the first response, so its leads inherit the default too.
    assert (contact["current"], contact["proposed"]) == (3, 0)
    assert stored() == before


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"first_response": "-01:00:00"}, "first_response"),
        ({"first_response": "00:00:00"}, "first_response"),
        ({"first_response": "soon"}, "first_response"),
        ({"first_response": [4]}, "first_response"),
        ({"first_response": 14400}, "first_response"),  # a duration is text, as documented
        ({"stale": "400 00:00:00"}, "stale"),
        ({"stage_limits": {"new": -5}}, "stage_limits"),
        ({"stage_limits": "fast"}, "stage_limits"),
        ({"retired": "perhaps"}, "retired"),
        ({"retired": 0}, "retired"),
        ({"stage_limits": {"new": "3600"}}, "stage_limits.new"),
        ({"speed": "fast"}, "speed"),
    ],
)
def test_what_if_refuses_invalid_values_by_field(
    world: World, as_: Any, payload: dict[str, Any], field: str
) -> None:
    before = stored()
    url = API + f"sla-policies/{world.policies['emea']}/what-if/"
    assert field in fields(as_("maria").post(url, payload, format="json"))
    assert stored() == before


def test_the_default_cannot_be_previewed_retired(world: World, as_: Any) -> None:
    url = API + f"sla-policies/{world.policies['default']}/what-if/"
    assert "retired" in fields(as_("ops").post(url, {"retired": True}, format="json"))


def test_what_if_is_for_those_who_may_change_the_policy(world: World, as_: Any) -> None:
    before = stored()
    url = API + "sla-policies/{}/what-if/"
    body = {"first_response": "20:00:00"}

    def post(role: str | None, policy: str) -> int:
        pk = world.policies.get(policy, MISSING)
        return int(as_(role).post(url.format(pk), body, format="json").status_code)

    assert post("maria", "apac") == 403  # another team's
    assert post("maria", "default") == 403  # company-wide: see-all only
    assert post("viewer", "emea") == 403  # no change permission
    assert post("alex", "emea") == 403
    assert post(None, "emea") == 401
    assert post("maria", "missing") == 404
    assert post("olga", "apac") == 200
    assert post("root", "default") == 200
    assert stored() == before
