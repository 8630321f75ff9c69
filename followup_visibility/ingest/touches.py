"""Recording touches: the one public way events reach an opportunity's timeline.

:func:`record_touches` takes a batch (a telephony system replaying a day of calls, a form
backlog); :func:`record_touch` is a batch of one. Either validates every item before writing
anything, is idempotent by ``(source, external_id)`` within and across batches, resolves the
targets for the whole batch, and ends in one refresh.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.utils.translation import gettext as _

from followup_visibility.alerting import refresh, sql
from followup_visibility.choices import AlertSignal, Channel, Direction, Outcome
from followup_visibility.conf import app_settings
from followup_visibility.engine.touch_rules import TouchDraft, classify
from followup_visibility.ingest import arguments, handoffs, targets
from followup_visibility.models import Touch, TrackedOpportunity
from followup_visibility.signals import send_on_commit, touch_recorded

#: The fields of a repeated delivery compared with the stored touch: a repeat that differs in
#: any of them is reported (``RecordedTouch.differs``), never applied.
COMPARED = ("channel", "direction", "outcome", "occurred_at", "summary", "metadata", "contact")


@dataclass(frozen=True)
class NewTouch:
    """One touch to record: what :func:`record_touch` takes as keyword arguments.

    ``target`` is a tracked opportunity or a host object; without one, ``phone`` or ``email``
    finds the opportunity. ``recorded_at`` defaults to ``now``.
    """

    channel: str
    direction: str
    occurred_at: datetime
    target: TrackedOpportunity | models.Model | None = None
    outcome: str = ""
    recorded_at: datetime | None = None
    actor: Any = None
    source: str = "manual"
    external_id: str = ""
    phone: str | None = None
    email: str | None = None
    summary: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)


_FIELDS = frozenset(f.name for f in fields(NewTouch))
_REQUIRED = ("channel", "direction", "occurred_at")


@dataclass(frozen=True)
class RecordedTouch:
    touch: Touch
    #: False when this was a repeated delivery of a touch already stored.
    created: bool
    #: For a repeat: the :data:`COMPARED` fields whose values differ from the stored touch.
    differs: tuple[str, ...] = ()

    @property
    def status(self) -> str:
        """``"created"``, ``"repeat"`` (identical) or ``"conflict"`` (a repeat that differs)."""
        if self.created:
            return "created"
        return "conflict" if self.differs else "repeat"


def record_touch(
    target: TrackedOpportunity | models.Model | None = None,
    *,
    channel: str,
    direction: str,
    occurred_at: datetime,
    now: datetime,
    outcome: str = "",
    recorded_at: datetime | None = None,
    actor: Any = None,
    source: str = "manual",
    external_id: str = "",
    phone: str | None = None,
    email: str | None = None,
    summary: str = "",
    metadata: Mapping[str, Any] | None = None,
) -> RecordedTouch:
    """Store a touch on an opportunity's timeline and refresh what the timeline implies.

    ``target`` is a tracked opportunity or a host object; without one, the touch attaches to
    the open opportunity matching ``phone`` or ``email``. A repeated ``(source, external_id)``
    returns the stored touch unchanged (``differs`` names what the repeat would have changed).
    Invalid input raises ``ValidationError`` with field messages and writes nothing.
    """
    item = NewTouch(
        channel=channel,
        direction=direction,
        occurred_at=occurred_at,
        target=target,
        outcome=outcome,
        recorded_at=recorded_at,
        actor=actor,
        source=source,
        external_id=external_id,
        phone=phone,
        email=email,
        summary=summary,
        metadata=dict(metadata or {}),
    )
    try:
        return record_touches([item], now=now)[0]
    except ValidationError as exc:
        # A batch of one: its errors name the fields alone (``now`` has no index to drop).
        raise ValidationError(
            {key.partition(".")[2] or key: value for key, value in exc.message_dict.items()}
        ) from None


def record_touches(
    batch: Iterable[NewTouch | Mapping[str, Any]], *, now: datetime
) -> list[RecordedTouch]:
    """Store a batch of touches, in order; one :class:`RecordedTouch` per item.

    Items are :class:`NewTouch` or mappings of its fields. Every item is validated first: any
    error raises ``ValidationError`` keyed ``"<index>.<field>"`` and nothing is written. A
    ``(source, external_id)`` stored before, or earlier in the batch, is a repeat: it returns
    the stored touch, with ``differs`` naming the fields whose values differ. Targets are
    resolved for the whole batch, the new touches inserted in one statement, handoffs their
    owners' touches accept are accepted, and one refresh brings every touched chain up to
    date, all in one transaction. Concurrent batches sharing external ids store each once.
    """
    arguments.require_aware(now=now)
    items, errors = _parse(batch, now)
    if errors:
        raise ValidationError(errors)
    if not items:
        return []
    results: list[RecordedTouch | None] = [None] * len(items)
    with transaction.atomic():
        stored = _stored({(i.source, i.external_id) for i in items if i.external_id})
        first_of: dict[tuple[str, str], int] = {}
        new: dict[int, NewTouch] = {}
        for index, item in enumerate(items):
            key = (item.source, item.external_id)
            if item.external_id and key in stored:
                results[index] = _repeat(stored[key], item)
            elif item.external_id and key in first_of:
                continue  # a repeat within the batch: answered once its first is stored
            else:
                if item.external_id:
                    first_of[key] = index
                new[index] = item
        opportunities = targets.resolve(
            {i: targets.Wanted(item.target, item.phone, item.email) for i, item in new.items()},
            now,
        )
        touches = {index: _build(item, opportunities[index]) for index, item in new.items()}
        inserted = sql.insert_touches(list(touches.values()))
        created: list[Touch] = []
        raced: set[tuple[str, str]] = set()
        for (index, touch), done in zip(touches.items(), inserted, strict=True):
            if done:
                created.append(touch)
                results[index] = RecordedTouch(touch, created=True)
            else:
                raced.add((touch.source, touch.external_id))
        # Another transaction stored these between our look and our insert: repeats too.
        stored.update(_stored(raced))
        for index, item in enumerate(items):
            if results[index] is None:
                key = (item.source, item.external_id)
                first = stored.get(key) or results[first_of[key]].touch  # type: ignore[union-attr]
                results[index] = _repeat(first, item)
        if created:
            chains = [t.opportunity_id for t in created]
            notes: dict[tuple[Any, str], str] = {}
            if any(t.actor_id is not None for t in created):
                # Accepting writes the owners' records: take the chains' locks first.
                refresh.lock(chains)
                for handoff in handoffs.accept_by_touches(created, now):
                    accepted = (handoff.opportunity_id, AlertSignal.OWNER_UNCONFIRMED.value)
                    notes[accepted] = _("handoff accepted")
            channels = sorted({str(Channel(c).label) for c in {t.channel for t in created}})
            refresh.refresh(
                chains,
                now=now,
                cause=refresh.Cause(
                    _("touch: %(t)s") % {"t": ", ".join(str(c) for c in channels)},
                    touches=created,
                    timeline=True,
                    notes=notes,
                ),
            )
            if touch_recorded.has_listeners(Touch):
                # As the refresh left them, not as they were resolved before the touch.
                current = TrackedOpportunity.objects.in_bulk({t.opportunity_id for t in created})
                for touch in created:
                    touch.opportunity = current[touch.opportunity_id]
                    send_on_commit(
                        touch_recorded, Touch, touch=touch, opportunity=touch.opportunity
                    )
    return [r for r in results if r is not None]


def _parse(
    batch: Iterable[NewTouch | Mapping[str, Any]], now: datetime
) -> tuple[list[NewTouch], dict[str, list[str]]]:
    items: list[NewTouch] = []
    errors: dict[str, list[str]] = {}
    for index, raw in enumerate(batch):
        if isinstance(raw, NewTouch):
            item = raw
        else:
            unknown = sorted(set(raw) - _FIELDS)
            missing = [name for name in _REQUIRED if name not in raw]
            for name in unknown:
                errors[f"{index}.{name}"] = [_("Unknown field.")]
            for name in missing:
                errors[f"{index}.{name}"] = [_("This field is required.")]
            if unknown or missing:
                continue
            item = NewTouch(**raw)
        item = replace(item, recorded_at=item.recorded_at or now)
        found = _validate(item, now)
        if "metadata" not in found:
            # Stored as JSON: compared with a repeat as it will read back.
            item = replace(item, metadata=json.loads(json.dumps(item.metadata or {})))
        for name, message in found.items():
            errors[f"{index}.{name}"] = [message]
        items.append(item)
    return items, errors


def _stored(keys: set[tuple[str, str]]) -> dict[tuple[str, str], Touch]:
    if not keys:
        return {}
    # Two IN lists (the unique index serves them) rather than an OR per key, which costs
    # Django more to build than the database to run; pairs that only cross are dropped.
    # The index is partial (``external_id <> ''``): PostgreSQL proves that from an IN list of
    # at most 100 values only, so the predicate is spelled out; without it a batch of 500
    # scanned the whole touch table (430 ms at 1.5M touches, against 28 ms).
    found = Touch.objects.filter(
        source__in={source for source, _id in keys},
        external_id__in={external_id for _source, external_id in keys},
    ).exclude(external_id="")
    return {(t.source, t.external_id): t for t in found if (t.source, t.external_id) in keys}


def _repeat(stored: Touch, item: NewTouch) -> RecordedTouch:
    sent = {
        "channel": item.channel,
        "direction": item.direction,
        "outcome": item.outcome,
        "occurred_at": item.occurred_at,
        "summary": item.summary,
        "metadata": dict(item.metadata),
        "contact": _contact(item),
    }
    differs = tuple(name for name in COMPARED if getattr(stored, name) != sent[name])
    return RecordedTouch(stored, created=False, differs=differs)


def _contact(item: NewTouch) -> str:
    return (item.phone or item.email or "")[:255]


def _build(item: NewTouch, opportunity: TrackedOpportunity) -> Touch:
    verdict = classify(
        TouchDraft(
            item.channel,
            item.direction,
            item.outcome,
            item.source,
            item.summary,
            item.metadata,
        )
    )
    recorded_at = item.recorded_at
    assert recorded_at is not None  # set by _parse
    return Touch(
        opportunity=opportunity,
        channel=item.channel,
        direction=item.direction,
        outcome=item.outcome,
        occurred_at=item.occurred_at,
        recorded_at=recorded_at,
        logging_lag=recorded_at - item.occurred_at,
        actor=item.actor,
        source=item.source,
        external_id=item.external_id,
        contact=_contact(item),
        summary=item.summary,
        metadata=dict(item.metadata),
        is_meaningful=verdict.meaningful,
        meaningful_reason=verdict.reason,
    )


def _target_error(target: object) -> str:
    if target is None:
        return ""
    if not isinstance(target, models.Model):
        return _("Give a tracked opportunity or an object of a tracked model, not %(value)r.") % {
            "value": target
        }
    if isinstance(target, TrackedOpportunity):
        # Whether it is stored is asked of the database with the other targets of the batch.
        return arguments.missing_message(target) if target.pk is None else ""
    return arguments.unsaved_message(target) if arguments.is_unsaved(target) else ""


def _validate(item: NewTouch, now: datetime) -> dict[str, str]:
    errors: dict[str, str] = {}
    if item.channel not in Channel.values:
        errors["channel"] = _("Unknown channel %(value)r; expected one of %(choices)s.") % {
            "value": item.channel,
            "choices": ", ".join(Channel.values),
        }
    if item.direction not in Direction.values:
        errors["direction"] = _("Unknown direction %(value)r; expected one of %(choices)s.") % {
            "value": item.direction,
            "choices": ", ".join(Direction.values),
        }
    if item.outcome not in Outcome.values:
        errors["outcome"] = _("Unknown outcome %(value)r; expected one of %(choices)s.") % {
            "value": item.outcome,
            "choices": ", ".join(v for v in Outcome.values if v),
        }
    target = _target_error(item.target)
    if target:
        errors["target"] = target
    occurred_at, recorded_at = item.occurred_at, item.recorded_at
    for name, value in (("occurred_at", occurred_at), ("recorded_at", recorded_at)):
        if not arguments.is_aware(value):
            errors[name] = _("A timezone-aware datetime is required.")
    skew = app_settings.MAX_CLOCK_SKEW
    if "occurred_at" not in errors and occurred_at > now + skew:
        errors["occurred_at"] = _("Lies in the future (%(value)s is after %(now)s).") % {
            "value": occurred_at.isoformat(),
            "now": now.isoformat(),
        }
    if "recorded_at" not in errors and "occurred_at" not in errors:
        assert recorded_at is not None
        if recorded_at > now + skew:
            errors["recorded_at"] = _("Lies in the future (after %(now)s).") % {
                "now": now.isoformat()
            }
        elif recorded_at < occurred_at - skew:
            errors["recorded_at"] = _("A touch cannot be logged before it happened.")
    if not isinstance(item.source, str) or not item.source or len(item.source) > 50:
        errors["source"] = _("A source of 1 to 50 characters is required.")
    if not isinstance(item.external_id, str) or len(item.external_id) > 255:
        errors["external_id"] = _("At most 255 characters.")
    metadata: object = item.metadata  # mappings given by callers may hold anything
    if metadata is not None and not isinstance(metadata, Mapping):
        errors["metadata"] = _("A mapping is required.")
    elif metadata:
        try:
            json.dumps(metadata)
        except (TypeError, ValueError) as exc:
            errors["metadata"] = _("Must be plain JSON: %(error)s.") % {"error": exc}
    return errors
