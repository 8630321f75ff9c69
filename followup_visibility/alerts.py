"""The alert lifecycle: acknowledge, snooze, dismiss, resolve; waking; automatic resolution."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import (
    Case,
    CharField,
    Exists,
    F,
    Field,
    OuterRef,
    Q,
    QuerySet,
    Value,
    When,
)
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.translation import gettext as _
from simple_history.utils import bulk_update_with_history

from followup_visibility.choices import (
    AlertStatus,
    Direction,
    Resolution,
    SnoozeCondition,
)
from followup_visibility.conf import app_settings
from followup_visibility.models import Alert, Touch, TrackedOpportunity

#: simple-history's change-reason column holds this many characters.
REASON_MAX = 100

#: Fields a snooze sets, cleared again when it ends (woken, acknowledged or suppressed).
SNOOZE_CLEARED: dict[str, Any] = {
    "snoozed_at": None,
    "snoozed_until": None,
    "snooze_condition": SnoozeCondition.TIME,
    "snooze_reason": "",
    "snooze_stage": "",
}
#: An alert back in the open goes through escalation planning again, from its new start.
ESCALATION_REPLANNED: dict[str, Any] = {"escalation_planned": False, "escalate_at": None}


def escalation_restarted(now: datetime) -> dict[str, Any]:
    """Changes for an alert that comes back open at ``now`` after being put aside (a snooze
    woke, a suppression released it): planned again, its levels counting from ``now``, so
    that waking does not page every manager whose level passed while it slept."""
    return {**ESCALATION_REPLANNED, "escalation_from": now}


@dataclass(frozen=True)
class Cause:
    """What changed an opportunity: named on the alerts it resolves."""

    reason: str
    touch: Touch | None = None


def resolve_cleared(
    opportunity_ids: Iterable[Any],
    current: Mapping[tuple[Any, str], tuple[datetime, datetime]],
    now: datetime,
    cause: Cause | None = None,
) -> int:
    """Resolve active alerts whose condition no longer holds.

    ``current`` maps (opportunity, signal) to the deadline's (event, due) as just recomputed.
    An alert is cleared when its signal has no deadline any more, when a new event started a
    new episode, or when the deadline moved past ``now``. Snoozed and suppressed alerts are
    active too: a snooze or a suppression never keeps a solved problem alive.
    """
    active = list(Alert.objects.active().filter(opportunity_id__in=list(opportunity_ids)))
    cleared = []
    for alert in active:
        found = current.get((alert.opportunity_id, alert.signal))
        if found is None or found[0] != alert.episode_at or found[1] > now:
            alert.status = AlertStatus.RESOLVED
            alert.resolved_at = now
            alert.resolution = Resolution.AUTO
            alert.resolution_note = (cause.reason if cause else _("condition cleared"))[:255]
            alert.resolved_touch = cause.touch if cause else None
            cleared.append(alert)
    if cleared:
        bulk_update_with_history(
            cleared,
            Alert,
            ["status", "resolved_at", "resolution", "resolution_note", "resolved_touch"],
            default_date=now,
            default_change_reason=cleared[0].resolution_note[:REASON_MAX],
        )
    return len(cleared)


def _locked(alert: Alert) -> Alert:
    return Alert.objects.select_for_update().get(pk=alert.pk)


def _locked_active(alert: Alert) -> Alert:
    """The alert, locked; ``ValidationError`` if its episode is over (nothing changes)."""
    alert = _locked(alert)
    if not alert.is_active:
        raise ValidationError(
            _("This alert is already %(s)s.") % {"s": alert.get_status_display().lower()},
            code="not_active",
        )
    return alert


def _save(alert: Alert, by: Any, now: datetime, reason: str, fields: list[str]) -> None:
    alert.changed_by = by
    alert._history_user = by  # type: ignore[attr-defined]
    alert._history_date = now  # type: ignore[attr-defined]
    alert._change_reason = reason[:REASON_MAX]  # type: ignore[attr-defined]
    alert.save(update_fields=[*fields, "changed_by"])


def acknowledge(alert: Alert, *, by: Any, now: datetime) -> Alert:
    """Someone owns the problem: stops escalation, keeps the alert in the register."""
    with transaction.atomic():
        alert = _locked(alert)
        if alert.status not in (AlertStatus.OPEN, AlertStatus.SNOOZED):
            raise ValidationError(
                _("Only an open or snoozed alert can be acknowledged; this one is %(s)s.")
                % {"s": alert.get_status_display().lower()},
                code="not_open",
            )
        alert.status = AlertStatus.ACKNOWLEDGED
        alert.acknowledged_at = now
        alert.acknowledged_by = by
        # Acknowledging a snoozed alert ends the snooze: someone is on it now.
        for name, value in SNOOZE_CLEARED.items():
            setattr(alert, name, value)
        _save(
            alert,
            by,
            now,
            _("acknowledged"),
            ["status", "acknowledged_at", "acknowledged_by", *SNOOZE_CLEARED],
        )
    return alert


def _describe(span: timedelta) -> str:
    if span % timedelta(days=1) == timedelta(0):
        return _("%(n)d days") % {"n": span.days}
    return _("%(n)g hours") % {"n": span / timedelta(hours=1)}


def snooze(
    alert: Alert,
    *,
    reason: str,
    by: Any,
    now: datetime,
    until: datetime | None = None,
    condition: str = SnoozeCondition.TIME,
) -> Alert:
    """Put an open or acknowledged alert aside until a time, or until a condition is met.

    A snooze until a condition ("the customer replies", "the stage changes") ends at
    ``until`` at the latest, which defaults to ``SNOOZE_MAX`` from now; a plain snooze needs
    ``until``. A reason is always required. The sweep wakes it (see ``wake_snoozed``).
    """
    errors: dict[str, str] = {}
    reason = (reason or "").strip()
    if not reason:
        errors["reason"] = _("Say why the alert is snoozed.")
    if condition not in SnoozeCondition.values:
        errors["condition"] = _("Not a snooze condition: %(c)s.") % {"c": condition}
    limit = now + app_settings.SNOOZE_MAX
    if until is None:
        if condition == SnoozeCondition.TIME:
            errors["until"] = _("Say until when the alert is snoozed.")
        until = limit
    elif timezone.is_naive(until):
        errors["until"] = _("Give the time with its time zone.")
    elif until <= now:
        errors["until"] = _("A snooze must end in the future.")
    elif until > limit:
        errors["until"] = _("A snooze may last %(max)s at most.") % {
            "max": _describe(app_settings.SNOOZE_MAX)
        }
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        alert = _locked(alert)
        if alert.status not in (AlertStatus.OPEN, AlertStatus.ACKNOWLEDGED):
            raise ValidationError(
                _("Only an open or acknowledged alert can be snoozed; this one is %(s)s.")
                % {"s": alert.get_status_display().lower()},
                code="not_snoozable",
            )
        alert.status = AlertStatus.SNOOZED
        alert.snoozed_at = now
        alert.snoozed_until = until
        alert.snooze_condition = condition
        alert.snooze_reason = reason[:255]
        # "Until the stage changes" compares with the stage as it is now.
        alert.snooze_stage = (
            TrackedOpportunity.objects.filter(pk=alert.opportunity_id)
            .values_list("stage", flat=True)
            .get()
        )
        _save(alert, by, now, _("snoozed: %(r)s") % {"r": reason}, ["status", *SNOOZE_CLEARED])
    return alert


def _chains(opportunity_ids: Iterable[Any]) -> QuerySet[TrackedOpportunity]:
    """The given opportunities and every opportunity in a chain with one of them (a query)."""
    roots = (
        TrackedOpportunity.objects.filter(pk__in=list(opportunity_ids))
        .annotate(fv_root=Coalesce("chain_root_id", "pk"))
        .values("fv_root")
    )
    return TrackedOpportunity.objects.filter(Q(pk__in=roots) | Q(chain_root_id__in=roots))


def wake_snoozed(
    now: datetime, *, conditions: bool = True, opportunity_ids: Iterable[Any] | None = None
) -> int:
    """Wake snoozed alerts whose time came or whose condition is met; how many.

    Set-based: one statement finds and updates them, with their history. The episode stays
    the same. A woken alert is open again, or acknowledged if it was acknowledged before its
    snooze (see :func:`back_from_aside`); an open one is planned for escalation again, its
    levels counting from ``now``.

    Checking the conditions reads every snoozed alert, so it is done where the news arrives:
    ``opportunity_ids`` limits the check to those opportunities' chains (a recompute after a
    touch or a CRM change passes its opportunities), and the steady sweep passes
    ``conditions=False`` to wake only snoozes whose time came (an index range). A full sweep
    checks every condition, repairing whatever an event missed.
    """
    root = Coalesce("opportunity__chain_root_id", "opportunity_id")
    # A reply we learn of after snoozing counts, even if it was logged late: whoever snoozed
    # could not have known it.
    replied = Exists(
        Touch.objects.filter(
            Q(opportunity_id=OuterRef("fv_root"))
            | Q(opportunity__chain_root_id=OuterRef("fv_root")),
            Q(occurred_at__gt=OuterRef("snoozed_at")) | Q(recorded_at__gt=OuterRef("snoozed_at")),
            direction=Direction.INBOUND,
            is_meaningful=True,
        )
    )
    on_reply = Q(snooze_condition=SnoozeCondition.CUSTOMER_REPLIES) & Q(replied)
    on_stage = Q(snooze_condition=SnoozeCondition.STAGE_CHANGES) & ~Q(
        opportunity__stage=F("snooze_stage")
    )
    snoozed = Alert.objects.filter(status=AlertStatus.SNOOZED)
    if opportunity_ids is not None:
        snoozed = snoozed.filter(opportunity_id__in=_chains(opportunity_ids).values("pk"))
    if conditions:
        woke = (
            snoozed.annotate(fv_root=root)
            .filter(Q(snoozed_until__lte=now) | on_reply | on_stage)
            .annotate(
                fv_reason=Case(
                    When(on_reply, then=Value(_("woke: customer replied"))),
                    When(on_stage, then=Value(_("woke: stage changed"))),
                    default=Value(_("woke: time passed")),
                    output_field=CharField(),
                )
            )
        )
    else:
        woke = snoozed.filter(snoozed_until__lte=now).annotate(
            fv_reason=Value(_("woke: time passed"), output_field=CharField())
        )
    return bulk_transition(
        woke.annotate(fv_status=back_from_aside()),
        from_statuses=[AlertStatus.SNOOZED],
        changes={
            "status": FromMatch("fv_status"),
            **SNOOZE_CLEARED,
            **escalation_restarted(now),
        },
        now=now,
    )


def dismiss(alert: Alert, *, reason: str, by: Any, now: datetime) -> Alert:
    """Close this episode without action; the next episode of the signal alerts again."""
    if not reason or not reason.strip():
        raise ValidationError({"reason": _("Say why the alert is dismissed.")})
    with transaction.atomic():
        alert = _locked_active(alert)
        alert.status = AlertStatus.DISMISSED
        alert.dismissed_at = now
        alert.dismissed_reason = reason.strip()[:255]
        _save(
            alert, by, now, alert.dismissed_reason, ["status", "dismissed_at", "dismissed_reason"]
        )
    return alert


def resolve(alert: Alert, *, evidence: str, by: Any, now: datetime) -> Alert:
    """Resolve by hand, with evidence of what was done (the CRM may not show it yet)."""
    if not evidence or not evidence.strip():
        raise ValidationError({"evidence": _("Give the evidence that the problem is solved.")})
    with transaction.atomic():
        alert = _locked_active(alert)
        alert.status = AlertStatus.RESOLVED
        alert.resolved_at = now
        alert.resolution = Resolution.MANUAL
        alert.resolution_note = evidence.strip()[:255]
        _save(
            alert,
            by,
            now,
            alert.resolution_note,
            ["status", "resolved_at", "resolution", "resolution_note"],
        )
    return alert


# Set-based transitions ---------------------------------------------------------------------


@dataclass(frozen=True)
class FromMatch:
    """In ``bulk_transition``'s changes: the value of the matched row's annotation ``name``."""

    name: str


#: The suppression rule a matched row was annotated with (``fv_rule``).
FROM_MATCH = FromMatch("fv_rule")


def back_from_aside() -> Case:
    """The status an alert put aside (snoozed, suppressed) returns to: acknowledged if someone
    acknowledged this raise before, so that it does not escalate to managers; else open."""
    return Case(
        When(acknowledged_at__isnull=False, then=Value(AlertStatus.ACKNOWLEDGED)),
        default=Value(AlertStatus.OPEN),
        output_field=CharField(),
    )


def _quote(name: str) -> str:
    return str(connection.ops.quote_name(name))


def history_columns() -> list[str]:
    """The alert's columns as its history table repeats them (without simple-history's own)."""
    history = Alert.history.model
    return [f.column for f in history._meta.concrete_fields if not f.name.startswith("history_")]


def bulk_transition(
    matched: QuerySet[Alert],
    *,
    from_statuses: Sequence[str],
    changes: Mapping[str, Any],
    now: datetime,
    by: Any = None,
) -> int:
    """Apply ``changes`` to the ``matched`` alerts, with one history row each; how many.

    ``matched`` is annotated with ``fv_reason`` (the history's change reason) and with the
    annotation each :class:`FromMatch` change names. Only rows still in ``from_statuses`` when
    written change: a concurrent resolve between finding and writing wins. Runs in the
    caller's transaction (or its own) and never loads the alerts into Python.
    """
    user_id = getattr(by, "pk", None)
    changes = {**changes, "changed_by": user_id}
    fields = {name: cast("Field[Any, Any]", Alert._meta.get_field(name)) for name in changes}
    columns = {str(f.column): (name, f) for name, f in fields.items()}
    wanted = ["fv_reason"]
    wanted += sorted({v.name for v in changes.values() if isinstance(v, FromMatch)})
    alert, history = _quote(Alert._meta.db_table), _quote(Alert.history.model._meta.db_table)
    postgres = connection.vendor == "postgresql"
    if postgres:
        matched = matched.order_by("pk")
    m_sql, m_params = matched.values(*wanted, fv_id=F("pk")).query.sql_with_params()
    if postgres:
        # Lock in key order: two transitions over the same alerts wait instead of deadlocking,
        # and a row changed meanwhile is re-checked against the filter before it is taken.
        # (``select_for_update(of=...)`` is lost on a ``values()`` query, hence by hand.)
        m_sql += f" FOR UPDATE OF {alert}"
    status_sql = ", ".join(["%s"] * len(from_statuses))
    cols = history_columns()
    quoted = ", ".join(_quote(c) for c in cols)
    tail = "history_date, history_change_reason, history_type, history_user_id"

    def value(column: str) -> tuple[str, list[Any]]:
        name, field = columns[column]
        if isinstance(changes[name], FromMatch):
            return f"m.{changes[name].name}", []
        return "%s", [field.get_db_prep_save(changes[name], connection)]

    history_date = _db(now)
    with transaction.atomic(), connection.cursor() as cursor:
        if postgres:
            # One statement: find, update (re-checking the status on rows that changed
            # meanwhile) and write history from what the update returned.
            sets, set_params = [], []
            for column in columns:
                sql, params = value(column)
                sets.append(f"{_quote(column)} = {sql}")
                set_params += params
            cursor.execute(
                f"""
                WITH m AS ({m_sql}),
                changed AS (
                    UPDATE {alert} AS a SET {", ".join(sets)}
                    FROM m WHERE a.id = m.fv_id AND a.status IN ({status_sql})
                    RETURNING a.*
                )
                INSERT INTO {history} ({quoted}, {tail})
                SELECT {", ".join(f"c.{_quote(c)}" for c in cols)}, %s, m.fv_reason, '~', %s
                FROM changed c JOIN m ON m.fv_id = c.id
                """,
                [*m_params, *set_params, *from_statuses, history_date, user_id],
            )
            return max(int(cursor.rowcount), 0)
        # SQLite has no data-modifying CTE: write the history rows as the alerts will be,
        # then update. Nothing else can write between the two (one writer per database).
        select, select_params = [], []
        for column in cols:
            if column in columns:
                sql, params = value(column)
                select.append(sql)
                select_params += params
            else:
                select.append(f"a.{_quote(column)}")
        cursor.execute(
            f"""
            INSERT INTO {history} ({quoted}, {tail})
            SELECT {", ".join(select)}, %s, m.fv_reason, '~', %s
            FROM {alert} a JOIN ({m_sql}) m ON m.fv_id = a.id
            WHERE a.status IN ({status_sql})
            """,
            [*select_params, history_date, user_id, *m_params, *from_statuses],
        )
        if not cursor.rowcount:
            return 0
        sets, set_params = [], []
        for column in columns:
            name, field = columns[column]
            if isinstance(changes[name], FromMatch):
                sets.append(
                    f"{_quote(column)} = (SELECT m.{changes[name].name} FROM ({m_sql}) m"
                    f" WHERE m.fv_id = {alert}.id)"
                )
                set_params += m_params
            else:
                sql, params = value(column)
                sets.append(f"{_quote(column)} = {sql}")
                set_params += params
        cursor.execute(
            f"""
            UPDATE {alert} SET {", ".join(sets)}
            WHERE status IN ({status_sql}) AND id IN (SELECT m.fv_id FROM ({m_sql}) m)
            """,
            [*set_params, *from_statuses, *m_params],
        )
        return max(int(cursor.rowcount), 0)


def _db(value: datetime) -> Any:
    # Raw SQL gets no field conversion: SQLite stores naive UTC text.
    return connection.ops.adapt_datetimefield_value(value)
