"""Every raw SQL statement of the package, PostgreSQL and SQLite side by side.

The ORM builds the row sets (what is due, which alerts a transition takes); these functions
write them in one statement where PostgreSQL allows it (data-modifying CTEs, ``unnest``
arrays, ``ON CONFLICT`` on a partial constraint, which Django cannot express) and in a few
plain statements on SQLite, which has one writer, so nothing can change between them. Each
runs in the caller's transaction.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from django.db import connection, models
from django.db.models import BooleanField, Field, QuerySet
from django.db.models.expressions import RawSQL

from followup_visibility.choices import ACTIVE_ALERT_STATUSES, AlertStatus, Resolution
from followup_visibility.engine.clocks import COMPARED, DeadlineRow
from followup_visibility.models import Alert, Deadline, OutboxMessage, Touch


def postgres() -> bool:
    return connection.vendor == "postgresql"


@contextmanager
def bound_cursor() -> Iterator[Any]:
    """A cursor whose parameters travel apart from the statement, wrapped as Django wraps
    its own (query log, execute wrappers, error translation).

    Django's PostgreSQL cursors bind parameters on the client: an array of thousands of
    values is rendered into the statement's text, value by value, and parsed again by the
    server. For the statements below, built on ``unnest`` arrays, that cost more than the
    writing itself (measured on a 2,000-opportunity recompute: 60% of its time). SQLite's
    cursor is Django's own.
    """
    if not postgres():
        with connection.cursor() as cursor:
            yield cursor
        return
    connection.ensure_connection()
    raw = cast(Any, connection).Database.Cursor(connection.connection)
    make = connection.make_debug_cursor if connection.queries_logged else connection.make_cursor
    with make(raw) as cursor:
        yield cursor


def rows_of(queryset: QuerySet[Any]) -> list[dict[str, Any]]:
    """The rows of a ``values()`` queryset as dicts, read with psycopg's own timestamp loader.

    Django loads every ``timestamptz`` through a pure-Python loader (Django ticket 36960), ten
    times slower than psycopg's: for the states of thousands of opportunities, a dozen
    timestamps each, it was the largest cost of a recompute in Python. Only for querysets of
    plain columns and JSON (read back as text on PostgreSQL). SQLite: the queryset itself.
    """
    if not postgres():
        return list(queryset)
    sql_text, params = queryset.query.sql_with_params()
    json_names = {
        f.attname for f in queryset.model._meta.concrete_fields if isinstance(f, models.JSONField)
    }
    connection.ensure_connection()
    raw = cast(Any, connection).Database.Cursor(connection.connection)
    psycopg = cast(Any, connection).Database
    timestamptz = psycopg.adapters.types["timestamptz"].oid
    raw.adapters.register_loader(
        timestamptz, psycopg.adapters.get_loader(timestamptz, psycopg.pq.Format.TEXT)
    )
    make = connection.make_debug_cursor if connection.queries_logged else connection.make_cursor
    with make(raw) as cursor:
        cursor.execute(sql_text, params)
        names = [column.name for column in cursor.description]
        found = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    for name in json_names & set(names):
        for row in found:
            if isinstance(row[name], str):
                row[name] = json.loads(row[name])
    return found


def array(values: Sequence[Any]) -> str:
    """The placeholder of an array parameter: binary, which psycopg dumps four times faster
    than text (no escaping of each element), unless nothing in it tells its type."""
    return "%b" if any(v is not None for v in values) else "%s"


def among(model: type[models.Model], field: str, values: Sequence[Any]) -> models.Q:
    """``field`` (a concrete column of ``model``) is one of ``values``.

    PostgreSQL: ``= ANY(array)``, one parameter however many values (an ``IN`` list of two
    thousand keys cost Django and psycopg four times the query itself); elsewhere ``IN``.
    """
    if not postgres():
        return models.Q(**{f"{field}__in": list(values)})
    concrete = cast("Field[Any, Any]", model._meta.get_field(field))
    column = f"{table(model)}.{quote(str(concrete.column))}"
    values = [concrete.get_prep_value(v) for v in values]
    if not values:
        return models.Q(pk__in=[])
    if not all(type(v) is int for v in values):
        return models.Q(RawSQL(f"{column} = ANY(%s)", (values,), output_field=BooleanField()))
    # The range lets the planner use the column's index: it cannot size an array of thousands
    # of keys, and guessed a scan of the whole table for it.
    return models.Q(
        RawSQL(
            f"({column} BETWEEN %s AND %s AND {column} = ANY(%s))",
            (min(values), max(values), values),
            output_field=BooleanField(),
        )
    )


def db_datetime(value: datetime) -> Any:
    """A datetime as raw SQL must be given it: raw SQL gets no field conversion, and SQLite
    stores naive UTC text that an aware datetime would not compare equal to."""
    return connection.ops.adapt_datetimefield_value(value)


def quote(name: str) -> str:
    return str(connection.ops.quote_name(name))


def table(model: type[models.Model]) -> str:
    return quote(model._meta.db_table)


def history_columns() -> list[str]:
    """The alert's columns as its history table repeats them (without simple-history's own)."""
    history = Alert.history.model
    return [f.column for f in history._meta.concrete_fields if not f.name.startswith("history_")]


# Locks ---------------------------------------------------------------------------------------


def no_jit() -> None:
    """Turn PostgreSQL's JIT off for this transaction: it compiled the sweep's statements every
    pass (their estimated cost is high, their real work small when steady), 0.8 s of a 1 s
    steady pass at 1M."""
    if postgres():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL jit = off")


def unflushed_commit() -> None:
    """Let this transaction's commit return before it reaches the disk (PostgreSQL): for work
    whose loss in a crash of the database server the next sweep pass repairs. Others see it
    at commit as usual; waiting for the flush cost the sweep's check after a raise two
    thirds of its time."""
    if postgres():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit = off")


def advisory_lock(key: int, *, wait: bool) -> bool:
    """Take a transaction-scoped advisory lock; whether it was taken (always, off PostgreSQL,
    where one writer at a time holds the database anyway)."""
    if not postgres():
        return True
    with connection.cursor() as cursor:
        if wait:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])
            return True
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [key])
        return bool(cursor.fetchone()[0])


def lock_for_share(model: type[models.Model], ids: Sequence[int]) -> None:
    """Lock these rows of ``model`` ``FOR SHARE``, in key order, until this transaction ends
    (PostgreSQL; off it there is one writer at a time anyway).

    The lock waits for every transaction holding one of them ``FOR NO KEY UPDATE`` or more (a
    refresh holds its chains so until it commits) and keeps new ones out until this
    transaction ends; readers and other share lockers pass. In a separate statement of the
    same transaction (a fresh snapshot, at READ COMMITTED) the writes of those it waited for
    are then visible.
    """
    if not postgres() or not ids:
        return
    pk = model._meta.pk
    assert pk is not None
    column, keys = quote(pk.column), sorted(ids)
    with bound_cursor() as cursor:
        # The range lets the planner use the key's index (see ``among``).
        cursor.execute(
            f"WITH locked AS (SELECT {column} FROM {table(model)} "
            f"WHERE {column} BETWEEN %s AND %s AND {column} = ANY(%b) "
            f"ORDER BY {column} FOR SHARE) SELECT count(*) FROM locked",
            [keys[0], keys[-1], keys],
        )


def try_advisory_locks(key: int, ids: Sequence[Any]) -> list[Any]:
    """The ``ids`` whose transaction-scoped advisory lock ``(key, hash of id)`` this
    transaction got (all of them off PostgreSQL)."""
    if not postgres() or not ids:
        return list(ids)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id FROM unnest(%s::text[]) AS id "
            "WHERE pg_try_advisory_xact_lock(%s, hashtext(id))",
            [[str(i) for i in ids], key],
        )
        got = {row[0] for row in cursor.fetchall()}
    return [i for i in ids if str(i) in got]


# Updating columns of many rows -----------------------------------------------------------------


def update_rows(
    model: type[models.Model], rows: Mapping[Any, Mapping[str, Any]], fields: Sequence[str]
) -> int:
    """Write ``fields`` (names or attnames, the keys of each row's mapping) of the rows keyed
    by primary key, each with its own values; how many rows.

    PostgreSQL: one ``UPDATE ... FROM unnest(arrays)`` (Django's ``bulk_update`` builds a
    ``CASE`` per field and row, several times slower at a thousand rows). SQLite:
    ``bulk_update``. No history rows: for derived state only.
    """
    if not rows or not fields:
        return 0
    meta = model._meta
    concrete = [(name, cast("Field[Any, Any]", meta.get_field(name))) for name in fields]
    if not postgres():
        objs = [
            model(pk=pk, **{f.attname: values[name] for name, f in concrete})
            for pk, values in rows.items()
        ]
        return model._default_manager.bulk_update(
            objs, [f.name for _name, f in concrete], batch_size=500
        )
    pk_field = meta.pk
    assert pk_field is not None
    arrays: list[list[Any]] = [[pk_field.get_db_prep_save(pk, connection) for pk in rows]]
    for name, f in concrete:
        arrays.append([f.get_db_prep_save(values[name], connection) for values in rows.values()])
    columns = [pk_field, *(f for _name, f in concrete)]
    unnest = _unnest(columns, arrays)
    names = ", ".join(quote(f.column) for f in columns)
    sets = ", ".join(f"{quote(f.column)} = v.{quote(f.column)}" for _name, f in concrete)
    pk = quote(pk_field.column)
    with bound_cursor() as cursor:
        cursor.execute(
            f"UPDATE {table(model)} AS t SET {sets} "
            f"FROM unnest({unnest}) AS v({names}) WHERE t.{pk} = v.{pk}",
            arrays,
        )
        return max(int(cursor.rowcount), 0)


def upsert_rows(model: type[models.Model], objs: Sequence[models.Model]) -> int:
    """Insert these rows, or update every other column of those whose primary key exists.

    PostgreSQL: one ``INSERT ... SELECT FROM unnest(arrays) ON CONFLICT DO UPDATE`` (Django's
    ``bulk_create`` builds a parameter per value and costs more to compile than to run for
    a few rows). The values go as they are, unprepared by their fields: for models of plain
    numbers, keys and aware datetimes only. SQLite: ``bulk_create`` with
    ``update_conflicts``.
    """
    if not objs:
        return 0
    meta = model._meta
    pk_field = meta.pk
    assert pk_field is not None
    fields = [f for f in meta.concrete_fields if f is not pk_field]
    if not postgres():
        model._default_manager.bulk_create(
            objs,
            update_conflicts=True,
            unique_fields=[pk_field.name],
            update_fields=[f.name for f in fields],
        )
        return len(objs)
    columns = [pk_field, *fields]
    # The values as they are: numbers, keys and aware datetimes, which psycopg adapts (the
    # fields' preparation cost more than the statement for a rescore's thousands of rows).
    arrays = [[getattr(o, f.attname) for o in objs] for f in columns]
    unnest = _unnest(columns, arrays)
    names = ", ".join(quote(f.column) for f in columns)
    sets = ", ".join(f"{quote(f.column)} = EXCLUDED.{quote(f.column)}" for f in fields)
    with bound_cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table(model)} ({names}) SELECT * FROM unnest({unnest}) "
            f"ON CONFLICT ({quote(pk_field.column)}) DO UPDATE SET {sets}",
            arrays,
        )
        return max(int(cursor.rowcount), 0)


def _unnest(columns: Sequence[Field[Any, Any]], arrays: Sequence[list[Any]]) -> str:
    """The arguments of ``unnest(...)``: one typed array placeholder per column."""
    return ", ".join(
        f"{array(values)}::{_array_type(f)}" for f, values in zip(columns, arrays, strict=True)
    )


def _array_type(field: Field[Any, Any]) -> str:
    # A foreign key's db_type is the type of the key it references.
    return f"{field.db_type(connection) or 'text'}[]"


# The outbox ----------------------------------------------------------------------------------


def merge_message(kind: str, payload: Mapping[str, Any], key: str, now: datetime) -> None:
    """Insert an outbox message, or merge it into the pending one with the same ``key``.

    Merging updates that row rather than skipping it: the row stays locked until this
    transaction commits, so a drain cannot claim the pending message (``SKIP LOCKED``) and do
    its work without seeing this change; a message being drained already is finished first,
    and this one is then inserted anew. The conflict target names the partial unique index's
    predicate, which Django's upsert cannot.
    """
    t = table(OutboxMessage)
    stored = OutboxMessage._meta.get_field("payload").get_db_prep_save(payload, connection)
    with connection.cursor() as cursor:
        if postgres():
            cursor.execute(
                f"""
                INSERT INTO {t} (kind, payload, key, created_at, available_at, attempts,
                                 last_error)
                VALUES (%s, %s, %s, %s, %s, 0, '')
                ON CONFLICT (key) WHERE done_at IS NULL AND failed_at IS NULL AND key <> ''
                DO UPDATE SET available_at = LEAST({t}.available_at, EXCLUDED.available_at)
                """,
                [kind, stored, key, now, now],
            )
            return
        # SQLite has one writer: nothing can drain between this look and the insert.
        cursor.execute(
            f"""
            INSERT INTO {t} (kind, payload, key, created_at, available_at, attempts, last_error)
            SELECT %s, %s, %s, %s, %s, 0, ''
            WHERE NOT EXISTS (
                SELECT 1 FROM {t} WHERE key = %s AND done_at IS NULL AND failed_at IS NULL
            )
            """,
            [kind, stored, key, db_datetime(now), db_datetime(now), key],
        )


# Touches -----------------------------------------------------------------------------------


def insert_touches(touches: Sequence[Touch]) -> list[bool]:
    """Insert these touches, skipping any whose ``(source, external_id)`` is stored already;
    whether each was inserted (its ``pk`` is then set).

    PostgreSQL: ``INSERT ... ON CONFLICT DO NOTHING RETURNING``, in ``(source, external_id)``
    order so that two batches sharing ids queue on the unique index instead of deadlocking;
    a repeat that another transaction is inserting waits for it and is then skipped. SQLite
    (one writer, which has checked for repeats in its transaction): ``bulk_create``.
    """
    if not touches:
        return []
    if not postgres():
        Touch.objects.bulk_create(touches)
        return [True] * len(touches)
    order = sorted(
        range(len(touches)),
        key=lambda i: (not touches[i].external_id, touches[i].source, touches[i].external_id),
    )
    fields = [f for f in Touch._meta.concrete_fields if not f.primary_key]
    columns = ", ".join(quote(f.column) for f in fields)
    arrays = [
        [f.get_db_prep_save(f.pre_save(touches[i], True), connection) for i in order]
        for f in fields
    ]
    unnest = ", ".join(
        f"{array(values)}::{_array_type(f)}" for f, values in zip(fields, arrays, strict=True)
    )
    inserted = [False] * len(touches)
    with bound_cursor() as cursor:
        # From arrays, one parameter a column: binding a parameter a value cost more than
        # the insert itself at a thousand touches.
        cursor.execute(
            f"INSERT INTO {table(Touch)} ({columns}) "
            f"SELECT {', '.join(f'v.c{i}' for i in range(len(fields)))} "
            f"FROM unnest({unnest}) WITH ORDINALITY "
            f"AS v({', '.join(f'c{i}' for i in range(len(fields)))}, n) ORDER BY v.n "
            "ON CONFLICT DO NOTHING RETURNING id, source, external_id",
            arrays,
        )
        returned = cursor.fetchall()
    keyed = {(src, ext): pk for pk, src, ext in returned if ext}
    # Touches without an external id never conflict: they come back in the order given.
    unkeyed = iter(pk for pk, _src, ext in returned if not ext)
    for i in order:
        obj = touches[i]
        pk = keyed.get((obj.source, obj.external_id)) if obj.external_id else next(unkeyed)
        if pk is not None:
            obj.pk, inserted[i] = pk, True
            obj._state.adding, obj._state.db = False, connection.alias
    return inserted


# Deadlines -----------------------------------------------------------------------------------


@dataclass
class DeadlineWrite:
    written: int = 0
    deleted: int = 0
    unchanged: int = 0


def write_deadlines(
    opportunity_ids: Sequence[Any],
    rows: Sequence[DeadlineRow],
    now: datetime,
    *,
    only: Sequence[str] | None = None,
) -> DeadlineWrite:
    """Make the stored deadlines of these opportunities (of the ``only`` signals, if given)
    exactly ``rows``; ``computed_at`` moves only on rows that changed.

    PostgreSQL: one statement deletes what is gone and upserts from ``unnest`` arrays,
    skipping unchanged rows with ``IS DISTINCT FROM``, without reading the stored rows back.
    SQLite: read, compare, delete and upsert with the ORM.
    """
    if not opportunity_ids:
        return DeadlineWrite()
    if postgres():
        return _write_deadlines_postgres(opportunity_ids, rows, now, only)
    return _write_deadlines_orm(opportunity_ids, rows, now, only)


def _write_deadlines_postgres(
    ids: Sequence[Any], rows: Sequence[DeadlineRow], now: datetime, only: Sequence[str] | None
) -> DeadlineWrite:
    t = table(Deadline)
    compared = ", ".join(COMPARED)
    arrays: list[list[Any]] = [
        [r.opportunity_id for r in rows],
        [r.signal for r in rows],
        [r.event_at for r in rows],
        [r.clock_start for r in rows],
        [r.sla for r in rows],
        [r.due_at for r in rows],
        [r.policy_version_id for r in rows],
        [r.calendar_id for r in rows],
    ]
    types = ["bigint", "text", "timestamptz", "timestamptz", "interval", "timestamptz"]
    types += ["bigint", "bigint"]
    unnest = ", ".join(f"{array(v)}::{t}[]" for v, t in zip(arrays, types, strict=True))
    signal_filter = f"AND x.signal = ANY({array(only)}::text[])" if only is not None else ""
    same = " AND ".join(f"s.{c} IS NOT DISTINCT FROM d.{c}" for c in COMPARED)
    with bound_cursor() as cursor:
        # The stored rows are compared in a read first, and only what differs is written: an
        # upsert that skips unchanged rows in its WHERE still locks every one of them (a
        # page write each), the larger part of a recompute where little changed. The
        # caller holds the opportunities' locks, so nothing writes their rows meanwhile.
        cursor.execute(
            f"""
            WITH desired AS (
                SELECT * FROM unnest({unnest}) AS d(opportunity_id, signal, {compared})
            ),
            stored AS MATERIALIZED (
                SELECT x.id, x.opportunity_id, x.signal, {", ".join(f"x.{c}" for c in COMPARED)}
                FROM {t} x
                -- The range lets the planner read the key index rather than the table (it
                -- cannot size an array of thousands of keys; a chunk's keys are close).
                WHERE x.opportunity_id BETWEEN %s AND %s
                  AND x.opportunity_id = ANY({array(ids)}::bigint[]) {signal_filter}
            ),
            gone AS (
                DELETE FROM {t} x
                WHERE x.id IN (
                    SELECT s.id FROM stored s
                    LEFT JOIN desired d
                        ON d.opportunity_id = s.opportunity_id AND d.signal = s.signal
                    WHERE d.opportunity_id IS NULL
                )
                RETURNING 1
            ),
            changed AS (
                SELECT d.* FROM desired d
                LEFT JOIN stored s
                    ON s.opportunity_id = d.opportunity_id AND s.signal = d.signal
                WHERE s.id IS NULL OR NOT ({same})
            ),
            up AS (
                INSERT INTO {t} (opportunity_id, signal, {compared}, computed_at)
                SELECT c.opportunity_id, c.signal, {", ".join(f"c.{c}" for c in COMPARED)}, %s
                FROM changed c
                ON CONFLICT (opportunity_id, signal) DO UPDATE SET
                    {", ".join(f"{c} = EXCLUDED.{c}" for c in COMPARED)},
                    computed_at = EXCLUDED.computed_at
                RETURNING 1
            )
            SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM up)
            """,
            [
                *arrays,
                min(ids),
                max(ids),
                list(ids),
                *([list(only)] if only is not None else []),
                now,
            ],
        )
        deleted, written = cursor.fetchone()
    return DeadlineWrite(int(written), int(deleted), len(rows) - int(written))


def _write_deadlines_orm(
    ids: Sequence[Any], rows: Sequence[DeadlineRow], now: datetime, only: Sequence[str] | None
) -> DeadlineWrite:
    stored = Deadline.objects.filter(opportunity_id__in=list(ids))
    if only is not None:
        stored = stored.filter(signal__in=list(only))
    existing: dict[tuple[Any, str], tuple[int, tuple[Any, ...]]] = {}
    for values in stored.values("pk", "opportunity_id", "signal", *COMPARED):
        key = (values["opportunity_id"], values["signal"])
        existing[key] = (values["pk"], tuple(values[name] for name in COMPARED))
    desired = {(r.opportunity_id, r.signal): r for r in rows}
    result = DeadlineWrite()
    gone = [pk for key, (pk, _row) in existing.items() if key not in desired]
    if gone:
        result.deleted = Deadline.objects.filter(pk__in=gone).delete()[0]
    write = [
        Deadline(computed_at=now, **row.fields())
        for key, row in desired.items()
        if key not in existing or existing[key][1] != row.key()
    ]
    if write:
        Deadline.objects.bulk_create(
            write,
            update_conflicts=True,
            unique_fields=["opportunity", "signal"],
            update_fields=[*COMPARED, "computed_at"],
            batch_size=2000,
        )
    result.written = len(write)
    result.unchanged = len(desired) - len(write)
    return result


# Alert transitions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FromMatch:
    """A transition's new value taken from the matched row's annotation ``name``."""

    name: str


@dataclass(frozen=True)
class Rows:
    """Alerts given by key, each with its own values of the named columns: what a transition
    takes instead of a queryset when every row has values of its own (a batch's notes)."""

    #: ``(name, PostgreSQL type)`` of each value, ``fv_reason`` among them.
    columns: Sequence[tuple[str, str]]
    #: alert key -> the values, in ``columns`` order.
    values: Mapping[int, Sequence[Any]]

    def sql(self, alert: str) -> tuple[str, list[Any]]:
        """The rows as a query of ``fv_id`` and the columns (locked in key order on
        PostgreSQL, as the queryset form is)."""
        names = [name for name, _type in self.columns]
        keys = sorted(self.values)
        if postgres():
            arrays: list[Any] = [keys]
            arrays += [[self.values[k][i] for k in keys] for i in range(len(names))]
            types = ["bigint", *(t for _name, t in self.columns)]
            unnest = ", ".join(f"{array(a)}::{t}[]" for a, t in zip(arrays, types, strict=True))
            return (
                f"SELECT v.* FROM unnest({unnest}) AS v(fv_id, {', '.join(names)}) "
                f"JOIN {alert} a ON a.id = v.fv_id ORDER BY v.fv_id FOR UPDATE OF a",
                arrays,
            )
        marks = "(" + ", ".join(["%s"] * (len(names) + 1)) + ")"
        params = [value for k in keys for value in (k, *self.values[k])]
        aliases = ", ".join(f"column{i + 2} AS {name}" for i, name in enumerate(names))
        return (
            f"SELECT column1 AS fv_id, {aliases} FROM (VALUES {', '.join([marks] * len(keys))})",
            params,
        )


def transition_alerts(
    matched: QuerySet[Alert] | Rows,
    *,
    from_statuses: Sequence[str],
    changes: Mapping[str, Any],
    now: datetime,
    user_id: Any = None,
) -> list[tuple[int, str]]:
    """Apply ``changes`` to the ``matched`` alerts still in ``from_statuses``, each with one
    history row; the ``(id, reason)`` of those changed.

    ``matched`` (a queryset, or :class:`Rows`) carries ``fv_reason`` (the history's change
    reason) and the annotation each :class:`FromMatch` change names. PostgreSQL: one
    statement finds the rows (locked in key order, so two transitions over the same alerts
    wait rather than deadlock), updates them, re-checking the status of rows changed
    meanwhile, and writes history from what the update returned. SQLite: the ids, then the
    history rows as the alerts will be, then the update.
    """
    changes = {**changes, "changed_by": user_id}
    fields = {name: cast("Field[Any, Any]", Alert._meta.get_field(name)) for name in changes}
    columns = {str(f.column): (name, f) for name, f in fields.items()}
    wanted = ["fv_reason"]
    wanted += sorted({v.name for v in changes.values() if isinstance(v, FromMatch)})
    alert, history = table(Alert), table(Alert.history.model)
    if isinstance(matched, Rows):
        m_sql, m_params = matched.sql(alert)
    else:
        if postgres():
            matched = matched.order_by("pk")
        found = matched.values(*wanted, fv_id=models.F("pk"))
        m_sql, m_params = found.query.sql_with_params()
        if postgres():
            # ``select_for_update(of=...)`` is lost on a ``values()`` query, hence by hand.
            m_sql += f" FOR UPDATE OF {alert}"
    m_params = list(m_params)
    status_sql = ", ".join(["%s"] * len(from_statuses))
    cols = history_columns()
    quoted = ", ".join(quote(c) for c in cols)
    tail = "history_date, history_change_reason, history_type, history_user_id"

    def value(column: str) -> tuple[str, list[Any]]:
        name, field = columns[column]
        if isinstance(changes[name], FromMatch):
            return f"m.{changes[name].name}", []
        return "%s", [field.get_db_prep_save(changes[name], connection)]

    history_date = db_datetime(now)
    with bound_cursor() as cursor:
        if postgres():
            sets, set_params = [], []
            for column in columns:
                sql, params = value(column)
                sets.append(f"{quote(column)} = {sql}")
                set_params += params
            cursor.execute(
                f"""
                WITH m AS ({m_sql}),
                changed AS (
                    UPDATE {alert} AS a SET {", ".join(sets)}
                    FROM m WHERE a.id = m.fv_id AND a.status IN ({status_sql})
                    RETURNING a.*
                ),
                hist AS (
                    INSERT INTO {history} ({quoted}, {tail})
                    SELECT {", ".join(f"c.{quote(c)}" for c in cols)}, %s, m.fv_reason, '~', %s
                    FROM changed c JOIN m ON m.fv_id = c.id
                )
                SELECT c.id, m.fv_reason FROM changed c JOIN m ON m.fv_id = c.id ORDER BY c.id
                """,
                [*m_params, *set_params, *from_statuses, history_date, user_id],
            )
            return [(row[0], row[1]) for row in cursor.fetchall()]
        cursor.execute(
            f"SELECT a.id, m.fv_reason FROM {alert} a JOIN ({m_sql}) m ON m.fv_id = a.id "
            f"WHERE a.status IN ({status_sql}) ORDER BY a.id",
            [*m_params, *from_statuses],
        )
        done = [(row[0], row[1]) for row in cursor.fetchall()]
        if not done:
            return []
        select, select_params = [], []
        for column in cols:
            if column in columns:
                sql, params = value(column)
                select.append(sql)
                select_params += params
            else:
                select.append(f"a.{quote(column)}")
        cursor.execute(
            f"""
            INSERT INTO {history} ({quoted}, {tail})
            SELECT {", ".join(select)}, %s, m.fv_reason, '~', %s
            FROM {alert} a JOIN ({m_sql}) m ON m.fv_id = a.id
            WHERE a.status IN ({status_sql})
            """,
            [*select_params, history_date, user_id, *m_params, *from_statuses],
        )
        sets, set_params = [], []
        for column in columns:
            name, _field = columns[column]
            if isinstance(changes[name], FromMatch):
                sets.append(
                    f"{quote(column)} = (SELECT m.{changes[name].name} FROM ({m_sql}) m"
                    f" WHERE m.fv_id = {alert}.id)"
                )
                set_params += m_params
            else:
                sql, params = value(column)
                sets.append(f"{quote(column)} = {sql}")
                set_params += params
        cursor.execute(
            f"""
            UPDATE {alert} SET {", ".join(sets)}
            WHERE status IN ({status_sql}) AND id IN (SELECT m.fv_id FROM ({m_sql}) m)
            """,
            [*set_params, *from_statuses, *m_params],
        )
        return done


# Raising alerts ------------------------------------------------------------------------------

RAISED_REASON = "raised by sweep"
REOPENED_REASON = "reopened by sweep: due again"

_INSERT = """
    INSERT INTO {alert} (
        opportunity_id, signal, episode_at, due_at, clock_start, sla, raised_at, status,
        dismissed_reason, resolution, resolution_note, snooze_condition, snooze_reason,
        snooze_stage, escalation_level, escalation_planned
    )
    SELECT due.opportunity_id, due.signal, due.event_at, due.due_at, due.clock_start, due.sla,
           %s, %s, '', '', '', '', '', '', 0, %s
    FROM {source} WHERE NOT due.fv_held
    ON CONFLICT DO NOTHING
"""
# An episode resolved automatically (its deadline moved past the clock or went away) whose
# deadline is due again: a stall that ended, an owner removed again. The per-episode
# constraint forbids a second row, so the resolved alert reopens, raised anew. Dismissed and
# hand-resolved episodes stay closed: a person decided about them.
_REOPEN_SET = """
    status = %s, resolved_at = NULL, resolution = '', resolution_note = '',
    resolved_touch_id = NULL, due_at = due.due_at, clock_start = due.clock_start,
    sla = due.sla, raised_at = %s, escalation_level = 0, escalate_at = NULL,
    escalation_planned = %s, escalation_from = NULL,
    acknowledged_at = NULL, acknowledged_by_id = NULL
"""
_REOPEN_WHERE = """
    NOT due.fv_held
    AND {a}.opportunity_id = due.opportunity_id AND {a}.signal = due.signal
    AND {a}.episode_at = due.event_at
    AND {a}.status = %s AND {a}.resolution = %s
    AND NOT EXISTS (
        SELECT 1 FROM {alert} other
        WHERE other.opportunity_id = {a}.opportunity_id AND other.signal = {a}.signal
          AND other.status IN ({active})
    )
"""


@dataclass
class Raised:
    """What one raise statement did; the ids only when asked for (listeners exist)."""

    examined: int = 0
    raised: int = 0
    reopened: int = 0
    oldest_due: datetime | None = None
    raised_ids: list[int] | None = None
    reopened_ids: list[int] | None = None
    #: The opportunities with an alert raised or reopened, in key order: always on PostgreSQL,
    #: where the sweep checks them again after its commit; never on SQLite, whose single
    #: writer leaves nothing to check (see ``sweep.recheck``).
    opportunity_ids: Sequence[int] = ()


def raise_alerts(due: QuerySet[Any], now: datetime, *, ids: bool = False) -> Raised:
    """Insert an open alert, with its history row, for every row of ``due`` not held back
    (``fv_held``), and reopen the automatically resolved episodes that are due again.

    ``due`` yields ``opportunity_id, signal, event_at, due_at, clock_start, sla, fv_held``.
    The unique constraints absorb what is raised already. PostgreSQL: one statement of
    data-modifying CTEs over one materialized ``due``. SQLite: a count, the reopen and the
    insert as separate statements.
    """
    sql, params = due.query.sql_with_params()
    insert_params = [db_datetime(now), AlertStatus.OPEN, False]
    set_params = [AlertStatus.OPEN, db_datetime(now), False]
    where_params = [AlertStatus.RESOLVED, Resolution.AUTO, *ACTIVE_ALERT_STATUSES]
    alert = table(Alert)
    active = ", ".join(["%s"] * len(ACTIVE_ALERT_STATUSES))
    history = table(Alert.history.model)
    columns = history_columns()
    quoted = ", ".join(quote(c) for c in columns)
    with connection.cursor() as cursor:
        if postgres():

            def from_(name: str) -> str:
                return ", ".join(f"{name}.{quote(c)}" for c in columns)

            id_lists = (
                "(SELECT array_agg(id) FROM ins), (SELECT array_agg(id) FROM reopened)"
                if ids
                else "NULL, NULL"
            )
            cursor.execute(
                f"""
                WITH due AS MATERIALIZED ({sql}),
                reopened AS (
                    UPDATE {alert} a SET {_REOPEN_SET}
                    FROM due WHERE {_REOPEN_WHERE.format(a="a", alert=alert, active=active)}
                    RETURNING a.*
                ),
                ins AS ({_INSERT.format(alert=alert, source="due")} RETURNING *),
                hist AS (
                    INSERT INTO {history} (
                        {quoted}, history_date, history_change_reason, history_type
                    )
                    SELECT {from_("ins")}, %s, %s, '+' FROM ins
                    UNION ALL
                    SELECT {from_("reopened")}, %s, %s, '~' FROM reopened
                )
                SELECT (SELECT count(*) FROM due), (SELECT count(*) FROM ins),
                       (SELECT count(*) FROM reopened),
                       LEAST((SELECT min(due_at) FROM ins), (SELECT min(due_at) FROM reopened)),
                       {id_lists},
                       (SELECT array_agg(r.o ORDER BY r.o) FROM (
                           SELECT opportunity_id FROM ins UNION SELECT opportunity_id FROM reopened
                       ) AS r(o))
                """,
                [
                    *params,
                    *set_params,
                    *where_params,
                    *insert_params,
                    db_datetime(now),
                    RAISED_REASON,
                    db_datetime(now),
                    REOPENED_REASON,
                ],
            )
            examined, raised, reopened, oldest, raised_ids, reopened_ids, opps = cursor.fetchone()
            return Raised(
                int(examined),
                int(raised),
                int(reopened),
                oldest,
                sorted(raised_ids or []) if ids else None,
                sorted(reopened_ids or []) if ids else None,
                list(opps or []),
            )
        cursor.execute(f"SELECT COUNT(*) FROM ({sql}) due", params)
        result = Raised(examined=int(cursor.fetchone()[0]))
        if ids:
            result.raised_ids, result.reopened_ids = [], []
        if not result.examined:
            return result
        cursor.execute(
            f"SELECT {alert}.id FROM {alert}, ({sql}) due WHERE "
            + _REOPEN_WHERE.format(a=alert, alert=alert, active=active),
            [*params, *where_params],
        )
        reopen_ids = [row[0] for row in cursor.fetchall()]
        if reopen_ids:
            marks = ", ".join(["%s"] * len(reopen_ids))
            cursor.execute(
                f"UPDATE {alert} SET {_REOPEN_SET} FROM ({sql}) due "
                f"WHERE {alert}.id IN ({marks}) AND {alert}.opportunity_id = due.opportunity_id "
                f"AND {alert}.signal = due.signal",
                [*set_params, *params, *reopen_ids],
            )
            cursor.execute(
                f"""
                INSERT INTO {history} ({quoted}, history_date, history_change_reason, history_type)
                SELECT {", ".join(f"a.{quote(c)}" for c in columns)}, %s, %s, '~'
                FROM {alert} a WHERE a.id IN ({marks})
                """,
                [db_datetime(now), REOPENED_REASON, *reopen_ids],
            )
        # Keys only grow on SQLite (AUTOINCREMENT): what lies above the highest one now is new.
        cursor.execute(f"SELECT COALESCE(MAX(id), 0) FROM {alert}")
        before = int(cursor.fetchone()[0])
        cursor.execute(
            _INSERT.format(alert=alert, source=f"({sql}) due"), [*insert_params, *params]
        )
        result.raised = max(cursor.rowcount, 0)
        result.reopened = len(reopen_ids)
        if result.raised:
            cursor.execute(
                f"""
                INSERT INTO {history} ({quoted}, history_date, history_change_reason, history_type)
                SELECT {", ".join(f"a.{quote(c)}" for c in columns)}, %s, %s, '+'
                FROM {alert} a WHERE a.id > %s
                """,
                [db_datetime(now), RAISED_REASON, before],
            )
        if ids:
            cursor.execute(f"SELECT id FROM {alert} WHERE id > %s ORDER BY id", [before])
            result.raised_ids = [row[0] for row in cursor.fetchall()]
            result.reopened_ids = sorted(reopen_ids)
        if result.raised or result.reopened:
            touched = Alert.objects.filter(raised_at=now).filter(
                models.Q(pk__gt=before) | models.Q(pk__in=reopen_ids)
            )
            result.oldest_due = touched.aggregate(oldest=models.Min("due_at"))["oldest"]
    return result


def unbacked_alerts(
    now: datetime, *, opportunity_ids: Sequence[int] = (), keys: tuple[int, int] | None = None
) -> list[int]:
    """Keys of the active alerts raised by ``now`` that no due deadline stands behind, of
    these opportunities or of the ``keys`` range (inclusive), in key order.

    Stood behind: a deadline of the alert's signal and episode that is due by ``now`` or by
    ``computed_at``, the clock of the change that last wrote it (a chunk runs with the clock
    its pass started with, perhaps behind a refresh that rightly kept the alert). Raw SQL: the
    sweep runs this after every raise, and building it with the ORM cost more than running it.
    """
    alert, deadline = table(Alert), table(Deadline)
    active = ", ".join(["%s"] * len(ACTIVE_ALERT_STATUSES))
    scope = "a.opportunity_id BETWEEN %s AND %s"
    scope_params: list[Any] = list(keys or ())
    if keys is None:
        if not opportunity_ids:
            return []
        ids = sorted(opportunity_ids)
        scope_params = [ids[0], ids[-1]]
        if postgres():
            scope += " AND a.opportunity_id = ANY(%b)"
            scope_params.append(ids)
        else:
            scope += f" AND a.opportunity_id IN ({', '.join(['%s'] * len(ids))})"
            scope_params += ids
    with bound_cursor() as cursor:
        cursor.execute(
            f"""
            SELECT a.id FROM {alert} a
            WHERE {scope} AND a.status IN ({active}) AND a.raised_at <= %s
              AND NOT EXISTS (
                  SELECT 1 FROM {deadline} d
                  WHERE d.opportunity_id = a.opportunity_id AND d.signal = a.signal
                    AND d.event_at = a.episode_at
                    AND (d.due_at <= %s OR d.due_at <= d.computed_at)
              )
            ORDER BY a.id
            """,
            [*scope_params, *ACTIVE_ALERT_STATUSES, db_datetime(now), db_datetime(now)],
        )
        return [row[0] for row in cursor.fetchall()]
