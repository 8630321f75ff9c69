"""The sweep: turn deadlines that fell due into alerts, in set-based statements.

One ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` per pass: the database's unique
constraints (one active alert per opportunity and signal, one alert per episode) absorb
repeats, so overlapping passes, retried tasks and a beat firing twice are harmless. A steady
pass looks only at deadlines that fell due, or were rewritten, since the last pass; a full pass
looks at every deadline and repairs whatever a steady one missed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction

from followup_visibility.choices import AlertStatus
from followup_visibility.models import Alert, Deadline, SweepRun

logger = logging.getLogger(__name__)

#: How far a steady pass reaches back before the last pass's clock: a recompute that was
#: computed before that clock but committed after the pass is still seen.
OVERLAP = timedelta(minutes=5)
_HISTORY_REASON = "raised by sweep"


@dataclass(frozen=True)
class Window:
    """Deadlines a pass considers: due by ``until``; with ``since``, only recent ones."""

    until: datetime
    since: datetime | None = None
    first_pk: Any = None
    last_pk: Any = None

    def where(self) -> tuple[str, list[Any]]:
        clauses, params = ["d.due_at <= %s"], [_db(self.until)]
        if self.since is not None:
            clauses.append("(d.due_at > %s OR d.computed_at > %s)")
            params += [_db(self.since), _db(self.since)]
        if self.first_pk is not None:
            clauses.append("d.opportunity_id BETWEEN %s AND %s")
            params += [self.first_pk, self.last_pk]
        return " AND ".join(clauses), params


def _db(value: datetime) -> Any:
    # Raw SQL gets no field conversion: SQLite stores naive UTC text, and an aware datetime
    # passed as is would be written and compared in another format.
    return connection.ops.adapt_datetimefield_value(value)


def _table(model: Any) -> str:
    return str(connection.ops.quote_name(model._meta.db_table))


def raise_due(window: Window, now: datetime) -> tuple[int, int]:
    """Insert an open alert for every deadline in ``window``; return (examined, raised)."""
    where, params = window.where()
    alert, deadline = _table(Alert), _table(Deadline)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM {deadline} d WHERE {where}", params)
        examined = int(cursor.fetchone()[0])
        if not examined:
            return 0, 0
        cursor.execute(
            f"""
            INSERT INTO {alert} (
                opportunity_id, signal, episode_at, due_at, clock_start, sla, raised_at, status,
                dismissed_reason, resolution, resolution_note, snooze_condition, snooze_reason,
                snooze_stage, escalation_level, escalation_planned
            )
            SELECT d.opportunity_id, d.signal, d.event_at, d.due_at, d.clock_start, d.sla, %s, %s,
                   '', '', '', '', '', '', 0, %s
            FROM {deadline} d
            WHERE {where}
            ON CONFLICT DO NOTHING
            """,
            [_db(now), AlertStatus.OPEN, False, *params],
        )
        raised = max(cursor.rowcount, 0)
        if raised:
            _record_history(cursor, now)
    return examined, raised


def _record_history(cursor: Any, now: datetime) -> None:
    """History rows for the alerts this pass raised (raw inserts bypass simple-history)."""
    history = Alert.history.model
    columns = [f.column for f in history._meta.concrete_fields if not f.name.startswith("history_")]
    quoted = ", ".join(connection.ops.quote_name(c) for c in columns)
    source = ", ".join(f"a.{connection.ops.quote_name(c)}" for c in columns)
    cursor.execute(
        f"""
        INSERT INTO {_table(history)} (
            {quoted}, history_date, history_change_reason, history_type
        )
        SELECT {source}, %s, %s, '+'
        FROM {_table(Alert)} a
        WHERE a.raised_at = %s
          AND NOT EXISTS (SELECT 1 FROM {_table(history)} h WHERE h.id = a.id)
        """,
        [_db(now), _HISTORY_REASON, _db(now)],
    )


def sweep(now: datetime, *, full: bool = False) -> SweepRun:
    """One pass up to ``now``; steady unless ``full`` or no pass finished before."""
    last = SweepRun.objects.filter(finished_at__isnull=False).order_by("-swept_until").first()
    if not full and last is None:
        full = True
    since = None if full or last is None else last.swept_until - OVERLAP
    run = SweepRun.objects.create(started_at=now, swept_until=now, full=full)
    with transaction.atomic():
        examined, raised = raise_due(Window(until=now, since=since), now)
        oldest = (
            Alert.objects.filter(raised_at=now).order_by("due_at").values_list("due_at", flat=True)
        ).first()
    run.examined, run.raised = examined, raised
    run.lag = now - oldest if oldest is not None else timedelta(0)
    run.finished_at = now
    run.save(update_fields=["examined", "raised", "lag", "finished_at"])
    logger.info("sweep %s: %d examined, %d raised", run.pk, examined, raised)
    return run
