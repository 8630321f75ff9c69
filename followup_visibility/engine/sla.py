"""SLA resolution: which durations apply to an opportunity, and whether a version is valid.

Resolution is most specific first, per duration: team+segment, segment, team, company default.
An empty duration in a version falls through to the next scope, so a segment policy may set
only its first-response time. Which version of a scope applies depends on when the opportunity
arrived: a version published for "new opportunities only" applies to those arriving from its
``effective_from`` on, one published "also for open ones" to every opportunity.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _

from followup_visibility.models import SlaPolicyVersion
from followup_visibility.models.policy import DURATION_FIELDS, ZERO_ALLOWED

Scope = tuple[int | None, int | None]  # (team id, segment id); (None, None) is the default
DEFAULT_SCOPE: Scope = (None, None)
_ZERO = timedelta(0)
#: Longest duration accepted, in business time: far beyond any real SLA, and small enough that
#: computing a deadline stays cheap (an unbounded one can take seconds, or overflow).
MAX_DURATION = timedelta(days=366)


@dataclass(frozen=True)
class Version:
    """One policy version as the resolver sees it."""

    id: int
    number: int
    effective_from: datetime
    applies_to_open: bool
    retired: bool
    durations: Mapping[str, timedelta | None]  # by signal
    stage_limits: Mapping[str, timedelta] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: SlaPolicyVersion) -> Version:
        return cls(
            id=row.pk,
            number=row.number,
            effective_from=row.effective_from,
            applies_to_open=row.applies_to_open,
            retired=row.retired,
            durations={s: getattr(row, f) for s, f in DURATION_FIELDS.items()},
            stage_limits=cls.stage_map(row.stage_limits),
        )

    @staticmethod
    def stage_map(limits: Mapping[str, Any]) -> dict[str, timedelta]:
        return {stage: timedelta(seconds=float(secs)) for stage, secs in limits.items()}


@dataclass(frozen=True)
class Resolved:
    """The durations in force for one opportunity, each with the version that supplied it."""

    durations: Mapping[str, tuple[timedelta, int]]
    stage_limits: Mapping[str, tuple[timedelta, int]]


class PolicyBook:
    """Every policy version, loaded once, answering "which durations apply to this one?"."""

    def __init__(self, scopes: Mapping[Scope, list[Version]]) -> None:
        self.scopes = {scope: sorted(vs, key=lambda v: v.number) for scope, vs in scopes.items()}
        self._memo: dict[tuple[Any, ...], Resolved] = {}
        self._cuts: dict[tuple[Any, Any], list[datetime]] = {}
        self._cases: dict[tuple[Any, Any, int], Resolved] = {}

    @classmethod
    def load(cls) -> PolicyBook:
        scopes: dict[Scope, list[Version]] = {}
        for row in SlaPolicyVersion.objects.select_related("policy").order_by("policy", "number"):
            scope = (row.policy.team_id, row.policy.segment_id)
            scopes.setdefault(scope, []).append(Version.from_row(row))
        return cls(scopes)

    def with_draft(self, scope: Scope, draft: Version) -> PolicyBook:
        """A copy where ``draft`` is the newest version of ``scope`` (for what-if previews)."""
        scopes = dict(self.scopes)
        number = max((v.number for v in scopes.get(scope, [])), default=0) + 1
        scopes[scope] = [*scopes.get(scope, []), replace(draft, number=number)]
        return PolicyBook(scopes)

    @property
    def has_default(self) -> bool:
        return bool(self.scopes.get(DEFAULT_SCOPE))

    def version_for(self, scope: Scope, arrived_at: datetime) -> Version | None:
        """The version of ``scope`` that applies to an opportunity arriving at ``arrived_at``."""
        versions = self.scopes.get(scope)
        if not versions:
            return None
        for version in reversed(versions):
            if version.applies_to_open or version.effective_from <= arrived_at:
                return version
        # Opportunities older than the company default's first version still need one.
        return versions[0] if scope == DEFAULT_SCOPE else None

    def resolve(
        self, team_id: int | None, segment_id: int | None, arrived_at: datetime
    ) -> Resolved:
        """The durations in force for an opportunity of this team and segment arriving then.

        Which version of a scope applies depends only on which of the scopes' ``effective_from``
        times (of versions for new opportunities only) the arrival has passed: the answer is
        kept per team, segment and that count, so a recompute resolves each case once.
        """
        cuts = self._cuts.get((team_id, segment_id))
        if cuts is None:
            cuts = self._cuts[(team_id, segment_id)] = sorted(
                {
                    version.effective_from
                    for scope in _scopes(team_id, segment_id)
                    for version in self.scopes.get(scope, ())
                    if not version.applies_to_open
                }
            )
        case = (team_id, segment_id, bisect_right(cuts, arrived_at))
        found = self._cases.get(case)
        if found is None:
            found = self._cases[case] = self._resolve(team_id, segment_id, arrived_at)
        return found

    def _resolve(
        self, team_id: int | None, segment_id: int | None, arrived_at: datetime
    ) -> Resolved:
        chain: list[Version] = []
        for scope in _scopes(team_id, segment_id):
            version = self.version_for(scope, arrived_at)
            if version is not None and not version.retired:
                chain.append(version)
        key = tuple(v.id for v in chain)
        resolved = self._memo.get(key)
        if resolved is None:
            durations: dict[str, tuple[timedelta, int]] = {}
            stages: dict[str, tuple[timedelta, int]] = {}
            for version in reversed(chain):  # least specific first; specific ones overwrite
                for signal, duration in version.durations.items():
                    if duration is not None:
                        durations[signal] = (duration, version.id)
                for stage, limit in version.stage_limits.items():
                    stages[stage] = (limit, version.id)
            resolved = self._memo[key] = Resolved(durations, stages)
        return resolved


def _scopes(team_id: int | None, segment_id: int | None) -> list[Scope]:
    """Scopes to consult, most specific first, without repeats or half-empty duplicates."""
    scopes: list[Scope] = []
    if team_id is not None and segment_id is not None:
        scopes.append((team_id, segment_id))
    if segment_id is not None:
        scopes.append((None, segment_id))
    if team_id is not None:
        scopes.append((team_id, None))
    scopes.append(DEFAULT_SCOPE)
    return scopes


def validate_values(values: Mapping[str, Any], *, is_default: bool, retired: bool = False) -> None:
    """Field errors for durations that are negative, zero where not allowed, or missing."""
    errors: dict[str, list[str]] = {}
    unknown = set(values) - set(DURATION_FIELDS.values()) - {"stage_limits"}
    for name in sorted(unknown):
        errors[name] = [_("Unknown policy field.")]
    for name in DURATION_FIELDS.values():
        value = values.get(name)
        if value is None:
            if is_default:
                errors[name] = [_("The company default must set every duration.")]
            continue
        if not isinstance(value, timedelta):
            errors[name] = [_("A duration is required.")]
        elif value < _ZERO or (value == _ZERO and name not in ZERO_ALLOWED):
            errors[name] = [
                _("Must be zero or more.") if name in ZERO_ALLOWED else _("Must be positive.")
            ]
        elif value > MAX_DURATION:
            errors[name] = [_("At most %(max)s.") % {"max": MAX_DURATION}]
    limits = values.get("stage_limits") or {}
    if not isinstance(limits, Mapping):
        errors["stage_limits"] = [_("Map each stage to a number of seconds.")]
    else:
        for stage, secs in limits.items():
            if not isinstance(stage, str) or not stage:
                errors.setdefault("stage_limits", []).append(_("Stage names must be text."))
            elif (
                isinstance(secs, bool)
                or not isinstance(secs, int | float)
                or not math.isfinite(secs)
                or not 0 < secs <= MAX_DURATION.total_seconds()
            ):
                errors.setdefault("stage_limits", []).append(
                    _("%(stage)s: the limit must be a positive number of seconds, at most a year.")
                    % {"stage": stage}
                )
    if is_default and retired:
        errors["retired"] = [_("The company default cannot be retired.")]
    if errors:
        raise ValidationError(errors)
