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
from datetime import datetime, timedelta
from typing import Any, TypedDict, Unpack

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import transaction
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
from django.utils import timezone
from django.utils.translation import gettext as _
from simple_history.utils import bulk_create_with_history

from followup_visibility import alerts, teams, visibility
from followup_visibility.choices import AlertStatus, IdentityKind, Signal
from followup_visibility.identity import normalize_email, normalize_phone
from followup_visibility.models import (
    Alert,
    ContactIdentity,
    Segment,
    Suppression,
    Team,
    TrackedOpportunity,
)

#: Statuses a rule takes an alert from (a suppressed alert may move to another rule).
SUPPRESSIBLE = (AlertStatus.OPEN, AlertStatus.ACKNOWLEDGED, AlertStatus.SNOOZED)


def _identity(raw: str) -> tuple[str, str]:
    """(kind, normalized key) of a phone number or email address; key ``""`` when invalid."""
    if "@" in raw:
        return IdentityKind.EMAIL, normalize_email(raw)
    return IdentityKind.PHONE, normalize_phone(raw)


def _check_time(errors: dict[str, str], name: str, value: datetime | None) -> None:
    if value is not None and timezone.is_naive(value):
        errors[name] = _("Give the time with its time zone.")


def _check_common(
    errors: dict[str, str], comment: str, now: datetime, ends_at: datetime | None, signal: str
) -> None:
    if not comment:
        errors["comment"] = _("Say why these alerts are suppressed.")
    _check_time(errors, "ends_at", ends_at)
    if "ends_at" not in errors and ends_at is not None and ends_at <= now:
        errors["ends_at"] = _("A suppression must end in the future.")
    if signal and signal not in Signal.values:
        errors["signal"] = _("Not a signal: %(s)s.") % {"s": signal}


def _save(rule: Suppression, by: Any, now: datetime, reason: str) -> None:
    rule._history_user = by  # type: ignore[attr-defined]
    rule._history_date = now  # type: ignore[attr-defined]
    rule._change_reason = reason[: alerts.REASON_MAX]  # type: ignore[attr-defined]
    rule.save()


class RuleFields(TypedDict, total=False):
    """What a rule matches and when it is active: :func:`build`'s optional arguments."""

    starts_at: datetime | None
    ends_at: datetime | None
    opportunity: TrackedOpportunity | None
    identity: str
    segment: Segment | None
    owner: Any
    team: Team | None
    signal: str
    older_than: timedelta | None


def create(*, comment: str, by: Any, now: datetime, **fields: Unpack[RuleFields]) -> Suppression:
    """Create a rule and hold the active alerts it matches at once (if it has started).

    ``identity`` is a raw phone number or email address; it is normalized as contact
    identities are, so it matches however the CRM wrote it. ``starts_at`` defaults to now.
    """
    return add(build(comment=comment, by=by, now=now, **fields), by=by, now=now)


def check_scope(
    user: Any,
    *,
    opportunity: TrackedOpportunity | None = None,
    owner: Any = None,
    team: Team | None = None,
) -> None:
    """Refuse a rule that would reach beyond what ``user`` sees (``ValidationError``).

    For callers acting on a user's request (the admin, an API): :func:`create` itself trusts
    its caller. Whoever sees every opportunity may make any rule. Anyone else must confine it
    to their own scope with one of the matchers that scope is made of (an opportunity they
    see, themselves or a member of a team they manage as the owner, a team they manage), and
    each of those they give must be theirs: a manager silences their own teams, not the
    company's.
    """
    if visibility.sees_everything(user):
        return
    errors: dict[str, str] = {}
    if opportunity is not None and not (
        visibility.opportunities_for(user).filter(pk=opportunity.pk).exists()
    ):
        errors["opportunity"] = _("Choose one of the opportunities you can see.")
    if owner is not None and not visibility.manages_person(user, owner):
        errors["owner"] = _("Choose yourself or someone in a team you manage.")
    if team is not None and team.pk not in visibility.managed_team_ids(user):
        errors["team"] = _("Choose a team you manage.")
    if not errors and opportunity is None and owner is None and team is None:
        errors[NON_FIELD_ERRORS] = _(
            "A rule you make must stay within what you see: name one of your opportunities, "
            "yourself or someone in your teams as the owner, or one of your teams."
        )
    if errors:
        raise ValidationError(errors)


def build(
    *,
    comment: str,
    by: Any,
    now: datetime,
    starts_at: datetime | None = None,
    ends_at: datetime | None = None,
    opportunity: TrackedOpportunity | None = None,
    identity: str = "",
    segment: Segment | None = None,
    owner: Any = None,
    team: Team | None = None,
    signal: str = "",
    older_than: timedelta | None = None,
) -> Suppression:
    """Validate and normalize a rule without saving it: :func:`add` saves it.

    For a form that validates before it saves (the admin's); raises ``ValidationError`` with
    the errors by field. Arguments as for :func:`create` (:class:`RuleFields`).
    """
    errors: dict[str, str] = {}
    comment = (comment or "").strip()
    identity = (identity or "").strip()
    starts_at = starts_at or now
    _check_common(errors, comment, now, ends_at, signal)
    _check_time(errors, "starts_at", starts_at)
    valid_times = not errors.get("ends_at") and not errors.get("starts_at")
    if valid_times and ends_at is not None and ends_at <= starts_at:
        errors["ends_at"] = _("A suppression must end after it starts.")
    kind, key = "", ""
    if identity:
        kind, key = _identity(identity)
        if not key:
            errors["identity"] = _("Not a valid phone number or email address.")
    if older_than is not None and older_than <= timedelta(0):
        errors["older_than"] = _("Give a positive age.")
    matchers = (opportunity, identity, segment, owner, team, signal, older_than)
    if all(m is None or m == "" for m in matchers):
        errors[NON_FIELD_ERRORS] = _(
            "Say what to suppress: an opportunity, a contact, a segment, an owner, a team, "
            "a signal or an age."
        )
    if errors:
        raise ValidationError(errors)
    rule = Suppression(
        opportunity=opportunity,
        identity_kind=kind,
        identity_key=key,
        segment=segment,
        owner=owner,
        team=team,
        signal=signal,
        older_than=older_than,
        starts_at=starts_at,
        ends_at=ends_at,
        comment=comment[:255],
        created_by=by,
        created_at=now,
    )
    return rule


def add(rule: Suppression, *, by: Any, now: datetime) -> Suppression:
    """Save a rule :func:`build` made, with its history, and hold what it matches at once."""
    with transaction.atomic():
        _save(rule, by, now, _("created"))
        apply(now, by=by)
    return rule


def end(suppression: Suppression, *, by: Any, now: datetime) -> Suppression:
    """End a rule now; the alerts it held return to open unless another rule holds them."""
    with transaction.atomic():
        rule = Suppression.objects.select_for_update().get(pk=suppression.pk)
        if rule.ends_at is not None and rule.ends_at <= now:
            raise ValidationError(
                {"ends_at": ValidationError(_("This suppression has already ended."), code="ended")}
            )
        if rule.starts_at >= now:
            # A rule cannot end before it starts (the database checks it too).
            raise ValidationError(
                {
                    "ends_at": ValidationError(
                        _("This suppression has not started; delete it or change its start."),
                        code="not_started",
                    )
                }
            )
        rule.ends_at = now
        _save(rule, by, now, _("ended"))
        release(now, by=by)
        # Alerts another active rule also matches stay suppressed, now under that rule.
        apply(now, by=by)
    return rule


def suppress_opportunities(
    opportunity_ids: Iterable[Any],
    *,
    comment: str,
    by: Any,
    now: datetime,
    ends_at: datetime | None = None,
    signal: str = "",
) -> list[Suppression]:
    """One rule per opportunity (and ``signal``, if given), starting now; for bulk actions."""
    errors: dict[str, str] = {}
    comment = (comment or "").strip()
    _check_common(errors, comment, now, ends_at, signal)
    if errors:
        raise ValidationError(errors)
    ids = TrackedOpportunity.objects.filter(pk__in=list(opportunity_ids)).order_by("pk")
    rules = [
        Suppression(
            opportunity_id=pk,
            signal=signal,
            starts_at=now,
            ends_at=ends_at,
            comment=comment[:255],
            created_by=by,
            created_at=now,
        )
        for pk in ids.values_list("pk", flat=True)
    ]
    if not rules:
        return []
    with transaction.atomic():
        created = bulk_create_with_history(
            rules, Suppression, default_user=by, default_date=now, default_change_reason="created"
        )
        apply(now, by=by)
    return list(created)


def suppress_older_than(
    age: timedelta,
    *,
    comment: str,
    by: Any,
    now: datetime,
    segment: Segment | None = None,
    team: Team | None = None,
    ends_at: datetime | None = None,
) -> Suppression:
    """One rule for every opportunity that arrived more than ``age`` ago (old leads)."""
    return create(
        comment=comment, by=by, now=now, segment=segment, team=team, ends_at=ends_at, older_than=age
    )


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
    return (_("suppressed: %(c)s") % {"c": comment})[: alerts.REASON_MAX]


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
    return alerts.bulk_transition(
        matched,
        from_statuses=[*SUPPRESSIBLE, AlertStatus.SUPPRESSED],
        changes={
            "status": AlertStatus.SUPPRESSED,
            "suppression": alerts.FROM_MATCH,
            **alerts.SNOOZE_CLEARED,
            **alerts.ESCALATION_REPLANNED,
        },
        now=now,
        by=by,
    )


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
    them (see :func:`alerts.back_from_aside`).

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
        fv_status=alerts.back_from_aside(),
    )
    return alerts.bulk_transition(
        matched,
        from_statuses=[AlertStatus.SUPPRESSED],
        changes={
            "status": alerts.FromMatch("fv_status"),
            "suppression": None,
            **alerts.escalation_restarted(now),
        },
        now=now,
        by=by,
    )


def held_q(
    now: datetime,
    prefix: str = "",
    rules: list[Suppression] | None = None,
    *,
    per_row: bool = False,
) -> Q | None:
    """What the active rules match at ``now``, or ``None`` when no rule is active."""
    rules = active_rules(now) if rules is None else rules
    return matching_q(rules, now, prefix, per_row=per_row) if rules else None
