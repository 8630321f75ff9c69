"""Suppression rules: each matcher, start and end on their clock, no re-entry, bad input."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError

from example_project.crm.models import Lead
from followup_visibility.alerting import holds, lifecycle, sweep
from followup_visibility.choices import AlertSignal, AlertStatus, IdentityKind
from followup_visibility.config import suppressions
from followup_visibility.ingest.touches import record_touch
from followup_visibility.models import Alert, Segment, Suppression, Team, TrackedOpportunity
from tests.conftest import tracked
from tests.factories_sla import make_segment, make_team
from tests.test_sweep import HOUR, T0, install_clock, new_leads

DAY, MINUTE = timedelta(days=1), timedelta(minutes=1)
#: Both leads have first response (4h) and first contact (8h) overdue here, nothing else.
NOW = T0 + 9 * HOUR


@dataclass
class World:
    """Lead A (the one rules match) and lead B, different in every matcher."""

    user: Any
    a: Lead
    b: Lead
    opp_a: TrackedOpportunity
    opp_b: TrackedOpportunity
    owner_a: Any
    team_a: Team
    segment_a: Segment
    region: Team  # the team above team_a


@pytest.fixture
def world(db: Any, make_user: Callable[..., Any]) -> World:
    install_clock()
    owner_a, owner_b = make_user(), make_user()
    [a] = new_leads(owner=owner_a, at=T0 - 2 * DAY, phone="+1 212 555 0123", email="ann@ex.com")
    [b] = new_leads(owner=owner_b, at=T0, phone="+1 202 456 1111", email="bob@example.com")
    region = make_team("region")
    teams = make_team("north", parent=region), make_team("south")
    segments = make_segment("pricing"), make_segment("brochure")
    for lead, team, segment in zip((a, b), teams, segments, strict=True):
        TrackedOpportunity.objects.filter(pk=tracked(lead).pk).update(team=team, segment=segment)
    return World(make_user(), a, b, tracked(a), tracked(b), owner_a, teams[0], segments[0], region)


MATCHERS: dict[str, Callable[[World], dict[str, Any]]] = {
    "opportunity": lambda w: {"opportunity": w.opp_a},
    "phone": lambda w: {"identity": "(212) 555-0123"},
    "email": lambda w: {"identity": " Ann@EX.com "},
    "segment": lambda w: {"segment": w.segment_a},
    "owner": lambda w: {"owner": w.owner_a},
    "team": lambda w: {"team": w.team_a},
    "team above": lambda w: {"team": w.region},
    "older than": lambda w: {"older_than": DAY},
    "several": lambda w: {"owner": w.owner_a, "team": w.team_a, "older_than": DAY},
}


def statuses(opportunity: TrackedOpportunity) -> dict[str, str]:
    return dict(Alert.objects.filter(opportunity=opportunity).values_list("signal", "status"))


def last_history(alert: Alert) -> Any:
    return alert.history.order_by("-history_id").first()


@pytest.mark.parametrize("matcher", MATCHERS.values(), ids=MATCHERS.keys())
def test_a_rule_holds_back_what_it_matches_until_it_ends(
    world: World, matcher: Callable[[World], dict[str, Any]]
) -> None:
    rule = suppressions.create(comment="Holiday backlog", by=world.user, now=NOW, **matcher(world))
    run = sweep.sweep(NOW)
    assert (run.examined, run.raised) == (4, 2)  # examined, but only B raised
    assert statuses(world.opp_a) == {}
    assert statuses(world.opp_b) == {
        AlertSignal.NO_FIRST_RESPONSE: AlertStatus.OPEN,
        AlertSignal.NEVER_CONTACTED: AlertStatus.OPEN,
    }
    # No re-entry while it is active, not even through a full pass.
    assert sweep.sweep(NOW + MINUTE, full=True).raised == 0

    suppressions.end(rule, by=world.user, now=NOW + 2 * MINUTE)
    # A steady pass raises what the rule held back, though nothing about it changed.
    after = sweep.sweep(NOW + 3 * MINUTE)
    assert not after.full and after.raised == 2
    assert set(statuses(world.opp_a).values()) == {AlertStatus.OPEN}


@pytest.mark.parametrize("matcher", MATCHERS.values(), ids=MATCHERS.keys())
def test_a_rule_suppresses_active_alerts_and_releases_them_when_it_ends(
    world: World, matcher: Callable[[World], dict[str, Any]]
) -> None:
    sweep.sweep(NOW)
    rule = suppressions.create(
        comment="Holiday backlog", by=world.user, now=NOW + MINUTE, **matcher(world)
    )
    held = list(Alert.objects.filter(opportunity=world.opp_a))
    assert len(held) == 2
    for alert in held:
        assert (alert.status, alert.suppression, alert.changed_by) == (
            AlertStatus.SUPPRESSED,
            rule,
            world.user,
        )
        history = last_history(alert)
        assert (history.history_change_reason, history.history_user) == (
            "suppressed: Holiday backlog",
            world.user,
        )
    assert set(statuses(world.opp_b).values()) == {AlertStatus.OPEN}
    assert list(rule.alerts.order_by("pk")) == sorted(held, key=lambda a: a.pk)

    suppressions.end(rule, by=world.user, now=NOW + 2 * MINUTE)
    for alert in held:
        alert.refresh_from_db()
        assert (alert.status, alert.suppression) == (AlertStatus.OPEN, None)
        assert last_history(alert).history_change_reason == "released: suppression ended"


def test_build_validates_and_normalizes_without_saving_and_add_applies(world: World) -> None:
    sweep.sweep(NOW)
    rule = suppressions.build(comment=" Fair ", by=world.user, now=NOW, identity="(212) 555-0123")
    assert rule.pk is None and (rule.identity_kind, rule.comment) == (IdentityKind.PHONE, "Fair")
    assert not Suppression.objects.exists()
    assert set(statuses(world.opp_a).values()) == {AlertStatus.OPEN}  # nothing held yet

    suppressions.add(rule, by=world.user, now=NOW)
    assert Suppression.objects.get() == rule and rule.history.get().history_user == world.user
    assert set(statuses(world.opp_a).values()) == {AlertStatus.SUPPRESSED}
    assert set(statuses(world.opp_b).values()) == {AlertStatus.OPEN}


def test_a_signal_rule_suppresses_that_signal_everywhere(world: World) -> None:
    sweep.sweep(NOW)
    suppressions.create(
        comment="Web forms broken", by=world.user, now=NOW, signal=AlertSignal.NO_FIRST_RESPONSE
    )
    for opportunity in (world.opp_a, world.opp_b):
        assert statuses(opportunity) == {
            AlertSignal.NO_FIRST_RESPONSE: AlertStatus.SUPPRESSED,
            AlertSignal.NEVER_CONTACTED: AlertStatus.OPEN,
        }


def test_identity_is_normalized_and_its_kind_inferred(world: World) -> None:
    phone = suppressions.create(comment="c", by=world.user, now=NOW, identity="212.555.0123")
    email = suppressions.create(comment="c", by=world.user, now=NOW, identity="ANN@ex.com")
    assert (phone.identity_kind, phone.identity_key) == (IdentityKind.PHONE, "+12125550123")
    assert (email.identity_kind, email.identity_key) == (IdentityKind.EMAIL, "ann@ex.com")


def test_a_rule_starting_later_takes_effect_at_the_pass_after_its_start(world: World) -> None:
    suppressions.create(
        comment="From tomorrow", by=world.user, now=NOW, starts_at=NOW + HOUR, team=world.team_a
    )
    sweep.sweep(NOW)
    assert set(statuses(world.opp_a).values()) == {AlertStatus.OPEN}
    assert sweep.sweep(NOW + HOUR - MINUTE).suppressed == 0
    run = sweep.sweep(NOW + HOUR)
    assert run.suppressed == 2
    assert set(statuses(world.opp_a).values()) == {AlertStatus.SUPPRESSED}


def test_a_rule_ends_on_its_own_clock(world: World) -> None:
    sweep.sweep(NOW)
    suppressions.create(
        comment="One hour", by=world.user, now=NOW, ends_at=NOW + HOUR, opportunity=world.opp_a
    )
    assert set(statuses(world.opp_a).values()) == {AlertStatus.SUPPRESSED}
    sweep.sweep(NOW + HOUR - MINUTE)
    assert set(statuses(world.opp_a).values()) == {AlertStatus.SUPPRESSED}
    sweep.sweep(NOW + HOUR)
    assert set(statuses(world.opp_a).values()) == {AlertStatus.OPEN}


def test_a_steady_pass_raises_what_an_expired_rule_held_back(world: World) -> None:
    suppressions.create(
        comment="One hour", by=world.user, now=NOW, ends_at=NOW + HOUR, owner=world.owner_a
    )
    sweep.sweep(NOW)
    assert statuses(world.opp_a) == {}
    run = sweep.sweep(NOW + HOUR)
    assert not run.full and run.raised == 2
    assert set(statuses(world.opp_a).values()) == {AlertStatus.OPEN}


def test_an_alert_two_rules_hold_stays_suppressed_until_both_end(world: World) -> None:
    sweep.sweep(NOW)
    first = suppressions.create(comment="one", by=world.user, now=NOW, opportunity=world.opp_a)
    second = suppressions.create(comment="two", by=world.user, now=NOW, owner=world.owner_a)
    suppressions.end(first, by=world.user, now=NOW + MINUTE)
    held = Alert.objects.filter(opportunity=world.opp_a)
    assert {(a.status, a.suppression_id) for a in held} == {(AlertStatus.SUPPRESSED, second.pk)}
    suppressions.end(second, by=world.user, now=NOW + 2 * MINUTE)
    assert set(statuses(world.opp_a).values()) == {AlertStatus.OPEN}


def test_a_snoozed_alert_is_suppressed_and_comes_back_open(world: World) -> None:
    sweep.sweep(NOW)
    alert = Alert.objects.get(opportunity=world.opp_a, signal=AlertSignal.NO_FIRST_RESPONSE)
    lifecycle.snooze(alert, reason="Later", by=world.user, now=NOW, until=NOW + DAY)
    rule = suppressions.create(comment="c", by=world.user, now=NOW, opportunity=world.opp_a)
    alert.refresh_from_db()
    assert (alert.status, alert.snoozed_until) == (AlertStatus.SUPPRESSED, None)
    suppressions.end(rule, by=world.user, now=NOW + MINUTE)
    alert.refresh_from_db()
    assert alert.status == AlertStatus.OPEN


def test_a_suppressed_alert_is_still_resolved_when_its_condition_clears(world: World) -> None:
    sweep.sweep(NOW)
    suppressions.create(comment="c", by=world.user, now=NOW, opportunity=world.opp_a)
    record_touch(
        world.a,
        channel="phone",
        direction="outbound",
        outcome="connected",
        occurred_at=NOW + MINUTE,
        now=NOW + MINUTE,
    )
    assert set(statuses(world.opp_a).values()) == {AlertStatus.RESOLVED}
    assert holds.release(NOW + 2 * MINUTE) == 0


def test_suppress_opportunities_makes_one_rule_each(world: World) -> None:
    sweep.sweep(NOW)
    rules = suppressions.suppress_opportunities(
        [world.opp_a.pk, world.opp_b.pk, 0],  # an unknown key is skipped
        comment="Duplicates of a campaign",
        by=world.user,
        now=NOW,
        signal=AlertSignal.NEVER_CONTACTED,
    )
    assert sorted(r.opportunity_id for r in rules) == sorted([world.opp_a.pk, world.opp_b.pk])
    assert all(r.pk and r.signal == AlertSignal.NEVER_CONTACTED for r in rules)
    assert Suppression.history.filter(history_type="+").count() == 2
    for opportunity in (world.opp_a, world.opp_b):
        alert = Alert.objects.get(opportunity=opportunity, signal=AlertSignal.NEVER_CONTACTED)
        assert alert.status == AlertStatus.SUPPRESSED
        assert alert.suppression.opportunity_id == opportunity.pk
        assert statuses(opportunity)[AlertSignal.NO_FIRST_RESPONSE] == AlertStatus.OPEN


def test_suppress_older_than_holds_old_leads_only(world: World) -> None:
    sweep.sweep(NOW)
    rule = suppressions.suppress_older_than(
        DAY, comment="Old leads before the CRM switch", by=world.user, now=NOW
    )
    assert rule.older_than == DAY
    assert set(statuses(world.opp_a).values()) == {AlertStatus.SUPPRESSED}
    assert set(statuses(world.opp_b).values()) == {AlertStatus.OPEN}
    # B grows old enough while the rule runs: the next pass holds it too.
    assert sweep.sweep(T0 + DAY).suppressed == 2
    assert set(statuses(world.opp_b).values()) == {AlertStatus.SUPPRESSED}


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"comment": " ", "signal": AlertSignal.STALE}, "comment"),
        ({"comment": "c"}, NON_FIELD_ERRORS),
        ({"comment": "c", "signal": AlertSignal.STALE, "ends_at": NOW - HOUR}, "ends_at"),
        ({"comment": "c", "signal": AlertSignal.STALE, "ends_at": NOW}, "ends_at"),
        (
            {
                "comment": "c",
                "signal": AlertSignal.STALE,
                "starts_at": NOW + 2 * HOUR,
                "ends_at": NOW + HOUR,
            },
            "ends_at",
        ),
        ({"comment": "c", "identity": "not a number"}, "identity"),
        ({"comment": "c", "older_than": -DAY}, "older_than"),
        ({"comment": "c", "older_than": timedelta(0)}, "older_than"),
        ({"comment": "c", "signal": "bogus"}, "signal"),
    ],
)
def test_bad_rules_write_nothing(world: World, kwargs: dict[str, Any], field: str) -> None:
    sweep.sweep(NOW)
    with pytest.raises(ValidationError) as err:
        suppressions.create(by=world.user, now=NOW, **kwargs)
    assert field in err.value.message_dict
    assert not Suppression.objects.exists()
    assert not Alert.objects.filter(status=AlertStatus.SUPPRESSED).exists()


def test_bulk_suppression_needs_a_comment(world: World) -> None:
    with pytest.raises(ValidationError) as err:
        suppressions.suppress_opportunities([world.opp_a.pk], comment="", by=world.user, now=NOW)
    assert "comment" in err.value.message_dict
    assert not Suppression.objects.exists()


def test_a_rule_ends_once_and_only_after_it_started(world: World) -> None:
    later = suppressions.create(
        comment="c", by=world.user, now=NOW, starts_at=NOW + HOUR, opportunity=world.opp_a
    )
    with pytest.raises(ValidationError) as err:
        suppressions.end(later, by=world.user, now=NOW)
    assert err.value.error_dict["ends_at"][0].code == "not_started"
    later.refresh_from_db()
    assert later.ends_at is None

    rule = suppressions.create(comment="c", by=world.user, now=NOW, opportunity=world.opp_a)
    ended = suppressions.end(rule, by=world.user, now=NOW + HOUR)
    assert ended.ends_at == NOW + HOUR
    assert ended.history.order_by("-history_id").first().history_user == world.user
    with pytest.raises(ValidationError) as err:
        suppressions.end(rule, by=world.user, now=NOW + 2 * HOUR)
    assert err.value.error_dict["ends_at"][0].code == "ended"
    rule.refresh_from_db()
    assert rule.ends_at == NOW + HOUR


def test_active_at_is_half_open(world: World) -> None:
    rule = suppressions.create(
        comment="c",
        by=world.user,
        now=NOW,
        starts_at=NOW + HOUR,
        ends_at=NOW + 2 * HOUR,
        signal=AlertSignal.STALE,
    )
    assert list(Suppression.objects.active_at(NOW + HOUR - MINUTE)) == []
    assert list(Suppression.objects.active_at(NOW + HOUR)) == [rule]
    assert list(Suppression.objects.active_at(NOW + 2 * HOUR)) == []


def test_consistency_counts_held_deadlines_as_expected(world: World) -> None:
    suppressions.create(comment="c", by=world.user, now=NOW, opportunity=world.opp_a)
    sweep.sweep(NOW)
    figures = sweep.consistency(NOW)
    assert (figures["due_deadlines"], figures["active_alerts"]) == (4, 2)
    assert (figures["due_without_alert"], figures["alerts_without_deadline"]) == (0, 0)


def test_a_steady_pass_looks_only_at_rules_that_started_or_ended(world: World) -> None:
    sweep.sweep(NOW)
    suppressions.create(comment="North is on leave", by=world.user, now=NOW, team=world.team_a)
    assert set(statuses(world.opp_a).values()) == {AlertStatus.SUPPRESSED}
    # Opportunity A leaves the rule's team and B joins it, written without a sync (so
    # nothing recomputes): a steady pass, which reads only rules that changed, leaves both.
    TrackedOpportunity.objects.filter(pk=world.opp_a.pk).update(team=None)
    TrackedOpportunity.objects.filter(pk=world.opp_b.pk).update(team=world.team_a)
    steady = sweep.sweep(NOW + MINUTE)
    assert (steady.full, steady.suppressed) == (False, 0)
    assert set(statuses(world.opp_a).values()) == {AlertStatus.SUPPRESSED}
    assert set(statuses(world.opp_b).values()) == {AlertStatus.OPEN}
    # The full pass looks at every alert and repairs both.
    full = sweep.sweep(NOW + 2 * MINUTE, full=True)
    assert full.suppressed == 2
    assert set(statuses(world.opp_a).values()) == {AlertStatus.OPEN}
    assert set(statuses(world.opp_b).values()) == {AlertStatus.SUPPRESSED}
    last = last_history(Alert.objects.filter(opportunity=world.opp_a).first())
    assert last.history_change_reason == "released: no suppression matches"


def test_a_deleted_rule_releases_its_alerts_at_the_next_steady_pass(world: World) -> None:
    sweep.sweep(NOW)
    rule = suppressions.create(comment="c", by=world.user, now=NOW, opportunity=world.opp_a)
    rule.delete()
    held = Alert.objects.filter(opportunity=world.opp_a)
    assert {(a.status, a.suppression_id) for a in held} == {(AlertStatus.SUPPRESSED, None)}
    run = sweep.sweep(NOW + MINUTE)
    assert not run.full
    assert set(statuses(world.opp_a).values()) == {AlertStatus.OPEN}
    assert last_history(held.first()).history_change_reason == "released: suppression ended"
