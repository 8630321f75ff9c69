"""SLA policies: precedence per duration, retired and dated versions, validation, publishing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError

from followup_visibility.choices import AlertSignal
from followup_visibility.config import policies
from followup_visibility.config.policies import create_policy, publish_version
from followup_visibility.engine import calendars, sla
from followup_visibility.engine.sla import PolicyBook
from followup_visibility.models import SegmentRule, SlaPolicy, SlaPolicyVersion
from followup_visibility.models.policy import DURATION_FIELDS
from tests.factories_sla import (
    DURATIONS,
    deadlines_of,
    install_defaults,
    lead_at,
    make_policy,
    make_segment,
    make_team,
    ny,
)

S = AlertSignal
H = timedelta(hours=1)
M = timedelta(minutes=1)


@pytest.fixture(autouse=True)
def defaults(db):
    yield install_defaults(stage_limits={"new": 8 * 3600, "working": 16 * 3600})
    calendars._cache.clear()


@pytest.fixture
def org(defaults):
    """Policies on every scope; each leaves some durations empty for a broader one to fill."""
    team, other_team = make_team("east"), make_team("west")
    segment = make_segment("pricing")
    versions = {
        "default": defaults.version,
        "segment": make_policy(segment=segment, first_response=2 * H, reply=20 * M),
        "team": make_policy(
            team=team, first_response=3 * H, reply=30 * M, stale=H, stage_limits={"new": 3600}
        ),
        "team+segment": make_policy(
            team=team, segment=segment, first_response=10 * M, stage_limits={"working": 60}
        ),
    }
    return {
        "team": team,
        "other_team": other_team,
        "segment": segment,
        "segment_policy": versions["segment"].policy,
        "versions": versions,
    }


def resolved(org, team, segment):
    """``{field: (duration, scope name)}`` for the four fields the scopes set."""
    names = {v.pk: name for name, v in org["versions"].items()}
    result = PolicyBook.load().resolve(
        org[team].pk if team else None, org["segment"].pk if segment else None, ny(3, 10, 9)
    )
    fields = {signal: DURATION_FIELDS[signal] for signal in result.durations}
    picked = {
        fields[signal]: (duration, names[version])
        for signal, (duration, version) in result.durations.items()
        if fields[signal] in {"first_response", "reply", "stale", "never_contacted"}
    }
    stages = {stage: (limit, names[v]) for stage, (limit, v) in result.stage_limits.items()}
    return picked, stages


@pytest.mark.parametrize(
    ("team", "segment", "expected", "stages"),
    [
        (
            "team",
            True,
            {
                "first_response": (10 * M, "team+segment"),
                "reply": (20 * M, "segment"),  # segment beats team
                "stale": (H, "team"),
                "never_contacted": (2 * H, "default"),
            },
            {"new": (H, "team"), "working": (M, "team+segment")},
        ),
        (
            None,
            True,
            {
                "first_response": (2 * H, "segment"),
                "reply": (20 * M, "segment"),
                "stale": (16 * H, "default"),
                "never_contacted": (2 * H, "default"),
            },
            {"new": (8 * H, "default"), "working": (16 * H, "default")},
        ),
        (
            "team",
            False,
            {
                "first_response": (3 * H, "team"),
                "reply": (30 * M, "team"),
                "stale": (H, "team"),
                "never_contacted": (2 * H, "default"),
            },
            {"new": (H, "team"), "working": (16 * H, "default")},
        ),
        (
            "other_team",
            True,
            {
                "first_response": (2 * H, "segment"),
                "reply": (20 * M, "segment"),
                "stale": (16 * H, "default"),
                "never_contacted": (2 * H, "default"),
            },
            {"new": (8 * H, "default"), "working": (16 * H, "default")},
        ),
        (
            None,
            False,
            {
                "first_response": (H, "default"),
                "reply": (3 * H, "default"),
                "stale": (16 * H, "default"),
                "never_contacted": (2 * H, "default"),
            },
            {"new": (8 * H, "default"), "working": (16 * H, "default")},
        ),
    ],
    ids=["team+segment", "segment", "team", "other-team+segment", "default"],
)
def test_precedence_per_duration(org, team, segment, expected, stages):
    assert resolved(org, team, segment) == (expected, stages)


def test_every_signal_resolves_for_an_unscoped_opportunity(defaults):
    result = PolicyBook.load().resolve(None, None, ny(3, 10, 9))
    assert {s: d for s, (d, _v) in result.durations.items()} == {
        signal: DURATIONS[name] for signal, name in DURATION_FIELDS.items()
    }


def test_deadlines_record_the_version_that_supplied_each_duration(org):
    SegmentRule.objects.create(segment=org["segment"], hint_field="source", hint_value="pricing")
    lead = lead_at(ny(3, 9, 9), team="east", source="pricing")
    rows = deadlines_of(lead)
    versions = org["versions"]
    assert rows[S.NO_FIRST_RESPONSE].policy_version_id == versions["team+segment"].pk
    assert rows[S.NO_FIRST_RESPONSE].due_at == ny(3, 9, 9, 10)
    assert rows[S.NEVER_CONTACTED].policy_version_id == versions["default"].pk
    assert rows[S.NO_OWNER].policy_version_id == versions["default"].pk
    assert rows[S.STAGE_STALLED].policy_version_id == versions["team"].pk
    assert rows[S.STAGE_STALLED].due_at == ny(3, 9, 10)


# Retired and dated versions


def test_retired_version_falls_through_to_broader_scopes(org):
    publish_version(org["segment_policy"], {}, now=ny(3, 10, 9), apply_to_open=True, retired=True)
    picked, _stages = resolved(org, None, True)
    assert picked["first_response"] == (H, "default")
    picked, _stages = resolved(org, "team", True)
    assert picked["first_response"] == (10 * M, "team+segment")
    assert picked["reply"] == (30 * M, "team")  # the segment no longer beats the team


def test_retired_scope_does_not_fall_back_to_its_own_older_version(org):
    policy = org["segment_policy"]
    publish_version(policy, {}, now=ny(3, 10, 9), apply_to_open=True, retired=True)
    book = PolicyBook.load()
    durations = book.resolve(None, org["segment"].pk, ny(3, 10, 9)).durations
    assert durations[S.NO_FIRST_RESPONSE][1] == org["versions"]["default"].pk
    # Publishing again revives the scope.
    again = publish_version(
        policy, {"first_response": 5 * H}, now=ny(3, 10, 10), apply_to_open=True
    )
    durations = PolicyBook.load().resolve(None, org["segment"].pk, ny(3, 10, 9)).durations
    assert durations[S.NO_FIRST_RESPONSE] == (5 * H, again.pk)


@pytest.mark.parametrize(
    ("arrived", "version"),
    [(ny(3, 10, 9, 59), "v1"), (ny(3, 10, 10), "v2"), (ny(3, 11, 9), "v2")],
    ids=["before", "at", "after"],
)
def test_version_for_new_opportunities_applies_from_its_effective_time(defaults, arrived, version):
    v2 = publish_version(
        defaults.policy,
        {**DURATIONS, "first_response": 2 * H},
        now=ny(3, 10, 10),
        apply_to_open=False,
    )
    expected = {"v1": defaults.version, "v2": v2}[version]
    picked = PolicyBook.load().version_for(sla.DEFAULT_SCOPE, arrived)
    assert picked is not None and picked.id == expected.pk


def test_version_for_open_ones_applies_to_every_arrival(defaults):
    publish_version(defaults.policy, dict(DURATIONS), now=ny(3, 10, 10), apply_to_open=False)
    v3 = publish_version(defaults.policy, dict(DURATIONS), now=ny(3, 11, 10), apply_to_open=True)
    v4 = publish_version(defaults.policy, dict(DURATIONS), now=ny(3, 12, 10), apply_to_open=False)
    book = PolicyBook.load()
    assert book.version_for(sla.DEFAULT_SCOPE, ny(3, 1, 9)).id == v3.pk
    assert book.version_for(sla.DEFAULT_SCOPE, ny(3, 12, 10)).id == v4.pk
    assert [v.number for v in book.scopes[sla.DEFAULT_SCOPE]] == [1, 2, 3, 4]


def test_scope_version_for_new_only_does_not_reach_older_opportunities(org):
    segment = org["segment"]
    SlaPolicyVersion.objects.filter(policy__segment=segment, policy__team=None).update(
        effective_from=ny(3, 10, 10), applies_to_open=False
    )
    book = PolicyBook.load()
    assert book.version_for((None, segment.pk), ny(3, 10, 9)) is None
    durations = book.resolve(None, segment.pk, ny(3, 10, 9)).durations
    assert durations[S.NO_FIRST_RESPONSE] == (H, org["versions"]["default"].pk)


def test_publish_numbers_versions_and_keeps_old_ones(defaults, make_user):
    user = make_user()
    v2 = publish_version(
        defaults.policy,
        {**DURATIONS, "reply": 2 * H},
        now=ny(3, 10, 10),
        apply_to_open=False,
        by=user,
        comment="faster replies",
    )
    assert (v2.number, v2.effective_from, v2.applies_to_open) == (2, ny(3, 10, 10), False)
    assert (v2.created_by, v2.comment, v2.reply) == (user, "faster replies", 2 * H)
    defaults.version.refresh_from_db()
    assert defaults.version.reply == DURATIONS["reply"]  # never edited
    assert policies.current_values(defaults.policy)["reply"] == 2 * H


def test_create_policy_for_a_free_scope(defaults):
    segment = make_segment("brochure")
    policy = create_policy(
        "Brochure", {"first_response": 24 * H}, now=ny(3, 10, 10), segment=segment
    )
    version = policy.versions.get()
    assert (policy.segment, policy.team, policy.is_default) == (segment, None, False)
    assert (version.number, version.first_response, version.reply) == (1, 24 * H, None)
    assert version.effective_from == ny(3, 10, 10)
    assert not version.applies_to_open


# Validation: field errors, nothing saved


def counts():
    return SlaPolicy.objects.count(), SlaPolicyVersion.objects.count()


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"reply": -H}, "reply"),
        ({"reply": timedelta(0)}, "reply"),
        ({"first_response": timedelta(0)}, "first_response"),
        ({"next_action_grace": -M}, "next_action_grace"),
        ({"stale": 3600}, "stale"),
        ({"frist_response": H}, "frist_response"),
        ({"stage_limits": {"new": 0}}, "stage_limits"),
        ({"stage_limits": {"new": -60}}, "stage_limits"),
        ({"stage_limits": {"new": True}}, "stage_limits"),
        ({"stage_limits": {"new": "1h"}}, "stage_limits"),
        ({"stage_limits": ["new"]}, "stage_limits"),
        # Bounded: an absurd length would make every deadline computation slow or overflow.
        ({"stale": timedelta(days=367)}, "stale"),
        ({"stage_limits": {"new": 1e20}}, "stage_limits"),
        ({"stage_limits": {"new": float("inf")}}, "stage_limits"),
        ({"stage_limits": {"new": float("nan")}}, "stage_limits"),
    ],
)
def test_publish_rejects_bad_values(org, values, field, django_capture_on_commit_callbacks):
    before = counts()
    with (
        pytest.raises(ValidationError) as exc,
        django_capture_on_commit_callbacks() as callbacks,
    ):
        publish_version(org["segment_policy"], values, now=ny(3, 10, 10), apply_to_open=True)
    assert set(exc.value.message_dict) == {field}
    assert counts() == before
    assert callbacks == []


def test_zero_grace_is_allowed(org):
    version = publish_version(
        org["segment_policy"],
        {"next_action_grace": timedelta(0)},
        now=ny(3, 10, 10),
        apply_to_open=False,
    )
    assert version.next_action_grace == timedelta(0)


def test_several_errors_are_reported_together(org):
    with pytest.raises(ValidationError) as exc:
        publish_version(
            org["segment_policy"],
            {"reply": -H, "stale": timedelta(0), "nope": 1},
            now=ny(3, 10, 10),
            apply_to_open=False,
        )
    assert set(exc.value.message_dict) == {"reply", "stale", "nope"}


@pytest.mark.parametrize("missing", ["first_response", "stale", "handoff_acceptance"])
def test_default_must_set_every_duration(defaults, missing):
    values = {k: v for k, v in DURATIONS.items() if k != missing}
    before = counts()
    with pytest.raises(ValidationError) as exc:
        publish_version(defaults.policy, values, now=ny(3, 10, 10), apply_to_open=True)
    assert set(exc.value.message_dict) == {missing}
    assert counts() == before


def test_default_cannot_be_retired(defaults):
    before = counts()
    with pytest.raises(ValidationError) as exc:
        publish_version(
            defaults.policy, dict(DURATIONS), now=ny(3, 10, 10), apply_to_open=True, retired=True
        )
    assert set(exc.value.message_dict) == {"retired"}
    assert counts() == before


@pytest.mark.parametrize("scope", ["segment", "team", "team+segment", "default"])
def test_duplicate_scope_is_refused(org, scope):
    kwargs = {
        "segment": {"segment": org["segment"]},
        "team": {"team": org["team"]},
        "team+segment": {"team": org["team"], "segment": org["segment"]},
        "default": {},
    }[scope]
    before = counts()
    with pytest.raises(ValidationError) as exc:
        create_policy("Again", dict(DURATIONS), now=ny(3, 10, 10), **kwargs)
    assert exc.value.code == "scope_taken"
    assert counts() == before


def test_create_policy_validates_before_saving(defaults):
    before = counts()
    with pytest.raises(ValidationError) as exc:
        create_policy(
            "Brochure", {"first_response": -H}, now=ny(3, 10, 10), segment=make_segment("b")
        )
    assert set(exc.value.message_dict) == {"first_response"}
    assert counts() == before
