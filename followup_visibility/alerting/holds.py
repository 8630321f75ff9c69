"""Suppression rules: while one is active, what it matches raises no alert and leaves the register.

A rule matches when every matcher it sets matches: an opportunity, a contact identity (a phone
or email, normalized), a segment, an owner, a team, a signal, or "arrived longer ago than".
Active alerts a rule matches are held as suppressed (``apply``) and return to open when no
active rule matches them any more (``release``); the sweep raises nothing a rule matches, so
nothing re-enters while it is active. Both steps are set-based and run at every sweep pass, so
rules that start or end on their own clock take effect without anyone saving them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import (
    BigIntegerField,
    Case,
    CharField,
    Exists,
    OuterRef,
    Q,
    Subquery,
    Value,
    When,
)
from django.utils.translation import gettext as _

from followup_visibility.alerting import lifecycle
from followup_visibility.choices import AlertStatus, AlertTransition
from followup_visibility.engine import teams
from followup_visibility.models import (
    Alert,
    ContactIdentity,
    Deadline,
    InhibitionRule,
    Suppression,
    TrackedOpportunity,
)

#: Statuses a rule takes an alert from (a suppressed alert may move to another rule).
SUPPRESSIBLE = (AlertStatus.OPEN, AlertStatus.ACKNOWLEDGED, AlertStatus.SNOOZED)
#: The suppression rule a matched row was annotated with (``fv_rule``).
FROM_RULE = lifecycle.FromMatch("fv_rule")


# Matching -----------------------------------------------------------------------------------


def _only_opportunity(rule: Suppression) -> bool:
    return bool(
        rule.opportunity_id is not None
        and not rule.identity_key
        and rule.segment_id is None
        and rule.owner_id is None
        and rule.team_id is None
        and rule.older_than is None
    )


def _reason(comment: str) -> str:
    return (_("suppressed: %(c)s") % {"c": comment})[: lifecycle.REASON_MAX]


def _clauses(
    rules: Iterable[Suppression], now: datetime, prefix: str = "", *, per_row: bool = False
) -> list[tuple[Q, Any, str]]:
    """Per rule (or group of rules): the ``Q`` it matches, its id as an expression, a reason.

    Rules that name only an opportunity (and perhaps a signal) are what bulk actions create
    by the hundred; they are grouped into one ``IN`` each, so the statement stays small.

    A rule's matchers on the opportunity (segment, owner, team, age) join the opportunity,
    or with ``per_row`` become one correlated ``EXISTS`` probe of it per row. The sweep's
    chunks use that: each covers a key range, and PostgreSQL, which does not carry the range
    over to the joined table, hashed the whole opportunity table per chunk to join it.
    """
    p = prefix
    rules = list(rules)
    # A team rule matches the team's whole subtree, as managers see it and policies govern it.
    subtrees = teams.subtrees(r.team_id for r in rules if r.team_id is not None)
    clauses: list[tuple[Q, Any, str]] = []
    groups: dict[tuple[str, str], list[Suppression]] = defaultdict(list)
    for rule in rules:
        if _only_opportunity(rule):
            groups[(rule.signal, rule.comment)].append(rule)
            continue
        q = Q()
        if rule.opportunity_id is not None:
            q &= Q(**{f"{p}opportunity_id": rule.opportunity_id})
        if rule.identity_key:
            holders = ContactIdentity.objects.filter(
                kind=rule.identity_kind, key=rule.identity_key
            ).values("opportunity_id")
            q &= Q(**{f"{p}opportunity_id__in": holders})
        on_opportunity: dict[str, Any] = {}
        if rule.segment_id is not None:
            on_opportunity["segment_id"] = rule.segment_id
        if rule.owner_id is not None:
            on_opportunity["owner_id"] = rule.owner_id
        if rule.team_id is not None:
            on_opportunity["team_id__in"] = sorted(subtrees[rule.team_id])
        if rule.older_than is not None:
            on_opportunity["arrived_at__lte"] = now - rule.older_than
        if on_opportunity and per_row:
            probe = TrackedOpportunity.objects.filter(
                pk=OuterRef(f"{p}opportunity_id"), **on_opportunity
            )
            q &= Q(Exists(probe))
        elif on_opportunity:
            q &= Q(**{f"{p}opportunity__{name}": value for name, value in on_opportunity.items()})
        if rule.signal:
            q &= Q(**{f"{p}signal": rule.signal})
        clauses.append((q, Value(rule.pk), _reason(rule.comment)))
    for (signal, comment), group in groups.items():
        q = Q(**{f"{p}opportunity_id__in": [r.opportunity_id for r in group]})
        if signal:
            q &= Q(**{f"{p}signal": signal})
        rule_id = Subquery(
            Suppression.objects.filter(
                pk__in=[r.pk for r in group], opportunity_id=OuterRef(f"{p}opportunity_id")
            )
            .order_by("pk")
            .values("pk")[:1]
        )
        clauses.append((q, rule_id, _reason(comment)))
    return clauses


def matching_q(
    rules: Iterable[Suppression], now: datetime, prefix: str = "", *, per_row: bool = False
) -> Q:
    """The ``Q`` of deadlines or alerts (anything with ``opportunity`` and ``signal`` at
    ``prefix``) that any of ``rules`` matches at ``now``; matches nothing without rules.
    ``per_row``: see :func:`_clauses`."""
    q = Q()
    for clause, _rule, _why in _clauses(rules, now, prefix, per_row=per_row):
        q |= clause
    return q if q else Q(**{f"{prefix}pk__in": []})


def active_rules(now: datetime) -> list[Suppression]:
    return list(Suppression.objects.active_at(now).order_by("pk"))


def apply(
    now: datetime,
    *,
    by: Any = None,
    rules: list[Suppression] | None = None,
    since: datetime | None = None,
) -> int:
    """Hold every active alert an active rule matches as suppressed; how many changed.

    A suppressed alert whose rule ended but which another active rule matches moves to that
    rule. Snooze and escalation plans are dropped: the alert comes back as a new open one.
    ``rules`` are the rules active at ``now`` when the caller has read them already.

    With ``since`` (a steady sweep), only what changed after it is looked at: rules that
    started since, opportunities that grew older than an age rule's limit since, and alerts
    whose rule ended since or was deleted. The sweep raises nothing an active rule matches,
    so nothing else came under a rule on its own; an opportunity the CRM moved into a rule's
    reach (a new team or owner) is caught by the full pass.
    """
    rules = active_rules(now) if rules is None else rules
    if not rules:
        return 0
    orphaned = Q(status=AlertStatus.SUPPRESSED) & ~Q(suppression_id__in=[r.pk for r in rules])
    if since is None:
        return _hold(Q(status__in=SUPPRESSIBLE) | orphaned, rules, now, by)
    # Each kind of change is its own statement, so each is planned from its own index.
    held = 0
    if (ended := _ended_since(since, now)) is not None:
        held += _hold(orphaned & ended, rules, now, by)
    started = [r for r in rules if r.starts_at > since]
    if started:
        held += _hold(Q(status__in=SUPPRESSIBLE) & matching_q(started, now), rules, now, by)
    for rule in rules:
        if rule.older_than is not None and rule not in started:
            # Opportunities that grew old enough since: a range of arrival times.
            aged = TrackedOpportunity.objects.filter(
                arrived_at__gt=since - rule.older_than, arrived_at__lte=now - rule.older_than
            )
            candidates = Q(status__in=SUPPRESSIBLE, opportunity_id__in=aged.values("pk"))
            held += _hold(candidates, [rule], now, by)
    return held


def _hold(candidates: Q, rules: list[Suppression], now: datetime, by: Any) -> int:
    """Suppress the ``candidates`` that one of ``rules`` matches, under the first that does."""
    clauses = _clauses(rules, now)
    matched = (
        Alert.objects.filter(candidates)
        .filter(matching_q(rules, now))
        .annotate(
            fv_rule=Case(
                *(When(q, then=rule) for q, rule, _why in clauses),
                output_field=BigIntegerField(),
            ),
            fv_reason=Case(
                *(When(q, then=Value(why)) for q, _rule, why in clauses),
                output_field=CharField(),
            ),
        )
    )
    held = lifecycle.bulk_transition(
        matched,
        from_statuses=[*SUPPRESSIBLE, AlertStatus.SUPPRESSED],
        changes={
            "status": AlertStatus.SUPPRESSED,
            "suppression": FROM_RULE,
            **lifecycle.SNOOZE_CLEARED,
            **lifecycle.ESCALATION_REPLANNED,
        },
        now=now,
        by=by,
        event=AlertTransition.HELD,
    )
    return len(held)


def _ended_since(since: datetime, now: datetime) -> Q | None:
    """Suppressed alerts whose rule ended after ``since``, or was deleted; ``None`` when
    there are none (the steady state: then a steady pass skips the statement).

    The rules are read first, so the alerts are found by key (``fv_alert_suppressed``)
    rather than by joining every suppressed alert to its rule.
    """
    ended = list(
        Suppression.objects.filter(ends_at__gt=since, ends_at__lte=now).values_list("pk", flat=True)
    )
    orphans = Alert.objects.filter(status=AlertStatus.SUPPRESSED, suppression__isnull=True)
    if not ended and not orphans.exists():
        return None
    return Q(suppression__isnull=True) | Q(suppression_id__in=ended)


def release(
    now: datetime,
    *,
    by: Any = None,
    rules: list[Suppression] | None = None,
    since: datetime | None = None,
) -> int:
    """Release suppressed alerts that no active rule matches any more; how many.

    They return to open, or to acknowledged if they were acknowledged before the rule held
    them (see :func:`lifecycle.back_from_aside`).

    ``rules`` are the rules active at ``now`` when the caller has read them already. With
    ``since`` (a steady sweep), only alerts whose rule ended after it, or was deleted, are
    looked at; one whose opportunity moved out of its rule's reach waits for the full pass.
    """
    rules = active_rules(now) if rules is None else rules
    matched = Alert.objects.filter(status=AlertStatus.SUPPRESSED)
    if since is not None:
        if (ended := _ended_since(since, now)) is None:
            return 0
        matched = matched.filter(ended)
    if rules:
        matched = matched.exclude(matching_q(rules, now))
    ended = Q(suppression__isnull=True) | Q(suppression__ends_at__lte=now)
    matched = matched.annotate(
        fv_reason=Case(
            When(ended, then=Value(_("released: suppression ended"))),
            default=Value(_("released: no suppression matches")),
            output_field=CharField(),
        ),
        fv_status=lifecycle.back_from_aside(),
    )
    released = lifecycle.bulk_transition(
        matched,
        from_statuses=[AlertStatus.SUPPRESSED],
        changes={
            "status": lifecycle.FromMatch("fv_status"),
            "suppression": None,
            **lifecycle.escalation_restarted(now),
        },
        now=now,
        by=by,
        event=AlertTransition.RELEASED,
    )
    return len(released)


def suppressed_q(
    now: datetime,
    prefix: str = "",
    rules: list[Suppression] | None = None,
    *,
    per_row: bool = False,
) -> Q | None:
    """What the active rules match at ``now``, or ``None`` when no rule is active."""
    rules = active_rules(now) if rules is None else rules
    return matching_q(rules, now, prefix, per_row=per_row) if rules else None


# Inhibition ---------------------------------------------------------------------------------


def inhibitions() -> dict[str, list[str]]:
    """Active inhibition rules as ``{target: [sources]}``."""
    found: dict[str, list[str]] = defaultdict(list)
    rules = InhibitionRule.objects.filter(is_active=True).order_by("target", "source")
    for source, target in rules.values_list("source", "target"):
        found[target].append(source)
    return dict(found)


@dataclass(frozen=True)
class Holds:
    """The rules that hold deadlines back at one clock: active suppressions and inhibitions.

    Read once per transaction and handed to every step that needs them: a steady pass is a
    handful of small statements, and reading the same rules again in each was a good part of
    its time.
    """

    suppressions: list[Suppression]
    inhibitions: dict[str, list[str]]

    @classmethod
    def at(cls, now: datetime) -> Holds:
        return cls(active_rules(now), inhibitions())


def inhibited_q(now: datetime, prefix: str = "", holds: Holds | None = None) -> Q | None:
    """Deadlines or alerts (at ``prefix``) whose signal a source due on the same opportunity
    by ``now`` silences; ``None`` when no rule is active."""
    q = Q()
    rules = inhibitions() if holds is None else holds.inhibitions
    for target, sources in rules.items():
        source_due = Deadline.objects.filter(
            opportunity_id=OuterRef(f"{prefix}opportunity_id"),
            signal__in=sources,
            due_at__lte=now,
        )
        q |= Q(**{f"{prefix}signal": target}) & Q(Exists(source_due))
    return q or None


def held_q(now: datetime, holds: Holds | None = None, *, per_row: bool = False) -> Q | None:
    """Deadlines the sweep does not raise at ``now``: suppressed or inhibited. ``per_row``
    probes the opportunity per deadline instead of joining it (for one key range)."""
    holds = holds or Holds.at(now)
    suppressed = suppressed_q(now, rules=holds.suppressions, per_row=per_row)
    parts = [q for q in (suppressed, inhibited_q(now, holds=holds)) if q is not None]
    if not parts:
        return None
    q = parts[0]
    for part in parts[1:]:
        q |= part
    return q
